# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filter results that stay data on every ansible-core the collection supports.

The fleet filters return what hosts and Azure reported (event fields, VM names, hold reasons): strings that
must never be rendered as templates. ansible-core 2.19 and later tag data (only a trusted template is rendered),
so nothing is needed there. Before 2.19 (2.14 to 2.18, Debian 12 packages 2.14), a variable is rendered again each
time it is referenced unless its strings are marked unsafe: a plan or a report kept with set_fact would run the
`{{ lookup('pipe', ...) }}` an event's Resources or a hold reason carries when a later task reads it. Module
results are marked unsafe by the task executor, but a filter builds new strings (and the default templating turns
a dict result into text and back), so the mark does not survive. `data_filter` marks the result: the template
expression that called the filter is flagged as unsafe (ansible-core then wraps its whole result, after that text
round trip), and the returned value is wrapped too (for native templating and direct calls).
"""

from __future__ import annotations

import functools

try:
    from ansible.template import trust_as_template  # noqa: F401  pylint: disable=unused-import
except ImportError:  # ansible-core before 2.19: no data tagging
    DATA_TAGGING = False
else:
    DATA_TAGGING = True


def data_filter(func):
    """`func` as a filter whose result is data, never a template, on every supported ansible-core."""
    if DATA_TAGGING:
        return func
    from jinja2 import pass_context  # pylint: disable=import-outside-toplevel
    from ansible.utils.unsafe_proxy import wrap_var  # pylint: disable=import-outside-toplevel

    @functools.wraps(func)
    def marked(context, *args, **kwargs):
        result = func(*args, **kwargs)
        if hasattr(context, "unsafe"):  # ansible-core's AnsibleContext (2.14 to 2.18)
            context.unsafe = True
        return wrap_var(result)

    return pass_context(marked)
