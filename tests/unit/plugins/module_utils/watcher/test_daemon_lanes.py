# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The loop never goes blind: while a hook or a slow hold is in flight it polls, writes its metrics, notices new
events and approves them; a result is acted on as soon as it arrives; a stop is bounded.

On the rig (the simulator on a manual clock, a real hold record, real hooks): ManualExecutor keeps an action in
flight for as many ticks as a test likes, with no thread and no sleep. Two tests use the real threads, with a hook
or a hold command that blocks on a FIFO until the test writes to it; they wait on conditions only."""

from __future__ import annotations

import logging
import os
import select

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.lanes import ThreadExecutor
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import ManualExecutor

REBOOT_ID = "4CAEA225-A741-474D-A72E-428C86FCD853"
PREEMPT_ID = "1E5F1B9A-3C6D-4E8F-9A0B-2C3D4E5F6A7B"
REBOOT = {"id": REBOOT_ID, "type": "Reboot", "resources": ["myvm"], "at": 2, "notice": 900, "started_for": 60}
PREEMPT = {"id": PREEMPT_ID, "type": "Preempt", "resources": ["myvm"], "at": 5}
RULES = {"rules": [{"name": "spot", "when": "EventType=='Preempt'"}]}
BOUND = 60.0  # seconds: the bound on a condition in the threaded tests, generous for a loaded machine


def hooks_of(event_id):
    return "hooks %s" % event_id.lower()


def metrics_text(rig):
    return (rig.tmp / "metrics" / "imds_scheduled_events.prom").read_text()


def test_polls_notices_and_approves_while_a_reboots_pre_hook_runs(rig_factory):
    rig = rig_factory([REBOOT, PREEMPT])
    rig.hook("pre", "10-drain")
    rig.hook("post", "10-undrain")
    lanes = ManualExecutor()
    daemon = rig.daemon(approval=RULES, executor=lanes)
    for dummy in range(2):  # t=2: the Reboot appears
        rig.tick(daemon)
    assert lanes.run("hold")
    daemon.collect()
    assert lanes.waiting(hooks_of(REBOOT_ID)) == ["the pre-event hooks of %s" % REBOOT_ID]
    for dummy in range(3, 9):  # the drain runs on: every tick polls and rewrites the metrics
        requests = daemon.client.requests_sent
        rig.tick(daemon)
        assert daemon.client.requests_sent == requests + 1
        assert "imds_scheduled_events_last_successful_poll_timestamp_seconds %r\n" % rig.time.wall() in \
            metrics_text(rig)
        if lanes.waiting("urgent"):  # t=5: the Preempt appears
            assert lanes.run("urgent") and daemon.collect() is None
            assert lanes.run(hooks_of(PREEMPT_ID)) and daemon.collect() is None
            assert rig.event(PREEMPT_ID).approved_by == ["myvm"]
            approved_at = rig.time.now()
    assert approved_at == 5.0, "approved in the tick that saw it"
    assert lanes.waiting(hooks_of(REBOOT_ID)) == ["the pre-event hooks of %s" % REBOOT_ID], "the drain still runs"
    assert daemon.machine.record(REBOOT_ID)["state"] == "pre_hooks"
    assert lanes.run(hooks_of(REBOOT_ID))
    daemon.collect()  # the drain's end is acted on at once, not at the next poll
    assert daemon.machine.record(REBOOT_ID)["state"] == "ready"
    assert rig.hooks_ran()[-1] == "pre 10-drain %s Scheduled -" % REBOOT_ID

    rig.control("POST", "/events/%s/cancel" % REBOOT_ID)
    for dummy in range(6):
        rig.tick(daemon)
    assert daemon.machine.record(REBOOT_ID)["state"] == "post_hooks"
    assert not [label for label in lanes.waiting("hold") if REBOOT_ID in label], "the release waits for the post-hooks"
    assert lanes.run(hooks_of(REBOOT_ID))
    daemon.collect()
    assert lanes.waiting("hold")[-1] == "the release for %s" % REBOOT_ID
    lanes.run_all()
    daemon.collect()
    assert rig.transitions(REBOOT_ID)[-4:] == ["gone", "post_hooks", "releasing", "released"]


def test_a_hooks_result_wakes_the_loop_before_the_next_tick(rig_factory):
    rig = rig_factory([dict(REBOOT, at=1)])
    rig.hook("pre", "10-drain")
    lanes = ManualExecutor()
    daemon = rig.daemon(start=False, executor=lanes, poll_interval=4.0)
    polls = []

    def sleep(seconds):
        """Half a second of the wait; a job ends inside it, as a hook that ends between two polls."""
        rig.time.sleep(seconds)
        if lanes.run("hold") or lanes.run("hooks"):
            return
        if daemon.machine is not None and daemon.machine.record(REBOOT_ID) is not None \
                and daemon.machine.record(REBOOT_ID)["state"] == "ready":
            daemon.request_stop()

    daemon.sleep = sleep
    original_tick = daemon.tick
    daemon.tick = lambda: polls.append(rig.time.now()) or original_tick()
    assert daemon.run(install_signals=False) == 0
    ready = [e for e in rig.journal() if e["transition"] == "ready"][0]
    assert polls == [0.0, 4.0] and ready["ts"] == round(rig.time.wall() - rig.time.now() + 5.0, 3), \
        "held at 4.5 and hooked at 5.0, each acted on at once, not at the poll of 8.0"


def test_a_stop_starts_nothing_new_and_gives_what_is_queued_its_grace(rig_factory, caplog):
    rig = rig_factory([REBOOT])
    lanes = ManualExecutor()
    daemon = rig.daemon(executor=lanes)
    for dummy in range(2):
        rig.tick(daemon)
    assert lanes.waiting("hold") == ["the hold for %s" % REBOOT_ID] and lanes.waiting("notify")
    daemon.request_stop()
    began = rig.time.now()
    with caplog.at_level(logging.INFO, logger=rig.logger.name):
        daemon.stop()
    assert rig.time.now() - began == daemon.stop_grace, "the notifications got the grace, and not a second more"
    assert "watcher: stopping: not started: the hold for %s" % REBOOT_ID in caplog.text
    assert "watcher: stopping: not sent: the detected notification of %s" % REBOOT_ID in caplog.text
    assert rig.marks() == []
    daemon = rig.daemon()  # the next start holds it
    rig.tick(daemon)
    assert rig.marks() == ["hold %s" % REBOOT_ID]


def test_a_pre_hook_cut_short_by_a_crash_is_journaled_and_runs_again(rig_factory):
    rig = rig_factory([REBOOT])
    rig.hook("pre", "10-drain")
    lanes = ManualExecutor()
    daemon = rig.daemon(executor=lanes)
    for dummy in range(2):
        rig.tick(daemon)
    lanes.run("hold")
    daemon.collect()
    assert lanes.waiting(hooks_of(REBOOT_ID))  # in flight when the process dies
    daemon = rig.daemon()
    rig.tick(daemon)
    assert rig.transitions(REBOOT_ID)[-3:] == ["pre_hooks", "hooks_interrupted", "ready"]
    assert rig.hooks_ran() == ["pre 10-drain %s Scheduled -" % REBOOT_ID]


# --- the real threads -----------------------------------------------------------------------------


class Fifos(object):
    """`started`: a command writes a line when it runs; `go`: it reads a line before it ends. Every wait of the test
    is bounded and on a condition: select() on `started`, lanes.wait() on the daemon's results."""

    def __init__(self, tmp):
        self.started_path, self.go_path = str(tmp / "started"), str(tmp / "go")
        os.mkfifo(self.started_path)
        os.mkfifo(self.go_path)
        self.started = os.open(self.started_path, os.O_RDONLY | os.O_NONBLOCK)
        self.go = os.open(self.go_path, os.O_RDWR)  # never blocks; keeps the line until the command reads it

    def shell(self, first_line):
        return '%s; echo started > %s; read line < %s' % (first_line, self.started_path, self.go_path)

    def script(self, first_line):
        return ["/bin/sh", "-c", self.shell(first_line)]

    def wait_started(self):
        readable, dummy, dummy = select.select([self.started], [], [], BOUND)
        assert readable, "the command never started"
        os.read(self.started, 64)

    def release(self):
        os.write(self.go, b"go\n")

    def close(self):
        os.close(self.started)
        os.close(self.go)


def until(daemon, condition, what):
    """Act on the lanes' results until the condition holds; bounded by BOUND seconds without a result."""
    daemon.collect()
    while not condition():
        assert daemon.lanes.wait(BOUND), "no result came in %s s while waiting for %s" % (BOUND, what)
        daemon.collect()


def test_threads_a_preempts_quick_hold_overtakes_a_reboots_slow_hold_in_flight(rig_factory):
    """The Reboot's operator command runs (the hold lane holds the record's lock for it) when the Preempt appears:
    the Preempt is held (the guard) and approved before the command ends."""
    rig = rig_factory([REBOOT, PREEMPT])
    fifos = Fifos(rig.tmp)
    settings = rig.settings()
    settings["hold"]["guard"] = True
    settings["hold"]["commands"][0]["hold"] = fifos.script('echo "hold $IMDS_HOLD_REASON_ID" >> %s' % rig.marks_file)
    daemon = rig.daemon(approval=RULES, hold=settings["hold"], executor=ThreadExecutor())
    try:
        for dummy in range(2):
            rig.tick(daemon)
        fifos.wait_started()  # the Reboot's slow pass: the command runs and waits
        for dummy in range(3):
            rig.tick(daemon)  # t=5: the Preempt appears
        until(daemon, lambda: rig.event(PREEMPT_ID).approved_by, "the Preempt's approval")
        assert rig.marks() == ["hold %s" % REBOOT_ID]
        assert [label for dummy, label, dummy in daemon.lanes.running()] == ["the hold for %s" % REBOOT_ID]
        assert daemon.machine.record(REBOOT_ID)["state"] == "holding"
        reasons = dict((r["id"], r["targets"]) for r in rig.holds().status()["reasons"])
        assert reasons[PREEMPT_ID] == ["guard"]
        fifos.release()
        until(daemon, lambda: daemon.machine.record(REBOOT_ID)["state"] == "ready" and not daemon.deferred,
              "the Reboot's hold and the Preempt's slow pass")
        reasons = dict((r["id"], r["targets"]) for r in rig.holds().status()["reasons"])
        assert reasons == {REBOOT_ID: ["command:marker", "guard"], PREEMPT_ID: ["command:marker", "guard"]}
        assert rig.marks() == ["hold %s" % REBOOT_ID], "the command ran once, for the first reason"
    finally:
        fifos.release()
        fifos.close()


def test_threads_a_stop_logs_the_hook_it_leaves_running(rig_factory, caplog):
    rig = rig_factory([REBOOT])
    fifos = Fifos(rig.tmp)
    hook = rig.tmp / "hooks" / "pre" / "10-drain"
    hook.write_text("#!/bin/sh\n%s\n" % fifos.shell("true"))
    os.chmod(str(hook), 0o755)
    daemon = rig.daemon(executor=ThreadExecutor())
    try:
        for dummy in range(2):
            rig.tick(daemon)
        until(daemon, lambda: daemon.machine.record(REBOOT_ID)["state"] == "pre_hooks", "the pre-event hooks")
        fifos.wait_started()
        daemon.request_stop()
        daemon.stop_grace = 0.0
        with caplog.at_level(logging.INFO, logger=rig.logger.name):
            daemon.stop()
        assert "watcher: stopping with the pre-event hooks of %s still running" % REBOOT_ID in caplog.text
    finally:
        fifos.release()
        fifos.close()
    until(daemon, daemon.lanes.idle, "the hook's end")
