# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.events import Document, EventFilter, ThisVm
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsError
from ansible_collections.imds.scheduled_events.plugins.module_utils.waiting import WaitTimeout, wait_for_events

from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import answer

A = "00000000-0000-4000-8000-00000000000a"
VM = ThisVm("myvm")


def doc(status=None):
    events = [] if status is None else [{"EventId": A, "EventType": "Reboot", "Resources": ["myvm"],
                                         "EventStatus": status, "NotBefore": ""}]
    return Document.from_json({"DocumentIncarnation": 1, "Events": events})


class Script(object):
    """A client that answers from a list, and a clock that moves only when slept."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.now = 0.0
        self.within = []

    def get_document(self, within=None):
        self.within.append(within)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def wait(script, condition, timeout=60, interval=5):
    return wait_for_events(script, EventFilter(), VM, condition, timeout, interval, script.clock, script.sleep)


@pytest.mark.parametrize("condition, answers, polls", [
    ("none", [doc("Scheduled")], 1),
    ("present", [doc(), doc(), doc("Scheduled")], 3),
    ("started", [doc("Scheduled"), doc("Started")], 2),
    ("started", [doc("Scheduled"), doc()], 2),          # gone counts: it cannot start any more
    ("absent", [doc("Scheduled"), doc("Started"), doc()], 3),
])
def test_conditions(condition, answers, polls):
    outcome = wait(Script(*answers), condition)
    assert outcome.polls == polls
    assert outcome.waited == (polls - 1) * 5


def test_retryable_errors_are_waited_through():
    outcome = wait(Script(ImdsError("503", retryable=True), doc()), "absent")
    assert outcome.polls == 2


def test_other_errors_end_the_wait_at_once():
    with pytest.raises(ImdsError):
        wait(Script(ImdsError("400", status=400), doc()), "absent")


def test_timeout_reports_what_is_left_and_the_last_error():
    with pytest.raises(WaitTimeout) as caught:
        wait(Script(doc("Scheduled"), ImdsError("IMDS answered 410", retryable=True)), "absent", timeout=12)
    message = str(caught.value)
    assert "timed out after 10 s waiting for events to be absent" in message
    assert A in message and "last error: IMDS answered 410" in message
    assert caught.value.outcome.polls == 3


def test_each_read_is_given_what_is_left_of_the_wait():
    script = Script(doc("Scheduled"), doc("Scheduled"), doc())
    wait(script, "absent", timeout=60, interval=5)
    assert script.within == [60, 55, 50]


@pytest.mark.parametrize("condition, timeout", [("none", 60), ("absent", 0)])
def test_a_single_read_is_bounded_by_the_clients_deadline_alone(condition, timeout):
    script = Script(doc())
    wait(script, condition, timeout=timeout)
    assert script.within == [None]


def test_unknown_condition():
    with pytest.raises(ValueError):
        wait(Script(doc()), "gone")


def test_each_read_of_a_wait_is_bounded_by_what_is_left_of_it(server, make_client, clock, sleep):
    """A read that keeps failing (500 forever, retried for as long as it may) must not carry the wait past its
    timeout: the wait's time and the client's are one injected clock."""
    server.script(answer(200, {"DocumentIncarnation": 1, "Events": [
        {"EventId": A, "EventType": "Reboot", "Resources": ["myvm"], "EventStatus": "Scheduled", "NotBefore": ""}]}))
    server.default = answer(500, "boom")
    client = make_client(deadline=600, retries=1000, backoff=1.0, max_backoff=2.0)
    start = clock()
    with pytest.raises(WaitTimeout) as caught:
        wait_for_events(client, EventFilter(), VM, "absent", 20, 5, clock, sleep)
    assert clock() - start <= 20
    # the first read at 0 s; the second at 5 s, with 15 s left: attempts at 5, 6, 8 ... 18 s, then no room for one more
    assert str(caught.value) == (
        "timed out after 18 s waiting for events to be absent; still: %s Reboot Scheduled; last error: IMDS GET "
        "/metadata/scheduledevents: no answer within the 15 s left: 8 attempts in 13.0 s; another after 2.0 s of "
        "backoff would not fit; last: answered 500 Internal Server Error: boom" % A)
    assert len(server.requests) == 9 and caught.value.outcome.polls == 2
