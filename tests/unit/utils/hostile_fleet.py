# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The fleet report's inputs with a hostile value (tests/unit/utils/hostile.py) in every field that reaches its
outputs: the inventory name, the group hostvar, each field of an event (IMDS or Resource Graph), of a hold reason
and target, of a journal entry, the watcher's service state and problems, an unreachable host's message.

`hosts(value, tag)` gives the build_report() input of three hosts for one value; `tag` keeps the host names of
several values apart when they share one report: `table_hosts()` puts the whole table into one (the template tests
and the browser test), and `render()` renders the role's templates from it as the role does.
"""

from __future__ import annotations

import os
import uuid

NOT_BEFORE = "Mon, 11 Apr 2050 22:26:58 GMT"
# The elements the HTML template writes itself: any other one came from the data.
TEMPLATE_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "p", "time", "main", "div",
                 "section", "h2", "span", "input", "table", "thead", "tr", "th", "tbody", "td", "ul", "li", "footer",
                 "script"}
NOW = "2050-04-11T22:00:00Z"


def event_guid(tag):
    """A stable EventId of its own for each tag."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "hostile-fleet/%s" % tag)).upper()


def imds_event(value, tag):
    """Every field but EventId is the value (EventId must be one to merge by; event_id_host() carries it)."""
    return {"EventId": event_guid(tag), "EventType": value, "ResourceType": value, "Resources": [value, "vm-" + tag],
            "EventStatus": value, "NotBefore": value, "Description": value, "EventSource": value,
            "DurationInSeconds": value}


def watcher_result(value, tag):
    return {
        "held": True, "service": {"state": value}, "problems": [value],
        "journal": {"entries": [{"time": value, "event_id": value, "event_type": value, "state": "approved",
                                 "detail": value, "by": value}], "unparseable": 0},
        "holds": {"targets": [{"key": value, "phase": value}],
                  "reasons": [{"id": value, "text": value, "holder": value, "since": value, "event_id": value,
                               "targets": [value]}]},
        "event_info": {"this_vm": "vm-" + tag, "events": [imds_event(value, tag)]},
    }


def host_name(value, tag):
    """The inventory name: the value itself when it is one string (a VM named `all`, `*`, `<script>`...)."""
    return value if isinstance(value, str) and tag == "" else "%s%s" % (tag, value)


def hosts(value, tag=""):
    """The build_report() input: a host named after the value with the value everywhere, a host whose IMDS lists
    an event with the value as its EventId, and an unreachable host whose message is the value."""
    return {
        host_name(value, tag): {"watcher": watcher_result(value, tag), "group": value},
        "%sid-host" % tag: {"watcher": dict(watcher_result("x", tag + "id"), event_info={
            "this_vm": "vm-%sid" % tag,
            "events": [{"EventId": value, "EventType": "Reboot", "Resources": ["vm-%sid" % tag],
                        "EventStatus": "Scheduled", "NotBefore": NOT_BEFORE}]})},
        "%sdown" % tag: {"watcher": {"unreachable": True, "msg": value}},
    }


def control_plane(value, tag=""):
    """A control_plane_event_info result whose Resource Graph row carries the value in every field."""
    event = dict(imds_event(value, tag + "cp"), EventStatus="Completed")
    event["owner"] = {"subscription": value, "resource_group": value, "vm": value}
    return {"events": [event], "problems": [{"id": value, "problem": value}]}


def table_hosts(values):
    """Every value of the table (a list of hostile.HostileValue) in one build_report() input."""
    found = {}
    for case in values:
        found.update(hosts(case.value, tag="%s/" % case.name))
    return found


TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "roles", "fleet_report",
                         "templates")


def render(name, report):
    """The fleet_report role's template `name`, rendered from `report` by Ansible's own templating (the template is
    trusted, the report is data, as the role's lookup('template') renders it)."""
    from ansible.parsing.dataloader import DataLoader  # pylint: disable=import-outside-toplevel
    from ansible.template import Templar, trust_as_template  # pylint: disable=import-outside-toplevel

    with open(os.path.join(TEMPLATES, name), encoding="utf-8") as handle:
        text = handle.read()
    templar = Templar(loader=DataLoader(), variables={"__fleet_report_data": report})
    return str(templar.template(trust_as_template(text)))
