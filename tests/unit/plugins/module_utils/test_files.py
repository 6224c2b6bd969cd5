# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import files


def leftovers(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def test_replaces_the_content_with_the_mode_asked_for(tmp_path):
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    files.write_atomically(str(target), b"new" * 100000, mode=0o600)
    assert target.read_bytes() == b"new" * 100000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


def test_the_directory_is_fsynced_only_when_durable(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(files, "fsync_directory", synced.append)
    files.write_atomically(str(tmp_path / "metrics.prom"), b"x", durable=False)
    assert synced == []
    files.write_atomically(str(tmp_path / "holds.json"), b"x")
    assert synced == [str(tmp_path)]


@pytest.mark.parametrize("failing", ["write", "fsync", "rename"])
def test_a_failure_keeps_the_old_content_and_leaves_no_temp_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "holds.json"
    target.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomically(str(target), b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_a_missing_directory_is_an_error_not_a_silent_create(tmp_path):
    with pytest.raises(OSError):
        files.write_atomically(str(tmp_path / "absent" / "state.json"), b"x")
