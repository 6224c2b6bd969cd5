# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Every KQL query the collection can emit, through Microsoft's own Kusto parser (tests/harness/kusto.py): the
modules' (with every filter, hostile values included), the workbook's (on its parameter, on names given, on none)
and the log search alert rules' (as the rules of deploy/arm/portal.json hold them). Resource Graph's tables are
declared with their columns, so a misspelt column or function is an error too. The queries alert rules send also
keep to what Resource Graph alerts support, and give the columns the rules split on and measure. The simulator's
Resource Graph must name the result's columns as Kusto does. The last tests make the mistakes these checks exist
for, and see them caught."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import kql
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile
from harness import kusto, portal
from harness.arm_template import Deployment
from harness.hostenv import ci_strict
from imds_simulator import kql as simulator_kql

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EVENT = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
# The workbook writes a multi-select parameter as single-quoted names joined by commas; "*" is its "all".
RESOURCE_GROUP_VALUES = {"all": "'*'", "some": "'rg-web','rg-db'"}


def writable(values):
    """The hostile strings a KQL literal can carry (kql_string refuses the others, tested in the unit tests)."""
    out = []
    for case in values:
        try:
            kql.kql_string(case.value)
        except ValueError:
            continue
        out.append(case)
    return out


STRINGS = writable(hostile.strings("/tmp/imds-kusto-canary"))


def emitted():
    """{name: (text, analyze)}: every query, each variant once. An alert rule's text (with arg("")) is parsed for
    its syntax; what it sends to Resource Graph (without the prefix) is analysed."""
    queries = {}
    for variant, value in RESOURCE_GROUP_VALUES.items():
        for name, text in kql.workbook_queries().items():
            queries["workbook.%s[%s]" % (name, variant)] = (text.replace("{ResourceGroup}", value), True)
    for name, text in kql.workbook_queries(resource_groups=None).items():
        queries["workbook.%s[none]" % name] = (text, True)
    for case in STRINGS:
        for name, text in kql.workbook_queries(resource_groups=[case.value, "rg-web"]).items():
            queries["workbook.%s[%s]" % (name, case.name)] = (text, True)
    for name, text in kql.alert_queries().items():
        queries["alert.%s" % name] = (kql.ARG_PREFIX + text, False)
        queries["alert.%s[sent]" % name] = (text, True)
    queries["build_query[none]"] = (kql.build_query(), True)
    queries["build_query[all]"] = (kql.build_query(event_ids=[EVENT], types=["Reboot", "Freeze"],
                                                   statuses=["Scheduled"], sources=["User"],
                                                   resource_groups=["rg-web"], vm_names=["web_0"]), True)
    queries["build_query[vms]"] = (kql.build_query(vm_names=["web_0", "_DB-1"]), True)
    for case in STRINGS:
        queries["build_query[%s]" % case.name] = (kql.build_query(
            types=[case.value], statuses=[case.value], sources=[case.value], resource_groups=[case.value],
            vm_names=[case.value, "web_0"]), True)
    return queries


@pytest.fixture(scope="module")
def parser():
    """kusto.check, once Node and the package are there (without them: a skip, a failure with CI=true)."""
    missing = kusto.available()
    if missing:
        if ci_strict():
            pytest.fail("CI=true: " + missing)
        pytest.skip(missing)
    return lambda queries: kusto.check(queries, kql.TABLES)


@pytest.fixture(scope="module")
def checked(parser):
    queries = emitted()
    return queries, parser(queries)


def rules():
    """The log search alert rules of deploy/arm/portal.json as ARM would deploy them (every one on)."""
    with open(os.path.join(ROOT, "deploy", "arm", "portal.json")) as handle:
        template = json.load(handle)
    deployment = Deployment(template, {"inProgressAlert": True})
    return deployment.resources("Microsoft.Insights/scheduledQueryRules")


def test_every_query_the_collection_emits_is_checked():
    queries = emitted()
    assert len([name for name in queries if name.startswith("alert.") and "[" not in name]) == len(kql.alert_queries())
    assert set(text for text, _analyze in queries.values()) >= set(
        kql.ARG_PREFIX + criterion["query"][len(kql.ARG_PREFIX):] for rule in rules()
        for criterion in rule["properties"]["criteria"]["allOf"])
    assert len(STRINGS) > 40  # the hostile table, but what no literal carries


def test_every_query_parses_and_uses_only_declared_tables_columns_and_functions(checked):
    queries, results = checked
    bad = dict((name, results[name]["diagnostics"]) for name in queries if results[name]["diagnostics"])
    assert bad == {}


def test_alert_queries_use_only_what_resource_graph_alerts_support(checked):
    queries, results = checked
    for name in queries:
        if name.startswith("alert."):
            assert kusto.alert_problems(results[name], queries[name][0]) == [], name


def test_each_rule_splits_on_string_columns_and_measures_a_number_its_query_gives(checked):
    _queries, results = checked
    for rule in rules():
        (criterion,) = rule["properties"]["criteria"]["allOf"]
        (name,) = [n for n, text in kql.alert_queries().items() if kql.ARG_PREFIX + text == criterion["query"]]
        columns = dict(results["alert.%s[sent]" % name]["columns"])
        for dimension in criterion["dimensions"]:
            assert columns[dimension["name"]] == "string", (rule["name"], dimension["name"])
        if "metricMeasureColumn" in criterion:
            assert columns[criterion["metricMeasureColumn"]] in ("int", "long", "real"), rule["name"]


def test_the_simulator_names_the_result_columns_as_kusto_does(checked):
    queries, results = checked
    for name, (text, analyze) in queries.items():
        if analyze:
            assert list(simulator_kql.parse(text).columns) == [c for c, _type in results[name]["columns"]], name


def test_the_workbook_shows_only_columns_its_queries_give(checked):
    _queries, results = checked
    for item in portal.builder().workbook()["items"]:
        if item["type"] != 3:
            continue
        (name,) = [n for n, text in kql.workbook_queries().items() if text == item["content"]["query"]]
        columns = [c for c, _type in results["workbook.%s[all]" % name]["columns"]]
        grid = item["content"]["gridSettings"]
        shown = [f["columnMatch"] for f in grid.get("formatters", [])] + grid.get("hierarchySettings", {}).get(
            "groupBy", [])
        assert set(shown) <= set(columns), (name, shown, columns)


# --- the mistakes the checks exist for ----------------------------------------------------------------------------

MISSPELT = {
    "column": (kql.workbook_queries()["pending_events"].replace("{ResourceGroup}", "'*'")
               .replace("resourceGroup asc", "resourceGrop asc"), True),
    "function": (kql.alert_queries()["impact"].replace("array_length", "array_lenght"), True),
    "table": (kql.alert_queries()["impact"].replace("maintenanceresources", "maintenanceresource"), True),
    "syntax": (kql.ARG_PREFIX + kql.alert_queries()["impact"].replace("| project", "| projct"), False),
}
# Valid Kusto that a Resource Graph alert does not support, added to an alert query: (what is added, the complaint).
UNSUPPORTED = {
    "join": ("| join kind=inner (resources | project name) on $left.Owner == $right.name",
             "join of Resource Graph tables"),
    "avg": ("| summarize avg(VMs) by EventType", "avg() is not supported"),
    "countif": ("| summarize countif(VMs > 1)", "countif() is not supported"),
    "mv-expand": ("| mv-expand x = dynamic([1, 2])", "mv-expand needs a limit of at most 400 (it has None)"),
    "mv-expand-1000": ("| mv-expand x = dynamic([1, 2]) limit 1000", "mv-expand needs a limit of at most 400"),
    "ago": ("| where NotBefore > ago(totimespan(\"1h\"))", "ago() takes a timespan literal only"),
    "take": ("| take 10", "take/limit"),
    "reserved": ("| extend AggregatedValue = 1", "AggregatedValue is a reserved word"),
}


@pytest.fixture(scope="module")
def mistakes(parser):
    """Each mistake through the parser, in one batch."""
    queries = dict(("misspelt." + name, query) for name, query in MISSPELT.items())
    queries.update(("unsupported." + name, (kql.alert_queries()["impact"] + "\n" + added, True))
                   for name, (added, _problem) in UNSUPPORTED.items())
    return queries, parser(queries)


def test_a_misspelt_column_function_table_or_operator_is_an_error(mistakes):
    _queries, results = mistakes
    messages = dict((name, [d["message"] for d in results["misspelt." + name]["diagnostics"]]) for name in MISSPELT)
    assert "The name 'resourceGrop' does not refer to any known column, table, variable or function." in \
        messages["column"]
    assert any("array_lenght" in m for m in messages["function"])
    assert any("maintenanceresource" in m for m in messages["table"])
    assert "Query operator expected." in messages["syntax"]


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_what_resource_graph_alerts_do_not_support_is_refused(mistakes, name):
    queries, results = mistakes
    result, text = results["unsupported." + name], queries["unsupported." + name][0]
    assert result["diagnostics"] == []  # valid Kusto: only the alert check catches it
    problems = kusto.alert_problems(result, text)
    assert any(p.startswith(UNSUPPORTED[name][1]) for p in problems), problems
