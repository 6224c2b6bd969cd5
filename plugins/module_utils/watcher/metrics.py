# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The Prometheus textfile-collector file (node_exporter --collector.textfile.directory).

node_exporter may read the file at any moment, so it is replaced atomically
(temp file in the same directory, then rename); it never sees half a file.
Counters start again at 0 when the daemon restarts, which Prometheus expects.
"""

from __future__ import annotations

from ..files import write_atomically

PREFIX = "imds_scheduled_events_"

# name: (type, help)
METRICS = {
    "events_seen_total": ("counter", "Scheduled events detected, by event type."),
    "events_pending": ("gauge", "Events being tracked (detected and not yet released or forgotten)."),
    "holds_active": ("gauge", "Events for which drift correction is held."),
    "approvals_total": ("counter", "Events approved (started early) by policy."),
    "hook_failures_total": ("counter", "Hook phases that failed, by phase."),
    "imds_errors_total": ("counter", "Polls of IMDS that failed."),
    "polls_total": ("counter", "Polls of IMDS, successful or not."),
    "last_successful_poll_timestamp_seconds": ("gauge", "When IMDS last answered a poll, in Unix time."),
    "notification_failures_total": ("counter", "Notifications that failed, by channel."),
    "action_failures_total": ("counter", "Hold, release and approval attempts that failed, by action."),
}
UNLABELLED = ("events_pending", "holds_active", "approvals_total", "imds_errors_total", "polls_total",
              "last_successful_poll_timestamp_seconds")


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics(object):
    def __init__(self):
        self.values = dict((name, {}) for name in METRICS)
        for name in UNLABELLED:  # present from the start, so alerts on them never see "no data"
            self.values[name][()] = 0

    def inc(self, name, amount=1, **labels):
        key = tuple(sorted(labels.items()))
        self.values[name][key] = self.values[name].get(key, 0) + amount

    def set(self, name, value, **labels):
        self.values[name][tuple(sorted(labels.items()))] = value

    def get(self, name, **labels):
        return self.values[name].get(tuple(sorted(labels.items())), 0)

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
