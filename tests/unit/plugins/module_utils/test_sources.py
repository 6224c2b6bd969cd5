# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json
import logging
import os

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import sources
from ansible_collections.imds.scheduled_events.plugins.module_utils.lifecycle import Change

SPEC = {
    "name": sources.Argument("str"),
    "flag": sources.Argument("bool", True),
    "interval": sources.Argument("float", 1.0, minimum=0.2, maximum=10),
    "count": sources.Argument("int", 3, minimum=1, maximum=5),
    "types": sources.Argument("list", choices=("Freeze", "Reboot")),
    "file": sources.Argument("path"),
    "secret": sources.Argument("secret"),
    "must": sources.Argument("str", required=False),
}


def test_defaults_fill_in():
    assert sources.check_args("src", {}, SPEC) == {"name": None, "flag": True, "interval": 1.0, "count": 3,
                                                   "types": None, "file": None, "secret": None, "must": None}


def test_values_are_checked_and_normalized():
    args = sources.check_args("src", {"name": " a ", "flag": "no", "interval": "2.5", "count": 5,
                                      "types": ["reboot", "FREEZE"], "file": "/x", "secret": " s "}, SPEC)
    assert args["name"] == "a" and args["flag"] is False and args["interval"] == 2.5 and args["count"] == 5
    assert args["types"] == ["Reboot", "Freeze"]
    assert args["secret"] == " s "  # a secret is taken as given


@pytest.mark.parametrize("args, message", [
    ({"nmae": "x"}, "src: unknown argument(s) nmae; it accepts count, file, flag"),
    ({"flag": "maybe"}, "argument flag must be true or false"),
    ({"interval": "soon"}, "argument interval must be a number"),
    ({"interval": True}, "argument interval must be a number"),
    ({"interval": 0.1}, "argument interval must be between 0.2 and 10"),
    ({"count": 1.5}, "argument count must be a whole number"),
    ({"types": ["Reboot", "Nap"]}, "argument types: Nap not one of Freeze, Reboot"),
    ({"types": [1]}, "argument types must be a list of strings"),
    ({"file": "relative/x"}, "argument file must be an absolute path"),
    ({"name": ""}, "argument name must be a non-empty string"),
])
def test_a_bad_argument_is_named(args, message):
    with pytest.raises(sources.ArgumentError) as caught:
        sources.check_args("src", args, SPEC)
    assert message in str(caught.value)


def test_a_required_argument():
    with pytest.raises(sources.ArgumentError, match="argument must is required"):
        sources.check_args("src", {}, dict(SPEC, must=sources.Argument("str", required=True)))


def test_the_rulebook_event_of_a_change():
    change = Change("gone", "E-1", {"EventId": "E-1"}, "completed: gone", outcome="completed")
    assert sources.rulebook_event(change, "imds", vm="web_0", delivery_id=None) == {
        "change": "gone", "event_id": "E-1", "scheduled_event": {"EventId": "E-1"}, "detail": "completed: gone",
        "outcome": "completed", "source": "imds", "vm": "web_0"}


def test_a_queued_event_holds_nothing_the_engine_turns_into_a_surrogate():
    """JSON's \\udcff reaches a source as a lone surrogate, and the rules engine splits a character beyond U+FFFF into
    two: ansible-core could not load the extra vars holding either."""
    change = Change("appeared", "E-1", {"EventId": "E-1", "Description": "a\udcffb", "Resources": ("x\ud800",),
                                        "x\udfff": None}, "Reboot Scheduled")
    assert sources.rulebook_event(change, "imds", vm="web\udcff")["scheduled_event"] == {
        "EventId": "E-1", "Description": "a\ufffdb", "Resources": ["x\ufffd"], "x\ufffd": None}
    assert sources.rulebook_event(change, "imds", vm="web\udcff")["vm"] == "web\ufffd"
    assert sources.unreadable_event("event_grid", "bad \udcff", delivery_id="d\udcff") == {
        "change": "unreadable", "problem": "bad \ufffd", "delivery_id": "d\ufffd", "source": "event_grid"}
    assert sources.valid_text("Z\u00fcrich \u6771\u4eac \U0001F4A5 \U0010FFFF") == "Z\u00fcrich \u6771\u4eac \ufffd \ufffd"


def test_a_repeated_failure_is_logged_once(caplog):
    log = sources.RepeatedLog(logging.getLogger("t"))
    with caplog.at_level(logging.DEBUG, logger="t"):
        log.failed("down", "; next in 1 s")
        log.failed("down", "; next in 2 s")
        log.failed("other")
        log.recovered("up")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [(logging.WARNING, "down (1 in a row; next in 1 s)"), (logging.DEBUG, "down (2 in a row; next in 2 s)"),
                      (logging.WARNING, "other (3 in a row)"), (logging.INFO, "up again after 3 failure(s)")]
    assert log.count == 0


def test_state_file_round_trip_and_only_significant_writes(tmp_path):
    path = str(tmp_path / "state.json")
    state_file = sources.StateFile(path, logging.getLogger("t"))
    state_file.check_trusted()
    assert state_file.load(lambda s: None) is None
    assert state_file.save({"a": 1, "moving": 1}, lambda s: {"a": s["a"]})
    assert not state_file.save({"a": 1, "moving": 2}, lambda s: {"a": s["a"]})
    assert state_file.save({"a": 2, "moving": 3}, lambda s: {"a": s["a"]})
    assert json.loads(open(path).read()) == {"a": 2, "moving": 3}
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert state_file.load(lambda s: None) == {"a": 2, "moving": 3}


def test_an_unreadable_state_file_is_moved_aside_not_lost(tmp_path, caplog):
    path = tmp_path / "state.json"
    path.write_text("{torn")
    state_file = sources.StateFile(str(path), logging.getLogger("t"), clock=lambda: 1234)
    assert state_file.load(lambda s: None) is None
    assert (tmp_path / "state.json.unreadable-1234").read_text() == "{torn"
    assert "is unreadable" in caplog.text and "moved to" in caplog.text
    path.write_text('{"format": "other"}')

    def validate(state):
        raise ValueError("not a lifecycle state")
    assert state_file.load(validate) is None
    assert "not a lifecycle state" in caplog.text


def test_a_state_file_others_may_write_is_refused(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{}")
    os.chmod(str(path), 0o662)
    with pytest.raises(sources.ArgumentError, match=r"may be written by group or others \(mode 0662\); fix: chmod"):
        sources.StateFile(str(path), logging.getLogger("t")).check_trusted()
    os.chmod(str(path), 0o600)
    os.chmod(str(tmp_path), 0o777)
    try:
        with pytest.raises(sources.ArgumentError, match="may be written by group or others"):
            sources.StateFile(str(path), logging.getLogger("t")).check_trusted()
        os.chmod(str(tmp_path), 0o1777)  # a sticky directory like /tmp is fine
        sources.StateFile(str(path), logging.getLogger("t")).check_trusted()
    finally:
        os.chmod(str(tmp_path), 0o700)


def test_the_state_files_directory_is_made_private(tmp_path):
    path = tmp_path / "eda" / "imds.json"
    state_file = sources.StateFile(str(path), logging.getLogger("t"))
    state_file.check_trusted()
    assert state_file.save({"a": 1})
    assert os.stat(str(tmp_path / "eda")).st_mode & 0o777 == 0o700
    assert json.loads(path.read_text()) == {"a": 1}


def test_a_state_that_cannot_be_saved_is_logged_and_tried_again(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    state_file = sources.StateFile(str(blocker / "imds.json"), logging.getLogger("t"))
    assert not state_file.save({"a": 1})
    assert not state_file.save({"a": 1})  # not remembered as saved
    assert caplog.text.count("cannot save the state to") == 2


def test_poll_forever_queues_each_polls_events_in_order_then_calls_after_poll():
    import asyncio  # pylint: disable=import-outside-toplevel

    class Source(object):
        def __init__(self):
            self.queue = None
            self.seen = []
            self.polls = iter([[{"n": 1}, {"n": 2}], None, [], [{"n": 3}]])

        def poll(self):
            return next(self.polls)

        def after_poll(self):
            self.seen.append(self.queue.qsize())

        def next_delay(self):
            return 0.0

    async def scenario(source):
        source.queue = asyncio.Queue()
        task = asyncio.ensure_future(sources.poll_forever(source.queue, source))
        got = [await asyncio.wait_for(source.queue.get(), timeout=60) for dummy in range(3)]  # bounds a hang only
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return got

    source = Source()
    assert asyncio.run(scenario(source)) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert source.seen[0] == 2  # the first poll's events were queued before after_poll ran
