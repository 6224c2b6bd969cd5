# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The machine's state on disk, so the lifecycle survives a crash and the reboot the event causes.

Writes are atomic (temp file in the same directory, fsync, rename, fsync of the
directory): after a crash the file holds the old state or the new one. A file
that cannot be read as a machine state is moved aside and the watcher starts
afresh; that loses only the history, never a hold: what is held is the hold
library's record, and the daemon adopts the holds it finds there for events.
"""

from __future__ import annotations

import json
import logging
import os
import time

from ..files import remove_stale_temp_files, write_atomically
from .machine import validate_state

MAX_STATE_BYTES = 8 * 1024 * 1024


class StateStore(object):
    def __init__(self, path, clock=time.time, logger=None):
        self.path = path
        self.directory = os.path.dirname(path)
        self.clock = clock
        self.logger = logger or logging.getLogger("imds-watcher")
        self.corrupt_copy = None

    def read(self):
        """(state or None, problem or None), changing nothing: for `status`."""
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return None, None
        if len(data) > MAX_STATE_BYTES:
            return None, "it is larger than %d bytes" % MAX_STATE_BYTES
        try:
            state = json.loads(data.decode("utf-8"))
            validate_state(state)
        except (UnicodeDecodeError, ValueError) as exc:
            return None, str(exc)
        return state, None

    def load(self):
        """The saved state, or None when there is none or it was unusable (then moved aside and logged)."""
        remove_stale_temp_files(self.path)  # a kill -9 mid-save leaves one; the daemon is the only writer
        state, problem = self.read()
        if problem is None:
            return state
        aside = "%s.corrupt-%d" % (self.path, int(self.clock()))
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            aside = None
            self.logger.error("state: cannot move the unusable state file %s aside: %s", self.path, exc.strerror)
        self.corrupt_copy = aside
        self.logger.error("state: %s is unusable (%s); %sstarting with no event history. Nothing is released "
                          "because of this: holds named in the hold record are adopted and released only when IMDS "
                          "shows their event is over", self.path, problem, "kept it as %s; " % aside if aside else "")
        return None

    def save(self, state):
        if self.directory and not os.path.isdir(self.directory):
            os.makedirs(self.directory, 0o755)
        state = dict(state, saved=self.clock())
        data = (json.dumps(state, sort_keys=True, indent=1) + "\n").encode("utf-8")
        write_atomically(self.path, data, mode=0o600)
