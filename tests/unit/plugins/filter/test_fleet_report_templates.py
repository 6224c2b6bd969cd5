# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The fleet_report role's HTML and Markdown templates, rendered by Ansible's own templating from a
fleet_report_data report in which every string a host can influence is hostile markup.

Ansible's templating does not autoescape (an `{% autoescape %}` block is ignored), so the HTML
template escapes each value itself; this proves that none of them comes through as markup."""

from __future__ import annotations

import html.parser
import os

import pytest

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.imds.scheduled_events.plugins.module_utils.fleet import build_report

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "..", "..", "..", "..", "roles", "fleet_report", "templates")
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


def render(name, report):
    with open(os.path.join(TEMPLATES, name)) as handle:
        text = handle.read()
    templar = Templar(loader=DataLoader(), variables={"__fleet_report_data": report})
    return templar.template(trust_as_template(text))


class Tags(html.parser.HTMLParser):
    def __init__(self):
        super(Tags, self).__init__()
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def report():
    return hostile_report()


def test_html_escapes_every_value(report):
    page = render("fleet-report.html.j2", report)
    assert "<x-evil" not in page
    parser = Tags()
    parser.feed(page)
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
    cell = "&lt;x-evil onerror=\"a\">'\"&amp;amp;&#124;` "
    assert "| host%s | group%s | ok (pending) | " % (cell, cell) in text, "one line per row, newlines become spaces"
    for section, key, columns in (("Events", "events", 8), ("Hosts", "hosts", 9), ("Held agents", "holds", 7),
                                  ("Approvals", "approvals", 6), ("Hosts that could not be read", "unreachable", 3)):
        table = text.split("## %s (%d)" % (section, len(report[key])))[1].split("\n## ")[0]
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert rows and all(row.endswith("|") and row.count("|") == columns + 1 for row in rows), (section, rows)


def test_html_of_an_empty_fleet():
    page = render("fleet-report.html.j2", build_report({}, now="2050-04-11T22:00:00Z"))
    assert "No scheduled events." in page and "Nothing is held." in page and "Every host answered." in page
