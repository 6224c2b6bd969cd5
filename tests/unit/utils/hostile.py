# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The hostile-input table: values that must stay data wherever an event, a webhook delivery or a setting carries them.

Why one table: every door (IMDS documents, Resource Graph rows, Event Grid deliveries, EDA events, module options,
the watcher's settings) meets the same contract, so the values are written once and every suite injects all of them
into every field it has (docs/security.md lists the guarantees). A value proves execution by creating its canary
file, and proves templating by rendering TEMPLATE to RENDERED (which no value holds as such), so a test needs no
knowledge of the payload to tell "stayed data" from "ran":

    for case in hostile.strings(canary):          # every string value
        ... inject case.value into a field, run the entry point ...
        hostile.assert_no_trace(canary, output)   # nothing ran, nothing was rendered

`wrong_types()` are JSON values of the wrong kind for a string field (the entry point refuses them clearly or reads
them as absent, never crashes). Standard library only: the system tests and the simulator import it too.
"""

from __future__ import annotations

import collections
import html.parser
import os

# What TEMPLATE renders to: seeing it anywhere means a template engine evaluated event data.
TEMPLATE = "{{ 'hostile' ~ '-rendered-' ~ 'marker' }}"
RENDERED = "hostile-rendered-marker"
LONG = 100 * 1024  # characters in the long value

HostileValue = collections.namedtuple("HostileValue", "name value kind")


def strings(canary):
    """Every hostile string; those that would run something create `canary` (a path) when they do."""
    touch = "touch %s" % canary
    table = [
        # Jinja: ansible-core renders trusted strings (extra vars are trusted: ansible-rulebook passes events so)
        ("jinja-expression", "{{ lookup('pipe', '%s') }}" % touch + TEMPLATE, "jinja"),
        ("jinja-statement", "{%% set x = lookup('pipe', '%s') %%}" % touch + TEMPLATE, "jinja"),
        ("jinja-comment", "before{# a Jinja comment #}after", "jinja"),
        ("jinja-query", "{{ query('pipe', '%s') }}" % touch, "jinja"),
        ("jinja-bare", TEMPLATE, "jinja"),
        ("jinja-hostvars", "{{ hostvars | to_json }}" + TEMPLATE, "jinja"),
        ("jinja-unsafe-tag", "!unsafe " + TEMPLATE, "jinja"),
        ("jinja-raw-block", "{% raw %}{% endraw %}" + TEMPLATE, "jinja"),
        # shell words
        ("shell-substitution", "$(%s)" % touch, "shell"),
        ("shell-backticks", "`%s`" % touch, "shell"),
        ("shell-separators", "x; %s; y && %s || %s | cat & > /dev/null < /dev/null" % (touch, touch, touch), "shell"),
        ("shell-quotes", "'\"\\' \"; %s; echo '" % touch, "shell"),
        ("shell-variable", "${IFS}$HOME${PATH:0:1}", "shell"),
        ("shell-glob", "* ? [a-z] {a,b} ~root", "shell"),
        ("option-like", "--help -rf --output=/etc/passwd", "shell"),
        # lines and terminals
        ("newlines", "first line\nsecond line\r\nthird\rfourth", "text"),
        ("header-injection", "subject\r\nBcc: injected@example.invalid\r\nX-Hostile: 1", "text"),
        ("ansi-escapes", "\x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b[2J", "text"),
        ("nul-byte", "before\x00after", "text"),
        ("lone-surrogate", "before\udcffafter", "text"),
        ("bidi-override", "abc\u202edcba\u202c", "text"),
        ("non-ascii", "Zürich ñ 東京 \U0001F4A5", "text"),
        ("long", "A" * LONG, "text"),
        ("empty", "", "text"),
        ("spaces", "   ", "text"),
        # host patterns (a VM name chosen by whoever names the VM, or sends the event)
        ("host-all", "all", "host"),
        ("host-star", "*", "host"),
        ("host-intersection", "web:&db", "host"),
        ("host-exclusion", "!localhost", "host"),
        ("host-regex", "~.*", "host"),
        ("host-range", "web[0:9]", "host"),
        ("host-list", "web_0,db_0", "host"),
        ("host-localhost", "localhost", "host"),
        # paths
        ("path-traversal", "../../../../etc/passwd", "path"),
        ("path-absolute", "/etc/shadow", "path"),
        ("path-dotdot", "..", "path"),
        # markup where values are displayed
        ("html-script", "<script>document.title='pwned'</script>", "markup"),
        ("html-attribute", "\"><img src=x onerror=\"document.title='pwned'\">", "markup"),
        ("markdown", "[click](javascript:alert(1)) | a | b | **bold** `code` # heading", "markup"),
        ("slack-mentions", "@channel <!here> <!channel> <@U012AB3CD> <https://example.invalid|click>", "markup"),
        # query languages
        ("kql-quotes", "x' or 1==1 or name=='", "query"),
        ("kql-pipe", "x\" | take 1 // ", "query"),
        ("kql-backslash", "x\\' | where true | project secret //", "query"),
        ("jmespath", "Events[?EventType=='Reboot'] | [0]", "query"),
        ("prometheus-label", "a\"} evil_metric{x=\"1\n", "query"),
    ]
    return [HostileValue(name, value, kind) for name, value, kind in table]


def joined(canary, leave_out=()):
    """Every hostile string in one, a line each (but those named in `leave_out`): for a field that holds one value
    per run, when a run per value costs too much (a playbook run). Any of them rendered changes the text, any
    template error fails the run, and any that runs creates the canary, so the field stays data only if all do."""
    return "\n".join(case.value for case in strings(canary) if case.name not in leave_out)


def wrong_types():
    """JSON values of the wrong kind where a string is expected."""
    table = [
        ("number", 42), ("float", 1.5), ("boolean", True), ("null", None), ("list", ["a", "b"]),
        ("object", {TEMPLATE: "x"}), ("nested", [[{"a": [1]}]]),
    ]
    return [HostileValue(name, value, "type") for name, value, in table]


# Bytes that are not UTF-8, for the doors that read raw bodies (IMDS, the webhook).
NON_UTF8 = b"\xff\xfe\xc3\x28 \xed\xa0\x80"


def ids(values):
    """pytest ids for a list of HostileValue."""
    return [v.name for v in values]


def traces(canary, *outputs):
    """What shows that a value was executed or rendered: the canary exists, or an output holds RENDERED where the
    input had TEMPLATE. Outputs are strings (or bytes); returns a list of findings, empty when clean."""
    found = []
    if os.path.lexists(canary):
        found.append("the canary %s exists: a value was executed" % canary)
    for output in outputs:
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        if RENDERED in text:
            found.append("%s appears: a value was rendered as a template" % RENDERED)
    return found


def clear(canary):
    """Remove a canary an earlier run left, so that a trace is this run's."""
    if os.path.lexists(canary):
        os.unlink(canary)


def assert_no_trace(canary, *outputs):
    found = traces(canary, *outputs)
    assert not found, "; ".join(found)


class HtmlCensus(html.parser.HTMLParser):
    """The elements of an HTML page (tag, attributes) in order, and its text (entities decoded): what a test compares
    with what the page's own template writes, to tell a value shown as text from one that became markup."""

    def __init__(self, page=None):
        super(HtmlCensus, self).__init__(convert_charrefs=True)
        self.tags = []
        self.text = []
        if page is not None:
            self.feed(page)
            self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def handlers(self):
        """Elements with an event handler attribute (onerror=, onload=...)."""
        return [(tag, attrs) for tag, attrs in self.tags if any(name.startswith("on") for name in attrs)]
