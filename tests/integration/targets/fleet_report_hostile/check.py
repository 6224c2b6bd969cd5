# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the target's run left: nothing ran or rendered, the plan selects exactly the hosts whose VM its events
name, and the reports show every value as text. argv: the collection's root, the work directory."""

from __future__ import annotations

import glob
import json
import os
import re
import sys

ROOT = sys.argv[1]
WORK = sys.argv[2]
sys.path.insert(0, os.path.join(ROOT, "tests", "unit", "utils"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(ROOT))))
import hostile  # noqa: E402  pylint: disable=wrong-import-position,import-error
import hostile_fleet  # noqa: E402  pylint: disable=wrong-import-position,import-error
from ansible_collections.imds.scheduled_events.plugins.module_utils.fleet import displayable  # noqa: E402  pylint: disable=wrong-import-position


def read(name):
    with open(os.path.join(WORK, name), encoding="utf-8") as handle:
        return handle.read()


def main():
    expected = json.loads(read("expected.json"))
    outputs = [read("output.log"), read("plan.json")] + [read("report/fleet-report.%s" % k) for k in ("html", "md", "json")]
    hostile.assert_no_trace(os.path.join(WORK, "canary"), *outputs)

    report = json.loads(read("report/fleet-report.json"))
    rows = dict((r["host"], r) for r in report["hosts"])
    holds = dict((h["host"], h) for h in report["holds"])
    # ansible-core 2.19 and later refuse a module result holding a lone surrogate (that host fails, and counts as
    # busy); 2.14 to 2.18 let it through. Every other value arrives.
    refused = set(h for h in expected if rows[h]["status"] == "failed")
    assert all(re.search("[\ud800-\udfff]", expected[h]["value"]) for h in refused), refused
    plan = json.loads(read("plan.json"))
    named = dict((h, [e["event_id"]]) for h, e in expected.items() if e["value"].strip() and h not in refused)
    assert plan["by_host"] == named, "each event is approved from the one host whose VM it names: %s" % plan["by_host"]
    assert all(item["hosts"] == [item["approver"]] for item in plan["approve"]), plan["approve"]
    selected = sorted(os.path.basename(p)[len("selected-"):-len(".json")] for p in glob.glob(os.path.join(WORK, "selected-*")))
    assert selected == sorted(named), "the tasks ran on exactly the selected hosts"

    for host, item in expected.items():
        want = displayable(item["value"])
        if host in refused:
            continue
        assert rows[host]["group"] == want, host
        assert (holds[host]["text"], holds[host]["holder"], holds[host]["reason_id"]) == (want, want, want), host

    page = hostile.HtmlCensus(read("report/fleet-report.html"))
    assert set(tag for tag, attrs in page.tags) <= hostile_fleet.TEMPLATE_TAGS, "no element comes from the data"
    assert not page.handlers(), "no event handler"
    assert [tag for tag, attrs in page.tags].count("script") == 1
    text = "".join(page.text).replace("\r\n", "\n").replace("\r", "\n")
    for host, item in expected.items():
        if host in refused:
            continue
        want = displayable(item["value"]).replace("\r\n", "\n").replace("\r", "\n")
        assert want in text, "%s's value is shown as text" % host
    markdown = read("report/fleet-report.md")
    columns = {"Host | Group | Status": 9, "Host | Held | Reason": 7, "When | Host | Event": 6}
    for header, count in columns.items():
        table = markdown.split("| %s" % header)[1].split("\n\n")[0]
        for row in table.splitlines()[2:]:
            assert len(re.findall(r"(?<!\\)\|", row)) == count + 1, row[:200]
    print("fleet_report_hostile: %d hosts, %d events approved from exactly their hosts" % (len(expected), len(named)))


if __name__ == "__main__":
    main()
