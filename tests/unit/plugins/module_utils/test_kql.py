# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""plugins/module_utils/kql.py: the one home of every query. The modules' query filters in Azure with checked
values; the workbook's and alert rules' queries hold no value but through kql_string (or, for the workbook's resource
groups, its own parameter). Microsoft's parser checks them all in tests/kusto; the simulator runs them in
tests/unit/deploy/test_portal.py."""

from __future__ import annotations

import re

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import kql
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile

EVENT = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
STRINGS = hostile.strings("/tmp/imds-kql-canary")
UNWRITABLE = ("nul-byte", "ansi-escapes", "lone-surrogate")


# --- the modules' query ---------------------------------------------------------------------------------------------


def test_the_query_filters_in_azure_with_checked_values():
    query = kql.build_query(event_ids=[EVENT], types=["Reboot", "Redeploy"], statuses=["Scheduled"],
                            sources=["User"], resource_groups=["rg-web"])
    assert query.splitlines() == [
        "maintenanceresources",
        '| where type == "microsoft.maintenance/scheduledevents"',
        '| where name in~ ("%s")' % EVENT,
        '| where tostring(properties.EventType) in~ ("Reboot", "Redeploy")',
        '| where tostring(properties.EventStatus) in~ ("Scheduled")',
        '| where tostring(properties.EventSource) in~ ("User")',
        '| where resourceGroup in~ ("rg-web")',
        "| project id, name, type, subscriptionId, resourceGroup, location, properties",
        "| order by id asc",
    ]


def test_values_stay_string_literals():
    query = kql.build_query(types=['Reboot") | take 1 //'], resource_groups=["rg\nweb"])
    assert '| where tostring(properties.EventType) in~ ("Reboot\\") | take 1 //")' in query.splitlines()
    assert '| where resourceGroup in~ ("rg\\nweb")' in query.splitlines()


@pytest.mark.parametrize("kwargs, message", [
    ({"event_ids": ["not-a-guid"]}, "not an EventId"),
    ({"resource_groups": ["rg\x00web"]}, "a KQL string cannot carry"),
])
def test_values_no_query_can_carry_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kql.build_query(**kwargs)


@pytest.mark.parametrize("names, forms", [
    (["web_0"], '"web_0", "_web_0"'),
    (["WEB_0", " _Web_0 ", "db-1"], '"web_0", "_web_0", "db-1", "_db-1"'),  # one name as Azure compares them
    (['x"y', "a\\b", "p | take 1"], '"x\\"y", "_x\\"y", "a\\\\b", "_a\\\\b", "p | take 1", "_p | take 1"'),
])
def test_vm_names_are_filtered_in_azure_each_name_a_string_literal(names, forms):
    """Issue 25 item 4: the rows are filtered by Resource Graph, not fetched whole and filtered here."""
    lines = kql.build_query(vm_names=names).splitlines()
    assert lines[2] == ("| where array_length(set_intersect(todynamic(tolower(tostring(properties.Resources))), "
                        "pack_array(%s))) > 0" % forms)
    assert lines[3:] == ["| project id, name, type, subscriptionId, resourceGroup, location, properties",
                         "| order by id asc"]


@pytest.mark.parametrize("names, message", [
    (["", "  "], "every VM name is empty"),
    (["web\x00"], "VM name .* a KQL string cannot carry"),
    ([7], "VM name 7 is a int, not a string"),
])
def test_vm_names_no_query_can_carry_are_refused(names, message):
    with pytest.raises(ValueError, match=message):
        kql.build_query(vm_names=names)


# --- the portal's queries -------------------------------------------------------------------------------------------


def literals(query):
    """The query with every string literal taken out: what is left is the query's own text."""
    return re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', query)


def test_the_workbook_shows_these_sections_in_this_order():
    assert list(kql.workbook_queries()) == ["resource_groups", "pending_by_type", "pending_events", "pending_vms",
                                            "finished_by_type", "finished_events", "opt_in_summary", "not_opted_in"]


def test_only_the_resource_group_parameter_reaches_the_workbook_queries():
    """Outside string literals, a workbook query holds no placeholder but {ResourceGroup}, and the queries that read
    events filter on it."""
    for name, query in kql.workbook_queries().items():
        placeholders = set(re.findall(r"\{[^}]*\}", literals(query)))
        assert placeholders <= {"{ResourceGroup}"}, name
        if name != "resource_groups":
            assert "| where \"*\" in ({ResourceGroup}) or resourceGroup in~ ({ResourceGroup})" in query, name


def test_alert_queries_hold_no_parameter_and_no_placeholder():
    """Thresholds and scopes are the rules' own settings: an alert query is the same text whatever the template's
    parameters."""
    for name, query in kql.alert_queries().items():
        assert "{" not in literals(query), name
        assert query.startswith("maintenanceresources\n| where type == \"microsoft.maintenance/scheduledevents\"\n")


def test_alert_queries_give_the_columns_the_rules_split_on_and_measure():
    for name, query in kql.alert_queries().items():
        project = [line for line in query.splitlines() if line.startswith("| project ")]
        assert len(project) == 1, name
        columns = [item.split("=")[0].strip() for item in re.split(r",\s*(?![^()]*\))", project[0][len("| project "):])]
        assert columns == ["EventId", "EventType", "EventStatus", "subscriptionId", "ResourceGroup", "Owner", "VMs",
                           "NotBefore", "MinutesLeft", "DurationInSeconds"], name


def test_the_impact_alert_watches_what_reboots_or_takes_vms_away():
    assert kql.IMPACT_TYPES == ("Reboot", "Redeploy", "Preempt", "Terminate")
    assert '| where tostring(properties.EventType) in ("Reboot", "Redeploy", "Preempt", "Terminate")' in \
        kql.alert_queries()["impact"].splitlines()
    assert '| where tostring(properties.EventStatus) in ("Scheduled", "Started")' in \
        kql.alert_queries()["impact"].splitlines()


@pytest.mark.parametrize("case", STRINGS, ids=hostile.ids(STRINGS))
def test_a_resource_group_given_to_the_workbook_queries_stays_a_string_literal(case):
    """The variant a caller filters itself (resource_groups=[...]) writes each name with kql_string, like the
    modules' query; what no literal can carry is refused, naming it."""
    try:
        queries = kql.workbook_queries(resource_groups=[case.value, "rg-web"])
    except ValueError as exc:
        assert case.name in UNWRITABLE and "resource group" in str(exc) and "cannot carry" in str(exc)
        return
    expected = "| where resourceGroup in~ (%s, \"rg-web\")" % kql.kql_string(case.value)
    for name, query in queries.items():
        if name != "resource_groups":
            assert expected in query.split("\n"), name
            assert "{ResourceGroup}" not in query


def test_without_resource_groups_the_workbook_queries_do_not_filter_on_them():
    for name, query in kql.workbook_queries(resource_groups=None).items():
        assert "resourceGroup in" not in query and "{ResourceGroup}" not in query, name
