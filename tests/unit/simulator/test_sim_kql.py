"""The reduced KQL of the simulator's Resource Graph: what it understands, how it filters, and every rejection."""

from __future__ import annotations

import pytest

from imds_simulator.kql import KqlError, parse

BASE = 'maintenanceresources | where type == "microsoft.maintenance/scheduledevents"'


def row(event_id, status="Scheduled", event_type="Reboot", group="rg-a", source="Platform"):
    return {"id": f"/subscriptions/s/resourcegroups/{group}/providers/x/{event_id}", "name": event_id,
            "type": "microsoft.maintenance/scheduledevents", "resourceGroup": group, "subscriptionId": "s",
            "location": "westeurope", "zones": None,
            "properties": {"EventId": event_id, "EventStatus": status, "EventType": event_type,
                           "EventSource": source, "ResourceType": "VirtualMachine", "Resources": ["vm"],
                           "DurationInSeconds": -1}}


ROWS = [row("A", "Scheduled", "Reboot", "rg-a"), row("B", "Started", "Freeze", "RG-B", "User"),
        row("C", "Completed", "Redeploy", "rg-a"), row("D", "Canceled", "Reboot", "rg-c")]


def names(query, rows=None):
    return [item["name"] for item in parse(query).run(ROWS if rows is None else rows)]


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
    ('properties.EventSource == "User"', ["B"]),
    ('name == "C"', ["C"]),
    ('subscriptionId == "s" and location == "westeurope" and properties.ResourceType == "VirtualMachine"',
     ["A", "B", "C", "D"]),
    ('properties.EventId == "A" and properties.EventType == "Freeze"', []),
    ('id == "/subscriptions/s/resourcegroups/rg-a/providers/x/A"', ["A"]),
    ('name == "with \\"quote\\""', []),
])
def test_where_filters(condition, expected):
    assert names(BASE + " | where " + condition) == expected


def test_several_where_clauses_are_anded():
    assert names(BASE + ' | where resourceGroup == "rg-a" | where properties.EventStatus == "Completed"') == ["C"]


def test_order_by_and_sort_by_with_kql_default_descending_and_stable_ties():
    assert names(BASE + " | order by name asc") == ["A", "B", "C", "D"]
    assert names(BASE + " | order by name") == ["D", "C", "B", "A"]
    assert names(BASE + " | sort by properties.EventType asc") == ["B", "A", "D", "C"]
    assert names(BASE + " | sort by tostring(properties.EventType) asc, name desc") == ["B", "D", "A", "C"]
    assert names(BASE + " | sort by properties.EventType desc") == ["C", "A", "D", "B"]


def test_project_limit_and_take():
    query = parse(BASE + " | project id, name, properties.EventStatus, properties | limit 2")
    rows = query.run(ROWS)
    assert len(rows) == 2 and query.keeps_id
    assert query.shape(rows[0]) == {"id": ROWS[0]["id"], "name": "A", "properties_EventStatus": "Scheduled",
                                    "properties": ROWS[0]["properties"]}
    assert names(BASE + " | take 1") == ["A"]
    assert not parse(BASE + " | project name").keeps_id and parse(BASE).keeps_id


@pytest.mark.parametrize("query, token, message", [
    ("", None, "empty"),
    ("resources | where type == 'x'", "resources", "only has the table 'maintenanceresources'"),
    ("maintenanceresources", None, "must filter on | where type =="),
    ('maintenanceresources | where name == "x"', None, "must filter on | where type =="),
    ("maintenanceresources | where type == 'microsoft.maintenance/maintenanceconfigurations'",
     "microsoft.maintenance/maintenanceconfigurations", "only holds microsoft.maintenance/scheduledevents"),
    ("maintenanceresources | where type != 'microsoft.maintenance/scheduledevents'", None, "must filter on"),
    (BASE + " | extend x = 1", "extend", "unsupported operator"),
    (BASE + " | summarize count()", "summarize", "unsupported operator"),
    (BASE + " | where properties.Resources == 'vm'", "Resources", "unsupported property"),
    (BASE + " | where tags == 'x'", "tags", "unsupported column"),
    (BASE + " | where name contains 'x'", "contains", "expected a comparison"),
    (BASE + " | where name == x", "x", "expected a quoted string value"),
    (BASE + " | where name == 'a' or name == 'b'", "or", "'or' is not supported"),
    (BASE + " | where name in ('a' 'b')", "'b'", "expected ',' or ')'"),
    (BASE + " | where name in 'a'", "'a'", "expected '(' after 'in'"),
    (BASE + " | where name == 'a' name", "name", "expected 'and', '|' or the end"),
    (BASE + " | where tostring(name == 'a'", "==", "expected ')' closing tostring("),
    (BASE + " | order name", "name", "expected 'by' after 'order'"),
    (BASE + " | project", None, "expected a column to project"),
    (BASE + " | project name | project id", "project", "only one 'project'"),
    (BASE + " | project properties.Nope", "Nope", "unsupported property"),
    (BASE + " | limit ten", "ten", "expected a row count"),
    (BASE + " where name == 'a'", "where", "expected 'and', '|' or the end"),
    ("maintenanceresources where name == 'a'", "where", "expected '|' before the next operator"),
    (BASE + " | where name == 'a' ;", ";", "expected 'and', '|' or the end"),
    (BASE + " | where name == \"unterminated", '"', "expected a quoted string value"),
    (BASE + " | | where name == 'a'", "|", "expected an operator"),
    (BASE + " | WHERE name == 'a'", "WHERE", "unsupported operator"),
])
def test_rejections_name_what_was_not_understood(query, token, message):
    with pytest.raises(KqlError) as caught:
        parse(query)
    assert message in caught.value.message
    assert caught.value.token == token
    if token is not None:
        assert f"'{token}'" in caught.value.message or repr(token) in caught.value.message


@pytest.mark.parametrize("literal, value", [
    (r'"a\"b"', 'a"b'), (r"'a\'b'", "a'b"), (r'"back\\slash"', "back\\slash"), (r'"x\ny\tz\r"', "x\ny\tz\r"),
    (r'"a | take 1 //"', "a | take 1 //"), ('"Zürich"', "Zürich"),
])
def test_string_literals_read_with_kustos_escapes(literal, value):
    query = 'maintenanceresources | where type == "microsoft.maintenance/scheduledevents" | where name == %s' % literal
    assert parse(query).conditions[-1].values == (value,)
