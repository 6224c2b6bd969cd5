"""Simulation clocks.

The world never reads the system time itself: it asks a clock for "now" in
simulated seconds. Two clocks exist:

* ``ManualClock`` only moves when told to (``advance``). Tests use it so that
  every transition happens at a precise, reproducible instant without sleeps.
* ``ScaledClock`` follows the wall clock, ``time_scale`` simulated seconds per
  real second (60 compresses an hour into a minute).

Both map a simulated instant to a calendar datetime, used to render
``NotBefore``. For the scaled clock that datetime is the *wall* time at which
the simulation reaches the instant, so a client comparing ``NotBefore`` with
its own clock sees the real (compressed) time left.
"""

from __future__ import annotations

import datetime
import threading
import time

UTC = datetime.timezone.utc


class ManualClock:
    """A clock that only advances through ``advance()``."""

    mode = "manual"

    def __init__(self, epoch=None, time_scale=1.0):
        """``epoch`` is the calendar datetime of simulated second 0."""
        if epoch is None:
            epoch = datetime.datetime.fromtimestamp(int(time.time()), UTC)
        self.epoch = epoch
        self.time_scale = float(time_scale)
        self._now = 0.0
        self._lock = threading.Lock()

    def now(self):
        """Simulated seconds since the start."""
        with self._lock:
            return self._now

    def advance(self, seconds):
        """Move the clock forward by ``seconds`` simulated seconds."""
        if seconds < 0:
            raise ValueError("the clock cannot go backwards")
        with self._lock:
            self._now += float(seconds)
            return self._now

    def reset(self):
        """Go back to simulated second 0."""
        with self._lock:
            self._now = 0.0

    def to_datetime(self, sim_seconds):
        """Calendar datetime of a simulated instant."""
        return self.epoch + datetime.timedelta(seconds=sim_seconds)


class ScaledClock:
    """A clock following the wall clock at ``time_scale`` simulated seconds per second.

    ``advance()`` jumps ahead on top of the running time; ``wall`` is injectable
    so the mapping can be tested without waiting.
    """

    mode = "scaled"

    def __init__(self, time_scale=1.0, wall=time.time):
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = float(time_scale)
        self._wall = wall
        self._lock = threading.Lock()
        self._origin = wall()
        self._offset = 0.0

    def now(self):
        """Simulated seconds since the start (or the last reset)."""
        with self._lock:
            return (self._wall() - self._origin) * self.time_scale + self._offset

    def advance(self, seconds):
        """Jump ahead by ``seconds`` simulated seconds."""
        if seconds < 0:
            raise ValueError("the clock cannot go backwards")
        with self._lock:
            self._offset += float(seconds)
        return self.now()

    def reset(self):
        """Restart simulated time at 0 from the current wall time."""
        with self._lock:
            self._origin = self._wall()
            self._offset = 0.0

    def to_datetime(self, sim_seconds):
        """Wall-clock datetime at which the simulation reaches ``sim_seconds``."""
        with self._lock:
            wall = self._origin + (sim_seconds - self._offset) / self.time_scale
        return datetime.datetime.fromtimestamp(wall, UTC)


def rfc1123(moment):
    """Format a datetime as Azure does for NotBefore: ``Mon, 19 Sep 2016 18:29:47 GMT``.

    Built by hand because ``strftime('%a')`` follows the process locale.
    """
    moment = moment.astimezone(UTC)
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return (f"{days[moment.weekday()]}, {moment.day:02d} {months[moment.month - 1]} {moment.year:04d} "
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} GMT")


def iso8601(moment):
    """Format a datetime as the 2017-03-01 preview did: ``2016-09-19T18:29:47Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso8601(text):
    """Parse an ISO-8601 UTC timestamp (``Z`` or an offset); naive means UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
