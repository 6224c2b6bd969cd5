# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What can be held, and how: systemd units, the guard, puppet, operator commands.

Each backend answers inspect() (the state before the hold, recorded before anything
is touched), plan() (the steps, recorded too), hold(record) and release(record).
Every step is idempotent and is checked against the live system before it acts, so
running hold or release again after a crash finishes the job instead of doing it
twice. Release undoes only the steps the hold planned: what the hold did not stop,
mask or disable is never started, unmasked or enabled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

from .common import (DEFAULT_COMMAND_TIMEOUT, DEFAULT_WAIT_TIMEOUT, BackendError, WaitTimeout, c_locale_env,
                     env_text, format_argv, one_line, run_command)

SYSTEMCTL = "systemctl"
SYSTEMCTL_TIMEOUT = 300
POLL_INTERVAL = 0.5
PUPPET_MARKER = "imds-scheduled-events hold"
PUPPET_TIMEOUT = 180
PUPPET_EXTRA_PATH = "/opt/puppetlabs/bin"
MAX_PUPPET_MESSAGE = 400

_UNIT = re.compile(r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]+)?\.(service|timer)$")
_COMMAND_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_BUSY = ("activating", "deactivating", "reloading", "refreshing")
_RUNNING = ("active", "activating", "reloading", "refreshing")


class Context(object):
    """The edges a backend touches, injectable for tests: commands, time, the record's store."""

    def __init__(self, run=run_command, monotonic=time.monotonic, sleep=time.sleep, store=None,
                 poll_interval=POLL_INTERVAL, environ=None):
        self.run = run
        self.monotonic = monotonic
        self.sleep = sleep
        self.store = store
        self.poll_interval = poll_interval
        self.environ = os.environ if environ is None else environ


class Target(object):
    """One thing to hold: backend kind, name and settings. Build it with a backend's target()."""

    def __init__(self, kind, name, settings):
        self.kind = kind
        self.name = name
        self.settings = settings

    @property
    def key(self):
        return target_key(self.kind, self.name)

    def __repr__(self):
        return "Target(%r)" % self.key


def target_key(kind, name):
    """How the record names a target: systemd:<unit>, command:<name>, puppet, guard."""
    if kind in (PuppetBackend.kind, GuardBackend.kind):
        return kind
    return "%s:%s" % (kind, name)


class Backend(object):
    kind = None

    def __init__(self, name, settings, context):
        self.name = name
        self.settings = dict(settings or {})
        self.ctx = context

    @property
    def key(self):
        return target_key(self.kind, self.name)

    def inspect(self):
        """The state before the hold; recorded before the first step."""
        return {}

    def plan(self, prior, reason):
        """Steps for hold() as {"actions": [...], "applied": {...}, "notes": [...]}."""
        raise NotImplementedError

    def hold(self, record, progress=None):
        """Do the planned steps not yet done; returns what changed. progress(step) after each."""
        raise NotImplementedError

    def release(self, record, progress=None):
        """Undo the planned steps, newest first; returns what changed. progress(step) after each."""
        raise NotImplementedError

    def reassert(self, record):
        """Redo what a reboot undid of a completed hold; returns what changed. Most holds survive a boot."""
        return []

    def at_boot(self, record):
        """Early in a boot, before drift correction can start: put back what the boot undoes of a hold, done or
        in progress, without waiting for anything; returns what changed. Most holds survive a boot."""
        return []

    @staticmethod
    def summary(record):
        """One line for status: what the hold did and what release will do."""
        return ""

    def step_text(self, action, undo=False):
        return "%s %s" % ("undo" if undo else action, self.key)

    def _run(self, argv, timeout, **kwargs):
        return self.ctx.run(argv, timeout=timeout, **kwargs)


def _note(record, text):
    notes = record.setdefault("notes", [])
    if text not in notes:
        notes.append(text)


def _report(progress, action):
    if progress is not None:
        progress(action)


# --- systemd -----------------------------------------------------------------


def normalize_unit(name):
    """systemctl's own default: a name without a type is a service. Only services and timers."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a systemd unit name must not be empty")
    unit = name.strip()
    if not re.search(r"\.[a-z]+$", unit):
        unit += ".service"
    if not _UNIT.match(unit) or unit.startswith("-"):
        raise ValueError("%r is not the name of a systemd service or timer (for example ansible-pull.timer)" % name)
    return unit


def _masked_by(record):
    """Whether the hold masked the unit. A mask that a unit file in /etc/systemd/system overrides is taken out of
    the actions (and still counts as a step done), so both must say it."""
    return "mask" in record["actions"] and "mask" in (record.get("done") or [])


class SystemdBackend(Backend):
    """Timers and services. A timer is stopped, then the run it started is waited for;
    a oneshot service is waited for; any other running service is stopped."""

    kind = "systemd"
    PROPERTIES = ("LoadState", "ActiveState", "SubState", "UnitFileState", "Type", "Triggers")

    @classmethod
    def target(cls, unit, mask=False, wait_timeout=DEFAULT_WAIT_TIMEOUT):
        if wait_timeout is None or wait_timeout < 0:
            raise ValueError("systemd wait_timeout must be zero or more seconds")
        return Target(cls.kind, normalize_unit(unit), {"mask": bool(mask), "wait_timeout": wait_timeout})

    @property
    def is_timer(self):
        return self.name.endswith(".timer")

    def show(self, unit, properties=PROPERTIES):
        result = self._run([SYSTEMCTL, "show", "--property=" + ",".join(properties), "--", unit],
                           SYSTEMCTL_TIMEOUT, env=c_locale_env())
        if not result.ok:
            raise BackendError("cannot read the state of %s: %s" % (unit, result.describe()))
        values = {}
        for line in result.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
        return values

    def _systemctl(self, *args):
        argv = [SYSTEMCTL] + list(args[:-1]) + ["--", args[-1]]
        result = self._run(argv, SYSTEMCTL_TIMEOUT, env=c_locale_env())
        if not result.ok:
            raise BackendError(result.describe())
        return result

    def inspect(self):
        props = self.show(self.name)
        if props.get("LoadState") == "not-found":
            raise BackendError("systemd unit %s is not installed on this machine" % self.name)
        prior = dict((k, props.get(k, "")) for k in self.PROPERTIES if k != "Triggers")
        prior["Triggers"] = props.get("Triggers", "").split()
        return prior

    def plan(self, prior, reason):
        actions = []
        notes = []
        running = prior.get("ActiveState") in _RUNNING
        oneshot = not self.is_timer and prior.get("Type") == "oneshot"
        if running and not oneshot:
            actions.append("stop")
        elif oneshot:
            notes.append("%s is a oneshot service: the hold waits for a run in flight but neither stops nor starts it"
                         % self.name)
        else:
            notes.append("%s was %s (%s) before the hold: the hold does not stop it and release will not start it"
                         % (self.name, prior.get("ActiveState") or "unknown", prior.get("UnitFileState") or "?"))
        if self.settings.get("wait_timeout", 0) > 0 and (self.is_timer or oneshot):
            actions.append("wait")
        if self.settings.get("mask") and prior.get("UnitFileState") not in ("masked", "masked-runtime"):
            actions.append("mask")
        return {"actions": actions, "applied": {}, "notes": notes}

    def step_text(self, action, undo=False):
        if action == "stop":
            return ("start %s" if undo else "stop %s") % self.name
        if action == "mask":
            return ("unmask %s (runtime)" if undo else "mask %s (runtime)") % self.name
        return "wait for the run in flight of %s to finish" % self.name

    def _waited_units(self, record):
        if self.is_timer:
            return list(record.get("prior", {}).get("Triggers") or [])
        return [self.name]

    def _in_flight(self, units):
        busy = []
        for unit in units:
            props = self.show(unit, ("ActiveState", "SubState"))
            state = props.get("ActiveState")
            if state in _BUSY or (state == "active" and props.get("SubState") == "running"):
                busy.append(unit)
        return busy

    def hold(self, record, progress=None):
        changes = []
        for action in list(record["actions"]):
            if action in record["done"]:
                continue
            if action == "stop":
                if self.show(self.name, ("ActiveState",)).get("ActiveState") not in ("inactive", "failed"):
                    self._systemctl("stop", self.name)
                    changes.append("stop %s" % self.name)
            elif action == "wait":
                waited = self._wait(record)
                if waited:
                    changes.append("wait for %s to finish" % ", ".join(waited))
            elif action == "mask":
                changes.extend(self._mask(record))
            _report(progress, action)
        return changes

    def _wait(self, record):
        units = self._waited_units(record)
        timeout = self.settings.get("wait_timeout", DEFAULT_WAIT_TIMEOUT)
        deadline = self.ctx.monotonic() + timeout
        busy = self._in_flight(units)
        first = list(busy)
        while busy:
            if self.ctx.monotonic() >= deadline:
                raise WaitTimeout("%s still running after %s s; %s stays held (stopped), so no new run starts. "
                                  "Hold again to keep waiting, or raise the wait timeout"
                                  % (", ".join(busy), timeout, self.name))
            self.ctx.sleep(self.ctx.poll_interval)
            busy = self._in_flight(units)
        return first

    def _mask(self, record):
        if self.show(self.name, ("UnitFileState",)).get("UnitFileState") == "masked-runtime":
            return []
        self._systemctl("mask", "--runtime", self.name)
        if self.show(self.name, ("UnitFileState",)).get("UnitFileState") == "masked-runtime":
            return ["mask %s (runtime)" % self.name]
        # A unit file in /etc/systemd/system outranks /run, where runtime masks live.
        self._systemctl("unmask", "--runtime", self.name)
        record["actions"].remove("mask")
        _note(record, "%s could not be masked: its unit file in /etc/systemd/system takes precedence over a runtime "
                      "mask; it is stopped but not masked" % self.name)
        return []

    def release(self, record, progress=None):
        changes = []
        for action in reversed(list(record["actions"])):
            if action == "mask":
                if self.show(self.name, ("UnitFileState",)).get("UnitFileState") == "masked-runtime":
                    self._systemctl("unmask", "--runtime", self.name)
                    changes.append("unmask %s (runtime)" % self.name)
            elif action == "stop":
                changes.extend(self._start_again(record))
            _report(progress, action)
        return changes

    def reassert(self, record):
        """An enabled timer comes back at boot and a runtime mask lives in /run: a hold that outlives a reboot
        (an operator's, or one for an event still pending) must stop and mask again."""
        done = record.get("done") or []
        changes = []
        if "stop" in done and self.show(self.name, ("ActiveState",)).get("ActiveState") in _RUNNING:
            self._systemctl("stop", self.name)
            changes.append("stop %s again (it came back at boot)" % self.name)
        if _masked_by(record) and self.show(self.name, ("UnitFileState",)).get("UnitFileState") != "masked-runtime":
            self._systemctl("mask", "--runtime", self.name)
            changes.append("mask %s (runtime) again (runtime masks end at boot)" % self.name)
        return changes

    def at_boot(self, record):
        """An enabled timer or service has a start job queued from the boot's first moment, and the runtime mask is
        gone with /run. `stop --no-block` replaces that start job (so the unit never starts, and a timer never
        fires) without waiting for any job; the mask is put back when the hold had masked. Never starts anything."""
        changes = []
        if "stop" in record["actions"]:  # done, or planned by a hold that a crash or the reboot cut short
            result = self._run([SYSTEMCTL, "stop", "--no-block", "--", self.name], SYSTEMCTL_TIMEOUT,
                               env=c_locale_env())
            if result.ok:
                changes.append("stop %s (its start at boot is cancelled)" % self.name)
            elif self.show(self.name, ("LoadState",)).get("LoadState") == "not-found":
                _note(record, "%s is not installed any more: nothing to stop" % self.name)
            else:
                raise BackendError(result.describe())
        if _masked_by(record) and self.show(self.name, ("UnitFileState",)).get("UnitFileState") != "masked-runtime":
            self._systemctl("mask", "--runtime", self.name)
            changes.append("mask %s (runtime) again (runtime masks end at boot)" % self.name)
        return changes

    def _start_again(self, record):
        props = self.show(self.name, ("LoadState", "ActiveState", "UnitFileState"))
        if props.get("ActiveState") in _RUNNING:
            return []
        if props.get("LoadState") == "masked" or props.get("UnitFileState") in ("masked", "masked-runtime"):
            _note(record, "%s is masked, not by this hold: left stopped" % self.name)
            return []
        self._systemctl("start", self.name)
        return ["start %s" % self.name]

    @staticmethod
    def summary(record):
        prior = record.get("prior", {})
        was = "%s, %s" % (prior.get("ActiveState") or "?", prior.get("UnitFileState") or "?")
        did = []
        if "stop" in record["actions"]:
            did.append("stopped")
        if "mask" in record["actions"]:
            did.append("masked (runtime)")
        if not did:
            return "left as it was (%s); nothing to restore" % was
        return "%s by the hold (was %s); release restores that" % (" and ".join(did), was)


# --- imds-drift-guard --------------------------------------------------------


class GuardBackend(Backend):
    """Jobs wrapped in imds-drift-guard skip while this target is held. Holding waits
    for guarded runs already in flight; releasing only drops the record."""

    kind = "guard"
    NAME = "imds-drift-guard"

    @classmethod
    def target(cls, wait_timeout=DEFAULT_WAIT_TIMEOUT):
        if wait_timeout is None or wait_timeout < 0:
            raise ValueError("guard wait_timeout must be zero or more seconds")
        return Target(cls.kind, cls.NAME, {"wait_timeout": wait_timeout})

    def inspect(self):
        return {"runs_in_flight": bool(self.ctx.store and self.ctx.store.guard_runs_in_flight())}

    def plan(self, prior, reason):
        actions = ["wait"] if self.settings.get("wait_timeout", 0) > 0 else []
        return {"actions": actions, "applied": {}, "notes": []}

    def step_text(self, action, undo=False):
        if undo:
            return "let guarded jobs run again"
        return "wait for guarded jobs in flight to finish"

    def hold(self, record, progress=None):
        changes = []
        if "wait" in record["actions"] and "wait" not in record["done"] and self.ctx.store is not None:
            in_flight = self.ctx.store.guard_runs_in_flight()
            timeout = self.settings.get("wait_timeout", DEFAULT_WAIT_TIMEOUT)
            if in_flight and not self.ctx.store.wait_for_guard_runs(timeout):
                raise WaitTimeout("a job started by imds-drift-guard is still running after %s s; new guarded runs "
                                  "already skip. Hold again to keep waiting" % timeout)
            if in_flight:
                changes.append("wait for guarded jobs in flight to finish")
            _report(progress, "wait")
        return changes

    def release(self, record, progress=None):
        for action in reversed(list(record["actions"])):
            _report(progress, action)
        return []

    @staticmethod
    def summary(record):
        return "jobs run through imds-drift-guard exit 0 without running; release lets them run again"


# --- puppet ------------------------------------------------------------------


def read_puppet_lock(path):
    """(disabled, message) from puppet's agent_disabled_lockfile; message None when unreadable."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            text = handle.read(65536)
    except FileNotFoundError:
        return False, None
    except OSError:
        return True, None
    try:
        data = json.loads(text)
    except ValueError:
        return True, None
    message = data.get("disabled_message") if isinstance(data, dict) else None
    return True, message if isinstance(message, str) else None


def puppet_message(reason):
    """Our message in puppet's lock file: recognisable, says who and why, one line."""
    text = "%s by %s: %s [reason %s%s]" % (
        PUPPET_MARKER, reason.get("holder") or "unknown", reason.get("text") or "", reason.get("id"),
        ", event %s" % reason["event_id"] if reason.get("event_id") else "")
    text = one_line(text)
    return text if len(text) <= MAX_PUPPET_MESSAGE else text[:MAX_PUPPET_MESSAGE - 3] + "..."


class PuppetBackend(Backend):
    """`puppet agent --disable "<why>"`; enabled again only if this hold disabled it."""

    kind = "puppet"
    NAME = "puppet-agent"

    @classmethod
    def target(cls, command="puppet"):
        if not isinstance(command, str) or not command.strip():
            raise ValueError("the puppet command must not be empty")
        return Target(cls.kind, cls.NAME, {"command": command.strip()})

    def _command(self):
        command = self.settings.get("command") or "puppet"
        if "/" in command:
            return command
        path = self.ctx.environ.get("PATH", os.defpath) + os.pathsep + PUPPET_EXTRA_PATH
        return shutil.which(command, path=path) or command

    def inspect(self):
        command = self._command()
        result = self._run([command, "config", "print", "agent_disabled_lockfile"], PUPPET_TIMEOUT,
                           env=c_locale_env())
        if result.rc == 127:
            raise BackendError("puppet is not installed here (%s)" % result.describe())
        if not result.ok:
            raise BackendError("cannot find puppet's lock file: %s" % result.describe())
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        lockfile = lines[-1] if lines else ""
        if not os.path.isabs(lockfile):
            raise BackendError("puppet config print agent_disabled_lockfile answered %r, not an absolute path"
                               % lockfile)
        disabled, message = read_puppet_lock(lockfile)
        return {"command": command, "lockfile": lockfile, "disabled": disabled, "message": message}

    def plan(self, prior, reason):
        if prior.get("disabled"):
            return {"actions": [], "applied": {}, "notes": [
                "puppet was already disabled before the hold (message: %r): the hold leaves it disabled and release "
                "will not enable it" % (prior.get("message"),)]}
        return {"actions": ["disable"], "applied": {"message": puppet_message(reason)}, "notes": []}

    def step_text(self, action, undo=False):
        return "puppet agent --enable" if undo else "puppet agent --disable"

    def hold(self, record, progress=None):
        if "disable" not in record["actions"] or "disable" in record["done"]:
            return []
        prior = record["prior"]
        ours = record["applied"]["message"]
        disabled, message = read_puppet_lock(prior["lockfile"])
        changes = []
        if disabled and message != ours:
            record["actions"].remove("disable")
            _note(record, "puppet was disabled by someone else (message: %r) before this hold could: left to them, "
                          "release will not enable it" % (message,))
            return []
        if not disabled:
            result = self._run([prior["command"], "agent", "--disable", ours], PUPPET_TIMEOUT, env=c_locale_env())
            if not result.ok:
                raise BackendError("puppet agent --disable failed: %s" % result.describe())
            disabled, message = read_puppet_lock(prior["lockfile"])
            if not disabled or message != ours:
                raise BackendError("puppet agent --disable did not write our message to %s (it holds %r)"
                                   % (prior["lockfile"], message))
            changes.append("puppet agent --disable")
        _report(progress, "disable")
        return changes

    def release(self, record, progress=None):
        if "disable" not in record["actions"]:
            return []
        prior = record["prior"]
        disabled, message = read_puppet_lock(prior["lockfile"])
        changes = []
        if disabled and message == record.get("applied", {}).get("message"):
            result = self._run([prior["command"], "agent", "--enable"], PUPPET_TIMEOUT, env=c_locale_env())
            if not result.ok:
                raise BackendError("puppet agent --enable failed: %s" % result.describe())
            if read_puppet_lock(prior["lockfile"])[0]:
                raise BackendError("puppet agent --enable left %s in place" % prior["lockfile"])
            changes.append("puppet agent --enable")
        elif disabled:
            _note(record, "puppet's lock file now carries someone else's message (%r): left disabled" % (message,))
        _report(progress, "disable")
        return changes

    @staticmethod
    def summary(record):
        if "disable" in record["actions"]:
            return "disabled by the hold (%s); release enables it if the message is still ours" % record["prior"].get("lockfile")
        return "already disabled by someone else before the hold (message: %r); left to them" % (
            record.get("prior", {}).get("message"),)


# --- operator commands -------------------------------------------------------


def _argv(value, what):
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError("%s must be a non-empty list of arguments, not a shell string" % what)
    argv = []
    for arg in value:
        if not isinstance(arg, (str, int, float)) or isinstance(arg, bool):
            raise ValueError("%s: every argument must be text" % what)
        if "\x00" in str(arg):
            raise ValueError("%s: arguments must not contain NUL characters" % what)
        argv.append(str(arg))
    if not argv[0]:
        raise ValueError("%s: the program must not be empty" % what)
    return argv


class CommandBackend(Backend):
    """Operator commands, as argument lists. The reason and event reach them only as
    IMDS_* environment variables and as JSON on stdin. They may run again after a
    crash, so they must be idempotent."""

    kind = "command"

    @classmethod
    def target(cls, name, hold, release, timeout=DEFAULT_COMMAND_TIMEOUT):
        if not isinstance(name, str) or not _COMMAND_NAME.match(name):
            raise ValueError("command name %r must be 1-64 letters, digits, '_', '.', '@' or '-'" % (name,))
        if timeout is None or timeout <= 0:
            raise ValueError("command %s: timeout must be positive" % name)
        return Target(cls.kind, name, {"hold": _argv(hold, "command %s: hold" % name),
                                       "release": _argv(release, "command %s: release" % name),
                                       "timeout": timeout})

    def plan(self, prior, reason):
        return {"actions": ["run"], "applied": {}, "notes": []}

    def step_text(self, action, undo=False):
        return "run %s" % format_argv(self.settings["release" if undo else "hold"])

    def _call(self, record, action, reason):
        argv = self.settings[action]
        reason = reason or {}
        env = dict(self.ctx.environ)
        env.update((name, env_text(value)) for name, value in {
            "IMDS_HOLD_ACTION": action,
            "IMDS_HOLD_TARGET": self.key,
            "IMDS_HOLD_REASON": reason.get("text") or "",
            "IMDS_HOLD_REASON_ID": reason.get("id") or "",
            "IMDS_HOLD_HOLDER": reason.get("holder") or "",
            "IMDS_EVENT_ID": reason.get("event_id") or "",
            "IMDS_HOLD_STATE_FILE": self.ctx.store.path if self.ctx.store is not None else "",
        }.items())
        payload = json.dumps({"action": action, "target": self.key, "reason": reason,
                              "reasons": record.get("reasons", [])}, sort_keys=True)
        result = self._run(argv, self.settings.get("timeout", DEFAULT_COMMAND_TIMEOUT), stdin=payload, env=env)
        if not result.ok:
            raise BackendError("the %s command of %s failed: %s" % (action, self.key, result.describe()))
        return "run %s" % format_argv(argv)

    def hold(self, record, progress=None):
        if "run" not in record["actions"] or "run" in record["done"]:
            return []
        reasons = record.get("reasons") or [{}]
        change = self._call(record, "hold", reasons[0])
        _report(progress, "run")
        return [change]

    def release(self, record, progress=None):
        if "run" not in record["actions"]:
            return []
        change = self._call(record, "release", record.get("released_by"))
        _report(progress, "run")
        return [change]

    @staticmethod
    def summary(record):
        settings = record.get("settings", {})
        return "ran %s; release runs %s" % (format_argv(settings.get("hold", [])), format_argv(settings.get("release", [])))


BACKENDS = dict((cls.kind, cls) for cls in (SystemdBackend, GuardBackend, PuppetBackend, CommandBackend))


def backend_for(kind, name, settings, context):
    try:
        cls = BACKENDS[kind]
    except KeyError:
        raise BackendError("unknown backend %r in the hold record" % (kind,))
    return cls(name, settings, context)
