# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The lanes the daemon hands its actions to: order within a lane and across lanes for one event, overtaking,
the bound, results delivered in the loop's thread; stepped by ManualExecutor (no threads), and the real
ThreadExecutor, where every wait is on a condition."""

from __future__ import annotations

import threading

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.lanes import Lanes, ThreadExecutor
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import ManualExecutor

BOUND = 30.0  # seconds: a generous bound on a condition that a loaded machine still meets


class Clock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def manual():
    executor = ManualExecutor()
    clock = Clock()
    return Lanes(executor, monotonic=clock), executor, clock


def recorder(log, name, value=None):
    return lambda: log.append(name) or value


def test_a_lane_runs_its_jobs_one_at_a_time_in_order_and_lanes_are_independent():
    lanes, executor, dummy = manual()
    ran, results = [], []
    for name in ("a1", "a2"):
        lanes.submit("a", name, recorder(ran, name, name.upper()), then=lambda v, e: results.append(v))
    lanes.submit("b", "b1", recorder(ran, "b1", "B1"), then=lambda v, e: results.append(v))
    assert executor.run("b") and not executor.run("c")
    assert executor.run("a")
    assert ran == ["b1", "a1"] and results == [], "results wait for the loop"
    assert lanes.ready() and lanes.deliver() == 2 and results == ["B1", "A1"]
    assert lanes.waiting() == [("a", "a2")] and not lanes.idle()
    executor.run_all()
    assert lanes.deliver() == 1 and results[-1] == "A2" and lanes.idle()


def test_first_overtakes_the_waiting_jobs_but_not_its_own_events():
    lanes, executor, dummy = manual()
    noop = recorder([], "x")
    lanes.submit("hold", "slow hold of the reboot", noop, order="reboot")
    lanes.submit("hold", "release of the freeze", noop, order="freeze")
    lanes.submit("hold", "release of the preempt", noop, order="preempt")
    lanes.submit("hold", "slow hold of preempt 2", noop, order="preempt2", first=True)
    lanes.submit("hold", "slow hold of the preempt", noop, order="preempt", first=True)
    assert [label for dummy, label in lanes.waiting()] == [
        "slow hold of preempt 2", "slow hold of the reboot", "release of the freeze", "release of the preempt",
        "slow hold of the preempt"]
    assert executor.run("hold")
    lanes.submit("hold", "another urgent one", noop, first=True)
    assert lanes.waiting()[0] == ("hold", "another urgent one"), "overtakes only what waits"


def test_an_events_jobs_follow_it_to_the_lane_of_its_outstanding_job():
    lanes, executor, dummy = manual()
    noop = recorder([], "x")
    assert lanes.submit("urgent", "quick hold of the preempt", noop, order="preempt")[0] == "urgent"
    assert lanes.pending("preempt") and not lanes.pending("reboot")
    assert lanes.submit("hold", "release of the preempt", noop, order="preempt")[0] == "urgent"
    assert lanes.submit("hold", "hold of the reboot", noop, order="reboot")[0] == "hold"
    executor.run_all()
    lanes.deliver()
    assert not lanes.pending("preempt")
    assert lanes.submit("hold", "hold of the preempt again", noop, order="preempt")[0] == "hold"


def test_the_bound_drops_the_oldest_waiting_job():
    lanes, dummy, dummy = manual()
    noop = recorder([], "x")
    dropped = [lanes.submit("notify", "n%d" % i, noop, bound=2)[1] for i in range(4)]
    assert [job and job.label for job in dropped] == [None, None, "n0", "n1"]
    assert lanes.waiting() == [("notify", "n2"), ("notify", "n3")]


def test_an_error_reaches_the_loop_and_the_lane_goes_on():
    lanes, executor, dummy = manual()
    seen = []

    def broken():
        raise RuntimeError("a bug")

    lanes.submit("a", "broken", broken, then=lambda v, e: seen.append((v, str(e))))
    lanes.submit("a", "fine", lambda: 7, then=lambda v, e: seen.append((v, e)))
    executor.run_all()
    lanes.deliver()
    assert seen == [(None, "a bug"), (7, None)]


def test_a_stop_drops_what_waits_and_reports_what_runs():
    lanes, executor, clock = manual()
    inside = []

    def long_job():
        clock.now += 12.0
        inside.append(lanes.running())
        return "done"

    lanes.submit("hooks x", "the pre-event hooks of x", long_job)
    lanes.submit("hooks x", "the post-event hooks of x", long_job)
    lanes.submit("notify", "a notification", long_job)
    assert executor.run("hooks")
    assert inside == [[("hooks x", "the pre-event hooks of x", 12.0)]]
    assert [job.label for job in lanes.drop_waiting(keep=("notify",))] == ["the post-event hooks of x"]
    assert lanes.waiting() == [("notify", "a notification")]


def test_deliver_hands_on_results_that_arrive_while_it_delivers():
    lanes, executor, dummy = manual()
    order = []

    def then_first(value, error):  # pylint: disable=unused-argument
        order.append(value)
        lanes.submit("b", "second", lambda: "second", then=lambda v, e: order.append(v))
        executor.run("b")

    lanes.submit("a", "first", lambda: "first", then=then_first)
    executor.run("a")
    assert lanes.deliver() == 2 and order == ["first", "second"]


# --- the real threads -----------------------------------------------------------------------------


def test_the_thread_executor_runs_lanes_side_by_side_and_wakes_the_loop():
    lanes = Lanes(ThreadExecutor())
    gate = threading.Event()
    started = threading.Event()
    results = []

    def blocked():
        started.set()
        assert gate.wait(BOUND)
        return "slow"

    lanes.submit("hooks a", "a slow hook", blocked, then=lambda v, e: results.append(v))
    assert started.wait(BOUND)
    lanes.submit("urgent", "a quick hold", lambda: "quick", then=lambda v, e: results.append(v))
    assert lanes.wait(BOUND), "the quick job's result wakes the loop while the slow one still runs"
    lanes.deliver()
    assert results == ["quick"]
    assert [label for dummy, label, dummy in lanes.running()] == ["a slow hook"]
    gate.set()
    assert lanes.wait(BOUND)
    lanes.deliver()
    assert results == ["quick", "slow"]


def test_the_thread_executor_starts_threads_only_for_work_and_lets_them_end():
    lanes = Lanes(ThreadExecutor())
    gate = threading.Event()
    threads = []

    def job():
        assert gate.wait(BOUND)
        threads.append(threading.current_thread())

    for index in range(3):
        lanes.submit("hold", "job %d" % index, job)
    gate.set()
    delivered = 0
    while delivered < 3:
        assert lanes.wait(BOUND)
        delivered += lanes.deliver()
    assert len(set(threads)) == 1 and threads[0] is not threading.current_thread(), "one thread for the lane's jobs"
    threads[0].join(BOUND)
    assert not threads[0].is_alive() and lanes.idle(), "an idle lane keeps no thread"
