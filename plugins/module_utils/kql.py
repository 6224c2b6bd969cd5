# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Every Kusto (KQL) query the collection sends to Azure or ships, built in one place.

- build_query(): what the control-plane modules, the fleet report (through them) and the resource_graph EDA source
  send to Resource Graph;
- workbook_queries(): the sections of the Azure Monitor workbook of deploy/arm/portal.json;
- alert_queries(): what its log search alert rules ask Resource Graph (through ARG_PREFIX, from a Log Analytics
  workspace).

scripts/portal.py writes the template and docs/portal.md from these functions; tests/kusto checks every query (and
its variants) with Microsoft's own Kusto parser, and the simulator's Resource Graph runs them. A value reaches a
query only as a string literal written by kql_string(), never pasted raw: a quote, a backslash, a `|` or a newline
in it stays inside the string. The workbook's resource group parameter is the one exception the portal makes: the
workbook writes the names its own dropdown read from Resource Graph into the query (`{ResourceGroup}`).

Like the rest of module_utils (but ansible_support.py) it imports nothing from ansible and runs on Python 3.9.
"""

from __future__ import annotations

import re

from .events import is_event_id, normalize_resource_name

SCHEDULED_EVENTS_TYPE = "microsoft.maintenance/scheduledevents"
# What a VM, a scale set or an availability set is in Resource Graph's resources table (types are lower case there).
OWNER_TYPES = ("microsoft.compute/virtualmachines", "microsoft.compute/virtualmachinescalesets",
               "microsoft.compute/availabilitysets")
PENDING = ("Scheduled", "Started")
FINISHED = ("Completed", "Canceled")
# The events that reboot a VM or take it away; a Freeze only pauses it.
IMPACT_TYPES = ("Reboot", "Redeploy", "Preempt", "Terminate")
# Resource Graph alerts need a limit of at most 400 on mv-expand (Microsoft's "Troubleshoot Azure Resource Graph
# alerts"); the workbook keeps the same, so an event listing more VMs shows its first 400.
MV_EXPAND_LIMIT = 400
# How a log search alert rule of a Log Analytics workspace reaches Resource Graph (a cross-service query, preview).
ARG_PREFIX = 'arg("").'

# The columns Resource Graph gives every row of the two tables read here (Microsoft's "Scheduled Events in Azure
# Resource Graph" lists the scheduled-event rows' ones; resources has the same). Kusto's parser is told exactly
# these, so a misspelt column is an error.
ROW_COLUMNS = (("id", "string"), ("name", "string"), ("type", "string"), ("tenantId", "string"), ("kind", "string"),
               ("location", "string"), ("resourceGroup", "string"), ("subscriptionId", "string"),
               ("managedBy", "string"), ("sku", "dynamic"), ("plan", "dynamic"), ("properties", "dynamic"),
               ("tags", "dynamic"), ("identity", "dynamic"), ("zones", "dynamic"), ("extendedLocation", "dynamic"))
TABLES = {"maintenanceresources": ROW_COLUMNS, "resources": ROW_COLUMNS}

# The workbook's resource group parameter: a multi-select dropdown whose "all" value is "*", written into the query
# as a list of single-quoted names ('rg-a','rg-b').
RESOURCE_GROUP_PARAMETER = "ResourceGroup"
ALL_RESOURCE_GROUPS = "*"
WORKBOOK = object()  # resource_groups=WORKBOOK: filter on the workbook's parameter

# Characters a KQL string literal cannot carry: C0 controls (but \t \n \r, which it escapes), DEL, lone surrogates.
_KQL_UNWRITABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_KQL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def kql_string(value, what="value"):
    """`value` as a KQL string literal: the one way any value reaches a Kusto query (Resource Graph, workbooks,
    alert rules), so that a quote, a backslash, a `|` or a newline in it stays inside the string. Double-quoted with
    Kusto's escapes (\\ \" \t \n \r); any other character, non-ASCII too, stands for itself. Raises ValueError
    (naming `what`) for a value no literal can carry: not a string, or holding NUL, another control character or a
    lone surrogate."""
    if not isinstance(value, str):
        raise ValueError("%s %r is a %s, not a string" % (what, value, type(value).__name__))
    bad = _KQL_UNWRITABLE.search(value)
    if bad:
        raise ValueError("%s %r holds the character U+%04X, which a KQL string cannot carry"
                         % (what, value, ord(bad.group())))
    return '"%s"' % "".join(_KQL_ESCAPES.get(c, c) for c in value)


def kql_list(values, what="value"):
    """A parenthesised list of KQL string literals, for `in` and `in~`."""
    return "(%s)" % ", ".join(kql_string(value, what) for value in values)


# --- what the modules send ------------------------------------------------------------------------------------------


def build_query(event_ids=None, types=None, statuses=None, sources=None, resource_groups=None, vm_names=None):
    """The KQL the control-plane modules and the resource_graph source send (docs/control-plane.md shows it): filters
    run in Azure, so a large fleet sends back only what was asked for."""
    lines = ["maintenanceresources", "| where type == %s" % kql_string(SCHEDULED_EVENTS_TYPE)]
    if event_ids:
        bad = [i for i in event_ids if not is_event_id(i)]
        if bad:
            raise ValueError("not an EventId (a GUID is expected): %s" % ", ".join(repr(b) for b in bad))
        lines.append("| where name in~ %s" % kql_list(event_ids, "event id"))
    for field, values, what in (("properties.EventType", types, "event type"),
                                ("properties.EventStatus", statuses, "status"),
                                ("properties.EventSource", sources, "source"),
                                ("resourceGroup", resource_groups, "resource group")):
        if values:
            column = field if "." not in field else "tostring(%s)" % field
            lines.append("| where %s in~ %s" % (column, kql_list(values, what)))
    if vm_names:
        lines.append(_lists_any_of(vm_names))
    lines.append("| project id, name, type, subscriptionId, resourceGroup, location, properties")
    lines.append("| order by id asc")
    return "\n".join(lines)


def _lists_any_of(vm_names):
    """`| where` the event's Resources list one of these VMs, compared as NamedVms compares them (events.py's
    normalize_resource_name: case-insensitive, a leading underscore ignored). KQL has no per-element tolower, so the
    array is lowered as its JSON text (tolower keeps JSON's escapes valid) and read back; each name is written as
    itself and with the underscore. For a name Azure allows (ASCII, no spaces) it selects exactly the rows NamedVms
    accepts, and for any other never one NamedVms refuses; the modules still compare every row with NamedVms, which
    decides what an event's scope is."""
    wanted = []
    for name in vm_names:
        if not isinstance(name, str):
            raise ValueError("VM name %r is a %s, not a string" % (name, type(name).__name__))
        key = normalize_resource_name(name)
        if not key:
            continue
        # normalize_resource_name drops one leading underscore: a key that starts with one came from "_" + key
        for form in ((key, "_" + key) if not key.startswith("_") else ("_" + key,)):
            if form not in wanted:
                wanted.append(form)
    if not wanted:
        raise ValueError("every VM name is empty: %r" % (vm_names,))
    return ("| where array_length(set_intersect(todynamic(tolower(tostring(properties.Resources))), pack_array(%s)))"
            " > 0" % ", ".join(kql_string(form, "VM name") for form in wanted))


# --- the workbook ---------------------------------------------------------------------------------------------------

# A row's owner (the VM, scale set or availability set its id names) and the event's keys as columns. The id is
# /subscriptions/<s>/resourcegroups/<rg>/providers/Microsoft.Compute/<kind>/<owner>/providers/Microsoft.Maintenance/
# scheduledevents/<EventId>; its casing varies, so the owner's id is cut at the lower-cased provider segment.
_EVENT_COLUMNS = (
    "| extend EventId = name, EventType = tostring(properties.EventType), EventStatus = tostring(properties.EventStatus),"
    " EventSource = tostring(properties.EventSource), NotBefore = todatetime(tostring(properties.NotBefore)),"
    " Resources = properties.Resources, DurationInSeconds = toint(properties.DurationInSeconds),"
    " Description = tostring(properties.Description)",
    "| extend OwnerKind = tostring(split(id, \"/\")[7]), Owner = tostring(split(id, \"/\")[8]),"
    " OwnerId = substring(id, 0, indexof(tolower(id), \"/providers/microsoft.maintenance/\"))",
)


def _resource_group_filter(resource_groups):
    if resource_groups is WORKBOOK:
        return "| where %s in ({%s}) or resourceGroup in~ ({%s})" % (
            kql_string(ALL_RESOURCE_GROUPS), RESOURCE_GROUP_PARAMETER, RESOURCE_GROUP_PARAMETER)
    if resource_groups:
        return "| where resourceGroup in~ %s" % kql_list(resource_groups, "resource group")
    return None


def _events(statuses, resource_groups):
    """The scheduled-event rows of some statuses, in the chosen resource groups, with the event's columns."""
    lines = ["maintenanceresources", "| where type == %s" % kql_string(SCHEDULED_EVENTS_TYPE),
             "| where tostring(properties.EventStatus) in %s" % kql_list(statuses, "status")]
    lines.extend(line for line in [_resource_group_filter(resource_groups)] if line)
    lines.extend(_EVENT_COLUMNS)
    return lines


def _minutes_left(column="NotBefore"):
    return "toint((%s - now()) / 1m)" % column


def _owners(resource_groups):
    """VMs, scale sets and availability sets that can opt in: a VM of a scale set or an availability set cannot
    (its set does), so it is left out."""
    lines = ["resources", "| where type in~ %s" % kql_list(OWNER_TYPES, "type")]
    lines.extend(line for line in [_resource_group_filter(resource_groups)] if line)
    lines.extend([
        "| where not(type =~ %s and (isnotempty(tostring(properties.virtualMachineScaleSet.id))"
        " or isnotempty(tostring(properties.availabilitySet.id))))" % kql_string(OWNER_TYPES[0]),
        "| extend Policy = properties.scheduledEventsPolicy",
        "| extend Publishing = tobool(Policy.scheduledEventsAdditionalPublishingTargets.eventGridAndResourceGraph.enable)",
    ])
    return lines


def workbook_queries(resource_groups=WORKBOOK):
    """The workbook's queries by name, in the order the workbook shows them. `resource_groups`: WORKBOOK (the
    workbook's own parameter), None (every group) or a list of names."""
    pending, finished = _events(PENDING, resource_groups), _events(FINISHED, resource_groups)
    queries = {}
    queries["resource_groups"] = "\n".join([
        "resources",
        "| where type in~ %s" % kql_list(OWNER_TYPES, "type"),
        "| distinct resourceGroup",
        "| order by resourceGroup asc",
        "| project value = resourceGroup, label = resourceGroup",
    ])
    queries["pending_by_type"] = "\n".join(pending + [
        "| summarize Events = count(), VMs = sum(array_length(Resources)), NextNotBefore = min(NotBefore)"
        " by EventType, EventStatus",
        "| order by EventType asc, EventStatus asc",
    ])
    queries["pending_events"] = "\n".join(pending + [
        "| extend MinutesLeft = %s, VMs = array_length(Resources)" % _minutes_left(),
        "| project subscriptionId, resourceGroup, OwnerKind, Owner, OwnerId, EventId, EventType, EventStatus,"
        " NotBefore, MinutesLeft, VMs, EventSource, DurationInSeconds, Description",
        "| order by subscriptionId asc, resourceGroup asc, Owner asc, NotBefore asc, EventId asc",
    ])
    queries["pending_vms"] = "\n".join(pending + [
        "| extend VMs = array_length(Resources)",
        "| mv-expand VM = Resources limit %d" % MV_EXPAND_LIMIT,
        "| extend VM = tostring(VM)",
        "| extend AlsoStarted = strcat_array(set_difference(Resources, pack_array(VM)), \", \")",
        "| extend Shared = iff(VMs > 1, strcat(%s, AlsoStarted), \"\")"
        % kql_string("approving it starts it for these VMs too: "),
        "| extend VmId = strcat(\"/subscriptions/\", subscriptionId, \"/resourceGroups/\", resourceGroup,"
        " \"/providers/Microsoft.Compute/virtualMachines/\", VM)",
        "| project subscriptionId, resourceGroup, VM, VmId, EventId, EventType, EventStatus, NotBefore,"
        " MinutesLeft = %s, OwnerKind, Owner, OwnerId, Shared" % _minutes_left(),
        "| order by VM asc, NotBefore asc, EventId asc",
    ])
    queries["finished_by_type"] = "\n".join(finished + [
        "| summarize Events = count(), VMs = sum(array_length(Resources)) by EventType, EventStatus",
        "| order by EventType asc, EventStatus asc",
    ])
    queries["finished_events"] = "\n".join(finished + [
        "| project subscriptionId, resourceGroup, OwnerKind, Owner, OwnerId, EventId, EventType, EventStatus,"
        " VMs = strcat_array(Resources, \", \"), DurationInSeconds, NotBefore, EventSource, Description",
        "| order by EventStatus asc, EventType asc, EventId asc",
    ])
    queries["opt_in_summary"] = "\n".join(_owners(resource_groups) + [
        "| summarize Total = count(), OptedIn = countif(Publishing == true) by ResourceType = type",
        "| extend NotOptedIn = Total - OptedIn",
        "| order by ResourceType asc",
    ])
    queries["not_opted_in"] = "\n".join(_owners(resource_groups) + [
        "| where isnull(Publishing) or Publishing == false",
        "| extend Reason = iff(isnull(Policy), %s, %s)"
        % (kql_string("no scheduledEventsPolicy"), kql_string("publishing to Event Grid and Resource Graph is off")),
        "| project subscriptionId, resourceGroup, ResourceType = type, name, id, Reason",
        "| order by subscriptionId asc, resourceGroup asc, name asc",
    ])
    return queries


# --- the alert rules ------------------------------------------------------------------------------------------------


def _alert_events(statuses, types=None):
    """One row per event for a log search alert rule: the columns its dimensions split on (EventId, EventType,
    ResourceGroup in lower case, subscriptionId) and the numbers its conditions measure (MinutesLeft,
    DurationInSeconds). Nothing here comes from the rule's parameters: thresholds and scopes are the rule's own
    settings, so no template value is ever written into KQL."""
    lines = ["maintenanceresources", "| where type == %s" % kql_string(SCHEDULED_EVENTS_TYPE),
             "| where tostring(properties.EventStatus) in %s" % kql_list(statuses, "status")]
    if types:
        lines.append("| where tostring(properties.EventType) in %s" % kql_list(types, "event type"))
    lines.extend([
        "| extend NotBefore = todatetime(tostring(properties.NotBefore))",
        "| project EventId = name, EventType = tostring(properties.EventType),"
        " EventStatus = tostring(properties.EventStatus), subscriptionId, ResourceGroup = tolower(resourceGroup),"
        " Owner = tostring(split(id, \"/\")[8]), VMs = array_length(properties.Resources), NotBefore,"
        " MinutesLeft = %s, DurationInSeconds = toint(properties.DurationInSeconds)" % _minutes_left(),
    ])
    return "\n".join(lines)


def alert_queries():
    """What each log search alert rule asks Resource Graph, by name (a rule runs ARG_PREFIX + the query)."""
    return {
        # an event that reboots or takes away VMs is scheduled (or already running: some skip Scheduled)
        "impact": _alert_events(PENDING, IMPACT_TYPES),
        # still waiting for approval: the rules measure MinutesLeft (pending soon, overdue)
        "scheduled": _alert_events(("Scheduled",)),
        # pending or running, with the impact Azure announced: the rule measures DurationInSeconds
        "announced": _alert_events(PENDING),
        # running now: a stateful rule fires when it starts and resolves when it is over
        "started": _alert_events(("Started",)),
    }
