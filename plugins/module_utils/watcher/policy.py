# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Approval rules: JMESPath expressions over an event's description.

A rule only says "this event may be approved early". Whether it is approved is
decided by the machine (held, pre-hooks passed) and by approval.py (never an
event that lists only other VMs; a shared one only when the rule allows it).
No rules means nothing is approved: the platform starts the event at NotBefore.

Every expression is compiled, checked against the keys an event has, and tried
on a sample of every event type when the config is loaded, so a typo is a
config error at start-up rather than a rule that silently never matches.
"""

from __future__ import annotations

import importlib

from ..events import AZURE_EVENT_KEYS, KNOWN_EVENT_TYPES

# What Event.describe(vm) returns: Azure's keys verbatim plus the derived ones.
DERIVED_KEYS = ("not_before", "duration_seconds", "seconds_until_start", "affects_this_vm", "shared", "scope",
                "problems")
EVENT_KEYS = tuple(AZURE_EVENT_KEYS) + DERIVED_KEYS


class PolicyError(ValueError):
    """A rule that cannot be used; the message names the rule."""


def load_jmespath():
    """jmespath and its error class, imported when the first rule is compiled: a watcher without approval rules
    (the default) never loads it, which keeps about 1 MB off its resident memory."""
    try:
        module = importlib.import_module("jmespath")
        exceptions = importlib.import_module("jmespath.exceptions")
    except ImportError:
        raise PolicyError("approval rules need the Python library 'jmespath' (python3-jmespath)") from None
    return module, exceptions.JMESPathError


def truthy(value):
    """JMESPath's truth: false, null, "" and empty lists and objects are false; 0 is true."""
    return not (value is None or value is False or (isinstance(value, (str, list, dict)) and not value))


def _fields(node, found):
    """Every field name an expression reads (the event is flat, so every field is a top-level key)."""
    if isinstance(node, dict):
        if node.get("type") == "field":
            found.add(node.get("value"))
        for child in node.get("children") or []:
            _fields(child, found)
    return found


def sample_events():
    """One plausible description per type, for trying rules at load time."""
    samples = []
    for index, event_type in enumerate(KNOWN_EVENT_TYPES + ("Unknown",)):
        samples.append({
            "EventId": "00000000-0000-0000-0000-%012d" % index, "EventType": event_type,
            "ResourceType": "VirtualMachine", "Resources": ["vm-a"], "EventStatus": "Scheduled",
            "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT", "Description": "", "EventSource": "Platform",
            "DurationInSeconds": 5 if event_type == "Freeze" else -1, "not_before": "2016-09-19T18:29:47Z",
            "duration_seconds": 5 if event_type == "Freeze" else -1, "seconds_until_start": 900,
            "affects_this_vm": True, "shared": False, "scope": "this_vm", "problems": [],
        })
    return samples


class Rule(object):
    def __init__(self, name, when, allow_shared=False):
        jmespath, self.error = load_jmespath()
        if not isinstance(name, str) or not name.strip():
            raise PolicyError("a rule needs a name")
        if not isinstance(when, str) or not when.strip():
            raise PolicyError("rule %s: 'when' must be a non-empty JMESPath expression" % name)
        self.name = name.strip()
        self.when = when.strip()
        self.allow_shared = bool(allow_shared)
        try:
            self.expression = jmespath.compile(self.when)
        except self.error as exc:
            raise PolicyError("rule %s: %r is not a JMESPath expression: %s" % (self.name, self.when, _one_line(exc)))
        unknown = sorted(f for f in _fields(self.expression.parsed, set()) if f not in EVENT_KEYS)
        if unknown:
            raise PolicyError("rule %s: %s %s not a key of an event (keys: %s)" % (
                self.name, ", ".join(unknown), "is" if len(unknown) == 1 else "are", ", ".join(EVENT_KEYS)))
        for sample in sample_events():
            try:
                self.expression.search(sample)
            except self.error as exc:
                raise PolicyError("rule %s: %r fails on a %s event: %s"
                                  % (self.name, self.when, sample["EventType"], _one_line(exc)))

    def matches(self, description):
        return truthy(self.expression.search(description))

    def as_dict(self):
        return {"name": self.name, "when": self.when, "allow_shared": self.allow_shared}

    def __repr__(self):
        return "Rule(%r)" % self.name


class Policy(object):
    """Rules in order; the first that matches names the approval."""

    def __init__(self, rules=()):
        self.rules = list(rules)
        names = [r.name for r in self.rules]
        for name in names:
            if names.count(name) > 1:
                raise PolicyError("two rules are named %s" % name)

    @classmethod
    def from_config(cls, specs):
        """specs: [{name, when, allow_shared}] (already shape-checked by config.py)."""
        return cls([Rule(s["name"], s["when"], s.get("allow_shared", False)) for s in specs])

    def match(self, description):
        """(the first matching rule or None, problems). A rule that fails at run time does not match."""
        problems = []
        for rule in self.rules:
            try:
                if rule.matches(description):
                    return rule, problems
            except rule.error as exc:
                problems.append("rule %s failed on %s: %s" % (rule.name, description.get("EventId"), _one_line(exc)))
        return None, problems


def _one_line(exc):
    return " ".join(str(exc).split())
