# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the Event-Driven Ansible sources share (extensions/eda/plugins/event_source/): checking a rulebook's
arguments, the event a lifecycle change becomes (and reading it back in a playbook: read_rulebook_event), and the
state file that lets a restarted source go on.

A rulebook's source arguments are not checked by ansible-rulebook, so a typo would silently fall back to a
default: every source names what it accepts and refuses anything else, before it starts. No ansible import here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
import time

from .event_grid import UNREADABLE
from .events import CONTROL_PLANE_STATUSES, DocumentError, Event
from .files import write_atomically
from .lifecycle import CHANGES, GONE, OUTCOMES

ARGUMENT_KINDS = ("str", "bool", "float", "int", "list", "path", "secret")
# What ansible-core cannot load from the extra vars ansible-rulebook writes: a lone surrogate, and a character beyond
# U+FFFF (the rules engine, drools-jpy, hands it back as two surrogates)
_UNLOADABLE = re.compile("[\ud800-\udfff\U00010000-\U0010ffff]")


class ArgumentError(ValueError):
    """A source argument the rulebook got wrong; the message names the argument and what is expected."""


class Argument(object):
    def __init__(self, kind, default=None, minimum=None, maximum=None, choices=None, required=False):
        if kind not in ARGUMENT_KINDS:
            raise ValueError("unknown argument kind %r" % kind)
        self.kind = kind
        self.default = default
        self.minimum = minimum
        self.maximum = maximum
        self.choices = choices
        self.required = required


def check_args(source, args, spec):
    """The arguments with defaults filled in; ArgumentError for an unknown name or a bad value."""
    args = dict(args or {})
    unknown = sorted(set(args) - set(spec))
    if unknown:
        raise ArgumentError("%s: unknown argument(s) %s; it accepts %s" % (
            source, ", ".join(unknown), ", ".join(sorted(spec))))
    out = {}
    for name, arg in spec.items():
        value = args.get(name)
        if value is None:
            if arg.required:
                raise ArgumentError("%s: argument %s is required" % (source, name))
            out[name] = arg.default
            continue
        out[name] = _checked(source, name, arg, value)
    return out


def _checked(source, name, arg, value):
    where = "%s: argument %s" % (source, name)
    if arg.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "false", "no"):
            return value.lower() in ("true", "yes")
        raise ArgumentError("%s must be true or false, not %r" % (where, value))
    if arg.kind in ("float", "int"):
        if isinstance(value, bool):
            raise ArgumentError("%s must be a number, not %r" % (where, value))
        try:
            number = float(value) if arg.kind == "float" else int(str(value))
        except (TypeError, ValueError):
            raise ArgumentError("%s must be %s, not %r" % (
                where, "a number" if arg.kind == "float" else "a whole number", value))
        if arg.minimum is not None and number < arg.minimum or arg.maximum is not None and number > arg.maximum:
            raise ArgumentError("%s must be between %s and %s, not %s" % (where, arg.minimum, arg.maximum, value))
        return number
    if arg.kind == "list":
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
            raise ArgumentError("%s must be a list of strings, not %r" % (where, value))
        values = [v.strip() for v in values]
        if arg.choices:
            folded = dict((c.casefold(), c) for c in arg.choices)
            bad = [v for v in values if v.casefold() not in folded]
            if bad:
                raise ArgumentError("%s: %s not one of %s" % (where, ", ".join(bad), ", ".join(arg.choices)))
            values = [folded[v.casefold()] for v in values]
        return values
    if not isinstance(value, str) or not value.strip():
        raise ArgumentError("%s must be a non-empty string" % where)
    value = value.strip() if arg.kind != "secret" else value
    if arg.kind == "path" and not os.path.isabs(value):
        raise ArgumentError("%s must be an absolute path, not %r" % (where, value))
    if arg.choices and value not in arg.choices:
        raise ArgumentError("%s must be one of %s, not %r" % (where, ", ".join(arg.choices), value))
    return value


def rulebook_event(change, source, **extra):
    """The event a rulebook sees: `change` (appeared, updated, approved, started, gone), `outcome` (gone only),
    `scheduled_event` (the keys event_info or control_plane_event_info return), `source`, `detail`."""
    out = change.as_dict()
    out["source"] = source
    out.update((k, v) for k, v in extra.items() if v is not None)
    return valid_text(out)


def unreadable_event(source, problem, **extra):
    """The event that tells an Event Grid event or a Resource Graph row could not be read: `problem`, and
    `delivery_id` or `row_id` to say which."""
    out = {"change": UNREADABLE, "problem": problem, "source": source}
    out.update(extra)
    return valid_text(out)


def valid_text(value):
    """`value` with U+FFFD in place of every lone surrogate (JSON's \\u escapes can spell one; no UTF-8 text holds one)
    and every character beyond U+FFFF (ansible-rulebook 1.3.2's rules engine, drools-jpy, gives the event back to
    Python with such a character split into two surrogates). ansible-core cannot load extra vars holding a surrogate
    (libyaml refuses the escape yaml.dump writes for it), so the rulebook's playbook would not run at all."""
    if isinstance(value, str):
        return _UNLOADABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return dict((valid_text(k), valid_text(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [valid_text(v) for v in value]
    return value


def read_rulebook_event(event):
    """Check that `event` has the shape this collection's sources give the events they queue (ansible-rulebook hands
    it to a playbook as ansible_eda.event) and read its scheduled event with the one model. Returns the events.Event
    (None for change=unreadable, which carries none); raises ValueError saying what is wrong."""
    if not isinstance(event, dict):
        raise ValueError("the event is a %s, not a mapping" % type(event).__name__)
    change = event.get("change")
    if change not in CHANGES + (UNREADABLE,):
        raise ValueError("its change %.80r is not one of %s" % (change, ", ".join(CHANGES + (UNREADABLE,))))
    if change == UNREADABLE:
        return None
    outcome = event.get("outcome")
    if outcome not in ((None,) if change != GONE else OUTCOMES):
        raise ValueError("its outcome %.80r does not go with change %s" % (outcome, change))
    scheduled = event.get("scheduled_event")
    if not isinstance(scheduled, dict):
        raise ValueError("its scheduled_event is a %s, not a mapping" % type(scheduled).__name__)
    try:
        found = Event.from_json(scheduled, known_statuses=CONTROL_PLANE_STATUSES)
    except DocumentError as exc:
        raise ValueError("its scheduled_event cannot be read: %s" % exc)
    if event.get("event_id") != found.event_id:
        raise ValueError("its event_id %.80r is not its scheduled_event's EventId %.80r"
                         % (event.get("event_id"), found.event_id))
    return found


def loggable(value, limit=80):
    """A value from a request or an event, fit for a log line: its repr (newlines, terminal escapes and other
    control characters escaped, never raw), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class RepeatedLog(object):
    """A failure that repeats every poll is logged once at `level`, then at DEBUG until it changes or clears."""

    def __init__(self, logger, level=logging.WARNING):
        self.logger = logger
        self.level = level
        self.last = None
        self.count = 0

    def failed(self, message, suffix=""):
        """`suffix` (the next delay ...) is logged but does not make the failure a new one."""
        self.count += 1
        self.logger.log(self.level if message != self.last else logging.DEBUG, "%s (%d in a row%s)", message,
                        self.count, suffix)
        self.last = message

    def recovered(self, what):
        if self.count:
            self.logger.info("%s again after %d failure(s)", what, self.count)
        self.last = None
        self.count = 0


async def poll_forever(queue, source):
    """The loop of the polling sources (imds, resource_graph): one source.poll() at a time in a worker thread (the
    clients block), its events queued in order, then source.after_poll() (the imds source saves its state there:
    once the events are queued, so a crash in between repeats them rather than losing them), then the rest of
    source.next_delay(): polls start every interval, however long one takes."""
    loop = asyncio.get_running_loop()
    while True:
        started = time.monotonic()
        events = await loop.run_in_executor(None, source.poll)
        for event in events or ():
            await queue.put(event)
        source.after_poll()
        await asyncio.sleep(max(0.0, source.next_delay() - (time.monotonic() - started)))


class StateFile(object):
    """The JSON state a source keeps between runs. It must be the runner's own file and writable by nobody else
    (a forged state could silence events); an unreadable one is moved aside, never lost, and the source starts
    afresh with what the next look shows."""

    def __init__(self, path, logger, clock=time.time):
        self.path = path
        self.logger = logger
        self.clock = clock
        self._saved = None

    def check_trusted(self):
        """Raise ArgumentError when the file, or its directory, may be written by someone else."""
        for path in (os.path.dirname(self.path) or ".", self.path):
            try:
                info = os.stat(path)
            except FileNotFoundError:
                continue
            if info.st_uid not in (0, os.geteuid()):
                raise ArgumentError("state_file: %s is owned by uid %d, not by this user or root"
                                    % (path, info.st_uid))
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (stat.S_ISDIR(info.st_mode) and
                                                                     info.st_mode & stat.S_ISVTX and path != self.path):
                raise ArgumentError("state_file: %s may be written by group or others (mode %04o); "
                                    "fix: chmod go-w %s" % (path, stat.S_IMODE(info.st_mode), path))

    def load(self, validate):
        """The saved state, or None when there is none or it is unreadable (then moved aside)."""
        try:
            with open(self.path, "r", encoding="utf-8") as handle:
                state = json.load(handle)
            validate(state)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            aside = "%s.unreadable-%d" % (self.path, int(self.clock()))
            try:
                os.rename(self.path, aside)
                where = "moved to %s" % aside
            except OSError as move_error:
                where = "left in place (%s)" % move_error
            self.logger.error("state_file %s is unreadable (%s): %s; starting afresh", self.path, exc, where)
            return None
        return state

    def save(self, state, significant=None):
        """Write the state when what matters in it changed (its directory made, 0700, if missing); a failure is
        logged, and tried again next time."""
        text = json.dumps(significant(state) if significant else state, sort_keys=True)
        if text == self._saved:
            return False
        try:
            directory = os.path.dirname(self.path)
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o700)
            write_atomically(self.path, json.dumps(state, sort_keys=True).encode("utf-8"), mode=0o600)
        except OSError as exc:
            self.logger.error("cannot save the state to %s: %s", self.path, exc)
            return False
        self._saved = text
        return True
