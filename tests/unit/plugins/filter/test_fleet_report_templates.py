# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The fleet_report role's HTML and Markdown templates, rendered by Ansible's own templating from a
fleet_report_data report in which every string a host can influence is hostile markup, and from one report
that carries every value of the hostile table (tests/unit/utils/hostile.py) in every field.

Ansible's templating does not autoescape (an `{% autoescape %}` block is ignored), so the HTML
template escapes each value itself; this proves that none of them comes through as markup, that no value is
rendered as a template, and that each one shows as text, intact. (tests/system/test_fleet_report.py opens the
same page in Chromium and renders the Markdown with GitHub's cmark-gfm.)"""

from __future__ import annotations

import html
import re

import pytest


from ansible_collections.imds.scheduled_events.plugins.module_utils.fleet import build_report, displayable
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile, hostile_fleet

EVIL = "<x-evil onerror=\"a\">'\"&amp;|`\n"


def hostile_report():
    event = {"EventId": "E" + EVIL, "EventType": "Reboot" + EVIL, "Resources": ["vm" + EVIL, "other" + EVIL],
             "EventStatus": "Scheduled", "NotBefore": "Mon, 11 Apr 2050 22:26:58 GMT", "Description": "d" + EVIL,
             "EventSource": "Platform" + EVIL}
    started = dict(event, EventId="S" + EVIL, EventStatus="Started" + EVIL, NotBefore="")
    watcher = {"held": True, "service": {"state": "active" + EVIL}, "problems": ["problem" + EVIL],
               "journal": {"entries": [{"time": "t" + EVIL, "event_id": "E" + EVIL, "event_type": "x" + EVIL,
                                        "state": "approved", "detail": "detail" + EVIL, "by": "who" + EVIL}],
                           "unparseable": 1},
               "holds": {"targets": [{"key": "guard" + EVIL, "phase": "holding" + EVIL}],
                         "reasons": [{"id": "id" + EVIL, "text": "text" + EVIL, "holder": "holder" + EVIL,
                                      "since": "since" + EVIL, "event_id": "E" + EVIL, "targets": ["guard" + EVIL]}]},
               "event_info": {"this_vm": "vm" + EVIL, "events": [event, started]}}
    hosts = {"host" + EVIL: {"watcher": watcher, "group": "group" + EVIL},
             "down" + EVIL: {"watcher": {"unreachable": True, "msg": "msg" + EVIL}},
             "nodata" + EVIL: {"watcher": dict(watcher, event_info={"failed": True, "msg": "imds" + EVIL})}}
    return build_report(hosts, now="2050-04-11T22:00:00Z", title="title" + EVIL)


render = hostile_fleet.render


@pytest.fixture(scope="module")
def report():
    return hostile_report()


def test_html_escapes_every_value(report):
    page = render("fleet-report.html.j2", report)
    assert "<x-evil" not in page
    parser = hostile.HtmlCensus(page)
    names = set(tag for tag, attrs in parser.tags)
    assert "x-evil" not in names
    assert [attrs for tag, attrs in parser.tags if "onerror" in attrs] == []
    assert sorted(set(tag for tag, attrs in parser.tags if tag == "script")) == ["script"]
    assert len([1 for tag, attrs in parser.tags if tag == "script"]) == 1
    text = "".join(parser.text)
    for value in ("title", "host", "down", "msg", "text", "holder", "who", "detail", "group", "problem", "d"):
        assert value + EVIL in text, "%s is shown as text, exactly" % value
    hosts_rows = [attrs.get("data-host") for tag, attrs in parser.tags if tag == "tr" and "data-host" in attrs]
    assert hosts_rows == ["host" + EVIL, "down" + EVIL, "nodata" + EVIL], "attribute values round-trip"


def test_markdown_keeps_every_value_in_its_cell(report):
    text = render("fleet-report.md.j2", report)
    assert "<x-evil" not in text and "&lt;x-evil" in text
    cell = "&lt;x-evil onerror=\"a\"&gt;'\"&amp;amp;&#124;&#96; "
    assert "| host%s | group%s | ok (pending) | " % (cell, cell) in text, "one line per row, newlines become spaces"
    for section, key, columns in (("Events", "events", 8), ("Hosts", "hosts", 9), ("Held agents", "holds", 7),
                                  ("Approvals", "approvals", 6), ("Hosts that could not be read", "unreachable", 3)):
        table = text.split("## %s (%d)" % (section, len(report[key])))[1].split("\n## ")[0]
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert rows and all(row.endswith("|") and row.count("|") == columns + 1 for row in rows), (section, rows)


def test_html_of_an_empty_fleet():
    page = render("fleet-report.html.j2", build_report({}, now="2050-04-11T22:00:00Z"))
    assert "No scheduled events." in page and "Nothing is held." in page and "Every host answered." in page


# --- the hostile table, every value in every field, in one report ----------------------------------------------

# What a Markdown table row of the template holds besides the values: the column breaks and plain words.
MARKDOWN_CONSTRUCTS = re.compile(r"[\\<>\[\]*_`~!]|://|(?i:www\.)")
NAMES = hostile.ids(hostile.strings("/"))


def table_report(canary):
    values = hostile.strings(canary)
    hosts = hostile_fleet.table_hosts(values)
    control_plane = hostile_fleet.control_plane(values[0].value, tag="cp/")
    return values, build_report(hosts, now=hostile_fleet.NOW, title=TEMPLATE_TITLE, control_plane=control_plane)


TEMPLATE_TITLE = hostile.TEMPLATE + "<script>document.title='pwned'</script>"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    canary = str(tmp_path_factory.mktemp("canary") / "ran")
    values, data = table_report(canary)
    return canary, values, data, render("fleet-report.html.j2", data), render("fleet-report.md.j2", data)


def normal(text):
    return displayable(text).replace("\r\n", "\n").replace("\r", "\n")


def test_html_of_the_hostile_table(table):
    canary, values, data, page, dummy = table
    hostile.assert_no_trace(canary, page)
    parser = hostile.HtmlCensus(page)
    assert set(tag for tag, attrs in parser.tags) <= hostile_fleet.TEMPLATE_TAGS, "no element comes from the data"
    assert not parser.handlers()
    assert [tag for tag, attrs in parser.tags].count("script") == 1
    text = "".join(parser.text).replace("\r\n", "\n").replace("\r", "\n")
    for case in values:
        assert normal(case.value) in text, "%s shows as text, intact" % case.name
    rows = [attrs["data-host"] for tag, attrs in parser.tags if tag == "tr" and "data-host" in attrs]
    assert rows == [h["host"] for h in data["hosts"]], "attribute values round-trip"


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_markdown_of_the_hostile_table(table, name):
    canary, values, data, dummy, text = table
    case = next(v for v in values if v.name == name)
    hostile.assert_no_trace(canary, text)
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    mine = [row for row in rows if row.startswith("| %s" % html.escape(case.name + "/", quote=False)
                                                  .replace("_", "&#95;").replace("!", "&#33;"))]
    assert mine, "the value's host has its rows"
    for row in mine:
        assert not MARKDOWN_CONSTRUCTS.search(re.sub("&(#[0-9]+|amp|lt|gt);", "", row)), row[:300]
        assert not re.search("@(?!&#8288;)", row), "no address or @mention forms: %s" % row[:300]
        cells = row.split(" | ")
        shown = [html.unescape(c.strip("| ")).replace("\u2060", "") for c in cells]
        if any(normal(case.value).replace("\n", " ").strip() in s for s in shown):
            break
    else:
        raise AssertionError("%s shows in its host's row, intact but for line breaks" % case.name)


def test_markdown_rows_keep_their_columns(table):
    dummy, dummy, data, dummy, text = table
    for header, count in (("Event | Type | Status", 8), ("Host | Group | Status", 9), ("Host | Held | Reason", 7),
                          ("When | Host | Event", 6), ("Host | Status | Message", 3), ("Problem", 1)):
        section = text.split("| %s" % header)[1].split("\n\n")[0]
        body = section.splitlines()[2:]
        assert body and all(row.count("|") == count + 1 for row in body), header
