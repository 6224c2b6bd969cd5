# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import importlib
import os
import sys

import pytest
import yaml

from ansible.errors import AnsibleLookupError, AnsibleOptionsError
from ansible.plugins.loader import init_plugin_loader, lookup_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import ScriptedServer, answer

NAME = "imds.scheduled_events.events"
IMDS_MODULE = "ansible_collections.imds.scheduled_events.plugins.module_utils.imds"
MINE = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
SHARED = "A626E37F-793E-44E1-89B5-99AE0B96044C"
PEERS = "28512AF7-C957-4500-9BC4-842D6FB531E4"


def ev(event_id, resources, status="Scheduled", event_type="Reboot", source="Platform"):
    return {"EventId": event_id, "EventType": event_type, "ResourceType": "VirtualMachine", "Resources": resources,
            "EventStatus": status, "NotBefore": "" if status == "Started" else "Mon, 11 Apr 2050 22:26:58 GMT",
            "Description": "", "EventSource": source, "DurationInSeconds": -1}


DOC = {"DocumentIncarnation": 7, "Events": [
    ev(MINE, ["myvm"]),
    ev(SHARED, ["myvm", "peer"], event_type="Freeze", status="Started", source="User"),
    ev(PEERS, ["peer"]),
]}


def _collections_root():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "..", "..", ".build", "collections")


@pytest.fixture(scope="module")
def plugin_module():
    """The plugin as Ansible loads it. ansible-test installs Ansible's collection loader itself; under plain pytest
    the conftest imported the collection as a native namespace package, which the plugin loader cannot resolve
    FQCNs against, so hand the collection over to Ansible's loader as the ansible CLI would."""
    if AnsibleCollectionConfig.collection_finder is None:
        for name in [n for n in sys.modules if n == "ansible_collections" or n.startswith("ansible_collections.")]:
            del sys.modules[name]
        init_plugin_loader([os.path.abspath(_collections_root())])
    plugin = lookup_loader.get(NAME)
    assert plugin is not None, "%s did not load" % NAME
    return sys.modules[type(plugin).__module__]


def imds_module():
    """The client module as the plugin imported it (Ansible's collection loader may have loaded a second copy)."""
    return sys.modules[IMDS_MODULE]


@pytest.fixture
def lookup(plugin_module):  # pylint: disable=unused-argument  # loads the plugin first
    imds = imds_module()
    imds._WARMED.clear()
    yield lookup_loader.get(NAME)
    imds._WARMED.clear()


@pytest.fixture
def server():
    srv = ScriptedServer()
    yield srv
    srv.stop()


def run(lookup, server, terms=(), variables=None, **kwargs):
    kwargs.setdefault("endpoint", server.endpoint)
    kwargs.setdefault("vm_name", "myvm")
    return lookup.run(list(terms), variables=variables or {}, **kwargs)


def ids(events):
    return set(e["EventId"] for e in events)


def test_returns_every_event_with_azure_and_derived_keys(lookup, server):
    server.script(answer(200, DOC))
    events = run(lookup, server)
    assert [e["EventId"] for e in events] == [MINE, SHARED, PEERS]
    mine, shared, peers = events
    assert mine["affects_this_vm"] and not mine["shared"] and mine["scope"] == "this_vm"
    assert mine["not_before"] == "2050-04-11T22:26:58Z" and mine["seconds_until_start"] > 0
    assert mine["Resources"] == ["myvm"] and mine["DurationInSeconds"] == -1 and mine["duration_seconds"] == -1
    assert shared["shared"] and shared["NotBefore"] == "" and shared["seconds_until_start"] == 0
    assert not peers["affects_this_vm"] and peers["scope"] == "other_vms"
    (request,) = server.requests
    assert request["path"] == "/metadata/scheduledevents" and request["query"] == [("api-version", "2020-07-01")]
    assert request["headers"]["Metadata"] == "true"


def test_reads_this_vm_name_from_imds_when_not_given(lookup, server):
    server.script(answer(200, "MyVM"), answer(200, DOC))
    events = lookup.run([], variables={}, endpoint=server.endpoint, this_vm_only=True, api_version="2019-08-01")
    assert ids(events) == {MINE, SHARED}
    assert [r["path"] for r in server.requests] == ["/metadata/instance/compute/name", "/metadata/scheduledevents"]
    assert server.requests[1]["query"] == [("api-version", "2019-08-01")]


@pytest.mark.parametrize("options, expected", [
    ({"event_ids": [PEERS.lower()]}, {PEERS}),
    ({"event_types": ["freeze"]}, {SHARED}),
    ({"event_types": ["Reboot", "Redeploy"]}, {MINE, PEERS}),
    ({"statuses": ["Scheduled"]}, {MINE, PEERS}),
    ({"statuses": ["started"]}, {SHARED}),
    ({"sources": ["User"]}, {SHARED}),
    ({"sources": ["Nobody"]}, set()),
    ({"this_vm_only": True, "statuses": ["Scheduled"]}, {MINE}),
])
def test_filters(lookup, server, options, expected):
    server.script(answer(200, DOC))
    assert ids(run(lookup, server, **options)) == expected


def test_this_vm_only_keeps_shared_events_and_drops_other_vms(lookup, server):
    server.script(answer(200, DOC))
    events = run(lookup, server, this_vm_only=True, vm_name="MYVM")
    assert [(e["EventId"], e["scope"], e["shared"]) for e in events] == [(MINE, "this_vm", False), (SHARED, "shared", True)]


def test_this_vm_only_with_only_other_vms_events_is_empty(lookup, server):
    server.script(answer(200, {"DocumentIncarnation": 2, "Events": [ev(PEERS, ["peer", "other"])]}))
    assert run(lookup, server, this_vm_only=True) == []


@pytest.mark.parametrize("expression, expected", [
    ("[?EventType=='Reboot'].EventId", [MINE, PEERS]),                  # filter and projection
    ("[].{id: EventId, shared: shared}", [{"id": MINE, "shared": False}, {"id": SHARED, "shared": True},
                                          {"id": PEERS, "shared": False}]),
    ("[?shared].Resources[]", ["myvm", "peer"]),
    ("length(@)", [3]),                                                 # a scalar is wrapped
    ("[0].EventId", [MINE]),
    ("[?EventType=='Terminate'] | [0]", [None]),                        # null is wrapped too
    ("[0]", [None]),                                                    # with this_vm_only below: no match
])
def test_query(lookup, server, expression, expected):
    server.script(answer(200, DOC if expression != "[0]" else {"DocumentIncarnation": 1, "Events": []}))
    assert run(lookup, server, query=expression) == expected


def test_query_applies_after_the_filters(lookup, server):
    server.script(answer(200, DOC))
    assert run(lookup, server, this_vm_only=True, query="[?EventStatus=='Scheduled'].EventId") == [MINE]


def test_bad_query_fails_before_any_request(lookup, server):
    with pytest.raises(AnsibleLookupError, match="not a valid JMESPath expression") as caught:
        run(lookup, server, query="[?EventType=='Reboot'")
    assert type(caught.value.__cause__).__module__.startswith("jmespath")
    assert server.requests == []


def test_query_that_fails_on_the_data_is_a_lookup_error(lookup, server):
    server.script(answer(200, DOC))
    with pytest.raises(AnsibleLookupError, match="query 'abs\\(@\\)' failed"):
        run(lookup, server, query="abs(@)")


def test_imds_error_status_is_a_lookup_error(lookup, server):
    server.script(answer(400, {"error": "Bad request"}))
    with pytest.raises(AnsibleLookupError, match="answered 400") as caught:
        run(lookup, server)
    assert "Bad request" in str(caught.value)
    assert type(caught.value.__cause__).__name__ == "ImdsError" and caught.value.__cause__.status == 400


def test_malformed_json_is_a_lookup_error(lookup, server):
    server.script(answer(200, '{"Events": ['))
    with pytest.raises(AnsibleLookupError, match="malformed JSON"):
        run(lookup, server, retries=0)


def test_unreadable_vm_name_is_a_lookup_error_when_this_vm_only_needs_it(lookup, server):
    server.script(answer(404, "not found"))
    with pytest.raises(AnsibleLookupError, match=r"this VM's resource name is needed to pick this VM's events "
                                                 r"\(this_vm_only\), but IMDS did not give it: .*compute/name.*Set "
                                                 r"vm_name"):
        lookup.run([], variables={}, endpoint=server.endpoint, retries=0, this_vm_only=True)
    assert [r["path"] for r in server.requests] == ["/metadata/instance/compute/name"]


def test_without_a_vm_name_the_events_come_with_what_depends_on_it_unknown(lookup, server, plugin_module,
                                                                           monkeypatch):
    warnings = []
    monkeypatch.setattr(plugin_module.display, "warning", warnings.append)
    server.script(answer(404, "not found"), answer(200, DOC))  # Microsoft's mock server has no compute/name
    events = lookup.run([], variables={}, endpoint=server.endpoint, retries=0, statuses=["Scheduled"])
    assert ids(events) == {MINE, PEERS}
    assert all(e["affects_this_vm"] is None and e["shared"] is None and e["scope"] is None for e in events)
    assert events[0]["not_before"] == "2050-04-11T22:26:58Z"
    assert len(warnings) == 1 and "did not give this VM's resource name" in warnings[0]


def test_terms_are_refused(lookup, server):
    with pytest.raises(AnsibleOptionsError, match="takes no terms"):
        run(lookup, server, terms=["this_vm_only=true"])
    assert server.requests == []


def test_endpoint_from_the_environment(lookup, server, monkeypatch):
    monkeypatch.setenv("IMDS_ENDPOINT", server.endpoint)
    server.script(answer(200, DOC))
    assert len(lookup.run([], variables={}, vm_name="myvm")) == 3
    assert len(server.requests) == 1


def test_endpoint_from_the_imds_endpoint_variable(lookup, server, monkeypatch):
    monkeypatch.setenv("IMDS_ENDPOINT", "http://127.0.0.1:9")  # the variable wins over the environment
    server.script(answer(200, DOC))
    assert len(lookup.run([], variables={"imds_endpoint": server.endpoint}, vm_name="myvm")) == 3
    assert len(server.requests) == 1


def test_endpoint_keyword_wins_over_the_variable(lookup, server):
    server.script(answer(200, DOC))
    events = lookup.run([], variables={"imds_endpoint": "http://127.0.0.1:9"}, endpoint=server.endpoint, vm_name="myvm")
    assert len(events) == 3


@pytest.mark.parametrize("options, message", [
    ({"timeout": 0}, "must be positive"),
    ({"first_timeout": -1}, "must be positive"),
    ({"retries": -1}, "retries must not be negative"),
    ({"endpoint": "169.254.169.254"}, "not an http:// or https:// URL"),
    ({"endpoint": "http://127.0.0.1:1/metadata"}, "must not carry a path"),
    ({"api_version": "2099-01-01"}, "2099-01-01"),
    ({"vm_name": "   "}, "vm_name"),
    ({"this_vm": True}, "this_vm"),  # a typo of this_vm_only is not silently ignored
])
def test_bad_options_fail_before_any_request(lookup, server, options, message):
    with pytest.raises(AnsibleOptionsError, match=message):
        run(lookup, server, **options)
    assert server.requests == []


def test_missing_jmespath_is_a_lookup_error_only_with_query(lookup, server, plugin_module, monkeypatch):
    cause = ImportError("No module named 'jmespath'")
    monkeypatch.setattr(plugin_module, "jmespath", None)
    monkeypatch.setattr(plugin_module, "JMESPATH_IMPORT_ERROR", cause)
    server.script(answer(200, DOC))
    assert len(run(lookup, server)) == 3
    with pytest.raises(AnsibleLookupError, match="needs the Python library 'jmespath'") as caught:
        run(lookup, server, query="[].EventId")
    assert caught.value.__cause__ is cause


def test_missing_requests_is_a_lookup_error(lookup, server, plugin_module, monkeypatch):
    monkeypatch.setattr(imds_module(), "HAS_REQUESTS", False)
    monkeypatch.setattr(plugin_module, "HAS_REQUESTS", False, raising=False)
    monkeypatch.setitem(sys.modules, "requests", None)  # makes `import requests` raise ImportError
    with pytest.raises(AnsibleLookupError, match="needs the Python library 'requests'") as caught:
        run(lookup, server)
    assert caught.value.__cause__ is not None
    assert server.requests == []


def test_documented_choices_and_defaults_match_the_client(plugin_module):
    imds = imds_module()
    documentation = yaml.safe_load(plugin_module.DOCUMENTATION)
    options = documentation["options"]
    assert options["api_version"]["choices"] == list(imds.API_VERSIONS)
    assert options["api_version"]["default"] == imds.DEFAULT_API_VERSION
    assert options["endpoint"]["env"] == [{"name": imds.ENDPOINT_ENV}]
    # timing and retries: from the fragment the modules share, so every entry point documents them the same way
    assert "imds.scheduled_events.imds.REQUESTS" in documentation["extends_documentation_fragment"]
    shared = yaml.safe_load(importlib.import_module(
        "ansible_collections.imds.scheduled_events.plugins.doc_fragments.imds").ModuleDocFragment.REQUESTS)["options"]
    assert shared["timeout"]["default"] == imds.DEFAULT_TIMEOUT
    assert shared["first_timeout"]["default"] == imds.DEFAULT_FIRST_TIMEOUT
    assert shared["retries"]["default"] == imds.DEFAULT_RETRIES
    assert shared["deadline"]["default"] == imds.DEFAULT_DEADLINE
    assert not set(shared) & set(options)
    for section in ("EXAMPLES", "RETURN"):
        assert yaml.safe_load(getattr(plugin_module, section))
