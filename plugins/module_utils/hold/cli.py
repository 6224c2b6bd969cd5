# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""imds-hold: who holds drift correction and why; hold and release by hand.

    imds-hold status [--json]
    imds-hold hold --reason TEXT [--reason-id ID] [--event-id ID] [--unit UNIT]... [--mask] [--puppet] [--guard]
                   [--command JSON]...
    imds-hold release (--reason-id ID | --event-id ID | --all) [--unit UNIT]... [--puppet] [--guard] [--command-name N]
    imds-hold settle

Exit status: 0 done, 1 a step failed (the record says what is left; run the same
command again), 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .backends import CommandBackend, GuardBackend, PuppetBackend, SystemdBackend, Target, normalize_unit
from .common import DEFAULT_STATE_FILE, DEFAULT_WAIT_TIMEOUT, HoldError, one_line, printable
from .manager import HoldManager, Reason, default_reason_id

PROG = "imds-hold"


def default_holder(prog, environ=None):
    """Who is at the keyboard: sudo's user first, since the tool runs as root."""
    environ = os.environ if environ is None else environ
    user = environ.get("SUDO_USER") or environ.get("USER") or environ.get("LOGNAME") or "uid %d" % os.getuid()
    return "%s (%s)" % (user, prog)


def format_status(status):
    """The human form of status_of(). A step in progress is told from one stopped half way by whether a hold,
    release or settle is at work now (status_of's `in_progress`); only the latter says what to do."""
    if not status["held"]:
        return "Nothing is held (state file %s).\n" % status["state_file"]
    if status["reasons"]:
        head = "Drift correction is held: %d target(s), %d reason(s)" % (len(status["targets"]), len(status["reasons"]))
    else:
        head = "Drift correction is being released: %d target(s) not yet restored, no reason holds them" % (
            len(status["targets"]))
    lines = ["%s (state file %s, updated %s)." % (head, status["state_file"], status.get("updated") or "?")]
    if status["reasons"]:
        lines.extend(["", "Reasons:"])
    for reason in status["reasons"]:
        event = ", event %s" % printable(reason["event_id"]) if reason.get("event_id") else ""
        lines.append("  %s: %s" % (printable(reason["id"]), printable(reason["text"])))
        lines.append("      by %s since %s%s; holds %s" % (printable(reason.get("holder") or "unknown"),
                                                           printable(reason.get("since") or "?"), event,
                                                           printable(", ".join(reason["targets"]))))
    lines.extend(["", "Targets:"])
    for target in status["targets"]:
        if target["phase"] == "held" and target["reasons"]:
            lines.append("  %s: held since %s, by %s" % (printable(target["key"]), target.get("held_at") or target.get(
                "since") or "?", printable(", ".join(r["id"] for r in target["reasons"]))))
        else:
            lines.append("  %s: %s" % (printable(target["key"]), printable(_transition(target))))
        if target.get("summary"):
            lines.append("      %s" % printable(target["summary"]))
        for note in target.get("notes", []):
            lines.append("      note: %s" % printable(note))
    return "\n".join(lines) + "\n"


def _transition(target):
    """A target being held or released: in progress (nothing to do), or stopped half way (say what to run)."""
    releasing = not target["reasons"]
    if releasing:
        dropped = target.get("released_by") or {}
        why = ("its last reason %s (%s) was dropped" % (dropped["id"], dropped.get("holder") or "unknown")
               if dropped.get("id") else "no reason holds it")
    else:
        why = "by %s" % ", ".join(r["id"] for r in target["reasons"])
    verb = "released" if releasing else "held"
    progress = target.get("progress") or {}
    since = progress.get("since") or target.get("since") or "?"
    if target.get("in_progress"):
        pid = target.get("writer_pid") or "unknown"
        return "being %s now (in progress: pid %s, since %s), %s" % (verb, pid, since, why)
    fix = "run imds-hold settle to finish" if releasing else "run hold again to finish"
    who = "pid %s" % progress["pid"] if progress.get("pid") else "a process"
    return "being %s (incomplete: %s), %s; the %s that %s started at %s stopped half way (killed, or a step " \
        "failed)" % (verb, fix, why, "release" if releasing else "hold", who, since)


def format_outcome(outcome):
    lines = []
    for key, result in outcome.results.items():
        steps = "; ".join(result.steps) if result.steps else "no change"
        lines.append("%s%s: %s (%s)" % ("[check] " if outcome.check_mode else "", key, result.state, steps))
        if result.error:
            lines.append("  error: %s" % one_line(result.error))
    return "\n".join(lines) + "\n" if lines else ""


def _command_target(text):
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("--command takes a JSON object, e.g. "
                                         "'{\"name\": \"lb\", \"hold\": [\"/usr/local/bin/lb\", \"drain\"], "
                                         "\"release\": [\"/usr/local/bin/lb\", \"undrain\"]}': %s" % exc)
    if not isinstance(spec, dict) or set(spec) - {"name", "hold", "release", "timeout"}:
        raise argparse.ArgumentTypeError("--command takes an object with name, hold, release and optionally timeout")
    try:
        options = dict((k, v) for k, v in spec.items() if k == "timeout")
        return CommandBackend.target(spec.get("name"), spec.get("hold"), spec.get("release"), **options)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _unit(text):
    try:
        return normalize_unit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description="Hold configuration-management drift correction with a "
                                     "reason, and release it exactly as it was.")
    parser.add_argument("--state-file", default=DEFAULT_STATE_FILE, help="the hold record (default: %(default)s)")
    sub = parser.add_subparsers(dest="action", metavar="{status,hold,release,settle}")
    sub.required = True

    status = sub.add_parser("status", help="who holds what and why")
    status.add_argument("--json", action="store_true", help="print JSON")

    hold = sub.add_parser("hold", help="hold targets for a reason")
    hold.add_argument("--reason", required=True, help="why, for people: shown by status, the guard and puppet")
    hold.add_argument("--reason-id", help="the id to release it by (default: the event id, else 'manual')")
    hold.add_argument("--event-id", help="the scheduled event behind the hold, if any")
    hold.add_argument("--holder", help="who or what holds (default: the sudo user)")
    _scope_options(hold, full=True)

    release = sub.add_parser("release", help="drop a reason; what no reason holds any more is restored")
    which = release.add_mutually_exclusive_group(required=True)
    which.add_argument("--reason-id", help="the reason to drop")
    which.add_argument("--event-id", help="drop the reason named after this event")
    which.add_argument("--all", action="store_true", help="drop every reason")
    _scope_options(release, full=False)

    settle = sub.add_parser("settle", help="finish what a crashed hold or release left in progress; redo what a reboot undid")
    settle.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _scope_options(parser, full):
    parser.add_argument("--unit", action="append", default=[], type=_unit, metavar="UNIT",
                        help="a systemd timer or service (repeatable)")
    parser.add_argument("--puppet", action="store_true", help="puppet agent --disable / --enable")
    parser.add_argument("--guard", action="store_true", help="jobs run through imds-drift-guard")
    if full:
        parser.add_argument("--mask", action="store_true", help="also mask the units (--runtime)")
        parser.add_argument("--wait-timeout", type=float, default=DEFAULT_WAIT_TIMEOUT,
                            help="seconds to wait for a run in flight (default: %(default)s; 0: do not wait)")
        parser.add_argument("--guard-wait-timeout", type=float, default=DEFAULT_WAIT_TIMEOUT,
                            help="seconds to wait for guarded jobs in flight (default: %(default)s)")
        parser.add_argument("--command", action="append", default=[], type=_command_target, metavar="JSON",
                            help='{"name": N, "hold": [argv], "release": [argv], "timeout": S} (repeatable)')
    else:
        parser.add_argument("--command-name", action="append", default=[], metavar="NAME",
                            help="a command target, by name (repeatable)")
    parser.add_argument("--check", action="store_true", help="show what would change, change nothing")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _hold_targets(args):
    targets = [SystemdBackend.target(u, mask=args.mask, wait_timeout=args.wait_timeout) for u in args.unit]
    if args.puppet:
        targets.append(PuppetBackend.target())
    if args.guard:
        targets.append(GuardBackend.target(wait_timeout=args.guard_wait_timeout))
    return targets + list(args.command)


def _release_scope(args):
    scope = [Target(SystemdBackend.kind, u, {}) for u in args.unit]
    if args.puppet:
        scope.append(Target(PuppetBackend.kind, PuppetBackend.NAME, {}))
    if args.guard:
        scope.append(Target(GuardBackend.kind, GuardBackend.NAME, {}))
    return scope + [Target(CommandBackend.kind, n, {}) for n in args.command_name]


def main(argv=None, stdout=None, stderr=None, environ=None, **manager_options):
    """`manager_options` reach HoldManager (tests inject run, clock, sleep, owner_uid)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        manager = HoldManager(state_file=args.state_file, **manager_options)
        if args.action == "status":
            status = manager.status()
            stdout.write(json.dumps(status, indent=2, sort_keys=True) + "\n" if args.json else format_status(status))
            return 0
        if args.action == "hold":
            targets = _hold_targets(args)
            if not targets:
                parser.error("name something to hold: --unit, --puppet, --guard or --command")
            reason = Reason(args.reason_id or default_reason_id(args.event_id), args.reason, event_id=args.event_id,
                            holder=args.holder or default_holder(PROG, environ))
            outcome = manager.hold(reason, targets, check_mode=args.check)
        elif args.action == "release":
            outcome = manager.release(reason_id=args.reason_id or args.event_id, all_reasons=args.all,
                                      targets=_release_scope(args), check_mode=args.check)
        else:
            outcome = manager.settle()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    except (HoldError, ValueError) as exc:
        stderr.write("%s: %s\n" % (PROG, exc))
        return 1
    if args.json:
        stdout.write(json.dumps(outcome.as_dict(), indent=2, sort_keys=True) + "\n")
    else:
        stdout.write(format_outcome(outcome))
        stdout.write("\n" + format_status(outcome.as_dict()["holds"]))
    for error in outcome.errors:
        stderr.write("%s: %s\n" % (PROG, error))
    return 1 if outcome.failed else 0
