# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The Prometheus textfile-collector file (node_exporter --collector.textfile.directory).

node_exporter may read the file at any moment, so it is replaced atomically
(temp file in the same directory, then rename); it never sees half a file.
Counters start again at 0 when the daemon restarts, which Prometheus expects.

Besides the counters and gauges of the whole watcher, the file has one series per
tracked event (`event_info` and its timestamps) and one per hold reason of the hold
record. They are rewritten from the machine's records and the hold record after
every tick, so a series exists exactly while its event is tracked (or its reason
held) and is gone from the next file once the event is forgotten: the label sets
stay bounded by what the watcher tracks. docs/watcher.md documents every series and
prometheus/rules/ alerts on them.
"""

from __future__ import annotations

import datetime
import re

from ..files import write_atomically
from ..lifecycle import OUTCOMES
from .health import REASONS

PREFIX = "imds_scheduled_events_"
# The watcher's release: the collection's version (galaxy.yml; a unit test keeps them equal).
WATCHER_VERSION = "0.1.0"
# Label values come from IMDS and the hold record: clipped, so no value grows a series without bound.
MAX_LABEL = 128

# name: (type, help)
METRICS = {
    "events_seen_total": ("counter", "Scheduled events detected, by event type."),
    "events_gone_total": ("counter", "Events over (gone from the document), by outcome: completed, cancelled or "
                                     "vanished."),
    "degraded": ("gauge", "1 while the watcher cannot do its whole job, by reason (vm_name_unknown, imds_unreachable, "
                          "hold_record_unreadable), else 0."),
    "events_pending": ("gauge", "Events being tracked (detected and not yet released or forgotten)."),
    "holds_active": ("gauge", "Events for which drift correction is held."),
    "approvals_total": ("counter", "Events approved (started early) by policy."),
    "hook_failures_total": ("counter", "Hook phases that failed, by phase."),
    "imds_errors_total": ("counter", "Polls of IMDS that failed."),
    "polls_total": ("counter", "Polls of IMDS, successful or not."),
    "last_successful_poll_timestamp_seconds": ("gauge", "When IMDS last answered a poll, in Unix time."),
    "notification_failures_total": ("counter", "Notifications that failed, by channel."),
    "action_failures_total": ("counter", "Hold, release and approval attempts that failed, by action."),
    "watcher_info": ("gauge", "Always 1: the watcher's version in the label version."),
    "watcher_start_time_seconds": ("gauge", "When this watcher process started, in Unix time."),
    "event_info": ("gauge", "Always 1: one series per tracked event, with its type, EventStatus, EventSource, scope, "
                            "lifecycle state and whether drift correction is held for it."),
    "event_not_before_timestamp_seconds": ("gauge", "The tracked event's NotBefore, in Unix time (absent while "
                                                    "IMDS gives none, as once it is Started)."),
    "event_detected_timestamp_seconds": ("gauge", "When the watcher first saw the tracked event, in Unix time."),
    "event_state_since_timestamp_seconds": ("gauge", "When the tracked event entered its lifecycle state, in Unix "
                                                     "time."),
    "hold_reason_since_timestamp_seconds": ("gauge", "When each reason of the hold record was set, in Unix time, "
                                                     "by reason, holder and event."),
    "hold_reason_age_seconds": ("gauge", "How long each reason of the hold record has held, in seconds, when the "
                                         "file was written."),
}
# Failure counters present at 0 from the first file: increase() then counts the first failure too.
ZEROED = (("action_failures_total", "action", ("approve", "hold", "release")), ("hook_failures_total", "phase", ("post", "pre")),
          ("events_gone_total", "outcome", OUTCOMES), ("degraded", "reason", REASONS))
# Rewritten as a whole from the tracked events / the hold record: a series leaves with its event or reason.
EVENT_FAMILIES = ("event_info", "event_not_before_timestamp_seconds", "event_detected_timestamp_seconds",
                  "event_state_since_timestamp_seconds")
REASON_FAMILIES = ("hold_reason_since_timestamp_seconds", "hold_reason_age_seconds")
UNLABELLED = ("events_pending", "holds_active", "approvals_total", "imds_errors_total", "polls_total",
              "last_successful_poll_timestamp_seconds")


_UNWRITABLE = re.compile("[\x00-\x09\x0b-\x1f\x7f\ud800-\udfff]")


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label(value, default=""):
    """A label value from untrusted text: a default when empty, clipped to MAX_LABEL characters."""
    text = default if value is None or value == "" else str(value)
    if len(text) > MAX_LABEL:
        text = text[:MAX_LABEL - 3] + "..."
    # the file is UTF-8 and read line by line: an unpaired surrogate (as json.loads lets through), NUL and every other
    # control character but the newline (which _escape writes as \n) become U+FFFD; a \r would end the line for some
    # parsers
    return _UNWRITABLE.sub("\ufffd", text)


def _labels(labels):
    """A series' key: every label value through _label, whoever the caller is."""
    return tuple(sorted((name, _label(value)) for name, value in labels.items()))


def _epoch(text):
    """The hold record's times ("2025-06-15T15:00:02Z") as Unix time; None when unreadable."""
    try:
        moment = datetime.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=datetime.timezone.utc).timestamp()


class Metrics(object):
    def __init__(self):
        self.values = dict((name, {}) for name in METRICS)
        for name in UNLABELLED:  # present from the start, so alerts on them never see "no data"
            self.values[name][()] = 0
        for name, label, values in ZEROED:
            for value in values:
                self.values[name][((label, value),)] = 0

    def inc(self, name, amount=1, **labels):
        key = _labels(labels)
        self.values[name][key] = self.values[name].get(key, 0) + amount

    def set(self, name, value, **labels):
        self.values[name][_labels(labels)] = value

    def get(self, name, **labels):
        return self.values[name].get(_labels(labels), 0)

    def started(self, now, version=WATCHER_VERSION):
        """The process's identity: its start time and version, written from the first file on."""
        self.values["watcher_info"] = {(("version", _label(version)),): 1}
        self.set("watcher_start_time_seconds", round(now, 3))

    def set_degraded(self, reasons):
        """1 for each reason that holds now (health.Health's conditions), 0 for the others."""
        for reason in REASONS:
            self.set("degraded", 1 if reason in reasons else 0, reason=reason)

    def set_events(self, records):
        """One series per tracked event (the machine's records), replacing the last tick's: a forgotten event's
        series are gone from the next file."""
        for name in EVENT_FAMILIES:
            self.values[name] = {}
        for rec in records:
            event_id = _label(rec.get("id"), "unknown")
            event = rec.get("event") if isinstance(rec.get("event"), dict) else {}
            self.set("event_info", 1, event_id=event_id, type=_label(rec.get("type"), "unknown"),
                     status=_label(rec.get("status"), "unknown"), source=_label(event.get("EventSource"), "unknown"),
                     scope=_label(rec.get("scope"), "unknown"), state=_label(rec.get("state"), "unknown"),
                     held="true" if rec.get("held") else "false")
            for name, field in (("event_not_before_timestamp_seconds", "not_before"),
                                ("event_detected_timestamp_seconds", "first_seen"),
                                ("event_state_since_timestamp_seconds", "since")):
                value = rec.get(field)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.set(name, round(value, 3), event_id=event_id)

    def set_hold_reasons(self, reasons, now):
        """One series per reason of the hold record (`imds-hold status`'s reasons, whoever set them), replacing the
        last ones. A reason whose time cannot be read has no series."""
        for name in REASON_FAMILIES:
            self.values[name] = {}
        for reason in reasons:
            since = _epoch(reason.get("since"))
            if since is None:
                continue
            labels = {"reason_id": _label(reason.get("id"), "unknown"), "holder": _label(reason.get("holder"), "unknown")}
            if reason.get("event_id"):  # an operator's reason names no event: no label (Prometheus' empty value)
                labels["event_id"] = _label(reason["event_id"])
            self.set("hold_reason_since_timestamp_seconds", since, **labels)
            self.set("hold_reason_age_seconds", round(max(0.0, now - since), 3), **labels)

    def render(self):
        lines = []
        for name in sorted(METRICS):
            kind, text = METRICS[name]
            full = PREFIX + name
            lines.append("# HELP %s %s" % (full, text))
            lines.append("# TYPE %s %s" % (full, kind))
            for key in sorted(self.values[name]):
                labels = ",".join('%s="%s"' % (k, _escape(v)) for k, v in key)
                value = self.values[name][key]
                lines.append("%s%s %s" % (full, "{%s}" % labels if labels else "", _number(value)))
        return "\n".join(lines) + "\n"

    def write(self, path):
        """Replace `path` atomically. Raises OSError (the caller logs it once and carries on)."""
        write_atomically(path, self.render().encode("utf-8"), durable=False)


def _number(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
