# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""imds-watcher: the daemon, its status, and a config check.

    imds-watcher [--config FILE] [--secrets FILE] run
    imds-watcher [--config FILE] [--secrets FILE] status [--json] [--last N]
    imds-watcher [--config FILE] [--secrets FILE] check-config [--json]

Exit status: 0 fine, 1 a runtime failure (status cannot read its files), 2 usage
errors, 78 (EX_CONFIG) the config is invalid, so systemd need not restart it.
`status` still shows the hold record and the journal when the config is refused
(it only reads them), says why first, and exits 78.
main() returns the status; the launcher exits with it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..hold.cli import format_status
from ..hold.common import HoldError, printable
from ..hold.manager import HoldManager
from . import config as config_mod
from .config import DEFAULT_CONFIG_FILE, DEFAULT_SECRETS_FILE, ConfigError, Trust, load
from .daemon import Daemon
from .health import as_list as degraded_list, describe as describe_health, moment
from .hooks import PHASES, HookRunner
from .journal import Journal
from .machine import iso
from .state import StateStore

PROG = "imds-watcher"
EXIT_CONFIG = 78


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description="Hold drift correction while an Azure scheduled event "
                                     "is pending, and release it once the event is over.")
    parser.add_argument("--config", default=DEFAULT_CONFIG_FILE, help="the config file (default: %(default)s)")
    parser.add_argument("--secrets", default=DEFAULT_SECRETS_FILE,
                        help="the secrets file, optional (default: %(default)s)")
    sub = parser.add_subparsers(dest="action", metavar="{run,status,check-config}")
    sub.required = True
    sub.add_parser("run", help="run the daemon (what the systemd unit starts)")
    status = sub.add_parser("status", help="pending events, what is held and why, and the last events")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--last", type=int, default=5, metavar="N", help="show the last N events (default: 5)")
    check = sub.add_parser("check-config", help="validate the config, the secrets, the rules and the hooks")
    check.add_argument("--json", action="store_true", help="print the effective config as JSON (no secrets)")
    return parser


def main(argv=None, stdout=None, stderr=None, trust=None, daemon_options=None, hold_options=None):
    """`trust`, `daemon_options` (Daemon keywords) and `hold_options` (HoldManager keywords) are for tests."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    trust = trust or Trust()
    try:
        config = load(args.config, args.secrets, trust=trust)
    except ConfigError as exc:
        stderr.write("%s: %s\n" % (PROG, exc))
        if args.action == "status":  # what is held matters most when the watcher cannot run
            files, from_config = config_mod.status_files(args.config, trust)
            status(files, stdout, stderr, args.json, args.last, hold_options or {},
                   refused={"config_file": args.config, "problem": str(exc), "files_from_config": from_config})
        return EXIT_CONFIG
    for warning in config.warnings:
        stderr.write("%s: warning: %s\n" % (PROG, warning))
    if args.action == "check-config":
        return check_config(config, trust, stdout, args.json)
    if args.action == "status":
        files = {"state_file": config.state_file, "journal_file": config["journal_file"],
                 "hold_state_file": config["hold"]["state_file"]}
        return status(files, stdout, stderr, args.json, args.last, hold_options or {})
    return run(config, trust, stderr, daemon_options or {}, hold_options or {})


class PrintableMessages(logging.Filter):
    """Every message of the watcher's logger as journald and a terminal should get it: the line breaks, ANSI
    escapes, bidi overrides and lone surrogates of event data escaped (printable), so that a field can neither
    forge a log line nor restyle the screen. On the logger, so every handler gets the same text."""

    def filter(self, record):
        record.msg, record.args = printable(record.getMessage()), None
        return True


def run(config, trust, stderr, daemon_options, hold_options):
    logger = logging.getLogger("imds-watcher")
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))  # journald adds the time
    messages = PrintableMessages()
    logger.addFilter(messages)
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, config["log_level"]))
    logger.propagate = False
    options = dict(daemon_options)
    if "holds" not in options:
        options["holds"] = HoldManager(state_file=config["hold"]["state_file"], **hold_options)
    try:
        return Daemon(config, logger=logger, trust=trust, **options).run()
    except (HoldError, OSError) as exc:
        logger.error("watcher: stopped by an error: %s", exc)
        return 1
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(messages)


def check_config(config, trust, stdout, as_json):
    """The config loaded (or main() already said why not); list the rules, targets and hooks found."""
    runner = HookRunner(config["hooks_dir"], trust=trust)
    hooks = {}
    problems = []
    for phase in PHASES:
        found = runner.discover(phase)
        hooks[phase] = [path for dummy, path, refusal in found if not refusal]
        problems.extend("%s: %s" % (path, refusal) for dummy, path, refusal in found if refusal)
    if as_json:
        stdout.write(json.dumps({"config": config.summary(), "hooks": hooks, "problems": problems}, indent=2,
                                sort_keys=True) + "\n")
    else:
        lines = ["%s is valid." % (config.path or "the config"),
                 "  approval rules: %s" % (", ".join("%s (%s%s)" % (r.name, r.when, ", shared" if r.allow_shared else "")
                                                     for r in config.policy.rules) or "none: nothing is approved early"),
                 "  hold targets: %s" % (", ".join(t.key for t in config.hold_targets) or "none"),
                 "  hooks: pre %d, post %d (in %s)" % (len(hooks["pre"]), len(hooks["post"]), config["hooks_dir"])]
        lines.extend("  refused: %s" % printable(p) for p in problems)
        stdout.write("\n".join(lines) + "\n")
    return 1 if problems else 0


def status(files, stdout, stderr, as_json, last, hold_options, refused=None):
    """Print what is pending, held and journaled; read only. `refused` (the config's problem) is said first."""
    code = 0
    state, problem = StateStore(files["state_file"]).read()
    if problem:
        stderr.write("%s: the state file %s is unusable: %s\n" % (PROG, files["state_file"], problem))
        code = 1
    pending = sorted((state or {}).get("events", {}).values(), key=lambda r: r.get("first_seen") or 0)
    degraded = (state or {}).get("degraded") or {}
    try:
        holds = HoldManager(state_file=files["hold_state_file"], **hold_options).status()
    except (HoldError, OSError) as exc:
        stderr.write("%s: cannot read the hold record: %s\n" % (PROG, exc))
        holds = None
        code = 1
    recent = Journal(files["journal_file"]).timelines(last)
    if as_json:
        data = {"pending": pending, "holds": holds, "recent": recent, "degraded": degraded_list(degraded)}
        if refused:
            data["config_refused"] = refused
        stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return code
    if refused:
        stdout.write(format_refused(refused, files))
        stdout.write("\n")
    if degraded:
        stdout.write(format_degraded(degraded, state.get("saved")))
        stdout.write("\n")
    stdout.write(format_pending(pending))
    stdout.write("\n")
    stdout.write(format_status(holds) if holds is not None else "The hold record could not be read.\n")
    stdout.write("\n")
    stdout.write(format_recent(recent, last))
    return code


def format_refused(refused, files):
    where = ("the files it names" if refused["files_from_config"]
             else "the default files, since the refused file may not choose what root reads")
    lines = [
        "!!! THE CONFIG IS REFUSED: the watcher cannot start with it, so nothing below is approved or released "
        "until it is fixed. !!!",
        "  %s" % printable(refused["problem"]),
        "  Once it is fixed: systemctl restart imds-watcher",
        "  Shown below from %s: hold record %s, journal %s." % (where, files["hold_state_file"],
                                                                files["journal_file"]),
    ]
    return "\n".join(lines) + "\n"


def format_degraded(degraded, saved):
    lines = ["!!! THE WATCHER IS DEGRADED: it cannot do its whole job (as the daemon last saved it, %s). !!!"
             % (moment(saved) or "at an unknown time")]
    lines.extend("  " + printable(line) for line in describe_health(degraded))
    return "\n".join(lines) + "\n"


def format_pending(pending):
    if not pending:
        return "No pending events.\n"
    lines = ["Pending events: %d" % len(pending)]
    for rec in pending:
        event = rec.get("event") or {}
        when = ", not before %s" % event["not_before"] if event.get("not_before") else ""
        lines.append(printable("  %s %s (%s%s) for %s: %s since %s" % (
            rec["id"], rec.get("type") or "?", rec.get("status") or "?", when,
            ", ".join(str(r) for r in rec.get("resources") or []) or "?", rec["state"],
            iso(rec["since"]) if rec.get("since") else "?")))
        facts = ["held" if rec.get("held") else "not held"]
        if rec.get("pre_hooks"):
            facts.append("pre-hooks %s" % rec["pre_hooks"])
        if rec.get("approved"):
            facts.append("approved by rule %s" % rec.get("rule"))
        if rec.get("error"):
            facts.append("last error: %s" % rec["error"])
        lines.append("      " + printable("; ".join(facts)))
        for note in rec.get("notes") or []:
            lines.append("      note: %s" % printable(note))
    return "\n".join(lines) + "\n"


def format_recent(recent, last):
    if not recent:
        return "No events in the journal.\n"
    lines = ["Last %d event(s) in the journal:" % min(last, len(recent))]
    for record in recent:
        lines.append(printable("  %s %s: %s%s" % (record["event_id"], record.get("event_type") or "?", record.get("state"),
                                                  " (%s)" % record["outcome"] if record.get("outcome") else "")))
        for step in record["timeline"]:
            lines.append("      %s %-18s %s" % (printable(step.get("time")), printable(step.get("transition")),
                                                printable(step.get("detail"))))
    return "\n".join(lines) + "\n"
