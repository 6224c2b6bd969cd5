# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""imds-drift-guard: run a job (ansible-pull under cron or a systemd service) unless
drift correction is held.

    imds-drift-guard [--state-file FILE] [--quiet] -- ansible-pull -U https://... local.yml

- Held (the record's guard target has a reason): exit 0 without running the job,
  and say who holds it and why on stderr and to syslog (the journal). Exit 0, so
  cron mails no error and the service does not fail: a held run is not a failure.
- Not held: exec the job; its exit status is the guard's.
- The record cannot be read or trusted: exit 75 (EX_TEMPFAIL) without running
  the job, since nobody can tell whether maintenance is under way.
The job keeps a shared lock on `<state file>.guard-lock` while it runs (the fd
survives exec), so holding the guard can wait for runs already in flight. The
lock is taken before the record is read, so a run either sees the hold or is
waited for.
"""

from __future__ import annotations

import errno
import os
import shlex
import sys

from .common import DEFAULT_STATE_FILE, HoldError, format_argv, one_line
from .manager import guard_hold
from .store import HoldStore

try:
    import syslog
except ImportError:  # pragma: no cover - not on Linux
    syslog = None

PROG = "imds-drift-guard"
EXIT_UNSURE = 75
USAGE = "usage: %s [--state-file FILE] [--quiet] -- COMMAND [ARG...]" % PROG


class UsageError(ValueError):
    pass


def parse(argv):
    """Options before `--`, the job after it. No `--`, no job: the job's own options must never be ours."""
    argv = list(argv)
    if "--" not in argv:
        raise UsageError("the job goes after '--'")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    if not command:
        raise UsageError("no job after '--'")
    state_file = DEFAULT_STATE_FILE
    quiet = False
    while options:
        option = options.pop(0)
        if option == "--state-file" and options:
            state_file = options.pop(0)
        elif option.startswith("--state-file="):
            state_file = option.split("=", 1)[1]
        elif option in ("-q", "--quiet"):
            quiet = True
        else:
            raise UsageError("unknown option %r" % option)
    return state_file, quiet, command


def describe_hold(rec):
    """Who holds and why, one line."""
    parts = []
    for reason in rec.get("reasons", []):
        event = ", event %s" % reason["event_id"] if reason.get("event_id") else ""
        parts.append("%s since %s: %s [reason %s%s]"
                     % (reason.get("holder") or "unknown", reason.get("since") or "?", reason.get("text"),
                        reason.get("id"), event))
    return one_line("; ".join(parts))


class Logger(object):
    """stderr and syslog (the journal on systemd machines)."""

    def __init__(self, quiet=False, stream=None, use_syslog=True):
        self.quiet = quiet
        self.stream = stream
        self.use_syslog = use_syslog and syslog is not None

    def __call__(self, message, error=False):
        if not self.quiet:
            stream = self.stream or sys.stderr
            stream.write("%s: %s\n" % (PROG, message))
            stream.flush()
        if self.use_syslog:
            try:
                syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)
                syslog.syslog(syslog.LOG_ERR if error else syslog.LOG_NOTICE, message)
            except OSError:
                pass


def main(argv=None, owner_uid=0, execvp=os.execvp, log=None):
    """Exit status: the job's, 0 when held, 75 when unsure, 2 on usage errors, 126/127 when the job cannot start."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        state_file, quiet, command = parse(argv)
    except UsageError as exc:
        sys.stderr.write("%s: %s\n%s\n" % (PROG, exc, USAGE))
        return 2
    log = log or Logger(quiet=quiet)
    job = format_argv(command)
    fd = None
    try:
        store = HoldStore(state_file, owner_uid=owner_uid)
        fd = store.open_guard_run_lock()
        doc = store.read()
    except (HoldError, OSError) as exc:
        if fd is not None:
            os.close(fd)
        log("cannot tell whether drift correction is held, so not running %s: %s" % (job, exc), error=True)
        return EXIT_UNSURE
    held = guard_hold(doc)
    if held is not None:
        if fd is not None:
            os.close(fd)
        ids = " or ".join(shlex.quote(i) for i in sorted(set(r.get("id") or "?" for r in held["reasons"])))
        log("drift correction is held, so not running %s. Held by %s. Release with: imds-hold release --reason-id %s"
            % (job, describe_hold(held), ids))
        return 0
    if fd is not None:
        os.set_inheritable(fd, True)
    try:
        return execvp(command[0], command)
    except OSError as exc:
        if fd is not None:
            os.close(fd)
        log("cannot run %s: %s" % (job, exc.strerror or exc), error=True)
        return 127 if exc.errno == errno.ENOENT else 126
