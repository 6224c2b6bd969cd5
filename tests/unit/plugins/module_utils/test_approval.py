# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import approval
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import Document, EventFilter, ThisVm
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsError

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
C = "00000000-0000-4000-8000-00000000000c"
D = "00000000-0000-4000-8000-00000000000d"
VM = ThisVm("myvm")


def doc(*events):
    return Document.from_json({"DocumentIncarnation": 1, "Events": [
        {"EventId": i, "EventType": t, "Resources": r, "EventStatus": s, "NotBefore": ""} for i, t, r, s in events]})


DOC = doc((A, "Reboot", ["myvm"], "Scheduled"), (B, "Freeze", ["myvm", "peer"], "Scheduled"),
          (C, "Redeploy", ["peer"], "Scheduled"), (D, "Reboot", ["_MYVM"], "Started"))


def test_plan_without_names_keeps_quiet_about_other_vms_events():
    plan = approval.plan(DOC, VM, EventFilter())
    assert plan.approve_ids == [A]
    assert [(s.event_id, s.reason) for s in plan.skipped] == [(B, approval.SHARED), (D, approval.ALREADY_STARTED)]
    assert plan.missing == []


def test_plan_with_names_explains_every_refusal():
    plan = approval.plan(DOC, VM, EventFilter(event_ids=[C, B]), requested_ids=[C, B, "x"], allow_shared=True)
    assert plan.approve_ids == [B]
    assert [(s.event_id, s.reason) for s in plan.skipped] == [(C, approval.NOT_THIS_VM)]
    assert plan.missing == ["x"]


def test_nothing_is_approved_for_a_vm_whose_name_is_unknown():
    """Approving an event starts it for every VM it lists: without this VM's name, any event may be a peer's."""
    plan = approval.plan(DOC, ThisVm.unknown(), EventFilter(), allow_shared=True)
    assert plan.approve_ids == []
    assert [(s.event_id, s.reason) for s in plan.skipped] == [(i, approval.NAME_UNKNOWN) for i in (A, B, C, D)]
    assert plan.skipped[2].detail == "cannot tell whether it lists this VM: peer"


class Client(object):
    def __init__(self, post_error=None, document=None):
        self.post_error = post_error
        self.document = document
        self.posted = []

    def approve(self, ids):
        self.posted.append(list(ids))
        if self.post_error:
            raise self.post_error

    def get_document(self):
        if isinstance(self.document, Exception):
            raise self.document
        return self.document


def test_approve_posts_once():
    client = Client()
    plan = approval.plan(DOC, VM, EventFilter(), allow_shared=True)
    assert approval.approve_and_confirm(client, plan) == ([A, B], [])
    assert client.posted == [[A, B]]


def test_a_failed_post_is_forgiven_only_for_events_that_moved_on():
    moved_on = doc((A, "Reboot", ["myvm"], "Started"))
    client = Client(ImdsError("answered 400"), moved_on)
    plan = approval.plan(DOC, VM, EventFilter(), allow_shared=True)
    approved, skips = approval.approve_and_confirm(client, plan)
    assert approved == []
    assert [(s.event_id, s.reason) for s in skips] == [(A, approval.ALREADY_STARTED), (B, approval.NOT_IN_DOCUMENT)]


@pytest.mark.parametrize("after", [DOC, ImdsError("still broken")])
def test_a_failed_post_stands_when_an_event_is_still_scheduled_or_unknown(after):
    error = ImdsError("answered 400")
    client = Client(error, after)
    with pytest.raises(ImdsError) as caught:
        approval.approve_and_confirm(client, approval.plan(DOC, VM, EventFilter()))
    assert caught.value is error
