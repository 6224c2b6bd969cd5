# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""eda_event: the event ansible-rulebook passed to a playbook, as data that is never a template or a host pattern.

ansible-rulebook passes the event as extra vars (ansible_eda), and ansible-core trusts extra vars as templates: any
reference to them renders what the event's sender wrote ({{ lookup('pipe', ...) }} runs on the controller). This
action reads ansible_eda from the raw task vars, where nothing has templated it, checks its shape with the model
the sources wrote it with (module_utils/sources.py, events.py), and returns it rebuilt from plain Python values:
exact str, int, float, bool, None, list and dict, which carry no TrustedAsTemplate tag (ansible-core 2.19 and
later), wrapped as unsafe before 2.19. The inventory hosts its Resources name are matched by name, never as a
pattern. Documented in plugins/modules/eda_event.py.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.imds.scheduled_events.plugins.module_utils.events import hosts_named
from ansible_collections.imds.scheduled_events.plugins.module_utils.sources import read_rulebook_event

try:
    from ansible.template import is_trusted_as_template  # noqa: F401  pylint: disable=unused-import
    wrap_var = None  # ansible-core 2.19+: a value without the TrustedAsTemplate tag is never templated
except ImportError:  # before 2.19 every string is a template unless it is marked unsafe
    from ansible.utils.unsafe_proxy import wrap_var

MAX_DEPTH = 64  # the event_grid source refuses deeper JSON; an event is far shallower


def plain(value, depth=0):
    """`value` rebuilt from exact built-in types, so no subclass (ansible-core's tagged or lazy containers, its YAML
    strings) and no tag survives. Containers are read through dict's and list's own methods, which a subclass cannot
    override: a lazily templated container gives its raw items, never rendered ones. Raises ValueError for
    anything JSON could not carry."""
    if depth > MAX_DEPTH:
        raise ValueError("it is nested deeper than %d levels" % MAX_DEPTH)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        out = {}
        for key, item in dict.items(value):
            if not isinstance(key, str):
                raise ValueError("it has a key of type %s, not a string" % type(key).__name__)
            out[str.__str__(key)] = plain(item, depth + 1)
        return out
    if isinstance(value, list):
        return [plain(item, depth + 1) for item in list.__iter__(value)]
    if isinstance(value, tuple):
        return [plain(item, depth + 1) for item in tuple.__iter__(value)]
    raise ValueError("it holds a %s, which is not JSON data" % type(value).__name__)


def as_data(value):
    """Plain values that no ansible-core templates: untagged (2.19+), or wrapped as unsafe (before)."""
    return value if wrap_var is None else wrap_var(value)


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        self.validate_argument_spec(argument_spec={})  # it takes no options: a typo is refused, not ignored
        raw = (task_vars or {}).get("ansible_eda")
        if not isinstance(raw, dict) or raw.get("event") is None and raw.get("events") is None:
            raise AnsibleActionFail("there is no ansible_eda.event: this playbook is meant to be run by "
                                    "ansible-rulebook's run_playbook (or run_job_template) with an event")
        try:
            eda = plain(raw)
        except ValueError as exc:
            raise AnsibleActionFail("ansible_eda cannot be read as data: %s" % exc)

        # ansible-rulebook passes `event` for a rule with one condition, `events` (m_0, m_1 ...) for several
        named = [("ansible_eda.event", eda["event"])] if eda.get("event") is not None else []
        if eda.get("events") is not None:
            if not isinstance(eda["events"], dict):
                raise AnsibleActionFail("ansible_eda.events is a %s, not a mapping" % type(eda["events"]).__name__)
            named.extend(("ansible_eda.events.%s" % key, value) for key, value in sorted(eda["events"].items()))
        resources = []
        for name, event in named:
            try:
                found = read_rulebook_event(event)
            except ValueError as exc:
                raise AnsibleActionFail("%s is not an event of this collection's sources: %s" % (name, exc))
            if found is not None:
                resources.extend(r for r in found.resources if r not in resources)
        hostnames = [plain(h) for h in ((task_vars or {}).get("groups") or {}).get("all") or ()]
        hosts, unmatched = hosts_named(resources, hostnames)

        result.update(changed=False, event=as_data(eda.get("event")), events=as_data(eda.get("events")),
                      rule=as_data(eda.get("rule")), ruleset=as_data(eda.get("ruleset")), hosts=as_data(hosts),
                      unmatched=as_data(unmatched))
        return result
