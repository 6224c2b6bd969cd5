# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""When the watcher counts as degraded, and what it says: pure, times are inputs."""

from __future__ import annotations

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import health


def test_a_state_is_said_when_it_begins_changes_and_ends_and_not_in_between():
    state = health.Health()
    began = state.update(100.0, health.VM_NAME_UNKNOWN, "404 Not Found")
    assert began[0] is True and began[1].startswith("watcher: DEGRADED (vm_name_unknown) since ")
    assert state.update(101.0, health.VM_NAME_UNKNOWN, "404 Not Found") is None
    changed = state.update(102.0, health.VM_NAME_UNKNOWN, "timed out")
    assert changed[0] is True and "still degraded" in changed[1] and "timed out" in changed[1]
    assert state.as_dict() == {"vm_name_unknown": {"since": 100.0, "detail": "timed out"}}  # since: when it began
    ended = state.update(130.0, health.VM_NAME_UNKNOWN, None)
    assert ended == (False, "watcher: no longer degraded (vm_name_unknown), after 30 s: this VM's name is known: "
                            "events are attributed and approved as usual")
    assert state.update(131.0, health.VM_NAME_UNKNOWN, None) is None and state.as_dict() == {}
    with pytest.raises(ValueError):
        state.update(1.0, "tired", "x")


@pytest.mark.parametrize("max_backoff, seconds", [(0.2, 120.0), (5.0, 120.0), (10.0, 120.0), (60.0, 720.0)])
def test_imds_is_unreachable_after_two_minutes_or_a_dozen_slowest_polls(max_backoff, seconds):
    assert health.unreachable_after(max_backoff) == seconds


def test_the_name_is_asked_again_with_backoff_up_to_a_minute():
    search = health.NameSearch()
    assert search.due(0.0)
    asked = []
    now = 0.0
    while now < 300:
        if search.due(now):
            asked.append(now)
            search.failed(now, "404")
        now += 1.0
    assert asked[:8] == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 123.0] and asked[8] - asked[7] == 60.0


def test_saved_states_read_back_for_people_and_for_json():
    saved = {"hold_record_unreadable": {"since": 1750000000.0, "detail": "writable by others"},
             "imds_unreachable": {"since": True, "detail": None}}
    listed = health.as_list(saved)
    assert [i["reason"] for i in listed] == ["hold_record_unreadable", "imds_unreachable"]
    assert listed[0]["since"] == "2025-06-15T15:06:40Z" and listed[1]["since"] is None
    lines = health.describe(saved)
    assert lines[0].startswith("hold_record_unreadable since 2025-06-15T15:06:40Z: writable by others; drift correct")
    assert lines[1].startswith("    Fix: imds-hold status") and lines[2].startswith("imds_unreachable since ?: ?;")
