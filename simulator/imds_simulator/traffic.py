"""Per-VM request accounting: the 5 requests/s rate limit and the request log.

Both run on real (monotonic / wall) time, not simulated time: the limit
protects against clients hammering IMDS, which is a property of the client's
real loop whatever the scenario's time scale. The time sources are
injectable so tests can freeze them.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time


class RateLimiter:
    """Sliding-window limit: at most ``limit`` requests per ``window`` seconds per VM.

    Rejected requests count too, as on Azure: a client that keeps retrying
    without backing off stays throttled. ``limit`` 0 disables the limiter.
    """

    def __init__(self, limit=5, window=1.0, monotonic=time.monotonic):
        self.limit = limit
        self.window = window
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._seen = collections.defaultdict(collections.deque)

    def allow(self, vm):
        """Count one request for ``vm``; False when it is over the limit."""
        if not self.limit:
            return True
        now = self._monotonic()
        with self._lock:
            seen = self._seen[vm]
            while seen and seen[0] <= now - self.window:
                seen.popleft()
            seen.append(now)
            return len(seen) <= self.limit

    def reset(self):
        """Forget every request."""
        with self._lock:
            self._seen.clear()


class RequestLog:
    """A bounded ring buffer of the IMDS requests every VM made."""

    def __init__(self, size=10000):
        self._entries = collections.deque(maxlen=size)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, **entry):
        """Append one entry; a sequence number is added."""
        with self._lock:
            entry["seq"] = next(self._seq)
            self._entries.append(entry)
            return entry

    def query(self, vm=None, since=None, limit=None):
        """Entries, oldest first, for one VM and/or with ``wall_time`` after ``since``."""
        with self._lock:
            entries = [entry for entry in self._entries
                       if (vm is None or entry["vm"] == vm) and (since is None or entry["wall_time"] > since)]
        return entries[-limit:] if limit else entries

    def clear(self):
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
