# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A fake machine at the hold library's edge: systemctl, puppet and operator commands
answered from memory, and a clock that only moves when the library sleeps.

It checks what a real machine would enforce: commands arrive as argument lists,
systemctl gets `--` before unit names, a masked unit cannot start, and runtime
masks do not override unit files in /etc/systemd/system.
"""

from __future__ import annotations

import copy
import json
import os

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.common import CommandResult


class FakeTime(object):
    """Wall clock and monotonic clock; sleep() advances both and never blocks."""

    def __init__(self):
        self.now = 1750000000.0
        self.slept = []

    def clock(self):
        return self.now

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


class Unit(object):
    def __init__(self, name, active="inactive", file_state="enabled", kind="simple", triggers=(), in_etc=False):
        self.name = name
        self.active = active
        self.sub = {"active": "waiting" if name.endswith(".timer") else "running", "inactive": "dead",
                    "activating": "start"}.get(active, "dead")
        self.file_state = file_state
        self.type = kind if name.endswith(".service") else ""
        self.triggers = list(triggers)
        self.in_etc = in_etc
        self.busy_until = None  # monotonic time at which a run in flight ends
        self.start_queued = False  # early in a boot: the boot's start job, not run yet

    def props(self, masked_runtime, persistent_masked):
        file_state = self.file_state
        if persistent_masked:
            file_state = "masked"
        elif masked_runtime and not self.in_etc:
            file_state = "masked-runtime"
        return {"LoadState": "masked" if file_state.startswith("masked") else "loaded", "ActiveState": self.active,
                "SubState": self.sub, "UnitFileState": file_state, "Type": self.type,
                "Triggers": " ".join(self.triggers)}


class FakeSystem(object):
    """Answers `run(argv, stdin=None, env=None, timeout=None)` like the library's default runner."""

    def __init__(self, time, puppet_lock=None):
        self.time = time
        self.units = {}
        self.runtime_masks = set()
        self.persistent_masks = set()
        self.calls = []
        self.commands = []          # (argv, env, stdin) of operator commands
        self.command_rc = {}        # program -> exit status
        self.puppet_lock = puppet_lock
        self.puppet_installed = True
        self.fail = {}              # (verb, unit) -> rc, to make a systemctl call fail
        self.on_call = None         # callback(argv) before each call, e.g. to crash

    # --- set up ---------------------------------------------------------

    def add(self, unit):
        self.units[unit.name] = unit
        return unit

    def ansible_pull(self, timer_active=True, timer_enabled=True, in_etc=False):
        self.add(Unit("ansible-pull.service", kind="oneshot", file_state="static", in_etc=in_etc))
        return self.add(Unit("ansible-pull.timer", active="active" if timer_active else "inactive",
                             file_state="enabled" if timer_enabled else "disabled",
                             triggers=["ansible-pull.service"], in_etc=in_etc))

    def start_run(self, service, seconds):
        """A run in flight that ends `seconds` from now."""
        unit = self.units[service]
        unit.active, unit.sub = ("activating", "start") if unit.type == "oneshot" else ("active", "running")
        unit.busy_until = self.time.monotonic() + seconds

    def reboot(self, early=False):
        """What a boot does: runtime masks (in /run) are gone, enabled units start, runs in flight are over.
        `early`: as imds-watcher-boot.service sees it, before sysinit.target: enabled units are inactive with the
        boot's start job queued, which `stop` cancels; finish_boot() runs the jobs left."""
        self.runtime_masks.clear()
        for unit in self.units.values():
            unit.active, unit.sub = "inactive", "dead"
            unit.busy_until = None
            unit.start_queued = unit.file_state == "enabled" and unit.name not in self.persistent_masks
        if not early:
            self.finish_boot()

    def finish_boot(self):
        """The boot's start jobs run: a unit masked meanwhile fails to start and stays inactive."""
        for unit in self.units.values():
            if unit.start_queued and not self._masked(unit):
                unit.active, unit.sub = "active", "waiting" if unit.name.endswith(".timer") else "running"
            unit.start_queued = False

    def _masked(self, unit):
        return unit.name in self.persistent_masks or (unit.name in self.runtime_masks and not unit.in_etc)

    # --- the machine's state, to compare before and after ----------------

    def snapshot(self):
        return {
            "units": dict((n, (u.active, u.props(n in self.runtime_masks, n in self.persistent_masks)["UnitFileState"]))
                          for n, u in sorted(self.units.items())),
            "puppet": self.read_puppet(),
        }

    def state(self):
        """Everything, for crash tests that rewind the machine."""
        return copy.deepcopy({"units": self.units, "runtime": self.runtime_masks, "persistent": self.persistent_masks,
                              "puppet": self.read_puppet(), "commands": self.commands})

    def restore(self, saved):
        saved = copy.deepcopy(saved)
        self.units = saved["units"]
        self.runtime_masks = saved["runtime"]
        self.persistent_masks = saved["persistent"]
        self.commands = saved["commands"]
        self.write_puppet(saved["puppet"])

    def read_puppet(self):
        if self.puppet_lock is None or not os.path.exists(self.puppet_lock):
            return None
        with open(self.puppet_lock, encoding="utf-8") as handle:
            return json.load(handle).get("disabled_message")

    def write_puppet(self, message):
        if self.puppet_lock is None:
            return
        if message is None:
            if os.path.exists(self.puppet_lock):
                os.unlink(self.puppet_lock)
            return
        with open(self.puppet_lock, "w", encoding="utf-8") as handle:
            json.dump({"disabled_message": message}, handle)

    # --- the runner -----------------------------------------------------

    def run(self, argv, stdin=None, env=None, timeout=None):
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argv
        self.calls.append(list(argv))
        if self.on_call:
            self.on_call(list(argv))
        self._finish_runs()
        program = os.path.basename(argv[0])
        if program == "systemctl":
            return self._systemctl(argv)
        if program == "puppet":
            return self._puppet(argv)
        self.commands.append((list(argv), dict(env or {}), stdin))
        return CommandResult(argv, self.command_rc.get(argv[0], 0), "", "")

    def _finish_runs(self):
        for unit in self.units.values():
            if unit.busy_until is not None and self.time.monotonic() >= unit.busy_until:
                unit.busy_until = None
                unit.active, unit.sub = "inactive", "dead"

    def _systemctl(self, argv):
        assert "--" in argv, "unit names must follow --: %r" % argv
        split = argv.index("--")
        verb, options, names = argv[1], argv[2:split], argv[split + 1:]
        assert len(names) == 1
        name = names[0]
        unit = self.units.get(name)
        if (verb, name) in self.fail:
            return CommandResult(argv, self.fail[(verb, name)], "", "Failed to %s %s: injected" % (verb, name))
        if verb == "show":
            wanted = options[0].split("=", 1)[1].split(",")
            if unit is None:
                props = {"LoadState": "not-found", "ActiveState": "inactive", "SubState": "dead", "UnitFileState": "",
                         "Type": "", "Triggers": ""}
            else:
                props = unit.props(name in self.runtime_masks, name in self.persistent_masks)
            return CommandResult(argv, 0, "".join("%s=%s\n" % (k, props[k]) for k in wanted), "")
        if unit is None:
            return CommandResult(argv, 5, "", "Unit %s not found." % name)
        if verb == "stop":
            assert options in ([], ["--no-block"]), options
            unit.active, unit.sub, unit.busy_until, unit.start_queued = "inactive", "dead", None, False
        elif verb == "start":
            if self._masked(unit):
                return CommandResult(argv, 1, "", "Failed to start %s: Unit %s is masked." % (name, name))
            unit.active, unit.sub = "active", "waiting" if name.endswith(".timer") else "running"
        elif verb == "mask":
            assert options == ["--runtime"], options
            self.runtime_masks.add(name)
        elif verb == "unmask":
            assert options == ["--runtime"], options
            self.runtime_masks.discard(name)
        else:
            raise AssertionError("unexpected systemctl call %r" % argv)
        return CommandResult(argv, 0, "", "")

    def _puppet(self, argv):
        if not self.puppet_installed:
            return CommandResult(argv, 127, "", "%s: No such file or directory" % argv[0])
        if argv[1:] == ["config", "print", "agent_disabled_lockfile"]:
            return CommandResult(argv, 0, self.puppet_lock + "\n", "")
        if argv[1:3] == ["agent", "--disable"]:
            if self.read_puppet() is None:  # puppet keeps the first message
                self.write_puppet(argv[3] if len(argv) > 3 else "reason not specified")
            return CommandResult(argv, 0, "", "")
        if argv[1:] == ["agent", "--enable"]:
            self.write_puppet(None)
            return CommandResult(argv, 0, "", "")
        raise AssertionError("unexpected puppet call %r" % argv)
