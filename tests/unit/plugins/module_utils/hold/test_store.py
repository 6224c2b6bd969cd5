# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import fcntl
import json
import os
import stat

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold import store as store_mod
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.common import CorruptStateError, StateError
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.store import HoldStore, new_document

UID = os.getuid()


def make_store(path, fake_time, **kwargs):
    options = dict(owner_uid=UID, clock=fake_time.clock, monotonic=fake_time.monotonic, sleep=fake_time.sleep)
    options.update(kwargs)
    return HoldStore(path, **options)


def record(reason_id="r1"):
    doc = new_document()
    doc["targets"]["guard"] = {"backend": "guard", "name": "imds-drift-guard", "phase": "held", "settings": {},
                               "prior": {}, "actions": [], "done": [], "notes": [],
                               "reasons": [{"id": reason_id, "text": "why", "event_id": None, "holder": "me",
                                            "since": "2025-01-01T00:00:00Z"}]}
    return doc


def test_missing_file_and_directory_read_as_empty(tmp_path, fake_time):
    assert make_store(str(tmp_path / "absent" / "holds.json"), fake_time).read() == new_document()
    assert make_store(str(tmp_path / "holds.json"), fake_time).read() == new_document()


def test_relative_path_is_refused(fake_time):
    with pytest.raises(StateError, match="absolute"):
        make_store("holds.json", fake_time)


def test_write_is_atomic_and_durable(state_file, fake_time, monkeypatch):
    store = make_store(state_file, fake_time)
    synced, renamed = [], []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    def rename(src, dst):
        assert os.path.dirname(src) == os.path.dirname(dst), "the temp file must be in the same directory"
        assert json.load(open(src, encoding="utf-8"))["targets"]["guard"]["reasons"][0]["id"] == "r1"
        renamed.append((src, dst))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    store.write(record())
    assert synced == [False, True], "the file, then its directory"
    assert renamed[0][1] == state_file
    assert sorted(os.listdir(os.path.dirname(state_file))) == ["holds.json"]
    assert stat.S_IMODE(os.stat(state_file).st_mode) == 0o644
    saved = store.read()
    assert saved["targets"] == record()["targets"]
    assert saved["updated"] == "2025-06-15T15:06:40Z"


def test_failed_write_leaves_the_old_record_and_no_temp_file(state_file, fake_time, monkeypatch):
    store = make_store(state_file, fake_time)
    store.write(record("old"))

    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(StateError, match="No space left"):
        store.write(record("new"))
    monkeypatch.undo()
    assert store.read()["targets"]["guard"]["reasons"][0]["id"] == "old"
    assert sorted(os.listdir(os.path.dirname(state_file))) == ["holds.json"]


def test_write_creates_the_directory(tmp_path, fake_time):
    store = make_store(str(tmp_path / "new" / "dir" / "holds.json"), fake_time)
    store.write(record())
    assert stat.S_IMODE(os.stat(str(tmp_path / "new" / "dir")).st_mode) & 0o022 == 0


def test_lock_is_exclusive_and_bounded(state_file, fake_time):
    first = make_store(state_file, fake_time)
    second = make_store(state_file, fake_time, lock_timeout=5)
    with first.locked():
        with pytest.raises(StateError, match=r"locked by another process \(pid %d\) for more than 5 s" % os.getpid()):
            with second.locked():
                pass
    assert fake_time.slept and sum(fake_time.slept) >= 5
    with second.locked():
        pass


def test_lock_is_free_after_the_holder_is_gone(state_file, fake_time):
    store = make_store(state_file, fake_time, lock_timeout=0)
    with store.locked():
        pass
    with store.locked():
        pass


@pytest.mark.parametrize("target", ["directory", "file", "lock"])
def test_group_or_world_writable_is_refused(state_file, fake_time, target):
    store = make_store(state_file, fake_time)
    store.write(record())
    with store.locked():
        pass
    path = {"directory": os.path.dirname(state_file), "file": state_file, "lock": state_file + ".lock"}[target]
    os.chmod(path, os.stat(path).st_mode | stat.S_IWOTH)
    with pytest.raises(StateError, match="group or others may write it .* chmod go-w"):
        with store.locked():
            store.read()


def test_other_owner_is_refused(state_file, fake_time):
    make_store(state_file, fake_time).write(record())
    stranger = make_store(state_file, fake_time, owner_uid=UID + 1)
    with pytest.raises(StateError, match="owned by uid %d, not uid %d" % (UID, UID + 1)):
        stranger.read()


def test_symlinked_state_file_is_refused(state_file, fake_time, tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(record()))
    os.symlink(str(target), state_file)
    with pytest.raises(StateError, match="symlink"):
        make_store(state_file, fake_time).read()


@pytest.mark.parametrize("content, problem", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[]", "not a hold record"),
    (b'{"format": "imds-scheduled-events/holds", "version": 1, "targets": {"x": {"backend": "systemd"}}}',
     "not a hold record"),
])
def test_corrupt_file_is_kept_aside_and_never_overwritten(state_file, fake_time, content, problem):
    with open(state_file, "wb") as handle:
        handle.write(content)
    store = make_store(state_file, fake_time)
    with pytest.raises(CorruptStateError, match=problem) as info:
        store.read(keep_corrupt=True)
    assert info.value.kept and open(info.value.kept, "rb").read() == content
    assert "A copy is kept at %s" % info.value.kept in str(info.value)
    assert open(state_file, "rb").read() == content
    with pytest.raises(CorruptStateError):
        store.read(keep_corrupt=True)
    aside = [n for n in os.listdir(os.path.dirname(state_file)) if ".corrupt-" in n]
    assert len(aside) == 1, "one copy per distinct content"


def test_readers_do_not_copy_corrupt_files(state_file, fake_time):
    with open(state_file, "w", encoding="utf-8") as handle:
        handle.write("{")
    with pytest.raises(CorruptStateError) as info:
        make_store(state_file, fake_time).read()
    assert info.value.kept is None
    assert [n for n in os.listdir(os.path.dirname(state_file)) if ".corrupt-" in n] == []


def test_newer_format_is_refused_not_treated_as_corrupt(state_file, fake_time):
    doc = record()
    doc["version"] = 2
    with open(state_file, "w", encoding="utf-8") as handle:
        json.dump(doc, handle)
    with pytest.raises(StateError, match="newer version") as info:
        make_store(state_file, fake_time).read(keep_corrupt=True)
    assert not isinstance(info.value, CorruptStateError)


def test_oversized_file_is_corrupt(state_file, fake_time, monkeypatch):
    monkeypatch.setattr(store_mod, "MAX_STATE_BYTES", 10)
    make_store(state_file, fake_time).write(record())
    with pytest.raises(CorruptStateError, match="larger than 10 bytes"):
        make_store(state_file, fake_time).read()


def test_invalid_documents_are_not_written(state_file, fake_time):
    doc = record()
    doc["targets"]["guard"]["phase"] = "sideways"
    with pytest.raises(ValueError, match="unknown phase"):
        make_store(state_file, fake_time).write(doc)
    assert not os.path.exists(state_file)


def test_guard_run_lock_is_shared_and_seen_by_the_waiter(state_file, fake_time):
    store = make_store(state_file, fake_time)
    assert not store.guard_runs_in_flight()
    assert store.wait_for_guard_runs(0)
    first = store.open_guard_run_lock()
    second = store.open_guard_run_lock()  # two guarded jobs at once
    try:
        assert store.guard_runs_in_flight()
        assert not store.wait_for_guard_runs(3)
        assert sum(fake_time.slept) >= 3
    finally:
        os.close(first)
    assert store.guard_runs_in_flight()
    os.close(second)
    assert not store.guard_runs_in_flight()
    assert store.wait_for_guard_runs(3)
    fd = os.open(store.guard_lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
