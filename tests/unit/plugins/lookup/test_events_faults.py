# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The events lookup against the simulator's faults and odd documents (the shared table in
tests/unit/utils/fault_matrix.py). Why: a lookup runs while templating, where a traceback
would hide the cause; every IMDS failure must be one AnsibleLookupError naming it, and every
odd but valid document must come back with the right scope and NotBefore."""

from __future__ import annotations

import os
import re
import sys

import pytest

from ansible.errors import AnsibleLookupError
from ansible.plugins.loader import init_plugin_loader, lookup_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

from ansible_collections.imds.scheduled_events.tests.unit.utils.fault_matrix import (
    CASES, MINE, Served, expected_requests)

NAME = "imds.scheduled_events.events"
IMDS_MODULE = "ansible_collections.imds.scheduled_events.plugins.module_utils.imds"


@pytest.fixture(scope="module")
def lookup():
    """The plugin as Ansible loads it (see test_events.py for why the loader is initialised here)."""
    if AnsibleCollectionConfig.collection_finder is None:
        for name in [n for n in sys.modules if n == "ansible_collections" or n.startswith("ansible_collections.")]:
            del sys.modules[name]
        here = os.path.dirname(os.path.abspath(__file__))
        init_plugin_loader([os.path.abspath(os.path.join(here, "..", "..", "..", "..", ".build", "collections"))])
    plugin = lookup_loader.get(NAME)
    assert plugin is not None, "%s did not load" % NAME
    return plugin


@pytest.fixture
def served():
    started = []

    def make(case):
        sys.modules[IMDS_MODULE]._WARMED.clear()  # every templating run may be a new process: cold
        srv = Served(case)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.mark.parametrize("name", sorted(CASES))
def test_events_lookup(lookup, served, name):
    case = CASES[name]
    srv = served(case)
    options = dict({"endpoint": srv.endpoint, "vm_name": "myvm", "api_version": case.api_version,
                    "retries": case.retries}, **case.options)
    requests = case.requests
    if case.fails:
        with pytest.raises(AnsibleLookupError) as caught:
            lookup.run([], variables={}, **options)
        message = str(caught.value)
        requests = expected_requests(case, message)
        assert re.search(case.fails, message), message
        assert "Traceback" not in message and type(caught.value.__cause__).__name__ == "ImdsError"
        assert caught.value.__cause__.status == case.status
    else:
        events = lookup.run([], variables={}, **options)
        if case.special == "cancel":
            assert events == []
        else:
            (event,) = events
            scope = {"other-vms-only": "other_vms", "shared": "shared"}.get(name, "this_vm")
            assert event["EventId"] == MINE and event["scope"] == scope
            expected = None if event["EventStatus"] == "Started" else "2025-06-15T15:15:00Z"
            assert event["not_before"] == expected
            assert bool(event.get("problems")) is (case.special == "unknown_type")
            mine = lookup.run([], variables={}, this_vm_only=True, **options)
            assert [e["EventId"] for e in mine] == ([] if scope == "other_vms" else [MINE])
    assert len(srv.check_budget(requests)) >= requests
