# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import event_grid as eg

SUB = "11111111-2222-3333-4444-555555555555"
EVENT = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
ROW_ID = ("/subscriptions/%s/resourceGroups/prod/providers/Microsoft.Compute/virtualMachineScaleSets/web"
          "/providers/Microsoft.Maintenance/scheduledevents/%s" % (SUB, EVENT))
EMITTED = "Microsoft.ResourceNotifications.MaintenanceResources.ScheduledEventEmitted"


def resource_info(status="Scheduled", **props):
    properties = {"EventId": EVENT, "EventType": "Redeploy", "ResourceType": "VirtualMachine",
                  "Resources": ["web_0", "web_1"], "EventStatus": status,
                  "NotBefore": "Mon, 11 Apr 2050 22:26:58 GMT" if status == "Scheduled" else "",
                  "Description": "", "EventSource": "Platform", "DurationInSeconds": -1,
                  "ScheduledEventApiVersion": "2020-07-01"}
    properties.update(props)
    return {"id": ROW_ID, "name": EVENT, "type": "microsoft.maintenance/scheduledevents", "location": "westeurope",
            "properties": properties}


def grid_event(delivery_id="d-1", event_type=EMITTED, data=None, **info):
    return {"id": delivery_id, "topic": "/subscriptions/%s" % SUB, "subject": ROW_ID, "eventType": event_type,
            "eventTime": "2050-04-11T22:10:00Z", "dataVersion": "3.0", "metadataVersion": "1",
            "data": data if data is not None else {"resourceInfo": resource_info(**info), "apiVersion": "2020-07-01"}}


def body(value):
    return json.dumps(value).encode("utf-8")


def test_a_batch_of_scheduled_events_reads_into_the_one_model():
    delivery = eg.parse_delivery(body([grid_event("d-1"), grid_event("d-2", status="Started")]))
    assert delivery.validation_code is None and delivery.schema == "EventGridSchema"
    assert [i.kind for i in delivery.items] == [eg.SCHEDULED_EVENT, eg.SCHEDULED_EVENT]
    first, second = (i.found for i in delivery.items)
    assert first.event.event_id == EVENT and first.event.status == "Scheduled"
    assert second.event.status == "Started"
    assert first.owner.as_dict() == {"id": "/subscriptions/%s/resourceGroups/prod/providers/Microsoft.Compute/"
                                     "virtualMachineScaleSets/web" % SUB, "kind": "virtualMachineScaleSets",
                                     "name": "web", "resource_group": "prod", "subscription": SUB}
    assert delivery.items[0].delivery_id == "d-1"


@pytest.mark.parametrize("status", ["Completed", "Canceled"])
def test_finished_statuses_are_known(status):
    item = eg.parse_delivery(body([grid_event(status=status)])).items[0]
    assert item.found.event.is_finished and item.found.event.problems == ()


def test_the_other_documented_event_type_is_accepted():
    item = eg.parse_delivery(body([grid_event(event_type="Microsoft.Maintenance/scheduledEvents/write")])).items[0]
    assert item.kind == eg.SCHEDULED_EVENT


def test_the_validation_handshake_gives_the_code():
    handshake = [{"id": "v-1", "topic": "t", "subject": "", "eventType": eg.VALIDATION_EVENT,
                  "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                           "validationUrl": "https://rp.example/validate"}, "dataVersion": "2"}]
    assert eg.parse_delivery(body(handshake)).validation_code == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    handshake[0]["data"] = {}
    with pytest.raises(eg.DeliveryError, match="without data.validationCode"):
        eg.parse_delivery(body(handshake))


def test_cloudevents_single_and_batch():
    cloud = {"specversion": "1.0", "id": "c-1", "source": "/subscriptions/%s" % SUB, "subject": ROW_ID,
             "type": EMITTED, "time": "2050-04-11T22:10:00Z", "data": {"resourceInfo": resource_info()}}
    single = eg.parse_delivery(body(cloud), "application/cloudevents+json; charset=utf-8")
    assert single.schema == "CloudEventSchemaV1_0" and single.items[0].kind == eg.SCHEDULED_EVENT
    batch = eg.parse_delivery(body([cloud, dict(cloud, id="c-2")]), "application/cloudevents-batch+json")
    assert [i.delivery_id for i in batch.items] == ["c-1", "c-2"]


def test_the_subject_stands_in_for_a_missing_row_id():
    info = resource_info()
    del info["id"]
    item = eg.parse_delivery(body([grid_event(data={"resourceInfo": info})])).items[0]
    assert item.kind == eg.SCHEDULED_EVENT and item.found.row["id"] == ROW_ID


@pytest.mark.parametrize("event, problem", [
    (grid_event(data={}), "no data.resourceInfo object"),
    (grid_event(data={"resourceInfo": dict(resource_info(), properties="x")}), "no properties object"),
    (grid_event(data={"resourceInfo": dict(resource_info(), id="/subscriptions/x/elsewhere")}),
     "is not a scheduled event"),
    (grid_event(EventId=""), "has no EventId"),
    (grid_event(EventId="A626E37F-793E-44E1-89B5-99AE0B96044C"), "its id names event"),
    ("a string", "not an object"),
])
def test_an_unreadable_scheduled_event_is_an_item_with_its_problem(event, problem):
    items = eg.parse_delivery(body([grid_event("ok"), event])).items
    assert items[0].kind == eg.SCHEDULED_EVENT
    assert items[1].kind == eg.UNREADABLE and problem in items[1].problem


def test_a_scheduled_event_without_an_id_is_unreadable():
    event = grid_event()
    del event["id"]
    item = eg.parse_delivery(body([event])).items[0]
    assert item.kind == eg.UNREADABLE and item.problem == "the event has no id"


def test_other_event_types_are_items_of_their_own():
    item = eg.parse_delivery(body([grid_event(event_type="Microsoft.Resources.ResourceWriteSuccess")])).items[0]
    assert item.kind == eg.OTHER and item.event_type == "Microsoft.Resources.ResourceWriteSuccess"


@pytest.mark.parametrize("raw, status, message", [
    (b"not json", 400, "not JSON"),
    (b"\xff\xfe", 400, "not JSON"),
    (b'"a string"', 400, "not an array of events"),
    (b"[" * 100 + b"]" * 100, 400, "nested deeper"),
    (b" " * (eg.MAX_BODY_BYTES + 1), 413, "more than"),
    (json.dumps([{}] * (eg.MAX_EVENTS + 1)).encode(), 413, "events, more than"),
])
def test_what_is_not_a_delivery_is_refused_with_a_status(raw, status, message):
    with pytest.raises(eg.DeliveryError, match=message) as caught:
        eg.parse_delivery(raw)
    assert caught.value.status == status


def test_tokens_from_the_header_and_the_query():
    assert eg.presented_tokens({"Authorization": "Bearer s3cret"}, {}) == ("s3cret", None)
    assert eg.presented_tokens({"Authorization": "bearer  s3cret "}, {"code": "c0de"}) == ("s3cret", "c0de")
    assert eg.presented_tokens({}, {"code": "s3cret"}) == (None, "s3cret")
    assert eg.presented_tokens({}, {"key": "s3cret"}, param="key") == (None, "s3cret")
    assert eg.presented_tokens({"Authorization": "Basic x"}, {"code": ""}) == (None, None)
    assert eg.token_matches("s3cret", "s3cret")
    assert not eg.token_matches("s3cret", "s3cre")
    assert not eg.token_matches("s3cret", None)
    assert not eg.token_matches(None, "x")
    assert not eg.token_matches("s3cret", "s3cret\udcff")  # undecodable header bytes: compared, no error


@pytest.mark.parametrize("address, key", [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    (None, "None"),
    ("not an address", "not an address"),
])
def test_failures_are_counted_per_address_or_ipv6_64(address, key):
    assert eg.peer_key(address) == key


def test_the_peers_counted_are_bounded():
    failures = eg.FailedAuthentications(1, max_peers=3)
    for n in range(10):
        failures.failed("192.0.2.%d" % n, 0)
    assert len(failures) == 3 and failures.limited("192.0.2.9", 0) and not failures.limited("192.0.2.0", 0)


def test_max_bytes_and_events_are_arguments():
    raw = body([grid_event("a"), grid_event("b")])
    with pytest.raises(eg.DeliveryError, match="2 events, more than 1") as caught:
        eg.parse_delivery(raw, max_events=1)
    assert caught.value.status == 413
    with pytest.raises(eg.DeliveryError, match="more than 100") as caught:
        eg.parse_delivery(raw, max_bytes=100)
    assert caught.value.status == 413
    assert len(eg.parse_delivery(raw, max_events=2).items) == 2


def test_recent_ids_forget_the_oldest_beyond_the_limit():
    recent = eg.RecentIds(limit=2)
    assert not recent.seen("a")
    assert recent.seen("a")
    assert not recent.seen("b")
    assert not recent.seen("c")  # "a" forgotten
    assert len(recent) == 2
    assert not recent.seen("a")
