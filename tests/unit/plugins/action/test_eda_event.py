# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The eda_event action: the event ansible-rulebook passes comes back as data that no template renders, the hosts it
names are matched by name, and anything else is refused with what is wrong.

The event is loaded as ansible-playbook loads `-e @extravars` (ansible.utils.vars.load_extra_vars: trusted templates
from 2.19 on), from the YAML ansible-rulebook writes. Every hostile string and wrong type goes in every field; the
result is then rendered by a real Templar, which renders the raw extra vars (the control: it runs the canary)."""

from __future__ import annotations

from unittest import mock

import pytest
import yaml

from ansible import context
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.collections import ImmutableDict
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible.utils.vars import load_extra_vars

from ansible_collections.imds.scheduled_events.plugins.action import eda_event
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile

try:
    from ansible.template import is_trusted_as_template, trust_as_template
except ImportError:  # before 2.19 (no unit leg runs one; test_pull_packaged_ansible runs the playbooks on 2.14)
    is_trusted_as_template = None

    def trust_as_template(text):
        return text

GUID = "4CAEA225-A741-474D-A72E-428C86FCD853"
LONE_SURROGATE = "\udcff"


def an_event(**scheduled):
    event = {"EventId": GUID, "EventType": "Reboot", "ResourceType": "VirtualMachine", "Resources": ["web_0"],
             "EventStatus": "Scheduled", "NotBefore": "Mon, 11 Apr 2050 22:26:58 GMT", "Description": "maintenance",
             "EventSource": "Platform", "DurationInSeconds": -1, "not_before": "2050-04-11T22:26:58Z",
             "owner": {"kind": "availabilitySets", "name": "web-as", "resource_group": "prod-web"}}
    event.update(scheduled)
    return {"change": "appeared", "event_id": event["EventId"].strip() if isinstance(event["EventId"], str) else None,
            "scheduled_event": event, "outcome": None, "detail": "Reboot Scheduled for web_0", "source": "event_grid",
            "meta": {"source": {"name": "eg", "type": "imds.scheduled_events.event_grid"}, "uuid": "u"}}


def loaded(tmp_path, event, key="event"):
    """ansible_eda as ansible-playbook holds it after `-e @env/extravars` (written as ansible-rulebook writes it)."""
    path = tmp_path / "extravars"
    path.write_text(yaml.dump({"ansible_eda": {"ruleset": "rs", "rule": "r", key: event}}), encoding="utf-8")
    context.CLIARGS = ImmutableDict(extra_vars=("@%s" % path,))
    load_extra_vars.extra_vars = None  # the loader caches one load per process
    return load_extra_vars(DataLoader())["ansible_eda"]


def trusted(value):
    """`value` with every string trusted as a template, as extra vars are (from 2.19 on)."""
    if isinstance(value, dict):
        return dict((trusted(k), trusted(v)) for k, v in value.items())
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return trust_as_template(value) if isinstance(value, str) else value


def run(ansible_eda, hosts=("web_0", "db_0"), args=None):
    task = mock.MagicMock()
    task.args = args or {}
    task.async_val = 0
    task.check_mode = False
    action = eda_event.ActionModule(task, mock.MagicMock(), mock.MagicMock(), loader=None, templar=None,
                                    shared_loader_obj=None)
    task_vars = {"groups": {"all": list(hosts), "ungrouped": list(hosts)}}
    if ansible_eda is not None:
        task_vars["ansible_eda"] = ansible_eda
    return action.run(task_vars=task_vars)


def render(template, variables):
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(template))


def strings_in(value):
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k] + strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return [value] if isinstance(value, str) else []


def values_of_every_field(canary):
    cases = hostile.strings(canary) + hostile.wrong_types()
    return pytest.mark.parametrize("value", [c.value for c in cases], ids=hostile.ids(cases))


@values_of_every_field("canary-placeholder")
def test_every_field_comes_back_as_data(tmp_path, value):
    canary = str(tmp_path / "canary")
    if isinstance(value, str):
        value = value.replace("canary-placeholder", canary)
    fields = dict((key, value) for key in ("EventType", "ResourceType", "EventStatus", "NotBefore", "Description",
                                           "EventSource", "DurationInSeconds", "not_before"))
    fields["Resources"] = ["web_0", value]
    fields["owner"] = {"kind": value, "name": value, "resource_group": value}
    event = dict(an_event(**fields), detail=value, source=value, meta={"source": value, value if isinstance(
        value, str) else "key": value})
    if isinstance(value, str) and LONE_SURROGATE in value:
        # ansible-core cannot load such extra vars at all (libyaml refuses the escape yaml.dump writes), which is why
        # the sources never queue one; the action still reads it as data
        with pytest.raises(AnsibleError, match="invalid Unicode character escape code"):
            loaded(tmp_path, event)
        raw = trusted({"ruleset": "rs", "rule": "r", "event": event})
    else:
        raw = loaded(tmp_path, event)

    result = run(raw)

    assert result["event"] == event and result["rule"] == "r" and result["ruleset"] == "rs"
    for text in strings_in(result):
        if is_trusted_as_template is None:
            assert text.__class__.__name__ == "AnsibleUnsafeText", repr(text)
        else:
            assert type(text) is str and not is_trusted_as_template(text), repr(text)  # pylint: disable=unidiomatic-typecheck
    rendered = render("{{ eda.event }}", {"eda": result})
    assert rendered == event
    hostile.assert_no_trace(canary, repr(rendered), repr(result))


def test_the_raw_extra_vars_would_run_the_canary(tmp_path):
    """The control: what eda_event protects from. The same event, referenced as ansible_eda, runs the pipe."""
    canary = str(tmp_path / "canary")
    value = [c.value for c in hostile.strings(canary) if c.name == "jinja-expression"][0]
    raw = loaded(tmp_path, an_event(Description=value))

    rendered = render("{{ ansible_eda.event.scheduled_event }}", {"ansible_eda": raw})

    assert hostile.traces(canary, repr(rendered)), "rendering the raw extra vars left no trace: the test is blind"


def test_the_hosts_are_the_inventory_hosts_named_exactly(tmp_path):
    names = ["all", "*", "web:&db", "!db_0", "~.*", "web[0:9]", "web_0,db_0", "WEB_0", "_x", " all "]
    raw = loaded(tmp_path, an_event(Resources=names))

    result = run(raw, hosts=("web_0", "db_0", "x", "localhost"))

    assert result["hosts"] == ["web_0", "x"]  # WEB_0 (case-insensitively), _x (2017-03-01's leading underscore)
    assert result["unmatched"] == ["all", "*", "web:&db", "!db_0", "~.*", "web[0:9]", "web_0,db_0", " all "]


def test_a_vm_named_all_names_only_a_host_named_all(tmp_path):
    raw = loaded(tmp_path, an_event(Resources=["all"]))
    assert run(raw, hosts=("web_0", "all"))["hosts"] == ["all"]
    assert run(raw, hosts=("web_0",))["hosts"] == []


def test_several_events_of_a_rule_with_several_conditions(tmp_path):
    first, second = an_event(Resources=["web_0"]), an_event(Resources=["db_0", "web_0"])
    raw = loaded(tmp_path, {"m_0": first, "m_1": second}, key="events")

    result = run(raw)

    assert result["event"] is None and result["events"] == {"m_0": first, "m_1": second}
    assert result["hosts"] == ["web_0", "db_0"] and result["unmatched"] == []


def test_an_unreadable_event_names_no_host(tmp_path):
    event = {"change": "unreadable", "problem": "it has no properties object", "delivery_id": "d",
             "source": "event_grid"}
    result = run(loaded(tmp_path, event))
    assert result["event"] == event and result["hosts"] == [] and result["unmatched"] == []


@pytest.mark.parametrize("change, message", [
    (dict(change="{{ 1 }}"), "its change '{{ 1 }}' is not one of appeared, updated"),
    (dict(change="gone"), "its outcome None does not go with change gone"),
    (dict(outcome="completed"), "its outcome 'completed' does not go with change appeared"),
    (dict(scheduled_event="x"), "its scheduled_event is a str, not a mapping"),
    (dict(scheduled_event={"EventType": "Reboot"}), "its scheduled_event cannot be read: an event has no EventId"),
    (dict(event_id="C7061BAC-AFDC-4513-B24B-AA5F13A16123"), "its event_id 'C7061BAC-AFDC-4513-B24B-AA5F13A16123' is "
     "not its scheduled_event's EventId '4CAEA225"),
], ids=["change", "gone-without-outcome", "outcome-too-early", "scheduled-event-type", "no-event-id", "event-id"])
def test_an_event_of_another_shape_is_refused(tmp_path, change, message):
    raw = loaded(tmp_path, dict(an_event(), **change))
    with pytest.raises(AnsibleActionFail, match="^ansible_eda.event is not an event of this collection's sources: "):
        run(raw)
    with pytest.raises(AnsibleActionFail) as failure:
        run(raw)
    assert message in str(failure.value)


def test_without_an_event_it_says_who_should_run_the_playbook():
    for ansible_eda in (None, {"rule": "r"}, "{{ x }}"):
        with pytest.raises(AnsibleActionFail, match="there is no ansible_eda.event: this playbook is meant to be run "
                                                    "by ansible-rulebook's run_playbook"):
            run(ansible_eda)


def test_it_takes_no_options(tmp_path):
    with pytest.raises(AnsibleError, match="hosts"):
        run(loaded(tmp_path, an_event()), args={"hosts": "all"})


def test_what_json_cannot_carry_is_refused():
    for value, kind in ((b"bytes", "bytes"), ({"a"}, "set"), (object(), "object")):
        with pytest.raises(AnsibleActionFail, match="ansible_eda cannot be read as data: it holds a %s" % kind):
            run({"event": an_event(Description=value)})
    event = an_event()
    event[1] = "x"
    with pytest.raises(AnsibleActionFail, match="a key of type int"):
        run({"event": event})
    deep = "x"
    for dummy in range(eda_event.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(AnsibleActionFail, match="nested deeper than 64 levels"):
        run({"event": an_event(Description=deep)})


class LazyDict(dict):
    """A container that renders what is read through its own methods, as ansible-core's lazy ones do."""

    def __getitem__(self, key):
        raise AssertionError("read through __getitem__")

    def items(self):
        raise AssertionError("read through items()")

    def __iter__(self):
        raise AssertionError("read through __iter__")


class LazyList(list):
    def __iter__(self):
        raise AssertionError("read through __iter__")

    def __getitem__(self, index):
        raise AssertionError("read through __getitem__")


def test_containers_are_read_raw_never_through_their_own_methods():
    value = LazyDict(a=LazyList(["{{ x }}", LazyDict(b="{{ y }}")]), c=("{{ z }}",))
    assert eda_event.plain(value) == {"a": ["{{ x }}", {"b": "{{ y }}"}], "c": ["{{ z }}"]}
