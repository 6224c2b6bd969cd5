"""deploy/arm/portal.json, the fleet in the Azure portal: what scripts/portal.py builds is what ships, the workbook is
well-formed and reads only the collection's queries, ARM would deploy what each choice of parameters asks for and
no parameter reaches a query, and over a scripted scenario on the simulator's Resource Graph (an event appears, is
approved, completes; another is cancelled; one is late; one announces a long impact; a set has not opted in) each
workbook section shows the rows it should and each alert fires and resolves when it should."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

from harness import portal
from harness.arm_template import Deployment

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
for _path in (os.path.join(ROOT, "simulator"), os.path.join(ROOT, "tests", "unit", "simulator")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# pylint: disable=wrong-import-position
from ansible_collections.imds.scheduled_events.plugins.module_utils import kql  # noqa: E402
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile  # noqa: E402
from imds_simulator import kql as simulator_kql  # noqa: E402
from imds_simulator.simulator import Simulator  # noqa: E402
from simhelpers import Client  # noqa: E402

BUILDER = portal.builder()
TEMPLATE = os.path.join(ROOT, "deploy", "arm", "portal.json")
SUB = "00000000-0000-0000-0000-000000000000"
RULES = "Microsoft.Insights/scheduledQueryRules"
DELIVERIES = "Microsoft.EventGrid/systemTopics/eventSubscriptions"


def load():
    with open(TEMPLATE, encoding="utf-8") as handle:
        return json.load(handle)


def deploy(**params):
    return Deployment(load(), params)


def by_name(resources):
    return dict((resource["name"].rsplit("-", 1)[-1], resource) for resource in resources)


# --- what ships is what the builder makes -------------------------------------------------------------------------


def test_the_shipped_template_and_docs_are_what_scripts_portal_builds():
    for path, text in BUILDER.outputs().items():
        with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
            assert handle.read() == text, "%s is out of date: run make portal" % path


def test_a_doc_block_shows_the_query_its_mark_names_and_an_unknown_mark_is_an_error():
    stale = "x\n<!-- kql: alert.impact -->\n```kusto\nmaintenanceresources | take 1\n```\ny\n"
    assert BUILDER.render_doc(stale) == "x\n<!-- kql: alert.impact -->\n```kusto\n%s\n```\ny\n" % (
        kql.ARG_PREFIX + kql.alert_queries()["impact"])
    empty = "<!-- kql: alert.impact -->\n```kusto\n```\ntext\n```kusto\nkept\n```\n"  # filled, never run past its fence
    assert BUILDER.render_doc(empty) == "<!-- kql: alert.impact -->\n```kusto\n%s\n```\ntext\n```kusto\nkept\n```\n" % (
        kql.ARG_PREFIX + kql.alert_queries()["impact"])
    with pytest.raises(SystemExit, match="no query is named workbook.nope"):
        BUILDER.render_doc("<!-- kql: workbook.nope -->\n```kusto\n\n```\n", "doc.md")


def test_every_query_of_the_docs_is_marked_and_every_query_is_shown():
    marked = set()
    for path in BUILDER.DOCS:
        with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
            text = handle.read()
        blocks = text.count("```kusto\n")
        found = BUILDER.DOC_MARK.findall(text)
        assert len(found) == blocks, "%s: a ```kusto block without its <!-- kql: name --> mark" % path
        marked |= set(match[1] for match in found)
    assert marked == set(BUILDER.doc_queries())


# --- the workbook -------------------------------------------------------------------------------------------------


def test_the_template_carries_the_workbook_the_builder_makes():
    (workbook,) = deploy().resources("Microsoft.Insights/workbooks")
    assert json.loads(workbook["properties"]["serializedData"]) == json.loads(json.dumps(BUILDER.workbook()))
    assert workbook["kind"] == "shared" and workbook["properties"]["sourceId"] == "azure monitor"
    assert workbook["properties"]["category"] == "workbook"


def test_the_workbook_is_well_formed_and_reads_only_the_collections_queries():
    workbook = BUILDER.workbook()
    assert workbook["version"] == "Notebook/1.0" and workbook["fallbackResourceIds"] == ["azure monitor"]
    names = [item["name"] for item in workbook["items"]]
    assert len(set(names)) == len(names)
    parameters = [p for item in workbook["items"] if item["type"] == 9 for p in item["content"]["parameters"]]
    declared = set(p["name"] for p in parameters)
    assert declared == {"Subscription", "ResourceGroup"}
    queries = set(kql.workbook_queries().values())
    shown = []
    for item in workbook["items"]:
        assert item["type"] in (1, 3, 9)
        if item["type"] == 1:
            assert set(item["content"]) == {"json"} and item["content"]["json"].startswith("#")
            continue
        for source in [item["content"]] if item["type"] == 3 else [p for p in item["content"]["parameters"]
                                                                   if "query" in p]:
            assert source["query"] in queries
            assert (source["queryType"], source["resourceType"], source["crossComponentResources"]) == (
                1, "microsoft.resourcegraph/resources", ["{Subscription}"])
            assert set(re.findall(r"\{(\w+)\}", source["query"])) <= declared
            shown.append(source["query"])
        if item["type"] == 3:
            columns = simulator_kql.parse(portal.workbook_query(item["content"]["query"], {"ResourceGroup": ["*"]}))
            grid = item["content"]["gridSettings"]
            for formatter in grid.get("formatters", []):
                assert formatter["columnMatch"] in columns.columns and formatter["formatter"] in (5, 13)
            assert set(grid.get("hierarchySettings", {}).get("groupBy", [])) <= set(columns.columns)
    assert sorted(shown) == sorted(queries)  # every query of the workbook is shown, once


# --- the template, as ARM would deploy it -------------------------------------------------------------------------


def test_by_default_a_workbook_a_workspace_an_email_action_group_an_identity_its_roles_and_four_rules():
    deployment = deploy(alertEmails=["ops@example.com", "oncall@example.com"])
    kinds = [r["type"] for r in deployment.template["resources"]
             if "condition" not in r or deployment.evaluate(r["condition"])]
    assert kinds == ["Microsoft.Insights/workbooks", "Microsoft.OperationalInsights/workspaces",
                     "Microsoft.Insights/actionGroups", "Microsoft.ManagedIdentity/userAssignedIdentities",
                     "Microsoft.Authorization/roleAssignments", "Microsoft.Authorization/roleAssignments"] + [RULES] * 5
    (group,) = deployment.resources("Microsoft.Insights/actionGroups")
    assert group["location"] == "Global" and group["properties"]["emailReceivers"] == [
        {"name": "email-0", "emailAddress": "ops@example.com", "useCommonAlertSchema": True},
        {"name": "email-1", "emailAddress": "oncall@example.com", "useCommonAlertSchema": True}]
    (workspace,) = deployment.resources("Microsoft.OperationalInsights/workspaces")
    (identity,) = deployment.resources("Microsoft.ManagedIdentity/userAssignedIdentities")
    identity_id = deployment.variable("identityId")
    roles = deployment.resources("Microsoft.Authorization/roleAssignments")
    assert sorted(r["properties"]["roleDefinitionId"].rsplit("/", 1)[1] for r in roles) == sorted(
        BUILDER.ROLES.values())
    assert all(r["properties"]["principalId"] == deployment.evaluate(
        "[reference(variables('identityId'), '2024-11-30').principalId]") for r in roles)
    rules = by_name(deployment.resources(RULES))
    assert sorted(rules) == ["announced", "impact", "overdue", "pending", "started"]
    assert rules["started"]["properties"]["enabled"] is False  # inProgressAlert is off by default
    for name, rule in rules.items():
        props = rule["properties"]
        assert rule["kind"] == "LogAlert" and rule["identity"] == {"type": "UserAssigned",
                                                                   "userAssignedIdentities": {identity_id: {}}}
        assert props["scopes"] == [deployment.variable("workspaceId")] and workspace["name"] in props["scopes"][0]
        assert props["actions"]["actionGroups"] == [deployment.variable("actionGroupId")]
        assert props["evaluationFrequency"] == props["windowSize"] == "PT5M" and props["autoMitigate"] is True
        assert props["severity"] == BUILDER.SEVERITY[name if name != "started" else "informational"]
        (criterion,) = props["criteria"]["allOf"]
        assert criterion["query"] in [kql.ARG_PREFIX + q for q in kql.alert_queries().values()]
        assert [d["name"] for d in criterion["dimensions"]] == ["EventId", "EventType", "ResourceGroup",
                                                                "subscriptionId"]
    assert identity["name"] == "imds-se-alerts" and deployment.resources(DELIVERIES) == []


def test_thresholds_and_scopes_are_the_rules_own_settings_never_query_text():
    deployment = deploy(pendingMinutes=45, overdueMinutes=20, maxImpactSeconds=10,
                        alertResourceGroups=["RG-Prod", "rg-db"], alertSubscriptions=["AAAA-1"])
    rules = by_name(deployment.resources(RULES))
    criteria = dict((name, rule["properties"]["criteria"]["allOf"][0]) for name, rule in rules.items())
    assert (criteria["pending"]["metricMeasureColumn"], criteria["pending"]["timeAggregation"],
            criteria["pending"]["operator"], criteria["pending"]["threshold"]) == (
        "MinutesLeft", "Minimum", "LessThanOrEqual", 45)
    assert criteria["overdue"]["threshold"] == -20 and criteria["announced"]["threshold"] == 10
    assert criteria["impact"]["dimensions"][2:] == [
        {"name": "ResourceGroup", "operator": "Include", "values": ["rg-prod", "rg-db"]},
        {"name": "subscriptionId", "operator": "Include", "values": ["aaaa-1"]}]
    default = by_name(deploy().resources(RULES))
    assert all(rule["properties"]["criteria"]["allOf"][0]["query"] ==
               default[name]["properties"]["criteria"]["allOf"][0]["query"] for name, rule in rules.items())


@pytest.mark.parametrize("case", hostile.strings("/tmp/imds-portal-canary"), ids=hostile.ids(
    hostile.strings("/tmp/imds-portal-canary")))
def test_a_hostile_parameter_is_a_dimension_value_or_a_filter_value_never_kql(case):
    deployment = deploy(alertResourceGroups=[case.value], alertSubscriptions=[case.value],
                        eventGridAlerts="newSystemTopic", eventGridSubjectPrefixes=[case.value],
                        alertEmails=[case.value])
    for rule in deployment.resources(RULES):
        (criterion,) = rule["properties"]["criteria"]["allOf"]
        assert criterion["query"] in [kql.ARG_PREFIX + q for q in kql.alert_queries().values()]
        assert criterion["dimensions"][2]["values"] == [case.value.lower()]
    for delivery in deployment.resources(DELIVERIES):
        assert delivery["properties"]["filter"]["advancedFilters"][-1] == {
            "operatorType": "StringBeginsWith", "key": "subject", "values": [case.value]}


def test_an_existing_workspace_and_action_group_are_used_not_created():
    workspace = "/subscriptions/s/resourceGroups/monitoring/providers/Microsoft.OperationalInsights/workspaces/central"
    group = "/subscriptions/s/resourceGroups/monitoring/providers/Microsoft.Insights/actionGroups/oncall"
    deployment = deploy(existingWorkspaceId=workspace, existingActionGroupId=group, eventGridAlerts="newSystemTopic")
    assert deployment.resources("Microsoft.OperationalInsights/workspaces") == []
    assert deployment.resources("Microsoft.Insights/actionGroups") == []
    for rule in deployment.resources(RULES):
        assert rule["properties"]["scopes"] == [workspace] and rule["properties"]["actions"]["actionGroups"] == [group]
    for delivery in deployment.resources(DELIVERIES):
        assert delivery["properties"]["destination"]["properties"]["actionGroups"] == [group]


def test_without_log_search_alerts_no_rule_identity_or_workspace_and_roles_can_be_left_to_the_operator():
    deployment = deploy(logSearchAlerts=False)
    for kind in (RULES, "Microsoft.ManagedIdentity/userAssignedIdentities", "Microsoft.OperationalInsights/workspaces",
                 "Microsoft.Authorization/roleAssignments", "Microsoft.Insights/actionGroups"):
        assert deployment.resources(kind) == [], kind
    assert len(deployment.resources("Microsoft.Insights/workbooks")) == 1
    assert deploy(createRoleAssignments=False).resources("Microsoft.Authorization/roleAssignments") == []


@pytest.mark.parametrize("choice, topics", [("newSystemTopic", 1), ("existingSystemTopic", 0)])
def test_event_grid_deliveries_become_azure_monitor_alerts(choice, topics):
    deployment = deploy(eventGridAlerts=choice, systemTopicName="maintenance")
    created = deployment.resources("Microsoft.EventGrid/systemTopics")
    assert len(created) == topics
    if created:
        assert created[0]["location"] == "global" and created[0]["properties"] == {
            "source": "/subscriptions/" + SUB, "topicType": "Microsoft.ResourceNotifications.MaintenanceResources"}
    deliveries = by_name(deployment.resources(DELIVERIES))
    assert sorted(deliveries) == ["finished", "impact", "started"]
    for name, delivery in deliveries.items():
        assert delivery["name"].startswith("maintenance/imds-se-")
        props = delivery["properties"]
        assert props["eventDeliverySchema"] == "CloudEventSchemaV1_0"  # what the MonitorAlert destination takes
        assert props["destination"]["endpointType"] == "MonitorAlert"
        assert props["destination"]["properties"]["severity"] == "Sev%d" % BUILDER.SEVERITY[
            "impact" if name == "impact" else "informational"]
    assert deliveries["impact"]["properties"]["filter"]["advancedFilters"] == [
        {"operatorType": "StringIn", "key": "data.resourceInfo.properties.EventStatus", "values": ["Scheduled", "Started"]},
        {"operatorType": "StringIn", "key": "data.resourceInfo.properties.EventType", "values": list(kql.IMPACT_TYPES)}]
    assert deliveries["finished"]["properties"]["filter"]["advancedFilters"] == [
        {"operatorType": "StringIn", "key": "data.resourceInfo.properties.EventStatus", "values": ["Completed", "Canceled"]}]
    assert deploy(eventGridAlerts="none").resources(DELIVERIES) == []


# --- the view and the alerts over a scripted scenario on the simulator's Resource Graph ----------------------------

E1 = "5D1C0F2E-7A8B-4C3D-9E0F-1A2B3C4D5E01"  # Reboot of the web scale set: approved, then Completed
E2 = "5D1C0F2E-7A8B-4C3D-9E0F-1A2B3C4D5E02"  # Redeploy of solo: Canceled
E3 = "5D1C0F2E-7A8B-4C3D-9E0F-1A2B3C4D5E03"  # Freeze of the db availability set, which has not opted in
E4 = "5D1C0F2E-7A8B-4C3D-9E0F-1A2B3C4D5E04"  # Freeze of late, announced 45 s; Azure has not started it at NotBefore
START = "2026-03-02T09:00:00Z"
SCENARIO = {
    "name": "portal", "clock": "manual", "start_time": START, "seed": 7,
    "scale_sets": [{"name": "web", "instances": 2}],
    "vms": [{"name": "solo", "resource_group": "rg-batch"}, {"name": "late", "resource_group": "rg-batch"},
            {"name": "db-0", "availability_set": "db-as"}, {"name": "db-1", "availability_set": "db-as"}],
    "events": [
        {"id": E1, "type": "Reboot", "scale_set": "web", "notice": 3600, "started_for": 600},
        {"id": E2, "type": "Redeploy", "resources": ["solo"], "notice": 5400, "cancel_at": 2700},
        {"id": E3, "type": "Freeze", "availability_set": "db-as", "notice": 900},
        # Resource Graph shows a NotBefore 20 minutes in; the platform starts it two hours in
        {"id": E4, "type": "Freeze", "resources": ["late"], "notice": 7200, "duration": 45,
         "fields": {"NotBefore": "Mon, 02 Mar 2026 09:20:00 GMT"}},
    ],
    "control_plane": {"opted_in": ["web", "solo", "late"]},
}
WEB = "/subscriptions/%s/resourceGroups/imds-sim-rg/providers/Microsoft.Compute/virtualMachineScaleSets/web" % SUB


@pytest.fixture(scope="module")
def graph():
    """The scenario on the simulator's control-plane face: run(query) POSTs it to Resource Graph, at(t) moves the
    clock to simulated second t, approve(event) acknowledges an event of the web scale set."""
    simulator = Simulator.from_scenario(SCENARIO, port=0, control_port=None, arm_port=0)
    simulator.start()
    client = Client(simulator)

    class Graph(object):
        @staticmethod
        def run(query):
            status, payload = client.graph(query, subscriptions=[SUB])
            assert status == 200, payload
            assert "$skipToken" not in payload
            return payload["data"]

        @staticmethod
        def at(seconds):
            simulator.world.advance(seconds - simulator.world.now())

        @staticmethod
        def approve(event_id):
            status, _headers, payload = client.arm(
                "POST", WEB + "/providers/Microsoft.Maintenance/scheduledevents/%s/acknowledge"
                "?api-version=2025-10-01-preview" % event_id)
            assert status == 200, payload

    yield Graph()
    simulator.stop()


def section(graph, name, resource_groups=("*",)):
    return graph.run(portal.workbook_query(kql.workbook_queries()[name], {"ResourceGroup": list(resource_groups)}))


def pick(rows, *columns):
    return [tuple(row[c] for c in columns) for row in rows]


def test_the_workbook_and_the_alerts_over_an_events_life(graph):
    """One scenario, in time order (module-scoped: the steps build on each other)."""
    monitors = dict((name, portal.Monitor(rule)) for name, rule in by_name(
        deploy(inProgressAlert=True).resources(RULES)).items())
    scoped = portal.Monitor(by_name(deploy(alertResourceGroups=["RG-Batch"]).resources(RULES))["impact"])

    def evaluate():
        fired = {}
        for name, monitor in sorted(monitors.items()) + [("impact in rg-batch", scoped)]:
            query = monitor.criterion["query"]
            assert query.startswith(kql.ARG_PREFIX)  # what Log Analytics sends Resource Graph is the rest
            new, resolved = monitor.evaluate(graph.run(query[len(kql.ARG_PREFIX):]))
            fired[name] = (sorted(values[0] for values in new), sorted(values[0] for values in resolved))
        return fired

    graph.at(60)  # E1, E2, E4 are Scheduled (E3 too, but db-as has not opted in)
    assert pick(section(graph, "pending_by_type"), "EventType", "EventStatus", "Events", "VMs", "NextNotBefore") == [
        ("Freeze", "Scheduled", 1, 1, "2026-03-02T09:20:00Z"), ("Reboot", "Scheduled", 1, 2, "2026-03-02T10:00:00Z"),
        ("Redeploy", "Scheduled", 1, 1, "2026-03-02T10:30:00Z")]
    assert pick(section(graph, "pending_events"), "resourceGroup", "OwnerKind", "Owner", "EventId", "MinutesLeft",
                "VMs", "DurationInSeconds") == [
        ("imds-sim-rg", "virtualMachineScaleSets", "web", E1, 59, 2, -1),
        ("rg-batch", "virtualMachines", "late", E4, 19, 1, 45),
        ("rg-batch", "virtualMachines", "solo", E2, 89, 1, -1)]
    vms = section(graph, "pending_vms")
    assert pick(vms, "VM", "EventId", "Shared") == [
        ("late", E4, ""), ("solo", E2, ""),
        ("web_0", E1, "approving it starts it for these VMs too: web_1"),
        ("web_1", E1, "approving it starts it for these VMs too: web_0")]
    assert vms[1]["VmId"] == "/subscriptions/%s/resourceGroups/rg-batch/providers/Microsoft.Compute/virtualMachines/solo" \
        % SUB and vms[2]["OwnerId"].lower() == WEB.lower()
    every = section(graph, "pending_events")
    assert section(graph, "pending_events", ["rg-batch"]) == [r for r in every if r["resourceGroup"] == "rg-batch"]
    assert section(graph, "finished_events") == [] and section(graph, "finished_by_type") == []
    assert pick(section(graph, "not_opted_in"), "ResourceType", "name", "Reason") == [
        ("microsoft.compute/availabilitysets", "db-as", "no scheduledEventsPolicy")]
    assert pick(section(graph, "opt_in_summary"), "ResourceType", "Total", "OptedIn", "NotOptedIn") == [
        ("microsoft.compute/availabilitysets", 1, 0, 1), ("microsoft.compute/virtualmachines", 2, 2, 0),
        ("microsoft.compute/virtualmachinescalesets", 1, 1, 0)]
    assert pick(section(graph, "resource_groups"), "value") == [("imds-sim-rg",), ("rg-batch",)]
    assert evaluate() == {"impact": ([E1, E2], []), "impact in rg-batch": ([E2], []), "pending": ([E4], []),
                          "overdue": ([], []), "announced": ([E4], []), "started": ([], [])}

    graph.at(1800)
    graph.approve(E1)  # acknowledged from the control plane: it starts at once
    graph.at(1860)
    assert pick(section(graph, "pending_events"), "EventId", "EventStatus", "NotBefore", "MinutesLeft") == [
        (E1, "Started", None, None), (E4, "Scheduled", "2026-03-02T09:20:00Z", -11),
        (E2, "Scheduled", "2026-03-02T10:30:00Z", 59)]
    assert evaluate() == {"impact": ([], []), "impact in rg-batch": ([], []), "pending": ([], []),
                          "overdue": ([], []), "announced": ([], []), "started": ([E1], [])}

    graph.at(2160)  # 16 minutes past E4's NotBefore: overdue (15 by default)
    assert evaluate()["overdue"] == ([E4], [])

    graph.at(2460)  # E1 ran its 10 minutes: Completed
    assert pick(section(graph, "finished_events"), "EventId", "EventStatus", "EventType", "VMs", "NotBefore") == [
        (E1, "Completed", "Reboot", "web_0, web_1", None)]
    assert evaluate() == {"impact": ([], [E1]), "impact in rg-batch": ([], []), "pending": ([], []),
                          "overdue": ([], []), "announced": ([], []), "started": ([], [E1])}

    graph.at(2760)  # E2 is cancelled: Canceled, keeping its NotBefore
    assert pick(section(graph, "finished_events"), "EventId", "EventStatus", "NotBefore") == [
        (E2, "Canceled", "2026-03-02T10:30:00Z"), (E1, "Completed", None)]
    assert pick(section(graph, "finished_by_type"), "EventType", "EventStatus", "Events", "VMs") == [
        ("Reboot", "Completed", 1, 2), ("Redeploy", "Canceled", 1, 1)]
    assert pick(section(graph, "pending_by_type"), "EventType", "EventStatus", "Events") == [
        ("Freeze", "Scheduled", 1)]
    assert evaluate() == {"impact": ([], [E2]), "impact in rg-batch": ([], [E2]), "pending": ([], []),
                          "overdue": ([], []), "announced": ([], []), "started": ([], [])}
