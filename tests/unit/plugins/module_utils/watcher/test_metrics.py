# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The textfile-collector file: exposition format, labels, atomic replacement."""

from __future__ import annotations

import os

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.metrics import METRICS, PREFIX, Metrics


def test_render_has_help_type_and_zeroes_from_the_start():
    text = Metrics().render()
    for name, (kind, dummy) in METRICS.items():
        assert "# TYPE %s%s %s\n" % (PREFIX, name, kind) in text
    assert "imds_scheduled_events_polls_total 0\n" in text
    assert "imds_scheduled_events_holds_active 0\n" in text


def test_counters_gauges_and_labels():
    metrics = Metrics()
    metrics.inc("events_seen_total", type="Reboot")
    metrics.inc("events_seen_total", type="Reboot")
    metrics.inc("events_seen_total", type='We"ird\nType')
    metrics.inc("hook_failures_total", phase="pre")
    metrics.set("last_successful_poll_timestamp_seconds", 1750000000.5)
    metrics.set("holds_active", 2)
    text = metrics.render()
    assert 'imds_scheduled_events_events_seen_total{type="Reboot"} 2\n' in text
    assert 'imds_scheduled_events_events_seen_total{type="We\\"ird\\nType"} 1\n' in text
    assert 'imds_scheduled_events_hook_failures_total{phase="pre"} 1\n' in text
    assert "imds_scheduled_events_last_successful_poll_timestamp_seconds 1750000000.5\n" in text
    assert metrics.get("holds_active") == 2 and metrics.get("events_seen_total", type="Freeze") == 0


def test_write_replaces_the_file_atomically(tmp_path):
    path = str(tmp_path / "imds_scheduled_events.prom")
    metrics = Metrics()
    metrics.write(path)
    metrics.inc("polls_total")
    metrics.write(path)
    with open(path) as handle:
        assert "imds_scheduled_events_polls_total 1\n" in handle.read()
    assert os.listdir(str(tmp_path)) == ["imds_scheduled_events.prom"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    with pytest.raises(OSError):
        metrics.write(str(tmp_path / "missing" / "x.prom"))
