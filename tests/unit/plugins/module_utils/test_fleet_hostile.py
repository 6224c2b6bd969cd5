# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The fleet report's document and alerts with every hostile value (tests/unit/utils/hostile.py) in every field a
host or Resource Graph can set (tests/unit/utils/hostile_fleet.py): the JSON keeps each value as it came (only what
UTF-8 cannot carry becomes U+FFFD), the plain-text alert keeps one line per change, the mail has exactly its own
headers and the values in its body, and the chat text carries no mention, link or markup while the webhook's JSON
keeps every value intact."""

from __future__ import annotations

import email
import email.policy
import json
import re

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import fleet
from ansible_collections.imds.scheduled_events.plugins.module_utils.notify import build_email
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile, hostile_fleet

VALUES = hostile.strings("/nonexistent/canary-python-never-runs-anything")
HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "Content-Type",
           "Content-Transfer-Encoding", "MIME-Version"]


def shown(value):
    """What the report keeps of a value: the value, with U+FFFD for a NUL or a lone surrogate."""
    return fleet.displayable(value)


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


@pytest.fixture(params=VALUES, ids=hostile.ids(VALUES), scope="module")
def case(request):
    value = request.param.value
    report = fleet.build_report(hostile_fleet.hosts(value), now=hostile_fleet.NOW, title=value,
                                control_plane=hostile_fleet.control_plane(value))
    changes, dummy = fleet.compare(None, fleet.snapshot(report))
    return value, report, changes


def test_the_document_keeps_every_value(case):
    value, report, dummy = case
    want = shown(value)
    assert all(shown(s) == s for s in strings(report)), "every string is writable as UTF-8"
    json.dumps(report, ensure_ascii=False).encode("utf-8")
    host = report["hosts"][0]
    assert (host["host"], host["group"], host["problems"]) == (want, want, [want])
    assert host["watcher_service"] == (want or "unknown")
    assert [h for h in report["holds"] if h["host"] == want] == [{
        "host": want, "reason_id": want, "text": want, "holder": want, "since": want, "event_id": want,
        "targets": [want], "phases": [want or "?"]}]
    assert [a for a in report["approvals"] if a["host"] == want] == [
        {"host": want, "event_id": want, "event_type": want, "time": want, "by": want or "imds-watcher on ",
         "detail": want}]
    assert report["unreachable"] == [{"host": "down", "status": fleet.UNREACHABLE, "msg": want or "unreachable"}]
    assert report["title"] == want
    event = next(e for e in report["events"] if e["event_id"] == hostile_fleet.event_guid(""))
    assert (event["event_type"], event["status"], event["description"], event["source"]) == (want, want, want, want)
    assert event["resources"] == [want, "vm-"] or event["resources"] == [want.strip() or want, "vm-"]
    if value.strip():
        assert [e for e in report["events"] if e["event_id"] == want], "an odd EventId is still listed"
    else:
        assert report["hosts"][1]["events_error"], "an empty EventId is refused, and said so"
    finished = next(e for e in report["events"] if e["event_id"] == hostile_fleet.event_guid("cp"))
    assert finished["owner"] == {"subscription": want, "resource_group": want, "vm": want}
    assert "control plane row %s: %s" % (want, want) in report["problems"]


def test_the_text_alert_has_one_line_per_change(case):
    value, report, changes = case
    text = fleet.render_text(changes, report, link=value)
    counted = sum(len(changes[k]) for k in fleet.CHANGE_KEYS)
    items = [line for line in text.splitlines() if line.startswith("  - ")]
    assert len(items) == counted, "no value adds a line of its own"
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]", text)
    assert fleet.one_line(shown(value)) in items[-1] or fleet.one_line(shown(value)) in text
    assert text.count("\n") == len(text.splitlines())
    subject = fleet.subject(changes, value)
    assert "\n" not in subject and "\r" not in subject and subject.startswith("[%s] " % fleet.one_line(shown(value)))


def test_the_mail_has_its_own_headers_and_the_values_in_its_body(case):
    value, report, changes = case
    text = fleet.render_text(changes, report)
    message = build_email("fleet@example.test", ["oncall@example.test"], fleet.subject(changes, value), text)
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert list(parsed.keys()) == HEADERS, "no value adds a header"
    assert parsed.get_content().replace("\r\n", "\n") == text, "the body arrives as the alert's text"
    assert str(parsed["Subject"]) == fleet.subject(changes, value)


def test_the_chat_text_is_inert_and_the_json_intact(case):
    value, report, changes = case
    payload = json.loads(json.dumps(fleet.webhook_payload(changes, report, link=value)))
    for shown_text in (payload["text"], payload["subject"]):
        assert "<" not in shown_text and ">" not in shown_text, "no <!here>, <@U..>, <url|label> or HTML"
        assert not re.search(r"@\w", shown_text), "no @channel, @here or @user mention"
        assert "](" not in shown_text, "no [label](url) link"
    plain = fleet.render_text(changes, report, link=value)
    assert payload["text"].replace(fleet.WORD_JOINER, "").replace("&lt;", "<").replace("&gt;", ">") \
        .replace("&amp;", "&") == plain, "the chat text shows exactly the plain text"
    want = shown(value)
    held = [h for h in payload["changes"]["new_holds"] if h["host"] == want]
    assert [(h["text"], h["holder"], h["reason_id"]) for h in held] == [(want, want, want)], "the JSON keeps the value"


@pytest.mark.parametrize("wrong", hostile.wrong_types(), ids=hostile.ids(hostile.wrong_types()))
def test_values_of_the_wrong_type_are_shown_as_text(wrong):
    report = fleet.build_report(hostile_fleet.hosts(wrong.value, tag="t-"), now=hostile_fleet.NOW)
    json.dumps(report)
    changes, dummy = fleet.compare(None, fleet.snapshot(report))
    fleet.render_text(changes, report)
    fleet.webhook_payload(changes, report)
