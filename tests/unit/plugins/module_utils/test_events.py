# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import datetime
import json
import os

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import events
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import (
    Document, DocumentError, Event, Scope, ThisVm, parse_not_before)

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "documents")
UTC = datetime.timezone.utc
GUID = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"


def load(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return Document.from_json(json.load(handle))


def event(**fields):
    raw = {"EventId": GUID, "EventType": "Reboot", "ResourceType": "VirtualMachine", "Resources": ["myvm"],
           "EventStatus": "Scheduled", "NotBefore": "Mon, 11 Apr 2026 22:26:58 GMT"}
    raw.update(fields)
    return raw


# -- NotBefore --------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "Mon, 11 Apr 2026 22:26:58 GMT",     # production RFC1123
    "Mon, 11 Apr 2026 22:26:58 +0000",   # RFC822-style offset
    "2026-04-11T22:26:58Z",              # 2017-03-01 preview and Microsoft's mock
    "2026-04-11T22:26:58.000Z",
    "2026-04-11T22:26:58.123456789Z",
    "2026-04-11 22:26:58Z",
    "2026-04-12T00:26:58+02:00",
    "2026-04-11T17:26:58-0500",
    "2026-04-11T22:26:58",               # no zone: Azure means UTC
])
def test_not_before_forms_all_mean_the_same_instant(text):
    moment, problem = parse_not_before(text)
    assert problem is None
    assert moment.replace(microsecond=0) == datetime.datetime(2026, 4, 11, 22, 26, 58, tzinfo=UTC)


def test_empty_not_before_means_started_not_unknown():
    assert parse_not_before("") == (None, None)
    ev = Document.from_json({"Events": [event(NotBefore="", EventStatus="Started")]}).events[0]
    assert ev.seconds_until_start() == 0


@pytest.mark.parametrize("bad", ["tomorrow", "2026-13-45T99:00:00Z", 12345, ["x"]])
def test_unparseable_not_before_is_kept_and_reported(bad):
    doc = Document.from_json({"Events": [event(NotBefore=bad)]})
    ev = doc.events[0]
    assert ev.not_before is None
    assert ev.raw["NotBefore"] == bad
    assert ev.seconds_until_start() is None
    assert any("NotBefore" in p for p in doc.all_problems())


def test_seconds_until_start_counts_down_and_stops_at_zero():
    ev = Document.from_json({"Events": [event()]}).events[0]
    before = datetime.datetime(2026, 4, 11, 22, 25, 58, tzinfo=UTC)
    after = datetime.datetime(2026, 4, 11, 23, 0, 0, tzinfo=UTC)
    assert ev.seconds_until_start(before) == 60
    assert ev.seconds_until_start(after) == 0


def test_rfc1123_round_trip():
    moment = datetime.datetime(2016, 9, 19, 18, 29, 47, tzinfo=UTC)
    assert events.format_rfc1123(moment) == "Mon, 19 Sep 2016 18:29:47 GMT"
    assert parse_not_before(events.format_rfc1123(moment))[0] == moment


# -- numbers as strings, missing fields ---------------------------------------

def test_numbers_that_arrive_as_strings():
    doc = Document.from_json({"DocumentIncarnation": "5", "Events": [event(DurationInSeconds="30")]})
    assert doc.incarnation == 5
    assert doc.events[0].duration_seconds == 30
    assert doc.all_problems() == []


@pytest.mark.parametrize("value", ["five", True, 1.5, {"n": 1}])
def test_non_integers_are_reported_not_guessed(value):
    doc = Document.from_json({"DocumentIncarnation": value, "Events": [event(DurationInSeconds=value)]})
    assert doc.incarnation is None
    assert doc.events[0].duration_seconds is None
    assert len(doc.all_problems()) == 2


def test_fields_missing_on_older_api_versions():
    doc = load("multi-event-2017.json")
    assert [e.event_id for e in doc.events] == ["28512AF7-C957-4500-9BC4-842D6FB531E4",
                                                "A626E37F-793E-44E1-89B5-99AE0B96044C"]
    for ev in doc.events:
        assert ev.description is None and ev.source is None and ev.duration_seconds is None
        assert "Description" not in ev.describe()
    preempt = load("preempt-2019-08-01.json").events[0]
    assert preempt.event_type == "Preempt" and preempt.duration_seconds is None and preempt.source == "Platform"


def test_unknown_type_and_status_are_kept_and_treated_as_pending_impact():
    doc = Document.from_json({"Events": [event(EventType="Hibernate", EventStatus="Paused")]})
    ev = doc.events[0]
    assert ev.event_type == "Hibernate"
    assert ev.is_scheduled and not ev.is_started
    assert ev.affects(ThisVm("myvm"))
    assert len(ev.problems) == 2


def test_describe_keeps_azure_keys_verbatim_and_adds_derived_keys():
    doc = load("freeze-live-migration-shared.json")
    out = doc.events[0].describe(ThisVm("westno_0"), now=datetime.datetime(2026, 4, 11, 22, 0, tzinfo=UTC))
    assert out["EventId"] == "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
    assert out["NotBefore"] == "Mon, 11 Apr 2026 22:26:58 GMT"
    assert out["DurationInSeconds"] == 5
    assert out["not_before"] == "2026-04-11T22:26:58Z"
    assert out["seconds_until_start"] == 1618
    assert out["affects_this_vm"] is True and out["shared"] is True
    assert "problems" not in out


# -- this VM --------------------------------------------------------------------

@pytest.mark.parametrize("listed", ["myvm", "MyVM", "MYVM", "_myvm", "_MyVm", " myvm "])
def test_this_vm_matches_case_insensitively_and_without_the_preview_underscore(listed):
    assert ThisVm("myVM").is_named(listed)


@pytest.mark.parametrize("listed", ["myvm2", "__myvm", "my_vm", "vm", "myvm_0"])
def test_this_vm_does_not_match_other_names(listed):
    assert not ThisVm("myvm").is_named(listed)


def test_scale_set_instance_names_are_matched_whole():
    vm = ThisVm("aks-system-12345678-vmss_0")
    assert vm.is_named("aks-system-12345678-VMSS_0")
    assert not vm.is_named("aks-system-12345678-vmss_00")
    assert not vm.is_named("aks-system-12345678-vmss000000")  # the OS hostname is not the resource name


def test_preview_document_with_underscore_names():
    doc = load("preview-2017-03-01-underscore.json")
    assert doc.incarnation == 5
    assert doc.for_vm(ThisVm("myvm")) == list(doc.events)
    assert doc.events[0].not_before == datetime.datetime(2016, 9, 19, 18, 29, 47, tzinfo=UTC)


@pytest.mark.parametrize("resources, scope", [
    (["myvm"], Scope.THIS_VM),
    (["MYVM", "_myvm"], Scope.THIS_VM),
    (["myvm", "peer"], Scope.SHARED),
    (["peer", "peer2"], Scope.OTHER_VMS),
    ([], Scope.NONE),
])
def test_scope_of_an_event(resources, scope):
    ev = Document.from_json({"Events": [event(Resources=resources)]}).events[0]
    vm = ThisVm("myvm")
    assert ev.scope(vm) == scope
    assert ev.affects(vm) is (scope in (Scope.THIS_VM, Scope.SHARED))
    assert ev.other_resources(vm) == [r for r in resources if r.lower().lstrip("_") != "myvm"]


@pytest.mark.parametrize("resources, scope", [(["myvm"], Scope.UNKNOWN), (["peer"], Scope.UNKNOWN), ([], Scope.NONE)])
def test_an_unknown_vm_cannot_tell_whose_an_event_is(resources, scope):
    ev = Document.from_json({"Events": [event(Resources=resources)]}).events[0]
    vm = ThisVm.unknown()
    assert not vm.known and vm.name is None and not vm.is_named("myvm") and repr(vm) == "ThisVm.unknown()"
    assert ev.scope(vm) == scope and ev.affects(vm) is False  # never known to list this VM
    described = ev.describe(vm)
    assert described["scope"] == scope
    if scope == Scope.UNKNOWN:  # nobody can say: null, not false
        assert described["affects_this_vm"] is None and described["shared"] is None


def test_for_vm_keeps_own_and_shared_events_only():
    doc = Document.from_json({"Events": [
        event(EventId="00000000-0000-4000-8000-000000000001", Resources=["myvm"]),
        event(EventId="00000000-0000-4000-8000-000000000002", Resources=["peer"]),
        event(EventId="00000000-0000-4000-8000-000000000003", Resources=["peer", "myvm"]),
    ]})
    assert [e.event_id[-1] for e in doc.for_vm(ThisVm("myvm"))] == ["1", "3"]


def test_this_vm_needs_a_name():
    with pytest.raises(ValueError):
        ThisVm("  ")


def test_resources_as_a_single_string():
    ev = Document.from_json({"Events": [event(Resources="myvm")]}).events[0]
    assert ev.resources == ("myvm",)


# -- field-shaped documents -----------------------------------------------------

@pytest.mark.parametrize("name, vm, types, statuses, affects", [
    ("aks-freeze-started.json", "regular-node-30975042-vmss_6", ["Freeze"], ["Started"], [True]),
    ("user-reboot.json", "flatcar-vm1", ["Reboot"], ["Scheduled"], [True]),
    ("hardware-failure-reboot.json", "myvm", ["Reboot"], ["Started"], [True]),
    ("terminate-vmss.json", "aks-tompool-39923754-vmss_13", ["Terminate"], ["Scheduled"], [True]),
    ("multi-event-2017.json", "sample_1", ["Reboot", "Reboot"], ["Scheduled", "Scheduled"], [False, True]),
    ("freeze-live-migration-shared.json", "WestNO_1", ["Freeze"], ["Scheduled"], [True]),
    ("empty.json", "myvm", [], [], []),
])
def test_field_documents(name, vm, types, statuses, affects):
    doc = load(name)
    assert [e.event_type for e in doc.events] == types
    assert [e.status for e in doc.events] == statuses
    assert [e.affects(ThisVm(vm)) for e in doc.events] == affects
    assert doc.all_problems() == []


# -- malformed documents ----------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    ([], "JSON array, not an object"),
    ("text", "JSON string, not an object"),
    (None, "JSON null, not an object"),
    ({"DocumentIncarnation": 1}, "no Events array"),
    ({"Events": {"EventId": GUID}}, "Events is a JSON object"),
    ({"Events": ["x"]}, "entry of Events is a JSON string"),
    ({"Events": [{"EventType": "Reboot"}]}, "has no EventId"),
    ({"Events": [event(), event()]}, "appears twice"),
])
def test_malformed_documents_raise_one_clear_error(raw, message):
    with pytest.raises(DocumentError, match=message):
        Document.from_json(raw)


def test_null_events_means_none():
    assert Document.from_json({"DocumentIncarnation": 3, "Events": None}).events == ()


def test_lookup_by_event_id_ignores_case():
    doc = Document.from_json({"Events": [event()]})
    assert doc.event(GUID.lower()) is doc.events[0]
    assert doc.event("00000000-0000-4000-8000-000000000009") is None


@pytest.mark.parametrize("value, ok", [
    (GUID, True), (GUID.lower(), True), ("not-a-guid", False), ("", False), (None, False),
    (GUID + "; rm -rf /", False), ("{%s}" % GUID, False),
])
def test_event_id_validation(value, ok):
    assert events.is_event_id(value) is ok


@pytest.mark.parametrize("status", ["Completed", "Canceled"])
def test_the_control_plane_statuses_are_known_there_and_finished(status):
    imds_view = Event.from_json(event(EventStatus=status))
    assert any("unknown EventStatus" in p for p in imds_view.problems), "IMDS never says it: odd there"
    seen = Event.from_json(event(EventStatus=status), known_statuses=events.CONTROL_PLANE_STATUSES)
    assert seen.problems == () and seen.is_finished
    assert not seen.is_scheduled and not seen.is_started and seen.seconds_until_start() is None


def test_named_vms_decide_the_scope_from_outside():
    shared = Event.from_json(event(Resources=["web_0", "_WEB_1"]))
    assert shared.scope(events.NamedVms(["web_0"])) == Scope.SHARED
    assert shared.scope(events.NamedVms(["web_0", "web_1"])) == Scope.THIS_VM
    assert shared.scope(events.NamedVms(["db_0"])) == Scope.OTHER_VMS
    assert shared.scope(events.NamedVms(None)) == Scope.THIS_VM, "no names: every VM is named"


def test_the_hosts_an_events_resources_name_are_matched_by_name_never_as_patterns():
    hosts = ["db_0", "web_0", "WEB_0", "all", "x"]
    resources = ["web_0", "*", "all", "web:&db", "!x", "~.*", "db_0,x", "db_[0:1]", "_x", "web_0"]
    assert events.hosts_named(resources, hosts) == (
        ["web_0", "WEB_0", "all", "x"],  # in Resources' order, each once; both case variants of web_0
        ["*", "web:&db", "!x", "~.*", "db_0,x", "db_[0:1]"])
    assert events.hosts_named(["all"], ["web_0", "db_0"]) == ([], ["all"])
