# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A rig for the daemon: the simulator on 127.0.0.1 with a manual clock that the daemon, its
client and the simulator's rate limit all read, a real hold record driven by harmless operator
commands, a real hooks directory, and every file in tmp_path. Tests step it tick by tick."""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import HoldManager
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsClient
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import config as config_mod
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.cli import PrintableMessages
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.daemon import Daemon
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.journal import Journal
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.notify import Notifier, Syslog
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import (
    TRUST, UID, InlineExecutor)
from ansible_collections.imds.scheduled_events.tests.unit.utils.fault_matrix import HeldSleep

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", ".."))
SIMULATOR_DIR = os.path.join(ROOT, "simulator")
if SIMULATOR_DIR not in sys.path:
    sys.path.insert(0, SIMULATOR_DIR)

from imds_simulator.simulator import Simulator  # noqa: E402  pylint: disable=wrong-import-position,import-error

START = "2025-06-15T15:00:00Z"
START_EPOCH = datetime.datetime(2025, 6, 15, 15, 0, 0, tzinfo=datetime.timezone.utc).timestamp()

RECORD_HOOK = """#!/bin/sh
printf '%%s %%s %%s %%s %%s\\n' "$IMDS_HOOK_PHASE" "$(basename "$0")" "$IMDS_EVENT_ID" "$IMDS_EVENT_STATUS" \
    "${IMDS_EVENT_OUTCOME:--}" >> %s
exit %d
"""


class SimTime(object):
    """Simulated seconds: the daemon's monotonic clock, its wall clock (from START) and its sleep."""

    def __init__(self):
        self.sim = None

    def now(self):
        return self.sim.world.now() if self.sim is not None else 0.0

    def wall(self):
        return START_EPOCH + self.now()

    def sleep(self, seconds):
        if self.sim is not None and seconds > 0:
            self.sim.world.advance(seconds)


class Rig(object):
    def __init__(self, tmp_path, sim, time):
        self.tmp = tmp_path
        self.sim = sim
        self.time = time
        for name in ("state", "holds", "hooks", "hooks/pre", "hooks/post", "etc", "metrics"):
            path = tmp_path / name
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(str(path), 0o755)
        self.marks_file = tmp_path / "marks"
        self.hooks_file = tmp_path / "hooks-ran"
        self.syslog = []
        self.logger = logging.getLogger("imds-watcher-test")
        if not any(isinstance(f, PrintableMessages) for f in self.logger.filters):  # as `imds-watcher run` sets it up
            self.logger.addFilter(PrintableMessages())

    # --- configuration -----------------------------------------------------------------

    def settings(self, **overrides):
        marks = str(self.marks_file)
        data = {
            "vm_name": "myvm",
            "state_dir": str(self.tmp / "state"),
            "hooks_dir": str(self.tmp / "hooks"),
            "hook_timeout": 10,
            "metrics_file": str(self.tmp / "metrics" / "imds_scheduled_events.prom"),
            "hold": {"state_file": str(self.tmp / "holds" / "holds.json"), "commands": [{
                "name": "marker",
                "hold": ["/bin/sh", "-c", 'echo "hold $IMDS_HOLD_REASON_ID" >> %s' % marks],
                "release": ["/bin/sh", "-c", 'echo "release $IMDS_HOLD_REASON_ID" >> %s' % marks]}]},
            "notify": {"syslog": True},
        }
        data.update(overrides)
        return data

    def config(self, **overrides):
        return config_mod.parse(self.settings(**overrides), path=str(self.tmp / "etc" / "watcher.json"))

    def write_config(self, **overrides):
        path = self.tmp / "etc" / "watcher.json"
        path.write_text(json.dumps(self.settings(**overrides)))
        os.chmod(str(path), 0o644)
        return str(path)

    def client(self):
        # generous: every tick is a real loopback request, which a loaded machine can hold up for seconds
        return ImdsClient(endpoint=self.sim.endpoint("myvm"), retries=0, timeout=30, first_timeout=60,
                          clock=self.time.now, sleep=self.time.sleep)

    def holds(self):
        return HoldManager(state_file=str(self.tmp / "holds" / "holds.json"), owner_uid=UID)

    def daemon_options(self, boot="boot-a"):
        return {"client": self.client(), "holds": self.holds(), "clock": self.time.wall, "monotonic": self.time.now,
                "sleep": self.time.sleep, "boot_id": boot, "logger": self.logger,
                "notifier": Notifier([Syslog(self.syslog.append)], logger=self.logger), "executor": InlineExecutor()}

    def daemon(self, boot="boot-a", start=True, executor=None, **overrides):
        """A daemon on this rig; `executor` replaces the inline one (helpers.ManualExecutor: jobs run when told)."""
        options = self.daemon_options(boot)
        if executor is not None:
            options["executor"] = executor
        daemon = Daemon(self.config(**overrides), trust=TRUST, **options)
        if start:
            daemon.start()
        return daemon

    def hook(self, phase, name, rc=0, event_type=None):
        directory = self.tmp / "hooks" / phase
        if event_type:
            directory = directory / event_type
            directory.mkdir(exist_ok=True)
            os.chmod(str(directory), 0o755)
        path = directory / name
        path.write_text(RECORD_HOOK % (self.hooks_file, rc))
        os.chmod(str(path), 0o755)

    # --- driving and reading -------------------------------------------------------------

    def advance(self, seconds, settle=False):
        """Move simulated time; with settle, listeners of rebooting VMs close and reopen on schedule
        (that waits for the listener thread, so plain ticks skip it)."""
        self.sim.world.advance(seconds)
        if settle:
            self.sim.settle()

    def tick(self, daemon, seconds=1.0):
        self.advance(seconds)
        return daemon.tick()

    def control(self, method, path, body=None):
        reply = self.sim.control.handle(method, path, json.dumps(body or {}).encode())
        assert reply.status < 300, reply.body
        return json.loads(reply.body) if reply.body else None

    def marks(self):
        return self.marks_file.read_text().splitlines() if self.marks_file.exists() else []

    def hooks_ran(self):
        return self.hooks_file.read_text().splitlines() if self.hooks_file.exists() else []

    def journal(self):
        return Journal(str(self.tmp / "state" / "journal.jsonl")).entries()

    def transitions(self, event_id):
        return [e["transition"] for e in self.journal() if e["event_id"].lower() == event_id.lower()]

    def event(self, event_id):
        return self.sim.world.event(event_id)


@pytest.fixture
def rig_factory(tmp_path):
    started = []

    def make(events, vms=None, faults=None):
        scenario = {"name": "watcher", "clock": "manual", "start_time": START, "events": events,
                    "vms": vms or [{"name": "myvm", "availability_set": "as1"},
                                   {"name": "myvm-peer", "availability_set": "as1"}]}
        if faults:
            scenario["faults"] = faults
        time = SimTime()
        held = HeldSleep()  # delay / warmup faults: real seconds, or until rig.held.release()
        sim = Simulator.from_scenario(scenario, port=0, control_port=None, monotonic=time.now, sleep=held)
        time.sim = sim
        sim.start()
        started.append((sim, held))
        rig = Rig(tmp_path, sim, time)
        rig.held = held
        return rig

    yield make
    for sim, held in started:
        held.close()
        sim.stop()
