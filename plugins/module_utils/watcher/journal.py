# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The journal: one JSON line per transition, the history `status` shows.

Lines are appended and flushed to disk one by one, so a crash loses at most the
line being written; a torn or foreign line is skipped when reading. The file is
bounded: when the next line would take it past max_bytes it is renamed to
`<file>.1` (replacing the previous one) and a new file is started.
"""

from __future__ import annotations

import json
import os

DEFAULT_MAX_BYTES = 1024 * 1024
MAX_LINE = 64 * 1024


class Journal(object):
    def __init__(self, path, max_bytes=DEFAULT_MAX_BYTES, redact=None):
        self.path = path
        self.max_bytes = max_bytes
        self.redact = redact

    @property
    def rotated(self):
        return self.path + ".1"

    def append(self, entry):
        line = json.dumps(entry, sort_keys=True, ensure_ascii=True)
        if self.redact is not None:
            line = self.redact(line)
        if len(line) > MAX_LINE:  # hook output is already bounded; this is the last line of defence
            entry = dict(entry, data={"left_out": "%d bytes" % len(line)})
            line = json.dumps(entry, sort_keys=True, ensure_ascii=True)
            limit = MAX_LINE // 16
            while len(line) > MAX_LINE:  # an event's field may be huge: clip the values, never the JSON
                line = json.dumps(_clipped(entry, limit), sort_keys=True, ensure_ascii=True)
                limit //= 2
        data = (line + "\n").encode("ascii")
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        try:
            size = os.path.getsize(self.path)
        except OSError:
            size = 0
        if size and size + len(data) > self.max_bytes:
            os.replace(self.path, self.rotated)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o640)
        try:
            end = os.fstat(fd).st_size
            if end and os.pread(fd, 1, end - 1) != b"\n":
                data = b"\n" + data  # a line torn by a kill -9 must not swallow this one
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self):
        """Every readable entry, oldest first (the rotated file, then the current one)."""
        out = []
        for path in (self.rotated, self.path):
            try:
                with open(path, "r", encoding="ascii", errors="replace") as handle:
                    for line in handle:
                        try:
                            entry = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(entry, dict) and entry.get("event_id"):
                            out.append(entry)
            except FileNotFoundError:
                continue
        return out

    def timelines(self, last=10):
        """The last `last` events with their transitions, most recent last."""
        events = {}
        order = []
        for entry in self.entries():
            key = str(entry["event_id"]).lower()
            if key not in events:
                events[key] = {"event_id": entry["event_id"], "event_type": entry.get("event_type"),
                               "first": entry.get("time"), "timeline": []}
            else:
                order.remove(key)
            order.append(key)
            record = events[key]
            record["last"] = entry.get("time")
            record["state"] = entry.get("state")
            record["event_type"] = entry.get("event_type") or record["event_type"]
            if entry.get("outcome"):
                record["outcome"] = entry["outcome"]
            record["timeline"].append({"time": entry.get("time"), "transition": entry.get("transition"),
                                       "detail": entry.get("detail", "")})
        keys = order[-last:] if last > 0 else []
        return [events[k] for k in keys]


def _clipped(value, limit):
    """`value` with every string longer than `limit` characters cut there, saying how much was left out."""
    if isinstance(value, str) and len(value) > limit:
        return "%s...[%d characters left out]" % (value[:limit], len(value) - limit)
    if isinstance(value, dict):
        return dict((key, _clipped(item, limit)) for key, item in value.items())
    if isinstance(value, list):
        return [_clipped(item, limit) for item in value]
    return value
