# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Actions off the loop: the one place of the watcher where work runs beside the poll loop.

A lane runs its jobs one at a time, in the order they were submitted; lanes run side by side.
The loop submits a job (a function and what to do with its result) and goes on polling; a
finished job's result waits in a queue until the loop delivers it, in the loop's own thread,
so the machine, the metrics and the state file are only ever touched by the loop. wait()
returns as soon as a result is there, so the loop acts on a hook's end at once rather than
at the next poll.

Ordering rules, for the daemon's needs:
- `order`: the jobs of one key (an event) keep their order even across lanes: a job whose key
  still has a job queued or running on another lane goes to that lane instead.
- `first`: the job overtakes the jobs already waiting on its lane, but neither one that runs nor
  one of its own key.
- `bound`: a lane holds at most that many waiting jobs; the oldest is dropped for a new one.

Who runs a lane is the executor's business: ThreadExecutor starts a thread when a lane gets
work and lets it end when the lane is empty (an idle watcher has no extra thread). Tests
inject executors that run a job inline or only when the test says so, so the loop's tests
need no threads and no sleeps.
"""

from __future__ import annotations

import collections
import threading
import time


class Job(object):
    """One piece of work: `work()` in a lane, then `then(value, error)` in the loop."""

    def __init__(self, lane, label, work, then, order):
        self.lane = lane
        self.label = label
        self.work = work
        self.then = then
        self.order = order
        self.started = None
        self.first = False

    def __repr__(self):
        return "Job(%s: %s)" % (self.lane, self.label)


class Lanes(object):
    def __init__(self, executor=None, monotonic=time.monotonic):
        self.executor = executor or ThreadExecutor()
        self.monotonic = monotonic
        self._cond = threading.Condition()
        self._waiting = {}      # lane -> deque of Jobs not started
        self._running = {}      # lane -> the Job at work
        self._served = set()    # lanes an executor was asked to run and that have not reported empty
        self._done = collections.deque()  # (job, value, error), in the order they finished

    # --- the loop's side ---------------------------------------------------------------------

    def submit(self, lane, label, work, then=None, order=None, first=False, bound=None):
        """Queue `work` on `lane`; returns (the lane it went to, the Job dropped to respect `bound` or None)."""
        dropped = None
        with self._cond:
            if order is not None:
                lane = self._lane_of(order) or lane
            job = Job(lane, label, work, then, order)
            queue = self._waiting.setdefault(lane, collections.deque())
            if bound is not None and len(queue) >= bound:
                dropped = queue.popleft()
            position = len(queue)
            if first:
                job.first = True
                position = 0
                while position < len(queue) and queue[position].first:
                    position += 1  # behind the other jobs that overtook, in their order
                for index, other in enumerate(queue):
                    if order is not None and other.order == order:
                        position = max(position, index + 1)  # never ahead of its own key's jobs
            queue.insert(position, job)
            start = lane not in self._served
            self._served.add(lane)
        if start:
            self.executor.start(self, lane)
        return lane, dropped

    def _lane_of(self, order):
        for lane, job in self._running.items():
            if job.order == order:
                found = lane
                break
        else:
            found = None
        for lane, queue in self._waiting.items():
            if any(job.order == order for job in queue):
                found = lane  # the last one queued is where the next must follow
        return found

    def deliver(self):
        """Hand every finished job's result to its `then`, in this thread, in the order the jobs finished
        (including jobs that finish while this runs). Returns how many."""
        count = 0
        while True:
            with self._cond:
                if not self._done:
                    return count
                job, value, error = self._done.popleft()
            count += 1
            if job.then is not None:
                job.then(value, error)

    def ready(self):
        """A result waits to be delivered."""
        with self._cond:
            return bool(self._done)

    def wait(self, timeout):
        """Block until a result waits or `timeout` seconds have passed; True when a result waits."""
        with self._cond:
            if not self._done:
                self._cond.wait(timeout)
            return bool(self._done)

    def running(self):
        """[(lane, label, seconds it has run)] of the jobs at work now."""
        now = self.monotonic()
        with self._cond:
            return sorted((job.lane, job.label, now - job.started) for job in self._running.values())

    def waiting(self):
        """[(lane, label)] of the jobs queued and not started."""
        with self._cond:
            return [(job.lane, job.label) for lane in sorted(self._waiting) for job in self._waiting[lane]]

    def pending(self, order):
        """Whether a job of this key is queued or running."""
        with self._cond:
            return self._lane_of(order) is not None

    def idle(self):
        """No job queued or running."""
        with self._cond:
            return not self._running and not any(self._waiting.values())

    def drop_waiting(self, keep=()):
        """Forget the jobs not started yet, except on the lanes in `keep` (a stop starts nothing new); returns them."""
        with self._cond:
            dropped = []
            for lane in sorted(self._waiting):
                if lane not in keep:
                    dropped.extend(self._waiting[lane])
                    self._waiting[lane].clear()
            return dropped

    # --- the executors' side -----------------------------------------------------------------

    def run_next(self, lane):
        """Run the lane's next job in the calling thread; False (and the lane no longer served) when none waits."""
        with self._cond:
            queue = self._waiting.get(lane)
            if not queue:
                self._served.discard(lane)
                self._waiting.pop(lane, None)
                return False
            job = queue.popleft()
            job.started = self.monotonic()
            self._running[lane] = job
        value = error = None
        try:
            value = job.work()
        except Exception as exc:  # pylint: disable=broad-except
            # the loop must hear about every job, whatever went wrong in it
            error = exc
        with self._cond:
            del self._running[lane]
            self._done.append((job, value, error))
            self._cond.notify_all()
        return True


class ThreadExecutor(object):
    """A thread per lane with work, started when the lane gets a job and ended when it has none left."""

    def start(self, lanes, lane):
        thread = threading.Thread(target=self._serve, args=(lanes, lane), name="imds-watcher %s" % lane)
        thread.daemon = True  # a stop does not wait for it beyond its grace (Daemon.stop_grace)
        thread.start()

    @staticmethod
    def _serve(lanes, lane):
        while lanes.run_next(lane):
            pass
