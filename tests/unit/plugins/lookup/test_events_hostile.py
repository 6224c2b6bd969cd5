# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The hostile-input table (tests/unit/utils/hostile.py) in every field of the IMDS document, through the events
lookup as a playbook calls it: query() inside a template, with and without a JMESPath `query`, and the result used
in a second template.

Why: a lookup's result lands in templates. If ansible-core took it as trusted, a Jinja value in an event would be
evaluated (the pipe lookup runs a command). A value inside the data must also stay data for JMESPath: the
expression is the operator's, the values it selects are never parsed as one."""

from __future__ import annotations

import os
import sys

import pytest

from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.imds.scheduled_events.tests.unit.plugins.lookup.test_events_faults import (  # noqa: F401  pylint: disable=unused-import
    IMDS_MODULE, lookup)  # lookup: the fixture that loads the plugin as Ansible does
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile
from ansible_collections.imds.scheduled_events.tests.unit.utils.fault_matrix import (
    DOCUMENT_FIELDS, EVENT_FIELDS, HostileImds)

CANARY = "/tmp/imds-lookup-canary-%d" % os.getpid()
VALUES = hostile.strings(CANARY) + hostile.wrong_types()
CALL = "query('imds.scheduled_events.events', endpoint=endpoint, vm_name='myvm', retries=0%s)"


@pytest.fixture(autouse=True)
def no_canary():
    hostile.clear(CANARY)
    yield
    hostile.assert_no_trace(CANARY)


@pytest.fixture(scope="module")
def served():
    imds_ = HostileImds()
    yield imds_
    imds_.stop()


@pytest.fixture
def document(served, lookup):  # pylint: disable=redefined-outer-name,unused-argument  # lookup: the loader first
    sys.modules[IMDS_MODULE]._WARMED.clear()
    yield served
    served.clear()


def render(template, **variables):
    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.template(trust_as_template(template))


@pytest.mark.parametrize("case", VALUES, ids=hostile.ids(VALUES))
@pytest.mark.parametrize("field", EVENT_FIELDS + DOCUMENT_FIELDS)
def test_every_field_stays_data_in_templates(document, field, case):
    value = document.inject(field, case.value)
    try:
        events = render("{{ %s }}" % (CALL % ""), endpoint=document.endpoint)
    except AnsibleError as exc:  # the document refused, with what is wrong in it
        assert field == "EventId" and "no EventId" in str(exc), str(exc)
        hostile.assert_no_trace(CANARY, str(exc))
        return
    hostile.assert_no_trace(CANARY, repr(events))
    if field in DOCUMENT_FIELDS:
        assert len(events) == 1
        return
    (event,) = events
    assert event[field] == value
    # used again in a template, as a playbook would (a when:, a debug msg): still the value, never rendered
    again = render("{{ events[0][field] }}", events=events, field=field)
    hostile.assert_no_trace(CANARY, repr(again))
    assert again == value or not isinstance(value, str)


@pytest.mark.parametrize("case", VALUES, ids=hostile.ids(VALUES))
@pytest.mark.parametrize("field", ["EventId", "EventType", "Resources", "Description", "EventSource"])
def test_a_jmespath_query_selects_values_never_evaluates_them(document, field, case):
    value = document.inject(field, case.value)
    try:
        selected = render("{{ %s }}" % (CALL % ", query=expression"), endpoint=document.endpoint,
                          expression="[].%s" % field)
        counted = render("{{ %s }}" % (CALL % ", query=expression"), endpoint=document.endpoint,
                         expression="[?%s == `%s`] | length(@)" % (field, '"placeholder"'))
    except AnsibleError as exc:
        assert field == "EventId" and "no EventId" in str(exc), str(exc)
        return
    hostile.assert_no_trace(CANARY, repr(selected), repr(counted))
    assert selected == ([value] if value is not None else [])  # a projection drops nulls
    assert counted == [0]  # the value is compared as data; it never joins the expression
