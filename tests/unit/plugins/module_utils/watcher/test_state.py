# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The machine's state file: atomic writes, and a corrupt file moved aside rather than trusted."""

from __future__ import annotations

import json
import logging
import os

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.machine import Machine, new_state
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.state import StateStore
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import (
    BOOT_A, T0, VM, doc, event)


def test_round_trip(tmp_path):
    store = StateStore(str(tmp_path / "lib" / "watcher-state.json"), clock=lambda: T0)
    machine = Machine(VM, BOOT_A)
    machine.observe(T0, document=doc(event()))
    store.save(machine.state)
    loaded = store.load()
    assert loaded["saved"] == T0 and loaded["events"] == machine.state["events"]
    assert Machine(VM, BOOT_A, state=loaded).record(event()["EventId"])["state"] == "holding"
    assert sorted(os.listdir(str(tmp_path / "lib"))) == ["watcher-state.json"]  # no temp file left
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"


def test_no_file_is_a_fresh_start(tmp_path):
    assert StateStore(str(tmp_path / "none.json")).load() is None


def test_a_corrupt_file_is_moved_aside_and_logged(tmp_path, caplog):
    path = tmp_path / "watcher-state.json"
    for content in ("{torn", json.dumps({"format": "imds-scheduled-events/watcher", "version": 1, "events": []}),
                    json.dumps(dict(new_state(), events={"x": {"id": "x", "state": "exploded"}}))):
        path.write_text(content)
        store = StateStore(str(path), clock=lambda: T0, logger=logging.getLogger("test-state"))
        assert store.read()[0] is None and path.exists()  # read() changes nothing
        with caplog.at_level(logging.ERROR, "test-state"):
            assert store.load() is None
        assert not path.exists()
        kept = tmp_path / ("watcher-state.json.corrupt-%d" % int(T0))
        assert kept.read_text() == content
        assert "Nothing is released because of this" in caplog.text
        kept.unlink()
