# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""imds-watcher-boot: put the saved holds back early in every boot, before drift correction can start.

    imds-watcher-boot [--state-file FILE] [--config FILE]

The unit imds-watcher-boot.service runs this before sysinit.target, so before any timer or service with default
dependencies starts: a timer that a hold stopped would otherwise come back with the boot and fire (OnBootSec=,
Persistent=) before the watcher is up to stop it again. It needs no network and no IMDS: it reads the hold record
(never writes it) and asks systemd to cancel the start of what the record holds. The watcher then takes over: it
settles the record at its start and releases once the event is over.

When the record cannot be read or is not trusted, nobody can tell what is held, so it holds what it can tell: the
systemd units the watcher's config holds are stopped for this boot. It never releases anything; it says so on
stderr (priority err in the journal) and exits 1, so the unit fails and `systemctl --failed` shows it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..hold.backends import SystemdBackend, normalize_unit
from ..hold.common import DEFAULT_STATE_FILE, HoldError, one_line
from ..hold.manager import HoldManager

PROG = "imds-watcher-boot"
# sd-daemon(3) priority prefixes, which the journal reads from a service's output
ERR, INFO = "<3>", "<6>"


class Log(object):
    """Lines to stderr, with a priority prefix when the journal reads them (it sets JOURNAL_STREAM)."""

    def __init__(self, stream, environ):
        self.stream = stream
        self.prefixed = bool(environ.get("JOURNAL_STREAM"))

    def __call__(self, priority, text):
        self.stream.write("%s%s: %s\n" % (priority if self.prefixed else "", PROG, one_line(text)))


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description="Put the saved drift-correction holds back early in a "
                                     "boot, before timers start (what imds-watcher-boot.service runs).")
    parser.add_argument("--state-file", default=DEFAULT_STATE_FILE, help="the hold record (default: %(default)s)")
    parser.add_argument("--config", help="the watcher's config: its systemd units are stopped when the record is "
                        "unreadable (default: the watcher's, /etc/imds-scheduled-events/watcher.json)")
    return parser


def main(argv=None, stderr=None, environ=None, config_trust=None, **manager_options):
    """`config_trust` (watcher.config.Trust) and `manager_options` (HoldManager keywords) are for tests."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    environ = os.environ if environ is None else environ
    log = Log(stderr or sys.stderr, environ)
    manager = HoldManager(state_file=args.state_file, environ=environ, **manager_options)
    try:
        outcome = manager.at_boot()
    except (HoldError, OSError) as exc:
        log(ERR, "cannot read the hold record, so nobody can tell what is held: %s" % exc)
        hold_configured_units(manager, args.config, config_trust, log)
        return 1
    if not outcome.results:
        log(INFO, "nothing is held (%s): nothing to put back" % manager.state_file)
        return 0
    for key, result in sorted(outcome.results.items()):
        reasons = ", ".join(result.reasons)
        if result.error:
            log(ERR, "%s (held by %s): could not put the hold back: %s" % (key, reasons, result.error))
        else:
            log(INFO, "%s (held by %s): %s" % (key, reasons, "; ".join(result.steps) or "survives a reboot as it is"))
        for note in result.notes:
            log(INFO, "%s: note: %s" % (key, note))
    return 1 if outcome.failed else 0


def hold_configured_units(manager, config_path, trust, log):
    """The record is unreadable: stop, for this boot, the systemd units the watcher's config holds."""
    try:
        path, units = configured_units(config_path, trust)
    except ValueError as exc:  # watcher.config.ConfigError is one
        log(ERR, "nothing is held at this boot: the watcher's config cannot tell what to hold either: %s" % exc)
        return
    stopped = []
    for name in units:
        try:
            unit = normalize_unit(name)
            if SystemdBackend(unit, {}, manager.context).at_boot({"actions": ["stop"], "done": []}):
                stopped.append(unit)
        except (HoldError, ValueError) as exc:
            log(ERR, "cannot stop %r: %s" % (name, exc))
    if stopped:
        log(ERR, "stopped for this boot, as the watcher's config holds them: %s. Nothing is released. Once the "
                 "record is repaired (imds-hold status reads it), start them again (systemctl start %s) or reboot."
            % (", ".join(stopped), " ".join(stopped)))
    elif not units:
        log(ERR, "the watcher's config %s holds no systemd unit: nothing to stop" % path)


def configured_units(path=None, trust=None):
    """(the config's path, its hold.systemd_units), read with the config's trust rules. Only this and not the whole
    schema: a config refused for another reason still tells what the watcher holds."""
    # only when the record is unreadable: the config module imports the IMDS client, too slow for every boot
    from . import config  # pylint: disable=import-outside-toplevel

    path = path or config.DEFAULT_CONFIG_FILE
    value = json.loads(config.read_trusted(path, "the watcher's config", trust or config.Trust()).decode("utf-8"))
    hold = value.get("hold") if isinstance(value, dict) else None
    units = hold.get("systemd_units") if isinstance(hold, dict) else None
    if not isinstance(units, list):
        raise ValueError("%s has no list hold.systemd_units" % path)
    return path, units
