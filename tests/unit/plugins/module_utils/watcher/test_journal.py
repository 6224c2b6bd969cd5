# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The journal: JSON lines, bounded by rotation, read back as per-event timelines."""

from __future__ import annotations

import json

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.journal import Journal
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.notify import Redactor


def entry(event_id, transition, time="2025-06-15T15:00:00Z", **extra):
    data = {"event_id": event_id, "event_type": "Reboot", "transition": transition, "state": transition,
            "time": time, "detail": "d"}
    data.update(extra)
    return data


def test_lines_and_timelines(tmp_path):
    journal = Journal(str(tmp_path / "state" / "journal.jsonl"))
    for transition in ("detected", "held", "released"):
        journal.append(entry("A", transition))
    journal.append(entry("B", "detected"))
    journal.append(entry("A", "gone", outcome="completed"))
    lines = (tmp_path / "state" / "journal.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[0])["transition"] == "detected"
    recent = journal.timelines(last=5)
    assert [r["event_id"] for r in recent] == ["B", "A"]  # most recent last
    assert [s["transition"] for s in recent[1]["timeline"]] == ["detected", "held", "released", "gone"]
    assert recent[1]["outcome"] == "completed"
    assert [r["event_id"] for r in journal.timelines(last=1)] == ["A"]
    assert journal.timelines(last=0) == []


def test_rotation_bounds_the_size_and_keeps_one_old_file(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(str(path), max_bytes=2000)
    for index in range(100):
        journal.append(entry("E%03d" % index, "detected"))
    assert path.stat().st_size <= 2000
    assert (tmp_path / "journal.jsonl.1").stat().st_size <= 2000
    ids = [e["event_id"] for e in journal.entries()]
    assert ids[-1] == "E099" and ids == sorted(ids)


def test_torn_and_foreign_lines_are_skipped(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(str(path))
    journal.append(entry("A", "detected"))
    with open(str(path), "a") as handle:
        handle.write('{"event_id": "B", "transi')
        handle.write("\n[1, 2]\n")
    journal.append(entry("C", "detected"))
    assert [e["event_id"] for e in journal.entries()] == ["A", "C"]


def test_secrets_are_redacted_and_huge_entries_bounded(tmp_path):
    journal = Journal(str(tmp_path / "j"), redact=Redactor(["hunter2"]))
    journal.append(entry("A", "note", detail="mail failed: 535 for password hunter2"))
    journal.append(entry("A", "note", data={"output": "x" * 200000}))
    text = (tmp_path / "j").read_text()
    assert "hunter2" not in text and "***" in text
    assert len(text.splitlines()[1]) < 70000
