# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The hold record on disk: one JSON file that the module, the CLI, the guard and the
watcher daemon all read and write.

- Writers take an exclusive flock on `<state file>.lock` for their whole operation,
  so no one loses another's write; readers (status, the guard) take no lock,
  because every write is atomic (temp file in the same directory, fsync, rename,
  fsync of the directory): a reader sees the old record or the new one.
- The record decides what root runs (release commands are stored in it), so a
  file or directory that is not owned by root, or that group or others may
  write, is refused, and so is a symlinked state file.
- A file that is not a valid record is never overwritten: a copy is kept aside
  and every writer fails until an operator repairs it, because starting afresh
  would forget what a hold stopped and never restore it.
- `<state file>.guard-lock` is shared by jobs running under imds-drift-guard, so
  a hold can wait for the runs already in flight.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
import time

from ..files import remove_stale_temp_files, write_atomically
from .common import DEFAULT_LOCK_TIMEOUT, DEFAULT_STATE_FILE, CorruptStateError, StateError, isoformat

FORMAT = "imds-scheduled-events/holds"
VERSION = 1
PHASES = ("holding", "held", "releasing")
MAX_STATE_BYTES = 4 * 1024 * 1024
LOCK_POLL = 0.2

_REQUIRED_TARGET_KEYS = {
    "backend": str, "name": str, "phase": str, "settings": dict, "prior": dict, "actions": list,
    "done": list, "reasons": list,
}
_REQUIRED_REASON_KEYS = ("id", "text")


def new_document():
    return {"format": FORMAT, "version": VERSION, "targets": {}}


def validate_document(doc):
    """Raise ValueError naming the first thing that makes `doc` not a hold record."""
    if not isinstance(doc, dict):
        raise ValueError("the top level is not an object")
    if doc.get("format") != FORMAT:
        raise ValueError("'format' is %r, not %r" % (doc.get("format"), FORMAT))
    if not isinstance(doc.get("version"), int) or isinstance(doc.get("version"), bool):
        raise ValueError("'version' is not an integer")
    targets = doc.get("targets")
    if not isinstance(targets, dict):
        raise ValueError("'targets' is not an object")
    for key, rec in targets.items():
        if not isinstance(rec, dict):
            raise ValueError("target %r is not an object" % key)
        for field, kind in _REQUIRED_TARGET_KEYS.items():
            if not isinstance(rec.get(field), kind):
                raise ValueError("target %r: %r is missing or not a %s" % (key, field, kind.__name__))
        if rec["phase"] not in PHASES:
            raise ValueError("target %r: unknown phase %r" % (key, rec["phase"]))
        for reason in rec["reasons"]:
            if not isinstance(reason, dict) or not all(isinstance(reason.get(k), str) for k in _REQUIRED_REASON_KEYS):
                raise ValueError("target %r: a reason lacks 'id' or 'text'" % key)


def _check_trusted(st, what, path, owner_uid):
    if st.st_uid != owner_uid:
        raise StateError("refusing to trust %s %s: it is owned by uid %d, not uid %d; whoever owns it could make "
                         "root run commands. Fix: chown %d %s" % (what, path, st.st_uid, owner_uid, owner_uid, path))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateError("refusing to trust %s %s: group or others may write it (mode %04o). Fix: chmod go-w %s"
                         % (what, path, stat.S_IMODE(st.st_mode), path))


class HoldStore(object):
    """Load, lock and atomically save the hold record."""

    def __init__(self, path=DEFAULT_STATE_FILE, owner_uid=0, clock=time.time, monotonic=time.monotonic,
                 sleep=time.sleep, lock_timeout=DEFAULT_LOCK_TIMEOUT):
        if not path or not os.path.isabs(path):
            raise StateError("the state file must be an absolute path, not %r" % (path,))
        self.path = os.path.normpath(path)
        self.directory = os.path.dirname(self.path)
        self.lock_path = self.path + ".lock"
        self.guard_lock_path = self.path + ".guard-lock"
        self.owner_uid = owner_uid
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.lock_timeout = lock_timeout

    # --- the directory ---------------------------------------------------

    def check_directory(self, create=False):
        """True when the directory exists and is trusted; created (0755) when asked to."""
        try:
            st = os.stat(self.directory)
        except FileNotFoundError:
            if not create:
                return False
            try:
                os.makedirs(self.directory, 0o755)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StateError("cannot create the state directory %s: %s" % (self.directory, exc.strerror))
            st = os.stat(self.directory)
        if not stat.S_ISDIR(st.st_mode):
            raise StateError("the state directory %s is not a directory" % self.directory)
        _check_trusted(st, "the state directory", self.directory, self.owner_uid)
        return True

    def _open_trusted(self, path, flags, what, mode=0o644):
        """Open without following symlinks, then check owner and mode on the open file."""
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StateError("refusing to trust %s %s: it is a symlink" % (what, path))
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StateError("%s %s is not a regular file" % (what, path))
            _check_trusted(st, what, path, self.owner_uid)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # --- reading ---------------------------------------------------------

    def read(self, keep_corrupt=False):
        """The record, or an empty one when there is no state file yet.

        A corrupt file raises CorruptStateError; with keep_corrupt (writers) a copy
        is kept aside first, named after its content so repeated runs keep one copy.
        """
        if not self.check_directory():
            return new_document()
        try:
            fd = self._open_trusted(self.path, os.O_RDONLY, "the state file")
        except FileNotFoundError:
            return new_document()
        except OSError as exc:
            raise StateError("cannot read the state file %s: %s" % (self.path, exc.strerror))
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_STATE_BYTES + 1)
        problem = None
        doc = None
        if len(data) > MAX_STATE_BYTES:
            problem = "it is larger than %d bytes" % MAX_STATE_BYTES
        else:
            try:
                doc = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                problem = "it is not JSON (%s)" % exc
        if problem is None and isinstance(doc, dict) and isinstance(doc.get("version"), int) \
                and doc.get("format") == FORMAT and doc["version"] > VERSION:
            raise StateError("the state file %s was written by a newer version (format version %d; this one "
                             "understands %d); refusing to change it" % (self.path, doc["version"], VERSION))
        if problem is None:
            try:
                validate_document(doc)
            except ValueError as exc:
                problem = "it is not a hold record (%s)" % exc
        if problem is not None:
            kept = self._keep_aside(data) if keep_corrupt else None
            where = (" A copy is kept at %s." % kept) if kept else ""
            raise CorruptStateError(
                "the state file %s is corrupt: %s.%s It is left in place and nothing was changed, since starting "
                "afresh would forget what the holds stopped. Repair it, or move it away once every backend it "
                "lists has been restored by hand." % (self.path, problem, where), kept=kept)
        return doc

    def _keep_aside(self, data):
        digest = hashlib.sha256(data).hexdigest()[:16]
        kept = "%s.corrupt-%s" % (self.path, digest)
        if os.path.exists(kept):
            return kept
        try:
            write_atomically(kept, data)
        except OSError:
            return None
        return kept

    def read_with_writer(self):
        """(record, writer) for status: `writer` is None when no hold, release or settle is at work, else the pid
        of the one that is (0 when it has not written its pid yet).

        The writers' lock says it, not a pid or a time in the record: a process that dies, however, drops its lock.
        When no one holds it, the record is read under a shared lock, so no writer starts in between and a target
        still in progress then is really stopped half way. Changes nothing."""
        for attempt in (1, 2):
            if not self.check_directory():
                return new_document(), None
            try:
                fd = self._open_trusted(self.lock_path, os.O_RDONLY, "the lock file")
            except FileNotFoundError:
                doc = self.read()
                if attempt == 1 and _in_progress(doc):
                    continue  # a first writer made the lock file just now
                return doc, None
            except OSError as exc:
                raise StateError("cannot open the lock file %s: %s" % (self.lock_path, exc.strerror))
            try:
                if _try_flock(fd, fcntl.LOCK_SH):
                    try:
                        return self.read(), None
                    finally:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                return self.read(), _lock_owner_pid(fd)
            finally:
                os.close(fd)
        return self.read(), None  # pragma: no cover - the loop returns

    # --- writing ---------------------------------------------------------

    def write(self, doc):
        """Save the record atomically; `updated` says when."""
        validate_document(doc)
        self.check_directory(create=True)
        doc["updated"] = isoformat(self.clock())
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")
        try:
            write_atomically(self.path, data)
        except OSError as exc:
            raise StateError("cannot write the state file %s: %s" % (self.path, exc.strerror or exc))

    # --- locking ---------------------------------------------------------

    @contextlib.contextmanager
    def locked(self):
        """Exclusive lock for a whole read-modify-write; bounded wait, names the holder on timeout."""
        self.check_directory(create=True)
        try:
            fd = self._open_trusted(self.lock_path, os.O_RDWR | os.O_CREAT, "the lock file")
        except OSError as exc:
            raise StateError("cannot open the lock file %s: %s" % (self.lock_path, exc.strerror))
        try:
            deadline = self.monotonic() + self.lock_timeout
            while not _try_flock(fd, fcntl.LOCK_EX):
                if self.monotonic() >= deadline:
                    raise StateError("the hold record %s is locked by another process (%s) for more than %s s"
                                     % (self.path, _lock_owner(fd), self.lock_timeout))
                self.sleep(LOCK_POLL)
            os.ftruncate(fd, 0)
            os.pwrite(fd, ("%d\n" % os.getpid()).encode("ascii"), 0)
            remove_stale_temp_files(self.path)  # left by a writer killed mid-write; we hold the lock
            yield
        finally:
            os.close(fd)

    # --- runs under imds-drift-guard ------------------------------------

    def open_guard_run_lock(self):
        """For the guard: a shared lock held by the job it runs (the fd survives exec).

        Returns the fd, or None when there is no state directory and root cannot
        make one (nothing can be held then, so nothing needs to wait for the job).
        """
        try:
            if not self.check_directory(create=os.geteuid() == self.owner_uid):
                return None
        except StateError:
            if os.path.isdir(self.directory):
                raise
            return None
        flags = os.O_RDWR | os.O_CREAT if os.geteuid() == self.owner_uid else os.O_RDONLY
        try:
            fd = self._open_trusted(self.guard_lock_path, flags, "the guard lock file")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError("cannot open the guard lock file %s: %s" % (self.guard_lock_path, exc.strerror))
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    def guard_runs_in_flight(self):
        """True while a job started by imds-drift-guard is running."""
        fd = self._open_guard_lock_for_wait()
        if fd is None:
            return False
        try:
            if _try_flock(fd, fcntl.LOCK_EX):
                return False
            return True
        finally:
            os.close(fd)

    def wait_for_guard_runs(self, timeout):
        """Wait until no guarded job runs; False when `timeout` seconds were not enough."""
        fd = self._open_guard_lock_for_wait()
        if fd is None:
            return True
        try:
            deadline = self.monotonic() + timeout
            while not _try_flock(fd, fcntl.LOCK_EX):
                if self.monotonic() >= deadline:
                    return False
                self.sleep(LOCK_POLL)
            return True
        finally:
            os.close(fd)

    def _open_guard_lock_for_wait(self):
        if not self.check_directory():
            return None
        try:
            return self._open_trusted(self.guard_lock_path, os.O_RDONLY, "the guard lock file")
        except FileNotFoundError:
            return None


def _try_flock(fd, operation):
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _lock_owner_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return int(text) if text.isdigit() else 0


def _lock_owner(fd):
    pid = _lock_owner_pid(fd)
    return "pid %d" % pid if pid else "pid unknown"


def _in_progress(doc):
    return any(rec["phase"] != "held" or not rec["reasons"] for rec in doc["targets"].values())
