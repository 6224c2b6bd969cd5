# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Approval rules: compiled and checked at load, JMESPath truth, first match wins."""

from __future__ import annotations

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.events import Event
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.policy import (
    Policy, PolicyError, Rule, sample_events, truthy)
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import (
    FREEZE_ID, T0, VM, event)


def describe(raw):
    import datetime
    return Event.from_json(raw).describe(VM, datetime.datetime.fromtimestamp(T0, datetime.timezone.utc))


def test_the_documented_freeze_rule():
    rule = Rule("short-freeze", "EventType=='Freeze' && DurationInSeconds < `10`")
    assert rule.matches(describe(event(FREEZE_ID, "Freeze", duration=5)))
    assert not rule.matches(describe(event(FREEZE_ID, "Freeze", duration=30)))
    assert not rule.matches(describe(event(FREEZE_ID, "Reboot")))


def test_derived_keys_are_there_to_use():
    rule = Rule("soon", "affects_this_vm && !shared && seconds_until_start < `60` && EventSource=='Platform'")
    assert rule.matches(describe(event(not_before=T0 + 30)))
    assert not rule.matches(describe(event(not_before=T0 + 600)))
    assert not rule.matches(describe(event(resources=["myvm", "peer"], not_before=T0 + 30)))


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (None, False), ("", False), ("x", True), ([], False), ([1], True), ({}, False),
    (0, True), (1, True),
])
def test_jmespath_truth(value, expected):
    assert truthy(value) is expected


@pytest.mark.parametrize("when, message", [
    ("EventType ==", "is not a JMESPath expression"),
    ("EventTyp == 'Freeze'", "EventTyp is not a key of an event"),
    ("event.EventType == 'Freeze'", "event is not a key"),
    ("length(DurationInSeconds) > `1`", "fails on a Freeze event"),
    ("nosuchfunction(EventType)", "fails on"),
    ("", "non-empty"),
])
def test_bad_rules_fail_at_load_with_the_rule_named(when, message):
    with pytest.raises(PolicyError, match=message) as info:
        Rule("r1", when)
    assert "r1" in str(info.value)


def test_rules_need_a_unique_name():
    with pytest.raises(PolicyError, match="needs a name"):
        Rule("", "`true`")
    with pytest.raises(PolicyError, match="two rules are named a"):
        Policy([Rule("a", "`true`"), Rule("a", "`false`")])


def test_first_match_wins_and_runtime_failures_do_not_match():
    policy = Policy.from_config([
        {"name": "broken", "when": "length(Description) > `0`"},
        {"name": "reboots", "when": "EventType=='Reboot'", "allow_shared": True},
        {"name": "all", "when": "`true`"},
    ])
    rule, problems = policy.match(describe(event(Description=None)))
    assert rule.name == "reboots" and rule.allow_shared
    assert len(problems) == 1 and "rule broken failed" in problems[0]
    assert policy.match(describe(event(FREEZE_ID, "Freeze")))[0].name == "all"
    assert Policy().match(describe(event())) == (None, [])


def test_samples_cover_every_type_and_an_unknown_one():
    kinds = [s["EventType"] for s in sample_events()]
    assert kinds == ["Freeze", "Reboot", "Redeploy", "Preempt", "Terminate", "Unknown"]
    assert Rule("x", "EventType=='Freeze'").as_dict() == {"name": "x", "when": "EventType=='Freeze'",
                                                          "allow_shared": False}


def _in_a_fresh_python(code):
    """Run `code` where nothing has imported jmespath yet (this test process has)."""
    import os
    import subprocess
    import sys
    from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import policy
    top = policy.__file__
    while os.path.basename(top) != "ansible_collections":
        top = os.path.dirname(top)
    prelude = ("import sys; sys.path.insert(0, %r)\n"
               "from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import policy\n"
               % os.path.dirname(top))
    proc = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_jmespath_is_loaded_only_when_a_rule_needs_it():
    assert _in_a_fresh_python(
        "policy.Policy.from_config([]); print('jmespath' in sys.modules)") == "False"
    assert _in_a_fresh_python(
        "policy.Policy.from_config([{'name': 'x', 'when': '`true`'}]); print('jmespath' in sys.modules)") == "True"


def test_rules_without_jmespath_are_a_clear_error():
    assert _in_a_fresh_python(
        "sys.modules['jmespath'] = None\n"
        "try:\n    policy.Rule('spot', \"EventType=='Preempt'\")\n"
        "except policy.PolicyError as exc:\n    print(exc)") == \
        "approval rules need the Python library 'jmespath' (python3-jmespath)"
