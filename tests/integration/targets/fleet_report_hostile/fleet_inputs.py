# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Writes the target's inventory (one local host per hostile value) and each host's canned watcher_info result (the
value in every field; the VM's name and the availability set it reports are the value too). argv: the collection's
root, the work directory."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(sys.argv[1], "tests", "unit", "utils"))
import hostile  # noqa: E402  pylint: disable=wrong-import-position,import-error
import hostile_fleet  # noqa: E402  pylint: disable=wrong-import-position,import-error


def main():
    work = sys.argv[2]
    canary = os.path.join(work, "canary")
    os.makedirs(os.path.join(work, "results"))
    lines = ["all:", "  vars:", "    ansible_connection: local",
             "    ansible_python_interpreter: \"{{ ansible_playbook_python }}\"", "  hosts:"]
    expected = {}
    for case in hostile.strings(canary):
        host = "h-%s" % case.name
        lines.append("    %s:" % host)
        result = dict(hostile_fleet.watcher_result(case.value, case.name), availability_set=case.value)
        event = dict(hostile_fleet.imds_event(case.value, case.name), Resources=[case.value])
        result["event_info"] = {"this_vm": case.value, "events": [event]}
        with open(os.path.join(work, "results", host + ".json"), "w", encoding="utf-8") as handle:
            json.dump(result, handle)
        expected[host] = {"name": case.name, "value": case.value, "event_id": event["EventId"]}
    with open(os.path.join(work, "inventory.yml"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(os.path.join(work, "expected.json"), "w", encoding="utf-8") as handle:
        json.dump(expected, handle)


if __name__ == "__main__":
    main()
