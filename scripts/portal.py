"""Build the fleet's Azure portal view from the collection's queries: deploy/arm/portal.json (an Azure Monitor
workbook, log search alert rules over Resource Graph, Event Grid deliveries to Azure Monitor alerts, an action group
with email receivers) and the query listings of docs/portal.md and docs/control-plane.md.

    python scripts/portal.py            write them (make portal)
    python scripts/portal.py --check    exit 1 when a shipped file differs from what this builds

Every KQL text comes from plugins/module_utils/kql.py; nothing here writes a query. Template parameters (thresholds,
scopes, severities) never reach KQL: the alert rules measure columns of the query and split on its dimensions.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
TEMPLATE_PATH = os.path.join("deploy", "arm", "portal.json")
DOCS = (os.path.join("docs", "portal.md"), os.path.join("docs", "control-plane.md"))
WORKBOOK_SCHEMA = "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json"
GRAPH = {"queryType": 1, "resourceType": "microsoft.resourcegraph/resources", "crossComponentResources": ["{Subscription}"]}
IDENTITY_API = "2024-11-30"
ROLES = collections.OrderedDict([  # Azure's built-in roles the alert rules' identity needs (ids are the same everywhere)
    ("Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7"),
    ("Log Analytics Reader", "73c42c96-874c-492b-b04d-ab87d138a893"),
])
# The severity of each alert (Azure Monitor's 0, the most severe, to 4, informational). Fixed: Microsoft's schema of
# scheduledQueryRules refuses an expression there (its oneOf matches an expression twice); an alert processing rule
# changes what a severity triggers.
SEVERITY = {"impact": 1, "pending": 2, "overdue": 1, "announced": 2, "informational": 4}
# Workbook grid formatters: a resource id shown as a link to its blade, a column hidden.
RESOURCE_LINK = {"formatter": 13, "formatOptions": {"linkTarget": "Resource", "showIcon": True}}
HIDDEN = {"formatter": 5}
# A marked block, up to its own closing fence (an empty block too: the body never runs past a line starting ```).
DOC_MARK = re.compile(r"(<!-- kql: (?P<name>[a-z_.:]+) -->\n```kusto\n)(?P<body>(?:(?!^```).)*?)(^```)",
                      re.DOTALL | re.MULTILINE)


def _kql():
    """plugins/module_utils/kql.py, imported as the collection's module (it imports events.py beside it)."""
    try:
        from ansible_collections.imds.scheduled_events.plugins.module_utils import kql  # pylint: disable=import-outside-toplevel
        return kql
    except ImportError:
        base = os.path.join(ROOT, ".build", "collections")
        link = os.path.join(base, "ansible_collections", "imds", "scheduled_events")
        if not os.path.lexists(link):
            raise SystemExit("run 'make collection' first: %s is missing" % link)
        sys.path.insert(0, base)
        from ansible_collections.imds.scheduled_events.plugins.module_utils import kql  # pylint: disable=import-outside-toplevel
        return kql


KQL = _kql()


# --- the workbook ---------------------------------------------------------------------------------------------------


def _text(name, markdown):
    return {"type": 1, "content": {"json": markdown}, "name": name}


def _grid(name, title, query, no_data, formatters=None, group_by=None):
    content = dict({"version": "KqlItem/1.0", "query": KQL.workbook_queries()[query], "size": 0, "title": title,
                    "noDataMessage": no_data, "visualization": "table"}, **GRAPH)
    grid = {"filter": True}
    if formatters:
        grid["formatters"] = [dict({"columnMatch": column}, **formatter) for column, formatter in formatters]
    if group_by:
        grid["hierarchySettings"] = {"treeType": 1, "groupBy": list(group_by), "expandTopLevel": True}
    content["gridSettings"] = grid
    return {"type": 3, "content": content, "name": name}


def _parameters():
    subscription = {"id": "subscription", "version": "KqlParameterItem/1.0", "name": "Subscription", "type": 6,
                    "label": "Subscriptions", "isRequired": True, "multiSelect": True, "quote": "'", "delimiter": ",",
                    "typeSettings": {"additionalResourceOptions": ["value::all"], "includeAll": False,
                                     "showDefault": False},
                    "defaultValue": "value::all",
                    "description": "The subscriptions whose Resource Graph rows the workbook reads."}
    groups = dict({"id": "resource-group", "version": "KqlParameterItem/1.0", "name": KQL.RESOURCE_GROUP_PARAMETER,
                   "type": 2, "label": "Resource groups", "isRequired": True, "multiSelect": True, "quote": "'",
                   "delimiter": ",", "query": KQL.workbook_queries()["resource_groups"],
                   "typeSettings": {"additionalResourceOptions": ["value::all"], "selectAllValue": KQL.ALL_RESOURCE_GROUPS,
                                    "showDefault": False},
                   "defaultValue": "value::all",
                   "description": "The resource groups of the VMs, scale sets and availability sets shown."}, **GRAPH)
    return {"type": 9, "name": "parameters", "content": {
        "version": "KqlParameterItem/1.0", "style": "pills", "queryType": 1,
        "resourceType": "microsoft.resourcegraph/resources", "parameters": [subscription, groups]}}


def workbook():
    """The workbook's JSON (what its serializedData holds)."""
    link = [("OwnerId", RESOURCE_LINK)]
    items = [
        _text("intro", "# Scheduled events of the fleet\n"
              "Azure's scheduled events of every VM, scale set and availability set that publishes them (the "
              "`scheduledEventsPolicy` opt-in, preview), read from Azure Resource Graph's `maintenanceresources` "
              "table: no agent and no login to any VM. Resource Graph may lag the platform by seconds; it keeps "
              "`Completed` and `Canceled` events for a while Azure does not document. The queries come from the "
              "`imds.scheduled_events` collection (plugins/module_utils/kql.py)."),
        _parameters(),
        _text("pending-title", "## Pending\nEvents Azure has `Scheduled` (they start at `NotBefore` unless approved "
              "earlier) or `Started`. `MinutesLeft` is the time to `NotBefore`, negative once it has passed; a "
              "`Started` event has no `NotBefore`. Approving an event starts it for every VM it lists."),
        _grid("pending-by-type", "Pending events by type and status", "pending_by_type", "Nothing is pending."),
        _grid("pending-events", "Pending events per subscription, resource group and owner", "pending_events",
              "Nothing is pending.", link, ("subscriptionId", "resourceGroup")),
        _grid("pending-vms", "The VMs each pending event touches", "pending_vms", "Nothing is pending.",
              [("VmId", RESOURCE_LINK), ("OwnerId", RESOURCE_LINK)]),
        _text("finished-title", "## Finished\n`Completed` and `Canceled` events, while Resource Graph still holds "
              "them. A row records no time of a change of status, so how long an event took from `Scheduled` to "
              "`Completed` is not in Resource Graph; `DurationInSeconds` is the impact Azure announced (-1: "
              "unknown). The Event Grid alerts of this template (`started`, `finished`) are stamped with the time "
              "of each change: Azure Monitor's alert list shows when an event started and ended."),
        _grid("finished-by-type", "Finished events by type and status", "finished_by_type",
              "Resource Graph holds no finished event."),
        _grid("finished-events", "Finished events", "finished_events", "Resource Graph holds no finished event.",
              link, ("EventStatus",)),
        _text("opt-in-title", "## Not opted in\nResource Graph has rows only for the VMs, scale sets and availability "
              "sets whose `scheduledEventsPolicy` publishes to Event Grid and Resource Graph: the holes of this "
              "view. A VM of a scale set or an availability set cannot opt in by itself; its set is listed."),
        _grid("opt-in-summary", "Opt-in by resource type", "opt_in_summary", "No VM, scale set or availability set."),
        _grid("not-opted-in", "Resources whose scheduled events this view cannot see", "not_opted_in",
              "Every VM, scale set and availability set publishes its scheduled events.", [("id", RESOURCE_LINK)]),
    ]
    return collections.OrderedDict([("version", "Notebook/1.0"), ("items", items),
                                    ("fallbackResourceIds", ["azure monitor"]), ("$schema", WORKBOOK_SCHEMA)])


# --- the alert rules ------------------------------------------------------------------------------------------------

# name, query, what it measures (aggregation, column or None, operator, threshold), severity (a key of SEVERITY),
# whether it is on, what the email says.
Rule = collections.namedtuple("Rule", "name query aggregation column operator threshold severity enabled description")
RULES = (
    Rule("impact", "impact", "Count", None, "GreaterThan", 0, "impact", "[parameters('logSearchAlerts')]",
         "An event that reboots or takes away VMs (Reboot, Redeploy, Preempt, Terminate) is Scheduled or Started."),
    Rule("pending", "scheduled", "Minimum", "MinutesLeft", "LessThanOrEqual", "[parameters('pendingMinutes')]",
         "pending", "[parameters('logSearchAlerts')]",
         "An event is still waiting for approval this close to its NotBefore (or past it)."),
    Rule("overdue", "scheduled", "Minimum", "MinutesLeft", "LessThanOrEqual", "[sub(0, parameters('overdueMinutes'))]",
         "overdue", "[parameters('logSearchAlerts')]",
         "An event is still Scheduled this long after its NotBefore: Azure has not started it when it said."),
    Rule("announced", "announced", "Maximum", "DurationInSeconds", "GreaterThan", "[parameters('maxImpactSeconds')]",
         "announced", "[parameters('logSearchAlerts')]",
         "A pending or running event announces an impact (DurationInSeconds) longer than expected."),
    Rule("started", "started", "Count", None, "GreaterThan", 0, "informational",
         "[and(parameters('logSearchAlerts'), parameters('inProgressAlert'))]",
         "An event is running; the alert resolves once it no longer is (its fired and resolved times bracket the "
         "maintenance, to the rule's evaluation frequency)."),
)
DIMENSIONS = (("EventId", ["*"]), ("EventType", ["*"]),
              ("ResourceGroup", "[variables('alertResourceGroups')]"),
              ("subscriptionId", "[variables('alertSubscriptions')]"))
# Event Grid deliveries that become Azure Monitor alerts: name, statuses, event types (the name of a tuple of kql.py;
# None: any), severity (a key of SEVERITY), what the alert says.
Delivery = collections.namedtuple("Delivery", "name statuses types severity description")
DELIVERIES = (
    Delivery("impact", ("Scheduled", "Started"), "IMPACT_TYPES", "impact",
             "Event Grid: an event that reboots or takes away VMs is Scheduled or Started."),
    Delivery("started", ("Started",), None, "informational", "Event Grid: a scheduled event started."),
    Delivery("finished", ("Completed", "Canceled"), None, "informational",
             "Event Grid: a scheduled event is Completed or Canceled."),
)


def _rule(rule):
    criterion = collections.OrderedDict([
        ("query", KQL.ARG_PREFIX + KQL.alert_queries()[rule.query]),
        ("timeAggregation", rule.aggregation),
    ])
    if rule.column:
        criterion["metricMeasureColumn"] = rule.column
    criterion.update([
        ("operator", rule.operator), ("threshold", rule.threshold),
        ("dimensions", [{"name": name, "operator": "Include", "values": values} for name, values in DIMENSIONS]),
    ])
    return collections.OrderedDict([
        ("type", "Microsoft.Insights/scheduledQueryRules"), ("apiVersion", "2026-03-01"),
        ("name", "[format('{0}-{1}', parameters('namePrefix'), '%s')]" % rule.name),
        ("condition", "[parameters('logSearchAlerts')]"),
        ("location", "[parameters('location')]"),
        ("kind", "LogAlert"),
        ("identity", {"type": "UserAssigned", "userAssignedIdentities": {"[variables('identityId')]": {}}}),
        ("dependsOn", ["[variables('identityId')]", "[resourceId('Microsoft.OperationalInsights/workspaces', "
                       "parameters('workspaceName'))]", "[resourceId('Microsoft.Insights/actionGroups', "
                       "parameters('actionGroupName'))]"] + ["[resourceId('Microsoft.Authorization/roleAssignments', "
                                                             "variables('roleAssignments')['%s'])]" % role
                                                             for role in ROLES]),
        ("properties", collections.OrderedDict([
            ("displayName", "[format('{0}: %s', parameters('namePrefix'))]" % rule.name),
            ("description", rule.description),
            ("severity", SEVERITY[rule.severity]),
            ("enabled", rule.enabled),
            ("evaluationFrequency", "[parameters('evaluationFrequency')]"),
            ("windowSize", "[parameters('evaluationFrequency')]"),
            ("scopes", ["[variables('workspaceId')]"]),
            ("criteria", {"allOf": [criterion]}),
            ("autoMitigate", True),
            ("skipQueryValidation", True),
            ("actions", {"actionGroups": ["[variables('actionGroupId')]"],
                         "customProperties": {"source": "imds.scheduled_events deploy/arm/portal.json",
                                              "rule": rule.name}}),
        ])),
    ])


def _delivery(delivery):
    types = getattr(KQL, delivery.types) if delivery.types else None
    filters = [{"operatorType": "StringIn", "key": "data.resourceInfo.properties.EventStatus",
                "values": list(delivery.statuses)}]
    if types:
        filters.append({"operatorType": "StringIn", "key": "data.resourceInfo.properties.EventType",
                        "values": list(types)})
    return collections.OrderedDict([
        ("type", "Microsoft.EventGrid/systemTopics/eventSubscriptions"), ("apiVersion", "2025-02-15"),
        ("name", "[format('{0}/{1}-{2}', parameters('systemTopicName'), parameters('namePrefix'), '%s')]"
         % delivery.name),
        ("condition", "[not(equals(parameters('eventGridAlerts'), 'none'))]"),
        ("dependsOn", ["[resourceId('Microsoft.EventGrid/systemTopics', parameters('systemTopicName'))]",
                       "[resourceId('Microsoft.Insights/actionGroups', parameters('actionGroupName'))]"]),
        ("properties", collections.OrderedDict([
            ("destination", {"endpointType": "MonitorAlert", "properties": {
                "severity": "Sev%d" % SEVERITY[delivery.severity],
                "actionGroups": ["[variables('actionGroupId')]"],
                "description": delivery.description}}),
            ("eventDeliverySchema", "CloudEventSchemaV1_0"),
            ("filter", {"advancedFilters": "[concat(createArray(%s), variables('subjectFilters'))]" % ", ".join(
                _arm_object(item) for item in filters)}),
        ])),
    ])


def _arm_object(value):
    """A JSON value as an ARM expression (createObject/createArray of string literals)."""
    if isinstance(value, dict):
        return "createObject(%s)" % ", ".join("%s, %s" % (_arm_literal(k), _arm_object(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "createArray(%s)" % ", ".join(_arm_object(v) for v in value)
    return _arm_literal(value)


def _arm_literal(text):
    return "'%s'" % str(text).replace("'", "''")


def _parameter(kind, description, default=None, **more):
    spec = collections.OrderedDict([("type", kind)])
    if default is not None:
        spec["defaultValue"] = default
    spec.update(more)
    spec["metadata"] = {"description": description}
    return spec


def template():
    """deploy/arm/portal.json."""
    p = collections.OrderedDict()
    p["namePrefix"] = _parameter("string", "Prefix of the names of the alert rules, the identity and the Event Grid "
                                           "subscriptions.", "imds-se", maxLength=40)
    p["location"] = _parameter("string", "Region of the workbook, the workspace, the identity and the alert rules "
                                         "(the rules must be in the workspace's region).", "[resourceGroup().location]")
    p["workbookName"] = _parameter("string", "The workbook's display name in the portal.", "Scheduled events of the fleet")
    p["logSearchAlerts"] = _parameter("bool", "Log search alert rules that query Resource Graph (arg(\"\"), preview) "
                                              "from a Log Analytics workspace.", True)
    p["existingWorkspaceId"] = _parameter("string", "Resource id of a Log Analytics workspace to use; empty: create "
                                                    "one (workspaceName). Grant the identity Log Analytics Reader on an "
                                                    "existing one yourself (see docs/portal.md).", "")
    p["workspaceName"] = _parameter("string", "Name of the workspace created when existingWorkspaceId is empty.",
                                    "[format('{0}-{1}', parameters('namePrefix'), uniqueString(resourceGroup().id))]")
    p["alertEmails"] = _parameter("array", "Email addresses of the action group this template creates.", [])
    p["existingActionGroupId"] = _parameter("string", "Resource id of an action group to notify instead of creating "
                                                      "one (alertEmails is then unused).", "")
    p["actionGroupName"] = _parameter("string", "Name of the action group created when existingActionGroupId is "
                                                "empty.", "[format('{0}-email', parameters('namePrefix'))]")
    p["createRoleAssignments"] = _parameter("bool", "Give the alert rules' identity Reader and Log Analytics Reader "
                                                    "on this resource group (needs Owner, User Access Administrator "
                                                    "or Role Based Access Control Administrator).", True)
    p["alertResourceGroups"] = _parameter("array", "Resource groups whose events the alerts watch (the production "
                                                   "ones); [\"*\"]: all.", ["*"])
    p["alertSubscriptions"] = _parameter("array", "Subscription ids whose events the alerts watch; [\"*\"]: all.",
                                         ["*"])
    p["pendingMinutes"] = _parameter("int", "Alert when an event still waits for approval this many minutes (or "
                                            "fewer) before its NotBefore.", 30, minValue=0, maxValue=10080)
    p["overdueMinutes"] = _parameter("int", "Alert when an event is still Scheduled this many minutes after its "
                                            "NotBefore.", 15, minValue=0, maxValue=10080)
    p["maxImpactSeconds"] = _parameter("int", "Alert when a pending or running event announces an impact "
                                              "(DurationInSeconds) longer than this.", 30, minValue=0)
    p["inProgressAlert"] = _parameter("bool", "Also alert (informational) while an event is Started.", False)
    p["evaluationFrequency"] = _parameter("string", "How often the log search alert rules run (each run is billed).",
                                          "PT5M", allowedValues=["PT1M", "PT5M", "PT10M", "PT15M", "PT30M", "PT1H"])
    p["eventGridAlerts"] = _parameter("string", "Event Grid deliveries to Azure Monitor alerts (destination "
                                                "MonitorAlert): none, on a new system topic of the subscription, or on "
                                                "an existing one of this resource group (systemTopicName).", "none",
                                      allowedValues=["none", "newSystemTopic", "existingSystemTopic"])
    p["systemTopicName"] = _parameter("string", "Name of the Microsoft.ResourceNotifications.MaintenanceResources "
                                                "system topic (one per subscription).", "scheduled-events")
    p["eventGridSubjectPrefixes"] = _parameter("array", "Event Grid alerts only for events whose subject (the row "
                                                        "id) begins with one of these, for example /subscriptions/<id>"
                                                        "/resourceGroups/<production group>; empty: all.", [])

    v = collections.OrderedDict()
    v["copy"] = [
        {"name": "emailReceivers", "count": "[length(parameters('alertEmails'))]",
         "input": {"name": "[format('email-{0}', copyIndex('emailReceivers'))]",
                   "emailAddress": "[parameters('alertEmails')[copyIndex('emailReceivers')]]",
                   "useCommonAlertSchema": True}},
        {"name": "subjectFilters", "count": "[if(empty(parameters('eventGridSubjectPrefixes')), 0, 1)]",
         "input": {"operatorType": "StringBeginsWith", "key": "subject",
                   "values": "[parameters('eventGridSubjectPrefixes')]"}},
    ]
    v["workspaceId"] = ("[if(empty(parameters('existingWorkspaceId')), resourceId('Microsoft.OperationalInsights/"
                        "workspaces', parameters('workspaceName')), parameters('existingWorkspaceId'))]")
    v["actionGroupId"] = ("[if(empty(parameters('existingActionGroupId')), resourceId('Microsoft.Insights/"
                          "actionGroups', parameters('actionGroupName')), parameters('existingActionGroupId'))]")
    v["identityId"] = ("[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', "
                       "format('{0}-alerts', parameters('namePrefix')))]")
    # The alert rules compare dimension values exactly; the queries give resource groups and subscription ids in
    # lower case, so the parameters are put in lower case too.
    v["alertResourceGroups"] = "[json(toLower(string(parameters('alertResourceGroups'))))]"
    v["alertSubscriptions"] = "[json(toLower(string(parameters('alertSubscriptions'))))]"
    v["roleAssignments"] = "[createObject(%s)]" % ", ".join(
        "%s, guid(resourceGroup().id, variables('identityId'), %s)" % (_arm_literal(role), _arm_literal(role_id))
        for role, role_id in ROLES.items())
    v["workbook"] = json.dumps(workbook(), separators=(",", ":"), ensure_ascii=False)

    resources = [
        collections.OrderedDict([
            ("type", "Microsoft.Insights/workbooks"), ("apiVersion", "2023-06-01"),
            ("name", "[guid(resourceGroup().id, 'imds.scheduled_events', 'workbook')]"),
            ("location", "[parameters('location')]"), ("kind", "shared"),
            ("properties", collections.OrderedDict([
                ("displayName", "[parameters('workbookName')]"),
                ("serializedData", "[variables('workbook')]"),
                ("category", "workbook"), ("sourceId", "azure monitor"), ("version", "Notebook/1.0")])),
        ]),
        collections.OrderedDict([
            ("type", "Microsoft.OperationalInsights/workspaces"), ("apiVersion", "2025-07-01"),
            ("name", "[parameters('workspaceName')]"),
            ("condition", "[and(parameters('logSearchAlerts'), empty(parameters('existingWorkspaceId')))]"),
            ("location", "[parameters('location')]"),
            ("properties", {"sku": {"name": "PerGB2018"}, "retentionInDays": 30}),
        ]),
        collections.OrderedDict([
            ("type", "Microsoft.Insights/actionGroups"), ("apiVersion", "2023-01-01"),
            ("name", "[parameters('actionGroupName')]"),
            ("condition", "[and(empty(parameters('existingActionGroupId')), or(parameters('logSearchAlerts'), "
                          "not(equals(parameters('eventGridAlerts'), 'none'))))]"),
            ("location", "Global"),
            ("properties", collections.OrderedDict([
                ("groupShortName", "imds-se"), ("enabled", True),
                ("emailReceivers", "[variables('emailReceivers')]")])),
        ]),
        collections.OrderedDict([
            ("type", "Microsoft.ManagedIdentity/userAssignedIdentities"), ("apiVersion", IDENTITY_API),
            ("name", "[format('{0}-alerts', parameters('namePrefix'))]"),
            ("condition", "[parameters('logSearchAlerts')]"),
            ("location", "[parameters('location')]"), ("properties", {}),
        ]),
    ]
    for role, role_id in ROLES.items():
        resources.append(collections.OrderedDict([
            ("type", "Microsoft.Authorization/roleAssignments"), ("apiVersion", "2022-04-01"),
            ("name", "[variables('roleAssignments')['%s']]" % role),
            ("condition", "[and(parameters('logSearchAlerts'), parameters('createRoleAssignments'))]"),
            ("dependsOn", ["[variables('identityId')]"]),
            ("properties", collections.OrderedDict([
                ("roleDefinitionId", "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '%s')]"
                 % role_id),
                ("principalId", "[reference(variables('identityId'), '%s').principalId]" % IDENTITY_API),
                ("principalType", "ServicePrincipal"),
                ("description", "imds.scheduled_events: %s for the scheduled-event alert rules" % role)])),
        ]))
    resources.extend(_rule(rule) for rule in RULES)
    resources.append(collections.OrderedDict([
        ("type", "Microsoft.EventGrid/systemTopics"), ("apiVersion", "2025-02-15"),
        ("name", "[parameters('systemTopicName')]"),
        ("condition", "[equals(parameters('eventGridAlerts'), 'newSystemTopic')]"),
        ("location", "global"),
        ("properties", {"source": "[subscription().id]",
                        "topicType": "Microsoft.ResourceNotifications.MaintenanceResources"}),
    ]))
    resources.extend(_delivery(delivery) for delivery in DELIVERIES)

    outputs = collections.OrderedDict([
        ("workbookId", {"type": "string", "value": "[resourceId('Microsoft.Insights/workbooks', "
                                                   "guid(resourceGroup().id, 'imds.scheduled_events', 'workbook'))]"}),
        ("actionGroupId", {"type": "string", "value": "[variables('actionGroupId')]"}),
        ("workspaceId", {"type": "string", "condition": "[parameters('logSearchAlerts')]",
                         "value": "[variables('workspaceId')]"}),
        ("alertIdentityPrincipalId", {"type": "string", "condition": "[parameters('logSearchAlerts')]",
                                      "value": "[reference(variables('identityId'), '%s').principalId]"
                                               % IDENTITY_API}),
        ("readerOnSubscriptionCommand", {
            "type": "string", "condition": "[parameters('logSearchAlerts')]",
            "value": "[format('az role assignment create --assignee-object-id {0} --assignee-principal-type "
                     "ServicePrincipal --role Reader --scope {1}', reference(variables('identityId'), '%s')"
                     ".principalId, subscription().id)]" % IDENTITY_API}),
    ])
    return collections.OrderedDict([
        ("$schema", "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"),
        ("contentVersion", "1.0.0.0"),
        ("metadata", {"description": "The fleet's Azure scheduled events in the Azure portal (a workbook over Resource "
                                     "Graph) and email alerts through Azure Monitor. Built by scripts/portal.py from "
                                     "plugins/module_utils/kql.py of imds.scheduled_events; see docs/portal.md."}),
        ("parameters", p), ("variables", v), ("resources", resources), ("outputs", outputs),
    ])


# --- the docs -------------------------------------------------------------------------------------------------------


def doc_queries():
    """What docs show, by the name their marks give: workbook.<name>, alert.<name>, build_query:<example>."""
    shown = dict(("workbook." + name, text) for name, text in KQL.workbook_queries().items())
    shown.update(("alert." + name, KQL.ARG_PREFIX + text) for name, text in KQL.alert_queries().items())
    shown["build_query:all"] = KQL.build_query()
    shown["build_query:reboots"] = KQL.build_query(types=["Reboot", "Redeploy"], statuses=["Scheduled"])
    shown["build_query:one"] = KQL.build_query(event_ids=["C7061BAC-AFDC-4513-B24B-AA5F13A16123"])
    shown["build_query:vms"] = KQL.build_query(vm_names=["web_0", "db-1"])
    return shown


def render_doc(text, path="doc"):
    """The doc with every marked ```kusto block replaced by the query its mark names."""
    shown = doc_queries()

    def one(match):
        if match.group("name") not in shown:
            raise SystemExit("%s: no query is named %s" % (path, match.group("name")))
        return match.group(1) + shown[match.group("name")] + "\n" + match.group(4)
    return DOC_MARK.sub(one, text)


def outputs():
    """{path relative to the repository: the text this script makes of it}."""
    made = {TEMPLATE_PATH: json.dumps(template(), indent=2, ensure_ascii=False) + "\n"}
    for path in DOCS:
        with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
            made[path] = render_doc(handle.read(), path)
    return made


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the shipped files are up to date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in sorted(outputs().items()):
        full = os.path.join(ROOT, path)
        current = None
        if os.path.exists(full):
            with open(full, encoding="utf-8") as handle:
                current = handle.read()
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            with open(full, "w", encoding="utf-8") as handle:
                handle.write(text)
    if args.check and stale:
        print("out of date (run 'make portal'): " + ", ".join(stale))
        return 1
    for path in stale:
        print("wrote " + path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
