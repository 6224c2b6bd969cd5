# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The event_grid receiver over real HTTP on loopback (aiohttp's test server), one request at a time."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ansible_collections.imds.scheduled_events.extensions.eda.plugins.event_source import event_grid as source
from ansible_collections.imds.scheduled_events.plugins.module_utils.sources import ArgumentError
from ansible_collections.imds.scheduled_events.tests.unit.utils.tls import self_signed
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.test_event_grid import (
    EVENT, ROW_ID, grid_event)

TOKEN = "s3cret-t0ken"
NOW = 1900000000.0


def run(args, *requests_):
    """Post each (method, path, kwargs) to a receiver; returns the answers (status, headers, body) and the events."""

    async def scenario():
        queue = asyncio.Queue()
        receiver = source.Receiver(dict({"token": TOKEN}, **args), queue, clock=lambda: NOW)
        answers = []
        async with TestClient(TestServer(receiver.app())) as client:
            for method, path, kwargs in requests_:
                response = await client.request(method, path, **kwargs)
                answers.append((response.status, dict(response.headers), await response.text()))
        events = []
        while not queue.empty():
            events.append(queue.get_nowait())
        return answers, events, receiver

    return asyncio.run(scenario())


def post(events, query="?code=" + TOKEN, headers=None, path="/"):
    return ("POST", path + query, {"data": json.dumps(events), "headers": dict({"Content-Type": "application/json"},
                                                                               **(headers or {}))})


def test_the_validation_handshake_is_answered():
    handshake = [{"id": "v-1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "subject": "",
                  "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}, "dataVersion": "2"}]
    answers, events, dummy = run({}, post(handshake, headers={"aeg-event-type": "SubscriptionValidation"}))
    assert answers[0][0] == 200
    assert json.loads(answers[0][2]) == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert events == []


def test_a_batch_becomes_lifecycle_events_in_the_model_of_resource_graph():
    answers, events, receiver = run({"vms": ["web_0"]}, post([grid_event("d-1"), grid_event("d-2", status="Started")]))
    assert answers[0][0] == 200
    assert [(e["change"], e["event_id"], e["delivery_id"]) for e in events] == [
        ("appeared", EVENT, "d-1"), ("approved", EVENT, "d-2"), ("started", EVENT, "d-2")]  # before NotBefore
    described = events[0]["scheduled_event"]
    assert described["source"] == "event_grid" and events[0]["source"] == "event_grid"
    assert described["row_id"] == ROW_ID and described["owner"]["name"] == "web"
    assert described["finished"] is False and described["EventType"] == "Redeploy"
    assert described["shared"] is True and described["affects_this_vm"] is True  # web_0 and web_1
    assert receiver.counts["events"] == 2 and receiver.counts["deliveries"] == 1


def test_completed_and_canceled_end_the_event():
    dummy, events, dummy2 = run({}, post([grid_event("d-1")]), post([grid_event("d-2", status="Canceled")]))
    assert [(e["change"], e["outcome"]) for e in events] == [("appeared", None), ("gone", "cancelled")]
    assert events[1]["scheduled_event"]["finished"] is True


def test_a_duplicate_delivery_is_acknowledged_and_dropped():
    answers, events, receiver = run({}, post([grid_event("d-1")]), post([grid_event("d-1")]))
    assert [a[0] for a in answers] == [200, 200]
    assert [e["change"] for e in events] == ["appeared"]
    assert receiver.counts["duplicates"] == 1


def test_a_late_started_after_completed_says_nothing():
    dummy, events, dummy2 = run({}, post([grid_event("d-1", status="Completed")]),
                                post([grid_event("d-0", status="Started")]))
    assert [(e["change"], e["outcome"]) for e in events] == [("gone", "completed")]


@pytest.mark.parametrize("query, headers", [
    ("", {}),
    ("?code=wrong", {}),
    ("", {"Authorization": "Bearer wrong"}),
    ("?token=" + TOKEN, {}),  # not the configured parameter
])
def test_a_request_without_the_token_is_refused(query, headers, caplog):
    with caplog.at_level(logging.WARNING):
        answers, events, receiver = run({}, post([grid_event()], query=query, headers=headers))
    assert answers[0][0] == 401 and events == []
    assert receiver.counts["refused"] == 1
    assert TOKEN not in caplog.text and "wrong" not in caplog.text.replace("wrong token", "")


def test_the_token_in_a_bearer_header_or_another_parameter():
    answers, dummy, dummy2 = run({}, post([grid_event()], query="", headers={"Authorization": "Bearer " + TOKEN}))
    assert answers[0][0] == 200
    answers, dummy, dummy2 = run({"token_param": "key"}, post([grid_event()], query="?key=" + TOKEN))
    assert answers[0][0] == 200


def test_cloudevents_handshake_and_delivery():
    cloud = {"specversion": "1.0", "id": "c-1", "source": "/subscriptions/x", "subject": ROW_ID,
             "type": "Microsoft.ResourceNotifications.MaintenanceResources.ScheduledEventEmitted",
             "data": grid_event()["data"]}
    answers, events, dummy = run(
        {},
        ("OPTIONS", "/?code=" + TOKEN, {"headers": {"WebHook-Request-Origin": "eventgrid.azure.net"}}),
        ("OPTIONS", "/?code=" + TOKEN, {}),
        ("POST", "/?code=" + TOKEN, {"data": json.dumps([cloud]),
                                     "headers": {"Content-Type": "application/cloudevents-batch+json"}}))
    assert answers[0][0] == 200 and answers[0][1]["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert answers[1][0] == 400 and "WebHook-Request-Origin" in answers[1][2]
    assert answers[2][0] == 200 and [e["delivery_id"] for e in events] == ["c-1"]


def test_what_is_not_a_delivery_gets_a_clear_status():
    answers, events, dummy = run(
        {},
        ("POST", "/?code=" + TOKEN, {"data": b"{not json"}),
        ("GET", "/?code=" + TOKEN, {}),
        ("POST", "/elsewhere?code=" + TOKEN, {"data": b"[]"}),
        ("POST", "/?code=" + TOKEN, {"data": b"x" * (5 * 1024 * 1024)}))
    assert [a[0] for a in answers] == [400, 405, 404, 413]
    assert "not JSON" in answers[0][2]
    assert events == []


def test_unreadable_and_other_events_in_a_batch(caplog):
    with caplog.at_level(logging.WARNING):
        answers, events, receiver = run({}, post([
            grid_event("d-1", data={}),
            grid_event("d-2", event_type="Microsoft.Resources.ResourceWriteSuccess"),
            grid_event("d-3", event_type="Microsoft.Resources.ResourceWriteSuccess"),
            grid_event("d-4")]))
    assert answers[0][0] == 200
    assert [e["change"] for e in events] == ["unreadable", "appeared"]
    assert events[0]["problem"] == "it has no data.resourceInfo object" and events[0]["delivery_id"] == "d-1"
    assert receiver.counts["other"] == 2
    assert caplog.text.count("ignoring events of type 'Microsoft.Resources.ResourceWriteSuccess'") == 1


def test_event_types_narrow_what_is_told():
    dummy, events, dummy2 = run({"event_types": ["Reboot"]}, post([grid_event("d-1")]))
    assert events == []  # a Redeploy


@pytest.mark.parametrize("args, message", [
    ({"token": None}, "set token"),
    ({"certfile": "/x.pem"}, "certfile and keyfile go together"),
    ({"path": "hook"}, "path must start with /"),
    ({"port": 70000}, "between 0 and 65535"),
    ({"hots": "x"}, "unknown argument(s) hots"),
])
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(ArgumentError) as caught:
        source.Receiver(dict({"token": TOKEN}, **args), None)
    assert message in str(caught.value)


def test_insecure_no_token_accepts_anything():
    answers, events, dummy = run({"token": None, "insecure_no_token": True}, post([grid_event()], query=""))
    assert answers[0][0] == 200 and len(events) == 1


def test_https_with_the_configured_certificate(tmp_path):
    import aiohttp  # pylint: disable=import-outside-toplevel
    certfile, keyfile = self_signed(str(tmp_path))

    async def scenario():
        queue = asyncio.Queue()
        receiver = source.Receiver({"token": TOKEN, "certfile": certfile, "keyfile": keyfile}, queue)
        runner = web.AppRunner(receiver.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=receiver.ssl_context())
        await site.start()
        port = runner.addresses[0][1]
        trust = ssl.create_default_context(cafile=certfile)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post("https://127.0.0.1:%d/?code=%s" % (port, TOKEN),
                                        data=json.dumps([grid_event()]), ssl=trust) as response:
                    status = response.status
        finally:
            await runner.cleanup()
        return status, queue.get_nowait()

    status, event = asyncio.run(scenario())
    assert status == 200 and event["change"] == "appeared"


def test_a_certificate_that_cannot_be_loaded_is_named(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    receiver = source.Receiver({"token": TOKEN, "certfile": str(bad), "keyfile": str(bad)}, None)
    with pytest.raises(ArgumentError, match="cannot load certfile/keyfile"):
        receiver.ssl_context()
