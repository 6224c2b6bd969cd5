"""The KQL of the simulator's Resource Graph: what it understands, Kusto's rules it keeps, and every rejection."""

from __future__ import annotations

import datetime

import pytest

from imds_simulator.kql import KqlError, parse

BASE = 'maintenanceresources | where type == "microsoft.maintenance/scheduledevents"'
NOW = datetime.datetime(2016, 9, 19, 18, 14, 47, tzinfo=datetime.timezone.utc)


def row(event_id, status="Scheduled", event_type="Reboot", group="rg-a", source="Platform", resources=("vm",),
        not_before="Mon, 19 Sep 2016 18:29:47 GMT", duration=-1):
    return {"id": f"/subscriptions/s/resourcegroups/{group}/providers/Microsoft.Compute/virtualMachines/vm"
                  f"/providers/Microsoft.Maintenance/scheduledevents/{event_id}",
            "name": event_id, "type": "microsoft.maintenance/scheduledevents", "tenantId": "t", "kind": "",
            "location": "westeurope", "resourceGroup": group, "subscriptionId": "s", "managedBy": "", "sku": None,
            "plan": None, "tags": None, "identity": None, "zones": None, "extendedLocation": None,
            "properties": {"EventId": event_id, "EventStatus": status, "EventType": event_type, "EventSource": source,
                           "ResourceType": "VirtualMachine", "Resources": list(resources), "NotBefore": not_before,
                           "DurationInSeconds": duration}}


ROWS = [row("A", "Scheduled", "Reboot", "rg-a", resources=("web_0", "web_1")),
        row("B", "Started", "Freeze", "RG-B", "User", not_before="", duration=5),
        row("C", "Completed", "Redeploy", "rg-a", not_before=""), row("D", "Canceled", "Reboot", "rg-c", resources=())]
RESOURCES = [{"id": "/subscriptions/s/resourceGroups/rg-a/providers/Microsoft.Compute/virtualMachines/solo",
              "name": "solo", "type": "microsoft.compute/virtualmachines", "resourceGroup": "rg-a", "subscriptionId": "s",
              "properties": {"scheduledEventsPolicy": {"scheduledEventsAdditionalPublishingTargets": {
                  "eventGridAndResourceGraph": {"enable": True}}}}},
             {"id": "/subscriptions/s/resourceGroups/rg-a/providers/Microsoft.Compute/availabilitySets/db",
              "name": "db", "type": "microsoft.compute/availabilitysets", "resourceGroup": "rg-a", "subscriptionId": "s",
              "properties": {}}]


def run(query, rows=None):
    return parse(query).run({"maintenanceresources": ROWS if rows is None else rows, "resources": RESOURCES}, NOW)


def names(query, rows=None):
    return [item["name"] for item in run(query, rows)]


def test_the_minimal_query_returns_every_row_in_their_order():
    assert names(BASE) == ["A", "B", "C", "D"]
    assert names('MaintenanceResources\n| where type =~ "Microsoft.Maintenance/ScheduledEvents"') == ["A", "B", "C", "D"]


@pytest.mark.parametrize("condition, expected", [
    ('properties.EventStatus == "Started"', ["B"]),
    ('tostring(properties.EventStatus) == "Started"', ["B"]),
    ("properties.EventStatus == 'started'", []),
    ('properties.EventStatus =~ "started"', ["B"]),
    ('properties.EventStatus != "Started"', ["A", "C", "D"]),
    ('properties.EventStatus !~ "STARTED"', ["A", "C", "D"]),
    ('properties.EventStatus in ("Completed", "Canceled")', ["C", "D"]),
    ('properties.EventType in~ ("reboot")', ["A", "D"]),
    ('properties.EventType !in ("Reboot")', ["B", "C"]),
    ('properties.EventType !in~ ("reboot", "FREEZE")', ["C"]),
    ('resourceGroup in~ ("rg-b", "rg-c")', ["B", "D"]),
    ('name == "C" or name == "A"', ["A", "C"]),
    ('not(name == "C")', ["A", "B", "D"]),
    ('subscriptionId == "s" and location == "westeurope" and properties.ResourceType == "VirtualMachine"',
     ["A", "B", "C", "D"]),
    ('name == "with \\"quote\\""', []),
    ("properties.DurationInSeconds > 0", ["B"]),
    ("toint(properties.DurationInSeconds) >= -1", ["A", "B", "C", "D"]),
    ("array_length(properties.Resources) > 1", ["A"]),
    ('"*" in ("*") or resourceGroup in~ ("nothing")', ["A", "B", "C", "D"]),
    ('resourceGroup in~ (dynamic(["rg-c", "RG-A"]))', ["A", "C", "D"]),
])
def test_where_filters(condition, expected):
    assert names(BASE + " | where " + condition) == expected


@pytest.mark.parametrize("condition", [
    'properties.Missing == "x"', 'properties.Missing != "x"', "properties.Missing > 1", "properties.Missing < 1",
    'properties.Missing in ("x")', "not(properties.Missing == 1)", "todatetime(properties.NotBefore) < now() + 1d",
])
def test_a_comparison_with_a_null_is_never_true(condition):
    """A missing property is a dynamic null: neither it nor its negation keeps a row (the started and finished events
    have no NotBefore)."""
    kept = names(BASE + " | where " + condition)
    assert kept == (["A", "D"] if "NotBefore" in condition else [])


def test_and_or_are_three_valued():
    assert names(BASE + ' | where properties.Missing == 1 or name == "B"') == ["B"]
    assert names(BASE + ' | where properties.Missing == 1 and name == "B"') == []
    assert names(BASE + " | where isnull(properties.Missing == 1 and true)") == ["A", "B", "C", "D"]
    assert names(BASE + " | where isnull(properties.Missing == 1 and false)") == []


def test_strings_are_never_null_a_missing_property_is():
    result = run(BASE + ' | where name == "A" | project s = tostring(properties.Missing), d = properties.Missing,'
                        ' e = isempty(tostring(properties.Missing)), n = isnull(tostring(properties.Missing)),'
                        ' m = isnull(properties.Missing), b = isnotempty(name)')
    assert result == [{"s": "", "d": None, "e": True, "n": False, "m": True, "b": True}]


def test_times_datetimes_and_now():
    query = BASE + (' | extend NotBefore = todatetime(tostring(properties.NotBefore))'
                    ' | project name, NotBefore, MinutesLeft = toint((NotBefore - now()) / 1m),'
                    ' Overdue = toint((now() - NotBefore) / 1m), Soon = NotBefore < now() + 30m,'
                    ' Ago = ago(1h), Iso = todatetime("2016-09-19T18:29:47Z") == NotBefore,'
                    ' Text = tostring(NotBefore)')
    first, second = run(query)[:2]
    assert first == {"name": "A", "NotBefore": "2016-09-19T18:29:47Z", "MinutesLeft": 15, "Overdue": -15,
                     "Soon": True, "Ago": "2016-09-19T17:14:47Z", "Iso": True, "Text": "2016-09-19T18:29:47.0000000Z"}
    assert second == {"name": "B", "NotBefore": None, "MinutesLeft": None, "Overdue": None, "Soon": None,
                      "Ago": "2016-09-19T17:14:47Z", "Iso": None, "Text": ""}


def test_integer_arithmetic_truncates_towards_zero():
    result = run(BASE + ' | where name == "A" | project a = 7 / 2, b = -7 / 2, c = toint(-2.7), d = toint(2.7),'
                        ' e = 1 / 0, f = 10s / 4s, g = toint("12"), h = toint("x"), i = 2 * 3 + 1 - 4')
    assert result == [{"a": 3, "b": -3, "c": -2, "d": 2, "e": None, "f": 2.5, "g": 12, "h": None, "i": 3}]


def test_string_and_array_functions():
    result = run(BASE + ' | where name == "A" | project'
                        ' Kind = tostring(split(id, "/")[7]), Owner = tostring(split(id, "/")[8]),'
                        ' Last = tostring(split(id, "/")[-1]), Past = tostring(split(id, "/")[99]),'
                        ' OwnerId = substring(id, 0, indexof(tolower(id), "/providers/microsoft.maintenance/")),'
                        ' Missing = indexof(id, "nope"), Up = toupper("a"), Joined = strcat("x", 1, true),'
                        ' Others = strcat_array(set_difference(properties.Resources, pack_array("web_0")), ", "),'
                        ' Length = strlen(name), Pick = iff(name == "A", "yes", "no"), First = coalesce("", "b"),'
                        ' Flag = tobool("TRUE"), Json = tostring(properties.Resources)')
    assert result == [{"Kind": "virtualMachines", "Owner": "vm", "Last": "A", "Past": "",
                       "OwnerId": "/subscriptions/s/resourcegroups/rg-a/providers/Microsoft.Compute/virtualMachines/vm",
                       "Missing": -1, "Up": "A", "Joined": "x1true", "Others": "web_1", "Length": 1, "Pick": "yes",
                       "First": "b", "Flag": True, "Json": '["web_0","web_1"]'}]


def test_todynamic_reads_json_back_and_set_intersect_keeps_what_every_array_holds():
    """What build_query's vm_names filter needs: the Resources array lowered as JSON text, then compared."""
    result = run(BASE + ' | where name == "A" | project'
                        ' Lowered = todynamic(tolower(tostring(pack_array("Web_0", "a\\"b")))),'
                        ' Both = set_intersect(properties.Resources, pack_array("web_1", "web_1", "x")),'
                        ' NotJson = todynamic("{nope"), Number = todynamic(3), None_ = set_intersect("a", pack_array(1))')
    assert result == [{"Lowered": ["web_0", 'a"b'], "Both": ["web_1"], "NotJson": None, "Number": 3, "None_": None}]


def test_extend_adds_or_replaces_and_project_keeps_only_what_it_names():
    query = parse(BASE + " | extend name = tolower(name), Status = tostring(properties.EventStatus)"
                         " | project name, Status, properties.EventType, tostring(properties.EventSource)")
    assert query.columns == ("name", "Status", "properties_EventType", "properties_EventSource")
    assert query.run({"maintenanceresources": ROWS[:1]}, NOW) == [
        {"name": "a", "Status": "Scheduled", "properties_EventType": "Reboot", "properties_EventSource": "Platform"}]
    assert parse(BASE + " | extend x = 1").columns[-1] == "x" and len(parse(BASE + " | extend name = 1").columns) == 16


def test_summarize_counts_and_aggregates_by_keys():
    query = BASE + (" | extend Status = tostring(properties.EventStatus)"
                    " | summarize Events = count(), Vms = sum(array_length(properties.Resources)),"
                    " Late = countif(Status == 'Scheduled'), Types = make_set(tostring(properties.EventType)),"
                    " First = min(name), Last = max(name), Groups = dcount(resourceGroup)"
                    " by Group = tolower(resourceGroup)")
    assert run(query) == [
        {"Group": "rg-a", "Events": 2, "Vms": 3, "Late": 1, "Types": ["Reboot", "Redeploy"], "First": "A",
         "Last": "C", "Groups": 1},
        {"Group": "rg-b", "Events": 1, "Vms": 1, "Late": 0, "Types": ["Freeze"], "First": "B", "Last": "B", "Groups": 1},
        {"Group": "rg-c", "Events": 1, "Vms": 0, "Late": 0, "Types": ["Reboot"], "First": "D", "Last": "D", "Groups": 1},
    ]
    assert run(BASE + " | summarize count(), countif(name == 'A') by tostring(properties.EventType)") == [
        {"properties_EventType": "Reboot", "count_": 2, "countif_": 1},
        {"properties_EventType": "Freeze", "count_": 1, "countif_": 0},
        {"properties_EventType": "Redeploy", "count_": 1, "countif_": 0}]


def test_summarize_without_keys_gives_one_row_even_of_nothing():
    assert run(BASE + " | summarize n = count(), first = min(name)", rows=[]) == [{"n": 0, "first": None}]
    assert run(BASE + " | summarize n = count() by name", rows=[]) == []


def test_mv_expand_one_row_per_item_none_for_an_empty_array_one_for_a_null():
    query = BASE + " | mv-expand VM = properties.Resources | project name, VM = tostring(VM)"
    assert run(query) == [{"name": "A", "VM": "web_0"}, {"name": "A", "VM": "web_1"}, {"name": "B", "VM": "vm"},
                          {"name": "C", "VM": "vm"}]
    assert run(BASE + " | mv-expand VM = properties.Missing | project name, VM") == [
        {"name": n, "VM": None} for n in "ABCD"]
    assert run(BASE + " | mv-expand VM = properties.Resources limit 1 | project name, VM")[:2] == [
        {"name": "A", "VM": "web_0"}, {"name": "B", "VM": "vm"}]
    assert parse(BASE + " | mv-expand properties.Resources").columns[-1] == "properties_Resources"


def test_distinct_order_and_take():
    assert run(BASE + " | distinct resourceGroup | order by resourceGroup asc") == [
        {"resourceGroup": "RG-B"}, {"resourceGroup": "rg-a"}, {"resourceGroup": "rg-c"}]
    assert names(BASE + " | order by name") == ["D", "C", "B", "A"]  # KQL's default: descending
    assert names(BASE + " | sort by properties.EventType asc") == ["B", "A", "D", "C"]
    assert names(BASE + " | sort by tostring(properties.EventType) asc, name desc") == ["B", "D", "A", "C"]
    nulls = BASE + " | extend nb = todatetime(tostring(properties.NotBefore)) | order by nb "
    assert names(nulls + "asc, name asc") == ["B", "C", "A", "D"]  # nulls first ascending
    assert names(nulls + "desc, name asc") == ["A", "D", "B", "C"]  # and last descending
    assert names(BASE + " | take 1") == ["A"] and names(BASE + " | limit 3") == ["A", "B", "C"]


def test_the_resources_table_and_the_opt_in_policy():
    query = ("resources | where type in~ (\"microsoft.compute/virtualmachines\", \"microsoft.compute/availabilitysets\")"
             " | extend Publishing = tobool(properties.scheduledEventsPolicy.scheduledEventsAdditionalPublishingTargets"
             ".eventGridAndResourceGraph.enable) | project name, Publishing")
    assert run(query) == [{"name": "solo", "Publishing": True}, {"name": "db", "Publishing": None}]


def test_the_query_api_the_other_tests_read():
    query = parse(BASE + " | where name in ('a', 'b') and properties.EventType == 'Reboot' | project id, name | take 2")
    assert [(c.field, c.op, c.values) for c in query.conditions] == [
        ("type", "==", ("microsoft.maintenance/scheduledevents",)), ("name", "in", ("a", "b")),
        ("properties.EventType", "==", ("Reboot",))]
    assert query.project == ("id", "name") and query.limit == 2 and query.keeps_id
    assert not parse(BASE + " | summarize count()").keeps_id and parse(BASE).project is None


@pytest.mark.parametrize("query, token, message", [
    ("", None, "empty"),
    ("securityresources | where type == 'x'", "securityresources", "has the tables maintenanceresources and resources"),
    ("maintenanceresources", None, "must filter on | where type =="),
    ('maintenanceresources | where name == "x"', None, "must filter on | where type =="),
    ('maintenanceresources | extend x = 1 | where type == "microsoft.maintenance/scheduledevents"', None,
     "must filter on | where type =="),
    ("maintenanceresources | where type == 'microsoft.maintenance/maintenanceconfigurations'",
     "microsoft.maintenance/maintenanceconfigurations", "only holds microsoft.maintenance/scheduledevents"),
    ("maintenanceresources | where type != 'microsoft.maintenance/scheduledevents'", None, "must filter on"),
    (BASE + " | join (resources) on id", "join", "unsupported operator"),
    (BASE + " | union resources", "union", "unsupported operator"),
    (BASE + " | parse name with x", "parse", "unsupported operator"),
    (BASE + " | make-series count() on name", "make-series", "unsupported operator"),
    (BASE + " | project-away name", "project-away", "unsupported operator"),
    (BASE + " | mv-apply x = properties.Resources on (take 1)", "mv-apply", "unsupported operator"),
    (BASE + " | WHERE name == 'a'", "WHERE", "unsupported operator"),
    (BASE + " | where name contains 'x'", "contains", "unsupported operator"),
    (BASE + " | where name has 'x'", "has", "unsupported operator"),
    (BASE + " | where name !has 'x'", "!", "unsupported operator"),
    (BASE + " | where tags == 'x' and nope == 1", "nope", "unknown column 'nope'"),
    (BASE + " | project name | where id == 'x'", "id", "unknown column 'id'"),
    (BASE + " | extend a = 1, b = a + 1", "a", "unknown column 'a'"),
    (BASE + " | where rand() > 1", "rand", "unknown function"),
    (BASE + " | where arg_min(name) == 1", "arg_min", "unknown function"),
    (BASE + " | extend n = count()", "count", "belongs in summarize"),
    (BASE + " | summarize avg(1)", "avg", "expected an aggregation"),
    (BASE + " | summarize n = count(name)", "count", "takes 0 argument(s)"),
    (BASE + " | project tolower(name)", "tolower", "name this column"),
    (BASE + " | summarize sum(1 + 1)", "sum", "name this column"),
    (BASE + " | project name, name", "project", "named twice"),
    (BASE + " | mv-expand kind=array x = properties.Resources", "kind", "not supported"),
    (BASE + " | mv-expand x = properties.Resources to typeof(string)", "to", "not supported"),
    (BASE + " | order by name asc nulls last", "nulls", "not supported"),
    (BASE + " | where name == x", "x", "unknown column 'x'"),
    (BASE + " | where name in 'a'", "'a'", "expected '(' after 'in'"),
    (BASE + " | where name in ('a' 'b')", "'b'", "expected ',' or ')'"),
    (BASE + " | where name == 'a' name", "name", "expected '|' or the end"),
    (BASE + " | where tostring(name == 'a'", None, "expected ',' or ')'"),
    (BASE + " | order name", "name", "expected 'by' after 'order'"),
    (BASE + " | project", None, "expected a value, a column or a function"),
    (BASE + " | limit ten", "ten", "expected a row count"),
    (BASE + " where name == 'a'", "where", "expected '|' or the end"),
    ("maintenanceresources where name == 'a'", "where", "expected '|' before the next operator"),
    (BASE + " | where name == 'a' ;", ";", "expected '|' or the end"),
    (BASE + " | where name == \"unterminated", '"', "expected a value, a column or a function"),
    (BASE + " | | where name == 'a'", "|", "expected an operator"),
    (BASE + " | where name == dynamic([1,)", "dynamic", "holds no JSON value"),
])
def test_rejections_name_what_was_not_understood(query, token, message):
    with pytest.raises(KqlError) as caught:
        parse(query)
    assert message in caught.value.message
    assert caught.value.token == token
    if token is not None:
        assert f"'{token}'" in caught.value.message or repr(token) in caught.value.message


def test_a_query_that_cannot_run_on_a_value_says_so():
    with pytest.raises(KqlError, match="cannot apply '\\+' to string and long"):
        run(BASE + " | extend x = name + 1")


@pytest.mark.parametrize("literal, value", [
    (r'"a\"b"', 'a"b'), (r"'a\'b'", "a'b"), (r'"back\\slash"', "back\\slash"), (r'"x\ny\tz\r"', "x\ny\tz\r"),
    (r'"a | take 1 //"', "a | take 1 //"), ('"Zürich"', "Zürich"),
])
def test_string_literals_read_with_kustos_escapes(literal, value):
    query = 'maintenanceresources | where type == "microsoft.maintenance/scheduledevents" | where name == %s' % literal
    assert parse(query).conditions[-1].values == (value,)
