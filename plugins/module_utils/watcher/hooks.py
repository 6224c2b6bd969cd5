# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Pre- and post-event hooks: executables in a root-owned directory.

    <hooks_dir>/pre/*  <hooks_dir>/pre/<EventType>/*  <hooks_dir>/post/*  <hooks_dir>/post/<EventType>/*

The hooks of one phase run one after another in lexical order of their names
(type-specific ones merged in), each as its own process group with a timeout,
never through a shell. The event reaches a hook as JSON on stdin and as IMDS_*
environment variables, so whatever an event's fields contain (quotes, `$(...)`,
newlines, odd bytes) arrives as data. Root runs them, so a hook or a directory
that root does not own, or that group or others may write, is refused and
counts as a failure. A hook may run again after a crash: hooks must be idempotent.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import stat
import subprocess
import tempfile
import time

from ..hold.common import env_text
from .config import Trust

PHASES = ("pre", "post")
DEFAULT_TIMEOUT = 300
MAX_OUTPUT = 8192
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TYPE_DIR = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_SKIPPED_SUFFIXES = ("~", ".dpkg-old", ".dpkg-new", ".dpkg-dist", ".dpkg-tmp", ".rpmnew", ".rpmsave", ".disabled",
                     ".swp")


class HookRun(object):
    """One hook's run: exit status, how long, its (bounded) output, or why it was refused."""

    def __init__(self, path, rc=None, seconds=0.0, output="", timed_out=False, refused=None):
        self.path = path
        self.rc = rc
        self.seconds = seconds
        self.output = output
        self.timed_out = timed_out
        self.refused = refused

    @property
    def ok(self):
        return self.refused is None and not self.timed_out and self.rc == 0

    def describe(self):
        name = os.path.basename(self.path)
        if self.refused:
            return "%s refused: %s" % (name, self.refused)
        if self.timed_out:
            return "%s timed out after %.0f s and was killed" % (name, self.seconds)
        return "%s exited %s" % (name, self.rc)

    def as_dict(self):
        data = {"hook": self.path, "rc": self.rc, "ok": self.ok, "seconds": round(self.seconds, 3),
                "output": self.output}
        if self.timed_out:
            data["timed_out"] = True
        if self.refused:
            data["refused"] = self.refused
        return data


class HooksOutcome(object):
    def __init__(self, phase, runs):
        self.phase = phase
        self.runs = runs

    @property
    def ok(self):
        return all(r.ok for r in self.runs)

    def describe(self):
        if not self.runs:
            return "no %s-event hooks" % self.phase
        failed = [r.describe() for r in self.runs if not r.ok]
        if failed:
            return "; ".join(failed)
        return "%d %s-event hook(s) passed" % (len(self.runs), self.phase)

    def as_dict(self):
        return {"phase": self.phase, "ok": self.ok, "runs": [r.as_dict() for r in self.runs]}


def hook_environment(phase, event, vm_name, outcome=None):
    """`outcome`, for post hooks: lifecycle.OUTCOMES (completed, cancelled, vanished); `vm_name` None (empty) while
    this VM's name is unknown."""
    resources = event.get("Resources") or []
    if not isinstance(resources, list):
        resources = [resources]
    env = {
        "PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/root",
        "IMDS_HOOK_PHASE": phase,
        "IMDS_VM_NAME": env_text(vm_name),
        "IMDS_EVENT_ID": env_text(event.get("EventId")),
        "IMDS_EVENT_TYPE": env_text(event.get("EventType")),
        "IMDS_EVENT_STATUS": env_text(event.get("EventStatus")),
        "IMDS_EVENT_NOT_BEFORE": env_text(event.get("not_before") or ""),
        "IMDS_EVENT_RESOURCES": env_text(" ".join(str(r) for r in resources)),
        "IMDS_EVENT_SOURCE": env_text(event.get("EventSource") or ""),
        "IMDS_EVENT_SCOPE": env_text(event.get("scope") or ""),
    }
    if phase == "post":
        env["IMDS_EVENT_OUTCOME"] = env_text(outcome)
    return env


def _bounded(handle, limit):
    """The output's first and last bytes: the start says what ran, the end why it failed."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    if size <= limit:
        data = handle.read()
    else:
        head = handle.read(limit // 4)
        handle.seek(size - (limit - limit // 4))
        data = head + b"\n[... %d bytes left out ...]\n" % (size - limit) + handle.read()
    return data.decode("utf-8", "replace")


class HookRunner(object):
    def __init__(self, hooks_dir, timeout=DEFAULT_TIMEOUT, trust=None, max_output=MAX_OUTPUT, monotonic=time.monotonic,
                 logger=None):
        self.hooks_dir = hooks_dir
        self.timeout = timeout
        self.trust = trust or Trust()
        self.max_output = max_output
        self.monotonic = monotonic
        self.logger = logger

    def _log(self, level, message, *args):
        if self.logger is not None:
            self.logger.log(level, message, *args)

    def _directory_problem(self, path):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None, False
        except OSError as exc:
            return "cannot read %s: %s" % (path, exc.strerror), True
        if not stat.S_ISDIR(st.st_mode):
            return "%s is not a directory" % path, True
        return self.trust.problem(st, path, "the hooks directory"), True

    def discover(self, phase, event_type=None):
        """[(name, path, refusal or None)] in the order they run; directories that root cannot trust
        are returned as one refused entry, so the phase fails rather than silently skipping them."""
        if phase not in PHASES:
            raise ValueError("unknown hook phase %r" % (phase,))
        directories = [self.hooks_dir, os.path.join(self.hooks_dir, phase)]
        typed = None
        if isinstance(event_type, str) and _TYPE_DIR.match(event_type):
            typed = os.path.join(self.hooks_dir, phase, event_type)
            directories.append(typed)
        found = []
        for index, directory in enumerate(directories):
            problem, exists = self._directory_problem(directory)
            if problem:
                return [(os.path.basename(directory), directory, problem)]
            if not exists:
                if index == 0:
                    return []
                continue
            if index == 0:
                continue  # the base directory holds the phase directories, not hooks
            for name in sorted(os.listdir(directory)):
                path = os.path.join(directory, name)
                if name.startswith(".") or name.endswith(_SKIPPED_SUFFIXES) or path == typed:
                    continue
                try:
                    st = os.stat(path)
                except OSError as exc:
                    found.append((name, path, "cannot stat: %s" % exc.strerror))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    continue  # another type's directory
                if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IXUSR:
                    self._log(logging.DEBUG, "hooks: %s is not an executable file; skipped", path)
                    continue
                found.append((name, path, self.trust.problem(st, path, "the hook")))
        found.sort(key=lambda item: (item[0], item[1]))
        return found

    def run(self, phase, event, vm_name, outcome=None):
        """Run every hook of the phase, even after one fails (each is reported)."""
        runs = []
        payload = json.dumps({"phase": phase, "outcome": outcome if phase == "post" else None, "vm": vm_name,
                              "event": event}, sort_keys=True, ensure_ascii=True).encode("ascii")
        env = hook_environment(phase, event, vm_name, outcome)
        for dummy, path, refusal in self.discover(phase, event.get("EventType")):
            if refusal:
                self._log(logging.ERROR, "hooks: refusing %s: %s", path, refusal)
                runs.append(HookRun(path, refused=refusal))
                continue
            run = self._run_one(path, payload, env)
            self._log(logging.INFO if run.ok else logging.ERROR, "hooks: %s %s: %s", phase, event.get("EventId"), run.describe())
            runs.append(run)
        return HooksOutcome(phase, runs)

    def _run_one(self, path, payload, env):
        started = self.monotonic()
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as output:
            stdin.write(payload)
            stdin.seek(0)
            try:
                # not AnsibleModule.run_command: the daemon runs on the VM without Ansible
                proc = subprocess.Popen(  # pylint: disable=ansible-bad-function
                    [path], stdin=stdin, stdout=output, stderr=subprocess.STDOUT, env=env, cwd="/", close_fds=True,
                    start_new_session=True)
            except OSError as exc:
                return HookRun(path, rc=127, output="cannot run %s: %s" % (path, exc.strerror or exc))
            timed_out = False
            try:
                rc = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                rc = proc.wait()
            return HookRun(path, rc=rc, seconds=self.monotonic() - started, output=_bounded(output, self.max_output),
                           timed_out=timed_out)


def _kill_group(pgid):
    """The hook and everything it started: it leads its own session, so its group id is its pid."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
