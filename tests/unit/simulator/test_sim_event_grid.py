"""The Event Grid face: webhook subscriptions on loopback, the validation handshakes, one event per control-plane
status change, batching, duplicates, retries and dead-lettering. A receiver on 127.0.0.1 records what arrives;
the simulator runs on a manual clock with a sleep that returns at once, and every test waits through
``event_grid_flush``, never by sleeping."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import textwrap
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.imds.scheduled_events.tests.unit.utils.tls import self_signed
import imds_simulator
from imds_simulator import ControlClient, ControlError, ScenarioError
from imds_simulator.scenario import parse_scenario

SUB = "00000000-0000-0000-0000-000000000000"
E1 = "C0000000-0000-4000-8000-000000000001"
E2 = "C0000000-0000-4000-8000-000000000002"
E3 = "C0000000-0000-4000-8000-000000000003"
E_OUT = "C0000000-0000-4000-8000-00000000000D"
EVENT_TYPE = "Microsoft.ResourceNotifications.MaintenanceResources.ScheduledEventEmitted"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ROW_PREFIX = f"/subscriptions/{SUB}/resourcegroups/imds-sim-rg/providers/Microsoft.Compute/"


class Receiver:
    """A webhook endpoint on 127.0.0.1 (http.server on port 0) that records every request.

    It answers the Event Grid validation event by echoing the code (``validation``: "echo", "wrong" or a status),
    OPTIONS with ``WebHook-Allowed-Origin: allowed_origin`` (None: no such header), and notifications with the
    next of ``statuses`` (then 200)."""

    def __init__(self, statuses=(), validation="echo", allowed_origin="eventgrid.azure.net", context=None):
        self.requests = []
        self.statuses = list(statuses)
        self.validation = validation
        self.allowed_origin = allowed_origin
        self.got = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self, body):
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver._lock:  # pylint: disable=protected-access
                    receiver.requests.append({"method": self.command, "path": self.path, "headers": headers,
                                              "json": json.loads(body) if body else None})
                return headers

            def _answer(self, status, body=b"", headers=None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_OPTIONS(self):  # noqa: N802  pylint: disable=invalid-name
                self._record(b"")
                origin = receiver.allowed_origin
                self._answer(200, headers={"WebHook-Allowed-Origin": origin} if origin is not None else {})

            def do_POST(self):  # noqa: N802  pylint: disable=invalid-name
                headers = self._record(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if headers.get("aeg-event-type") == "SubscriptionValidation":
                    code = receiver.requests[-1]["json"][0]["data"]["validationCode"]
                    if receiver.validation in ("echo", "wrong"):
                        answer = code if receiver.validation == "echo" else "not-" + code
                        self._answer(200, json.dumps({"validationResponse": answer}).encode())
                    else:
                        self._answer(receiver.validation, b'{"error": "no"}')
                    return
                with receiver._lock:  # pylint: disable=protected-access
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self._answer(status, b"ok" if status < 300 else b'{"error": "simulated by the test receiver"}')
                receiver.got.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a refused TLS handshake is the point of a test
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if context is not None else "http"
        self.url = "%s://127.0.0.1:%d/api/updates?code=s3cret" % (scheme, self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def notifications(self):
        """The notification POSTs: (headers, list of events)."""
        return [(request["headers"], request["json"]) for request in self.requests
                if request["headers"].get("aeg-event-type") == "Notification"]

    def events(self):
        """Every delivered event, in arrival order."""
        return [event for _headers, batch in self.notifications for event in batch]


@pytest.fixture(name="receiver")
def receiver_fixture():
    made = []

    def factory(**kwargs):
        made.append(Receiver(**kwargs))
        return made[-1]

    yield factory
    for receiver in made:
        receiver.stop()


def scenario(events=(), **control):
    return {
        "start_time": "2016-09-19T18:14:47Z",
        "clock": "manual",
        "seed": 5,
        "vms": [{"name": "a", "availability_set": "as1"}, {"name": "b", "availability_set": "as1"}, {"name": "c"},
                {"name": "d"}],
        "events": list(events),
        "control_plane": dict({"opted_in": ["as1", "c"]}, **control),
    }


@pytest.fixture(name="sim")
def sim_fixture(start_sim):
    """A started simulator; returns (test Client, ControlClient)."""

    def factory(data=None, **kwargs):
        client = start_sim(scenario() if data is None else data, **kwargs)
        return client, ControlClient(client.sim.control_url)

    return factory


def statuses_of(receiver):
    return [event["data"]["resourceInfo"]["properties"]["EventStatus"] for event in receiver.events()]


def row_properties(control, event_id):
    rows = {row["name"]: row for row in control.control_plane_rows()}
    return rows[event_id]["properties"]


def without_api_version(properties):
    assert properties["ScheduledEventApiVersion"] == "2020-07-01"
    return {key: value for key, value in properties.items() if key != "ScheduledEventApiVersion"}


# -- the validation handshakes -----------------------------------------------------------------------------


def test_event_grid_schema_handshake_echoes_the_validation_code(sim, receiver):
    _client, control = sim()
    hook = receiver()
    record = control.subscribe_event_grid(hook.url, headers={"x-functions-key": "k1"}, name="maint-hook")
    assert record["provisioningState"] == "Succeeded" and record["failure"] is None and record["id"] == "maint-hook"
    assert record["schema"] == "EventGridSchema" and record["max_events_per_batch"] == 1 and record["max_attempts"] == 5
    [request] = hook.requests
    assert request["method"] == "POST" and request["path"] == "/api/updates?code=s3cret"
    headers = request["headers"]
    assert headers["aeg-event-type"] == "SubscriptionValidation" and headers["x-functions-key"] == "k1"
    assert headers["aeg-subscription-name"] == "MAINT-HOOK" and headers["aeg-delivery-count"] == "0"
    [event] = request["json"]
    assert set(event) == {"id", "topic", "subject", "data", "eventType", "eventTime", "metadataVersion", "dataVersion"}
    assert event["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent" and event["subject"] == ""
    assert (event["metadataVersion"], event["dataVersion"], event["topic"]) == ("1", "2", f"/subscriptions/{SUB}")
    assert GUID.match(event["data"]["validationCode"]) and event["data"]["validationUrl"].startswith("https://")
    assert event["eventTime"] == "2016-09-19T18:14:47.0000000Z"
    [logged] = control.event_grid_deliveries()
    assert (logged["kind"], logged["result"], logged["status"], logged["subscription"]) == (
        "validation", "validated", 200, "maint-hook")
    assert [sub["id"] for sub in control.event_grid_subscriptions()] == ["maint-hook"]


@pytest.mark.parametrize("validation, reason", [("wrong", "without"), (404, "answered 404")])
def test_a_failed_event_grid_handshake_leaves_the_subscription_failed_and_unserved(sim, receiver, validation, reason):
    client, control = sim(scenario([{"id": E1, "type": "Reboot", "resources": ["c"], "at": 10}]))
    hook = receiver(validation=validation)
    record = control.subscribe_event_grid(hook.url)
    assert record["provisioningState"] == "Failed" and reason in record["failure"]
    client.sim.world.advance(10)
    control.event_grid_flush()
    assert hook.notifications == [] and len(hook.requests) == 1
    assert [entry["result"] for entry in control.event_grid_deliveries()] == ["validation_failed"]


@pytest.mark.parametrize("allowed, state", [("eventgrid.azure.net", "Succeeded"), ("*", "Succeeded"),
                                            (None, "Failed"), ("example.org", "Failed")])
def test_cloud_events_handshake_is_an_options_request(sim, receiver, allowed, state):
    _client, control = sim()
    hook = receiver(allowed_origin=allowed)
    record = control.subscribe_event_grid(hook.url, schema="CloudEventSchemaV1_0", headers={"Authorization": "Bearer t"})
    assert record["provisioningState"] == state
    [request] = hook.requests
    assert request["method"] == "OPTIONS" and request["headers"]["webhook-request-origin"] == "eventgrid.azure.net"
    assert request["headers"]["authorization"] == "Bearer t"
    if state == "Failed":
        assert "WebHook-Allowed-Origin" in record["failure"]


def test_validate_false_skips_the_handshake(sim, receiver):
    _client, control = sim()
    hook = receiver(validation=500)
    assert control.subscribe_event_grid(hook.url, validate=False)["provisioningState"] == "Succeeded"
    assert hook.requests == [] and control.event_grid_deliveries() == []


# -- what is published -----------------------------------------------------------------------------------------


def test_appear_approve_complete_gives_three_events_as_resource_graph_shows_them(sim, receiver):
    client, control = sim()
    hook = receiver()
    sub = control.subscribe_event_grid(hook.url, headers={"x-custom": "yes"})
    event = control.inject(id=E1, type="Reboot", resources=["c"], notice=900, started_for=600)
    control.event_grid_flush()
    seen = [without_api_version(hook.events()[-1]["data"]["resourceInfo"]["properties"])]
    assert seen[-1] == row_properties(control, E1)
    assert client.approve("c", E1)[0] == 200
    control.event_grid_flush()
    seen.append(without_api_version(hook.events()[-1]["data"]["resourceInfo"]["properties"]))
    assert seen[-1] == row_properties(control, E1)
    control.advance(600)
    control.event_grid_flush()
    seen.append(without_api_version(hook.events()[-1]["data"]["resourceInfo"]["properties"]))
    assert seen[-1] == row_properties(control, E1)
    assert [properties["EventStatus"] for properties in seen] == ["Scheduled", "Started", "Completed"]
    assert statuses_of(hook) == ["Scheduled", "Started", "Completed"]
    assert seen[0]["NotBefore"] == "Mon, 19 Sep 2016 18:29:47 GMT" and seen[1]["NotBefore"] == ""

    row_id = ROW_PREFIX + "virtualMachines/c/providers/Microsoft.Maintenance/scheduledevents/" + E1
    assert event["owner"].endswith("/virtualMachines/c")
    assert {event["data"]["resourceInfo"]["properties"]["EventId"] for event in hook.events()} == {E1}
    assert len(hook.notifications) == 3
    ids = set()
    for headers, batch in hook.notifications:
        assert headers["aeg-event-type"] == "Notification" and headers["aeg-delivery-count"] == "0"
        assert headers["aeg-subscription-name"] == sub["id"].upper() and headers["x-custom"] == "yes"
        assert headers["content-type"] == "application/json; charset=utf-8"
        assert (headers["aeg-data-version"], headers["aeg-metadata-version"]) == ("3.0", "1")
        [published] = batch
        assert set(published) == {"id", "topic", "subject", "eventType", "eventTime", "data", "dataVersion",
                                  "metadataVersion"}
        assert published["subject"] == row_id and published["eventType"] == EVENT_TYPE
        assert (published["topic"], published["dataVersion"], published["metadataVersion"]) == (
            f"/subscriptions/{SUB}", "3.0", "1")
        info = published["data"]["resourceInfo"]
        assert (info["id"], info["name"], info["type"], info["location"]) == (
            row_id, E1, "microsoft.maintenance/scheduledEvents", "westeurope")
        assert published["data"]["apiVersion"] == "2020-07-01"
        assert published["data"]["operationalInfo"]["resourceEventTime"] == published["eventTime"]
        assert GUID.match(published["id"])
        ids.add(published["id"])
    assert len(ids) == 3
    assert [batch[0]["eventTime"] for _headers, batch in hook.notifications] == [
        "2016-09-19T18:14:47.0000000Z", "2016-09-19T18:14:47.0000000Z", "2016-09-19T18:24:47.0000000Z"]
    log = [entry for entry in control.event_grid_deliveries() if entry["kind"] == "notification"]
    assert [(entry["status"], entry["result"], entry["statuses"], entry["excerpt"]) for entry in log] == [
        (200, "delivered", [status], "ok") for status in ("Scheduled", "Started", "Completed")]
    assert [entry["event_ids"] for entry in log] == [[batch[0]["id"]] for _headers, batch in hook.notifications]
    assert all(entry["event_types"] == [EVENT_TYPE] and not entry["duplicate"] and not entry["dead_lettered"]
               for entry in log)


def test_a_cancelled_event_ends_canceled_with_its_notbefore(sim, receiver):
    client, control = sim(scenario([{"id": E1, "type": "Redeploy", "resources": ["a", "b"], "at": 5, "notice": 600,
                                     "cancel_at": 60}]))
    hook = receiver()
    control.subscribe_event_grid(hook.url)
    client.sim.world.advance(5)
    control.event_grid_flush()
    control.advance(100)
    control.event_grid_flush()
    assert statuses_of(hook) == ["Scheduled", "Canceled"]
    first, last = (event["data"]["resourceInfo"] for event in hook.events())
    assert last["properties"]["NotBefore"] == first["properties"]["NotBefore"] != ""
    assert last["id"].startswith(ROW_PREFIX + "availabilitySets/as1/") and last["name"] == E1
    assert without_api_version(last["properties"]) == row_properties(control, E1)


def test_changes_within_one_sync_are_each_published_in_order(sim, receiver):
    _client, control = sim(scenario([{"id": E1, "type": "Freeze", "resources": ["c"], "at": 10, "notice": 100,
                                      "started_for": 50}]))
    hook = receiver()
    control.subscribe_event_grid(hook.url)
    control.advance(1000)  # appears, starts at NotBefore and completes before anyone looks
    control.event_grid_flush()
    assert statuses_of(hook) == ["Scheduled", "Started", "Completed"]
    assert [event["eventTime"] for event in hook.events()] == [
        "2016-09-19T18:14:57.0000000Z", "2016-09-19T18:16:37.0000000Z", "2016-09-19T18:17:27.0000000Z"]
    assert len(hook.notifications) == 3


def test_an_event_that_appears_started_skips_scheduled(sim, receiver):
    _client, control = sim()
    hook = receiver()
    control.subscribe_event_grid(hook.url)
    control.inject(type="Reboot", resources=["c"], initial_status="Started", started_for=60)
    control.advance(60)
    control.event_grid_flush()
    assert statuses_of(hook) == ["Started", "Completed"]


def test_a_subscription_gets_only_the_changes_after_it_was_made(sim, receiver):
    client, control = sim(scenario([{"id": E1, "type": "Reboot", "resources": ["c"]}]))
    client.sim.world.sync()  # E1 appears before anyone subscribes
    early = receiver()
    control.subscribe_event_grid(early.url)
    control.start(E1)
    control.event_grid_flush()
    late = receiver()
    control.subscribe_event_grid(late.url)
    control.advance(600)
    control.event_grid_flush()
    assert statuses_of(early) == ["Started", "Completed"] and statuses_of(late) == ["Completed"]
    assert early.events()[-1]["id"] == late.events()[-1]["id"]  # one Event Grid event, whoever receives it


def test_owners_that_have_not_opted_in_publish_nothing(sim, receiver):
    _client, control = sim()
    hook = receiver()
    control.subscribe_event_grid(hook.url)
    control.inject(id=E_OUT, type="Reboot", resources=["d"], notice=100, started_for=10)
    control.advance(50)
    control.event_grid_flush()
    assert hook.notifications == []
    control.opt_in("d")  # from now on: the Started and the Completed, not the Scheduled that went before
    control.advance(100)
    control.event_grid_flush()
    assert statuses_of(hook) == ["Started", "Completed"]


def test_cloud_events_deliveries(sim, receiver):
    _client, control = sim()
    hook = receiver(allowed_origin="*")
    control.subscribe_event_grid(hook.url, schema="CloudEventSchemaV1_0")
    control.inject(id=E1, type="Freeze", resources=["a"])
    control.event_grid_flush()
    [(headers, [event])] = hook.notifications
    assert headers["content-type"] == "application/cloudevents-batch+json; charset=utf-8"
    assert headers["aeg-metadata-version"] == "1.0" and "aeg-data-version" not in headers
    assert set(event) == {"specversion", "id", "source", "subject", "type", "time", "data"}
    assert (event["specversion"], event["source"], event["type"]) == ("1.0", f"/subscriptions/{SUB}", EVENT_TYPE)
    assert event["subject"] == event["data"]["resourceInfo"]["id"] == (
        ROW_PREFIX + "availabilitySets/as1/providers/Microsoft.Maintenance/scheduledevents/" + E1)
    assert without_api_version(event["data"]["resourceInfo"]["properties"]) == row_properties(control, E1)


# -- batching, duplicates, retries, dead letters -------------------------------------------------------------------


def three_at_ten():
    return scenario([{"id": event_id, "type": "Freeze", "resources": [vm], "at": 10}
                     for event_id, vm in ((E1, "a"), (E2, "c"), (E3, "b"))])


def test_changes_that_become_due_together_are_batched(sim, receiver):
    _client, control = sim(three_at_ten())
    hook = receiver()
    control.subscribe_event_grid(hook.url, max_events_per_batch=2)
    control.advance(10)
    control.event_grid_flush()
    assert [[event["data"]["resourceInfo"]["name"] for event in batch] for _headers, batch in hook.notifications] == [
        [E1, E2], [E3]]
    assert [len(entry["event_ids"]) for entry in control.event_grid_deliveries() if entry["kind"] == "notification"] == [2, 1]


def test_duplicate_every_posts_every_nth_batch_twice_with_the_same_ids(sim, receiver):
    _client, control = sim(three_at_ten())
    hook = receiver()
    control.subscribe_event_grid(hook.url, duplicate_every=2)
    control.advance(10)
    control.event_grid_flush()
    ids = [batch[0]["id"] for _headers, batch in hook.notifications]
    assert len(ids) == 4 and ids[1] == ids[2] and len(set(ids)) == 3
    assert [headers["aeg-delivery-count"] for headers, _batch in hook.notifications] == ["0", "0", "1", "0"]
    log = [entry for entry in control.event_grid_deliveries() if entry["kind"] == "notification"]
    assert [entry["duplicate"] for entry in log] == [False, False, True, False]
    assert [entry["event_ids"][0] for entry in log] == ids


def test_a_500_is_retried_after_the_next_delay(sim, receiver):
    client, control = sim()
    hook = receiver(statuses=[500])
    control.subscribe_event_grid(hook.url, retry_delays=[0.25, 9])
    control.inject(id=E1, type="Reboot", resources=["c"])
    control.event_grid_flush()
    assert [headers["aeg-delivery-count"] for headers, _batch in hook.notifications] == ["0", "1"]
    assert hook.notifications[0][1] == hook.notifications[1][1]  # the same body, ids included
    log = [entry for entry in control.event_grid_deliveries() if entry["kind"] == "notification"]
    assert [(entry["status"], entry["delivery_count"], entry["result"]) for entry in log] == [
        (500, 0, "retrying"), (200, 1, "delivered")]
    assert "simulated by the test receiver" in log[0]["excerpt"]
    assert client.fake.sleeps == [0.25]
    assert control.event_grid_subscriptions()[0]["delivered_events"] == 1


def test_after_max_attempts_the_batch_is_dead_lettered_and_the_next_one_goes(sim, receiver):
    client, control = sim()
    hook = receiver(statuses=[503, 502, 500])
    control.subscribe_event_grid(hook.url, max_attempts=3, retry_delays=[1, 2])
    control.inject(id=E1, type="Reboot", resources=["c"])
    control.start(E1)
    control.event_grid_flush()
    log = [entry for entry in control.event_grid_deliveries() if entry["kind"] == "notification"]
    assert [(entry["status"], entry["delivery_count"], entry["result"]) for entry in log] == [
        (503, 0, "retrying"), (502, 1, "retrying"), (500, 2, "dead_lettered"), (200, 0, "delivered")]
    assert log[2]["dead_lettered"] and log[2]["dead_letter_reason"] == "3 attempt(s) failed"
    assert client.fake.sleeps == [1, 2]
    assert statuses_of(hook) == ["Scheduled"] * 3 + ["Started"]
    record = control.event_grid_subscriptions()[0]
    assert (record["delivered_events"], record["dead_lettered_events"], record["pending_events"]) == (1, 1, 0)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
def test_client_errors_dead_letter_at_once(sim, receiver, status):
    client, control = sim()
    hook = receiver(statuses=[status])
    control.subscribe_event_grid(hook.url)
    control.inject(id=E1, type="Reboot", resources=["c"])
    control.event_grid_flush()
    [entry] = [entry for entry in control.event_grid_deliveries() if entry["kind"] == "notification"]
    assert (entry["status"], entry["result"], entry["dead_lettered"]) == (status, "dead_lettered", True)
    assert entry["dead_letter_reason"] == f"HTTP {status} is not retried"
    assert client.fake.sleeps == [] and len(hook.notifications) == 1


def test_connection_errors_are_retried(sim):
    import socket  # pylint: disable=import-outside-toplevel
    _client, control = sim()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        record = control.subscribe_event_grid(f"http://127.0.0.1:{port}/hook", validate=False, max_attempts=2)
        assert record["provisioningState"] == "Succeeded"
        control.inject(id=E1, type="Reboot", resources=["c"])
        control.event_grid_flush()
    log = control.event_grid_deliveries()
    assert [(entry["status"], entry["result"]) for entry in log] == [(None, "retrying"), (None, "dead_lettered")]
    assert all("Connection" in entry["error"] or "refused" in entry["error"] for entry in log)


def test_handshake_to_a_closed_port_fails_with_the_connection_error(sim):
    import socket  # pylint: disable=import-outside-toplevel
    _client, control = sim()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        record = control.subscribe_event_grid("http://127.0.0.1:%d/" % sock.getsockname()[1])
    assert record["provisioningState"] == "Failed" and "Connection" in record["failure"]


# -- the control API ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["http://example.com/hook", "https://10.0.0.1/hook", "http://[2001:db8::1]:80/",
                                      "http://169.254.169.254/x"])
def test_endpoints_that_are_not_loopback_are_refused(sim, endpoint):
    client, control = sim()
    with pytest.raises(ControlError, match="400 .*not a loopback address"):
        control.subscribe_event_grid(endpoint)
    status, body = client.control("POST", "/control-plane/event-grid/subscriptions", {"endpoint": endpoint})
    assert status == 400 and "loopback" in body["error"]
    assert control.event_grid_subscriptions() == [] and control.event_grid_deliveries() == []


@pytest.mark.parametrize("body, problem", [
    ({"endpoint": "ftp://127.0.0.1/x"}, "is not an http:// or https:// URL"),
    ({"endpoint": "http://127.0.0.1:99999/x"}, "is not a URL"),
    ({"endpoint": "http://127.0.0.1/", "schema": "Custom"}, "unknown schema 'Custom'"),
    ({"endpoint": "http://127.0.0.1/", "max_events_per_batch": 5001}, "must be at most 5000"),
    ({"endpoint": "http://127.0.0.1/", "max_events_per_batch": 0}, "must be at least 1"),
    ({"endpoint": "http://127.0.0.1/", "headers": {"aeg-event-type": "x"}}, "set by the publisher"),
    ({"endpoint": "http://127.0.0.1/", "headers": {"x": 1}}, "single-line string"),
    ({"endpoint": "http://127.0.0.1/", "retry_delays": []}, "1 to 30 delays"),
    ({"endpoint": "http://127.0.0.1/", "retry_delays": [-1]}, "from 0 to 3600"),
    ({"endpoint": "http://127.0.0.1/", "max_attempts": 31}, "must be at most 30"),
    ({"endpoint": "http://127.0.0.1/", "name": "x"}, "invalid subscription name"),
    ({"endpoint": "http://127.0.0.1/", "secret": "x"}, "unknown key 'secret'"),
    ({"endpoint": "http://127.0.0.1/", "entra": {}}, "entra.application_id_or_uri: is required"),
    ({"endpoint": "http://127.0.0.1/", "entra": {"application_id_or_uri": "api://x", "tenant_id": "contoso"}},
     "'contoso' is not a subscription id (a GUID)"),
    ({"endpoint": "http://127.0.0.1/", "entra": {"application_id_or_uri": "api://x", "token_version": 3}},
     "must be at most 2"),
    ({"endpoint": "http://127.0.0.1/", "entra": {"application_id_or_uri": "a\nb"}}, "the app's id or id URI"),
    ({"endpoint": "http://127.0.0.1/", "entra": {"application_id_or_uri": "api://x"},
      "headers": {"Authorization": "Bearer x"}}, "sends Authorization itself"),
    ({}, "endpoint: is required"),
])
def test_subscription_bodies_are_checked(sim, body, problem):
    client, _control = sim()
    status, answer = client.control("POST", "/control-plane/event-grid/subscriptions", body)
    assert status == 400 and problem in answer["error"], answer


def test_unsubscribe_stops_deliveries_and_names_are_unique(sim, receiver):
    client, control = sim()
    hook = receiver()
    control.subscribe_event_grid(hook.url, name="one")
    with pytest.raises(ControlError, match="409"):
        control.subscribe_event_grid(hook.url, name="ONE")
    generated = control.subscribe_event_grid(hook.url)["id"]
    assert generated.startswith("imds-sim-")
    assert control.unsubscribe_event_grid("one")["id"] == "one"
    control.inject(id=E1, type="Reboot", resources=["c"])
    control.event_grid_flush()
    assert [headers["aeg-subscription-name"] for headers, _batch in hook.notifications] == [generated.upper()]
    assert [sub["id"] for sub in control.event_grid_subscriptions()] == [generated]
    assert len(control.event_grid_deliveries(subscription="one")) == 1  # its handshake
    assert [entry["kind"] for entry in control.event_grid_deliveries(subscription=generated)] == [
        "validation", "notification"]
    with pytest.raises(ControlError, match="404"):
        control.unsubscribe_event_grid("one")
    assert client.control("POST", "/control-plane/event-grid/flush", {"timeout": 0})[0] == 400


def test_reset_clears_subscriptions_and_deliveries(sim, receiver):
    _client, control = sim()
    hook = receiver()
    control.subscribe_event_grid(hook.url)
    control.inject(id=E1, type="Reboot", resources=["c"])
    control.event_grid_flush()
    assert len(hook.notifications) == 1
    control.reset()
    assert control.event_grid_subscriptions() == [] and control.event_grid_deliveries() == []
    control.inject(id=E2, type="Reboot", resources=["c"])
    control.event_grid_flush()
    assert len(hook.notifications) == 1


def test_flush_times_out_with_what_is_pending(sim, receiver):
    client, control = sim()
    gate = threading.Event()
    hook = receiver(statuses=[500])
    client.sim.event_grid._wait = lambda seconds, stop: gate.wait(30)  # pylint: disable=protected-access
    control.subscribe_event_grid(hook.url)
    control.inject(id=E1, type="Reboot", resources=["c"])
    with pytest.raises(ControlError, match=r"504 .*still pending.*imds-sim-1.*1"):
        control.event_grid_flush(timeout=0.2)
    gate.set()
    control.event_grid_flush()
    assert [headers["aeg-delivery-count"] for headers, _batch in hook.notifications] == ["0", "1"]


# -- without requests, over TLS, from a scenario -----------------------------------------------------------------


def test_changes_are_delivered_without_any_request(sim, receiver):
    """A scaled clock moves on its own: the ticker notices the event appear, nobody asks the simulator anything."""
    data = scenario([{"id": E1, "type": "Reboot", "resources": ["c"], "at": 100}])
    data["clock"] = "scaled"
    del data["start_time"]
    client, control = sim(data, clock="scaled")
    hook = receiver()
    control.subscribe_event_grid(hook.url)
    client.fake.now += 100  # the scaled clock's wall
    assert hook.got.wait(30), "the ticker never delivered the change"
    assert statuses_of(hook) == ["Scheduled"]


def _certificate(tmp_path):
    certfile, keyfile = self_signed(str(tmp_path), "hook")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return context


def test_https_to_a_self_signed_loopback_certificate(sim, receiver, tmp_path):
    _client, control = sim()
    hook = receiver(context=_certificate(tmp_path))
    assert hook.url.startswith("https://")
    refused = control.subscribe_event_grid(hook.url)
    assert refused["provisioningState"] == "Failed" and "CERTIFICATE_VERIFY_FAILED" in refused["failure"]
    record = control.subscribe_event_grid(hook.url, insecure_skip_verify=True)
    assert record["provisioningState"] == "Succeeded" and record["insecure_skip_verify"] is True
    control.inject(id=E1, type="Reboot", resources=["c"])
    control.event_grid_flush()
    assert statuses_of(hook) == ["Scheduled"]


def test_a_scenario_declares_subscriptions_made_at_start_and_after_reset(start_sim, receiver):
    hook = receiver()
    data = scenario([{"id": E1, "type": "Reboot", "resources": ["c"], "at": 10}],
                    event_grid=[{"endpoint": hook.url, "name": "from-scenario", "max_events_per_batch": 10}])
    control = ControlClient(start_sim(data).sim.control_url)
    [record] = control.event_grid_subscriptions()
    assert (record["id"], record["provisioningState"], record["max_events_per_batch"]) == ("from-scenario", "Succeeded", 10)
    control.advance(10)
    control.event_grid_flush()
    control.reset()
    assert [sub["id"] for sub in control.event_grid_subscriptions()] == ["from-scenario"]
    assert [entry["kind"] for entry in control.event_grid_deliveries()] == ["validation"]
    control.advance(10)
    control.event_grid_flush()
    assert statuses_of(hook) == ["Scheduled", "Scheduled"]
    assert [request["headers"]["aeg-event-type"] for request in hook.requests] == [
        "SubscriptionValidation", "Notification", "SubscriptionValidation", "Notification"]


@pytest.mark.parametrize("event_grid, where, problem", [
    ([{"endpoint": "http://192.0.2.1/"}], "control_plane.event_grid[0].endpoint", "not a loopback address"),
    ([{"endpoint": "http://127.0.0.1/", "name": "dup"}, {"endpoint": "http://127.0.0.1/", "name": "DUP"}],
     "control_plane.event_grid[1].name", "duplicate subscription name"),
    ("http://127.0.0.1/", "control_plane.event_grid", "expected a list"),
])
def test_scenario_event_grid_entries_are_checked(event_grid, where, problem):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(scenario(event_grid=event_grid))
    assert caught.value.path == where and problem in caught.value.message


# -- Microsoft Entra authentication ----------------------------------------------------------------------------------

TENANT = "72f988bf-0000-4000-8000-00000000c0de"  # the scenario's default control_plane.tenant_id
SIMULATOR = os.path.dirname(os.path.dirname(os.path.abspath(imds_simulator.__file__)))


def entra_keys(control, tenant=TENANT):
    """The signing keys as a receiver finds them: the OpenID configuration, then its jwks_uri."""
    import jwt  # pylint: disable=import-outside-toplevel
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    configuration = json.load(opener.open(control.entra_openid_configuration_url(tenant), timeout=30))
    assert configuration["issuer"] == f"https://login.microsoftonline.com/{tenant}/v2.0"
    keys = json.load(opener.open(configuration["jwks_uri"], timeout=30))["keys"]
    return dict((key["kid"], jwt.algorithms.RSAAlgorithm.from_jwk(key)) for key in keys)


def verified(token, keys, audience):
    import jwt  # pylint: disable=import-outside-toplevel
    return jwt.decode(token, keys[jwt.get_unverified_header(token)["kid"]], algorithms=["RS256"], audience=audience)


def bearer(request):
    scheme, _space, token = request["headers"]["authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


def test_entra_subscriptions_send_event_grids_token_with_every_request(sim, receiver):
    _client, control = sim()
    hook = receiver()
    record = control.subscribe_event_grid(hook.url, entra={"application_id_or_uri": "api://eda-webhook"})
    assert record["provisioningState"] == "Succeeded"
    assert record["entra"] == {"application_id_or_uri": "api://eda-webhook", "tenant_id": None, "token_version": 1}
    control.inject(id=E1, type="Reboot", resources=["c"])
    control.event_grid_flush()
    assert [r["headers"]["aeg-event-type"] for r in hook.requests] == ["SubscriptionValidation", "Notification"]
    tokens = [bearer(request) for request in hook.requests]
    assert tokens[0] == tokens[1]  # one token until it nears its expiry, as Event Grid keeps it
    claims = verified(tokens[0], entra_keys(control), "api://eda-webhook")
    assert claims["iss"] == f"https://sts.windows.net/{TENANT}/" and claims["tid"] == TENANT
    assert claims["roles"] == ["AzureEventGridSecureWebhookSubscriber"] and claims["ver"] == "1.0"
    assert claims["exp"] - claims["nbf"] == 3600 and claims["appid"] == "4962773b-9cdb-44cf-a8bf-237846a00ab7"


def test_entra_v2_tokens_and_the_cloud_events_handshake(sim, receiver):
    _client, control = sim()
    hook = receiver()
    tenant = "3f1e2d4c-5b6a-4798-8a9b-0c1d2e3f4a5b"
    app = "6a0b8c1d-2e3f-4a5b-8c7d-9e0f1a2b3c4d"
    record = control.subscribe_event_grid(hook.url, schema="CloudEventSchemaV1_0", entra={
        "application_id_or_uri": app, "tenant_id": tenant, "token_version": 2})
    assert record["provisioningState"] == "Succeeded"
    [options] = hook.requests
    assert options["method"] == "OPTIONS"
    claims = verified(bearer(options), entra_keys(control, tenant), app)
    assert claims["iss"] == f"https://login.microsoftonline.com/{tenant}/v2.0" and claims["tid"] == tenant
    assert claims["azp"] == "4962773b-9cdb-44cf-a8bf-237846a00ab7" and claims["ver"] == "2.0"


def test_rotated_keys_sign_the_next_tokens_and_stay_published(sim, receiver):
    _client, control = sim()
    hook = receiver()
    control.subscribe_event_grid(hook.url, entra={"application_id_or_uri": "api://eda-webhook"})
    import jwt  # pylint: disable=import-outside-toplevel
    first = jwt.get_unverified_header(bearer(hook.requests[0]))["kid"]
    kids = control.rotate_entra_keys()
    assert kids[1] == first and len(kids) == 2
    control.inject(id=E1, type="Reboot", resources=["c"])
    control.event_grid_flush()
    token = bearer(hook.requests[-1])
    assert jwt.get_unverified_header(token)["kid"] == kids[0]
    assert verified(token, entra_keys(control), "api://eda-webhook")["aud"] == "api://eda-webhook"
    assert [key["kid"] for key in control.entra_keys(TENANT)] == kids
    newest = control.rotate_entra_keys(keep=0)
    assert len(newest) == 1 and newest[0] not in kids


def test_the_simulator_runs_without_cryptography_until_a_subscription_asks_for_entra(tmp_path):
    """Only Entra tokens need cryptography: without it the simulator starts and delivers, and an Entra
    subscription is refused with 501 saying what is missing."""
    script = tmp_path / "no_crypto.py"
    script.write_text(textwrap.dedent('''
        import sys
        sys.modules["cryptography"] = None  # as if it were not installed
        from imds_simulator import ControlClient, ControlError, Simulator
        with Simulator.from_scenario({"name": "x", "vms": [{"name": "a"}]}, port=0, control_port=0) as sim:
            control = ControlClient(sim.control_url)
            print(control.subscribe_event_grid("http://127.0.0.1:9/", validate=False)["provisioningState"])
            try:
                control.subscribe_event_grid("http://127.0.0.1:9/", validate=False,
                                             entra={"application_id_or_uri": "api://x"})
            except ControlError as exc:
                print(exc)
    '''))
    guard = os.path.join(os.path.dirname(SIMULATOR), "tests", "guard")  # the network guard, as for every process
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join([guard, SIMULATOR])))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Succeeded" and "501" in lines[1] and "need the Python package cryptography" in lines[1]
