# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Replacing a file so that a crash at any instant leaves the old content or the new, never a mix.

The hold record, the watcher's state and its metrics file all rely on this: a
kill -9 or a power cut in the middle of a write must not lose a hold.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_atomically(path, data, mode=0o644, durable=True):
    """Write `data` (bytes) to a temp file beside `path`, fsync it, rename it over `path`.

    With `durable`, the directory is fsynced too: only then does the rename itself survive a power cut.
    Raises OSError; a temp file left by a failure is removed.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.rename(tmp, path)
        tmp = None
        if durable:
            fsync_directory(directory)
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def fsync_directory(directory):
    """A rename is durable only once the directory entry is on disk."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp_files(path):
    """Remove the temp files that writers of `path` killed mid-write left behind (kill -9 skips `finally`).

    Only for callers that know no other writer of `path` is at work: under the file's lock, or as its
    only writer. Returns the names removed.
    """
    directory = os.path.dirname(path) or "."
    prefix = ".%s." % os.path.basename(path)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed.append(name)
    return removed
