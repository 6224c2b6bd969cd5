# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The fleet_publish action: files, alert state, per-channel delivery and retries, check mode,
and secrets, against a real aiosmtpd server and a loopback webhook."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
from unittest import mock

import pytest

from ansible.errors import AnsibleActionFail

from ansible_collections.imds.scheduled_events.plugins.action import fleet_publish
from ansible_collections.imds.scheduled_events.plugins.module_utils import fleet
from ansible_collections.imds.scheduled_events.plugins.module_utils.fleet import build_report
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile, hostile_fleet
from ansible_collections.imds.scheduled_events.tests.unit.utils.loopback import WebhookReceiver, start_mailbox

PASSWORD = "pw-9f8e7d6c5b4a"
SECRET = "whsec-a1b2c3d4e5f6"
REBOOT = "4CAEA225-A741-474D-A72E-428C86FCD853"
FREEZE = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"


def ev(event_id, vm, event_type="Reboot"):
    return {"EventId": event_id, "EventType": event_type, "Resources": [vm], "EventStatus": "Scheduled",
            "NotBefore": "Mon, 11 Apr 2050 22:26:58 GMT"}


def report(*events, now="2050-04-11T22:00:00Z"):
    watcher = {"held": False, "holds": {"targets": [], "reasons": []}, "service": {"state": "active"},
               "journal": {"entries": []}, "event_info": {"this_vm": "vm1", "events": list(events)}}
    return build_report({"vm1": {"watcher": watcher}}, now=now, title="Unit fleet")


@pytest.fixture
def smtp():
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    box, controller = start_mailbox(controller_mod)
    controller.start()
    yield box
    controller.stop()


@pytest.fixture
def hook():
    item = WebhookReceiver(body=lambda headers: ("echo %s" % headers.get("X-Webhook-Secret")).encode(), path="/hook")
    yield item
    item.stop()


def run(args, check_mode=False):
    task = mock.MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = check_mode
    task.diff = False
    action = fleet_publish.ActionModule(task, mock.MagicMock(), mock.MagicMock(), loader=None, templar=None,
                                        shared_loader_obj=None)
    return action.run(task_vars={})


def channels(tmp_path, smtp=None, hook=None, **extra):
    args = dict(alert_state_file=str(tmp_path / "state" / "alerts.json"))
    if smtp is not None:
        args["email"] = {"host": "127.0.0.1", "port": smtp.port, "sender": "fleet@example.test",
                         "to": ["oncall@example.test"], "password": PASSWORD}
    if hook is not None:
        args["webhook"] = {"url": hook.url, "secret": SECRET}
    args.update(extra)
    return args


def test_writes_the_three_reports(tmp_path):
    data = report(ev(REBOOT, "vm1"))
    args = dict(report=data, html_path=str(tmp_path / "out" / "r.html"), html="<html>x</html>",
                markdown_path=str(tmp_path / "out" / "r.md"), markdown="# x\n", json_path=str(tmp_path / "out" / "r.json"),
                mode="0640")
    result = run(args)
    assert result["changed"] and result["files"] == {"html": args["html_path"], "markdown": args["markdown_path"],
                                                     "json": args["json_path"]}
    assert (tmp_path / "out" / "r.html").read_text() == "<html>x</html>"
    assert json.loads((tmp_path / "out" / "r.json").read_text()) == data
    assert oct(os.stat(args["markdown_path"]).st_mode & 0o777) == "0o640"
    assert "changes" not in result, "no alert state file, no comparison"
    assert run(args)["changed"] is False, "same content, same mode: nothing to do"


def test_check_mode_writes_nothing(tmp_path, smtp, hook):
    args = channels(tmp_path, smtp, hook, report=report(ev(REBOOT, "vm1")), json_path=str(tmp_path / "r.json"))
    result = run(args, check_mode=True)
    assert result["changed"] and result["alerts"] == {"email": "would send", "webhook": "would send"}
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "state").exists()
    assert smtp.texts == [] and hook.requests == []


def test_alerts_on_change_only(tmp_path, smtp, hook):
    args = channels(tmp_path, smtp, hook, report=report(ev(REBOOT, "vm1")))
    first = run(args)
    assert first["changed"] and first["first_run"] and first["has_changes"]
    assert first["alerts"] == {"email": "sent to oncall@example.test", "webhook": "sent (HTTP 204)"}
    assert first["change_counts"]["new_events"] == 1
    assert len(smtp.texts) == 1 and REBOOT in smtp.texts[0]
    assert hook.requests[0]["headers"]["X-Webhook-Secret"] == SECRET
    assert [e["event_id"] for e in hook.requests[0]["json"]["changes"]["new_events"]] == [REBOOT]
    state = tmp_path / "state" / "alerts.json"
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    before = state.read_text()

    args["report"] = report(ev(REBOOT, "vm1"), now="2050-04-11T22:10:00Z")
    second = run(args)
    assert not second["changed"] and not second["has_changes"] and not second["first_run"]
    assert second["alerts"] == {"email": "nothing new", "webhook": "nothing new"}
    assert len(smtp.texts) == 1 and len(hook.requests) == 1 and state.read_text() == before

    args["report"] = report(ev(FREEZE, "vm1", "Freeze"))
    third = run(args)
    assert third["change_counts"]["new_events"] == 1 and third["change_counts"]["gone_events"] == 1
    assert len(smtp.texts) == 2 and FREEZE in smtp.texts[1] and "Events gone" in smtp.texts[1]


def test_failed_channel_retries_what_it_missed(tmp_path, smtp, hook):
    hook.status = 500
    args = channels(tmp_path, smtp, hook, report=report(ev(REBOOT, "vm1")))
    result = run(args)
    assert result["failed"] and result["alerts"] == {"email": "sent to oncall@example.test", "webhook": "failed"}
    assert result["delivery_errors"][0].startswith("webhook: webhook http://127.0.0.1:")
    assert "answered 500: echo ********" in result["msg"]
    text = json.dumps(result)
    assert SECRET not in text and PASSWORD not in text, "secrets never in the result, even when echoed back"

    hook.status = 204
    args["report"] = report(ev(REBOOT, "vm1"), ev(FREEZE, "vm1", "Freeze"))
    result = run(args)
    assert not result.get("failed") and result["alerts"] == {"email": "sent to oncall@example.test",
                                                             "webhook": "sent (HTTP 204)"}
    assert [e["event_id"] for e in hook.requests[-1]["json"]["changes"]["new_events"]] == [REBOOT, FREEZE], \
        "the webhook gets both: the one it missed and the new one"
    assert REBOOT not in smtp.texts[-1].split("New events")[1].split("\n\n")[0], "email already had it"
    assert result["change_counts"]["new_events"] == 1, "the run's own changes: since the last run"


def test_delivery_errors_can_be_reported_without_failing(tmp_path, hook):
    hook.status = 503
    result = run(channels(tmp_path, hook=hook, report=report(ev(REBOOT, "vm1")), fail_on_delivery_error=False))
    assert not result.get("failed") and result["delivery_errors"]


def test_baseline_sends_nothing_the_first_time(tmp_path, smtp):
    args = channels(tmp_path, smtp, report=report(ev(REBOOT, "vm1")), first_run="baseline")
    result = run(args)
    assert result["alerts"] == {"email": "baseline recorded"} and smtp.texts == []
    args["report"] = report(ev(REBOOT, "vm1"), ev(FREEZE, "vm1", "Freeze"))
    assert run(args)["alerts"] == {"email": "sent to oncall@example.test"}
    assert FREEZE in smtp.texts[0] and REBOOT not in smtp.texts[0]


def test_state_without_channels_still_tracks_changes(tmp_path):
    args = channels(tmp_path, report=report(ev(REBOOT, "vm1")))
    assert run(args)["change_counts"]["new_events"] == 1
    args["report"] = report()
    result = run(args)
    assert result["alerts"] == {} and result["change_counts"]["gone_events"] == 1


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read the alert state"),
    ('{"some": "other file"}', "not an alert state file"),
])
def test_foreign_state_file_is_not_overwritten(tmp_path, content, message):
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(AnsibleActionFail, match=message):
        run(dict(report=report(), alert_state_file=str(path)))
    assert path.read_text() == content


@pytest.mark.parametrize("args, message", [
    ({"report": {"format": "something else"}}, "not a fleet report"),
    ({"html_path": "/tmp/never.html"}, "html_path is set but html"),
    ({"mode": "rw-r--r--"}, "octal"),
    ({"email": {"host": "h"}}, "missing required arguments"),
])
def test_bad_arguments(tmp_path, args, message):
    full = dict(report=report())
    full.update(args)
    with pytest.raises(AnsibleActionFail, match=message):
        run(full)


def test_every_hostile_value_through_real_smtp_and_a_webhook(tmp_path, smtp, hook):
    """One report with every value of the hostile table in every field (tests/unit/utils/hostile_fleet.py), through
    the action to a real SMTP server and webhook on loopback: the mail has its own headers only and every value
    (one line each) in its body, the webhook's JSON keeps every value and its text no mention or link, and the JSON
    report is valid UTF-8 with every value."""
    values = hostile.strings(str(tmp_path / "canary"))
    data = build_report(hostile_fleet.table_hosts(values), now=hostile_fleet.NOW, title="Hostile fleet")
    args = channels(tmp_path, smtp, hook, report=data, json_path=str(tmp_path / "r.json"))
    result = run(args)
    assert result["alerts"] == {"email": "sent to oncall@example.test", "webhook": "sent (HTTP 204)"}
    mail = email.message_from_string(smtp.texts[0], policy=email.policy.default)
    assert sorted(mail.keys()) == sorted(["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted",
                                          "Content-Type", "Content-Transfer-Encoding", "MIME-Version"])
    body = mail.get_content()
    payload = hook.requests[0]["json"]
    held = dict((h["host"], h["text"]) for h in payload["changes"]["new_holds"])
    for case in values:
        shown = fleet.displayable(case.value)
        assert fleet.one_line(shown) in body, case.name
        assert held[fleet.displayable("%s/%s" % (case.name, case.value))] == shown, case.name
    assert not re.search(r"<|>|@\w|\]\(", payload["text"]), "no mention, link or markup in what chat shows"
    assert json.loads((tmp_path / "r.json").read_bytes().decode("utf-8")) == data
    hostile.assert_no_trace(str(tmp_path / "canary"), body, json.dumps(payload))
