# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""event_info and event_approve against the simulator's faults and odd documents (one table,
tests/unit/utils/fault_matrix.py). Why: a playbook must get a clear failure or a right answer
from every IMDS misbehaviour, never a traceback, and event_approve must never approve an event
that is not this VM's alone and Scheduled, whatever the document looks like."""

from __future__ import annotations

import re

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import imds
from ansible_collections.imds.scheduled_events.plugins.modules import event_approve, event_info
from ansible_collections.imds.scheduled_events.tests.unit.utils.fault_matrix import (
    CASES, MINE, STATUSES, Served, expected_requests)
from ansible_collections.imds.scheduled_events.tests.unit.utils.module_runner import run_module

# What event_approve (defaults: this VM's Scheduled events, alone) must approve for each successful case.
APPROVED = {"status-%d-retried-once" % code: True for code in (404, 410, 429, 500, 503)}
APPROVED.update({"warm-up-2-minutes-scaled": True, "incarnation-reset": True, "underscore-names-2017-03-01": True,
                 "mixed-case-name": True, "notbefore-rfc1123": True, "notbefore-iso8601": True,
                 "unknown-event-type": True})


@pytest.fixture
def served():
    started = []

    def make(case):
        imds._WARMED.clear()  # every task is a new process: cold
        srv = Served(case)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def run(main, srv, **extra):
    case = srv.case
    args = dict({"endpoint": srv.endpoint, "vm_name": "myvm", "api_version": case.api_version,
                 "retries": case.retries}, **case.options)
    args.update(extra)
    return run_module(main, args)


def check_failure(case, result):
    assert re.search(case.fails, result["msg"]), result["msg"]
    assert result.get("status") == case.status
    assert "Traceback" not in result["msg"] and "\n" not in result["msg"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_event_info(served, name):
    case = CASES[name]
    srv = served(case)
    failed, result = run(event_info.main, srv)
    requests = expected_requests(case, result.get("msg", ""))
    log = srv.check_budget(requests)
    assert len(log) == requests
    if case.fails:
        assert failed
        check_failure(case, result)
        return
    assert not failed, result["msg"]
    events = dict((e["EventId"], e) for e in result["events"])
    if case.special == "cancel":
        assert events == {} and result["pending"] is False
        return
    event = events[MINE]
    if case.special != "unknown_type":
        assert not event.get("problems")
    scope = {"other-vms-only": "other_vms", "shared": "shared"}.get(name, "this_vm")
    assert event["scope"] == scope and event["affects_this_vm"] is (scope != "other_vms")
    if event["EventStatus"] == "Started":
        assert event["NotBefore"] == "" and event["not_before"] is None
        assert result["started_event_ids"] == [MINE] and result["in_progress"]
    else:
        assert event["not_before"] == "2025-06-15T15:15:00Z"  # the same instant whatever the form
        assert result["pending_event_ids"] == ([MINE] if scope != "other_vms" else [])
    if case.api_version == "2017-03-01":
        assert event["Resources"] == ["_myvm"] and event["NotBefore"] == "2025-06-15T15:15:00Z"
    elif event["EventStatus"] == "Scheduled":
        assert event["NotBefore"] == "Sun, 15 Jun 2025 15:15:00 GMT"
    if case.special == "unknown_type":
        assert event["EventType"] == "Hibernate" and "unknown EventType" in " ".join(event.get("problems"))
    if case.special == "reset":
        assert result["document_incarnation"] == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_event_approve(served, name):
    case = CASES[name]
    srv = served(case)
    failed, result = run(event_approve.main, srv)
    srv.check_budget()
    approvals = srv.world.approvals
    if case.fails:
        assert failed and approvals == []
        check_failure(case, result)
        return
    assert not failed, result["msg"]
    if APPROVED.get(name):
        assert result["approved"] == [MINE] and [a["event_id"] for a in approvals] == [MINE]
    else:
        assert result["approved"] == [] and approvals == [] and result["changed"] is False


@pytest.mark.parametrize("code", STATUSES)
def test_event_approve_post_fault_never_counts_as_approved(served, code):
    srv = served(CASES["notbefore-rfc1123"])
    srv.control("POST", "/faults", {"kind": "status", "code": code, "method": "POST"})
    failed, result = run(event_approve.main, srv)
    srv.check_budget()
    assert failed and "approving %s failed" % MINE in result["msg"] and "answered %d" % code in result["msg"]
    assert result["status"] == code and srv.world.approvals == []
    assert srv.world.event(MINE).state == "Scheduled"
