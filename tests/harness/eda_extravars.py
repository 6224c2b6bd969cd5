"""The shipped EDA playbooks, run the way ansible-rulebook runs them, with hostile events: one check for every
ansible-core (the integration target eda_playbooks on the matrix cores, test_pull_packaged_ansible.py with the
ansible-core Debian 12 and 13 package).

How ansible-rulebook 1.3.2 runs a playbook (ansible_rulebook/action/run_playbook.py, ansible_runner 2.4's
config/runner.py and utils): it writes `yaml.dump({"ansible_eda": {"ruleset", "rule", "event"}})` (PyYAML's default
dumper) to <private data dir>/env/extravars, copies the inventory into <private data dir>/inventory and the playbook
(an FQCN) into <private data dir>/project, and ansible-runner starts, in the project directory,

    ansible-playbook -i <inventory> --limit <the rulebook's hosts, comma-joined> -e @<...>/env/extravars <playbook>

ansible-core loads that file as trusted templates. Each case below does the same with an event shaped as the source
sends it, whose every field holds every string of the hostile table (hostile.joined) and whose lists hold each of
them as an element too; only what the case is about stays real (the change, a pending EventId). It then checks that
nothing ran and nothing was rendered (hostile.assert_no_trace over every output, page and record), that the values
arrived intact where the playbook passes them on (the page, the site's tasks), and which hosts the event selected.

    python eda_extravars.py --collection DIR --imds-endpoint URL --imds-control URL --pending EVENT_ID --workdir DIR

`--pending`: an event of the VM behind --imds-endpoint that is Scheduled, for drain_and_approve to approve. Exits 0
when every case holds, else 1 with what failed. Standard library, PyYAML (ansible-core's own dependency) and two files
of tests/ (harness/eda.py, unit/utils/hostile.py): it runs on a VM's own Python too (Debian 12's 3.11).
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request

import yaml

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from harness.eda import LOCAL, Pager, record_tasks, records, write_inventory  # noqa: E402  pylint: disable=wrong-import-position
from unit.utils import hostile  # noqa: E402  pylint: disable=wrong-import-position

# ansible-core cannot load extra vars that hold a lone surrogate (libyaml refuses the \\uDCFF that yaml.dump writes),
# so no playbook would run at all: the sources never queue one (module_utils/sources.valid_text: U+FFFD instead).
UNLOADABLE = ("lone-surrogate",)
EXAMPLE_MARK = "<!-- tested: tests/harness/eda_extravars.py runs the next yaml block"
GUID = "9B1D2C3E-0000-4000-8000-0000000000AA"
# What the sources send (docs/eda.md "The events"), with the meta ansible-rulebook adds: the shapes whose every
# leaf the cases make hostile.
META = {"source": {"name": "Scheduled events", "type": "imds.scheduled_events.imds"},
        "received_at": "2050-04-11T22:00:00.000000Z", "uuid": "0b3f2a7e-5c1d-4e8a-9f00-000000000001"}
SCHEDULED = {"EventId": GUID, "EventType": "Reboot", "ResourceType": "VirtualMachine", "Resources": ["web_0"],
             "EventStatus": "Scheduled", "NotBefore": "Mon, 11 Apr 2050 22:26:58 GMT",
             "Description": "Host server is undergoing maintenance.", "EventSource": "Platform",
             "DurationInSeconds": -1, "not_before": "2050-04-11T22:26:58Z", "duration_seconds": -1,
             "seconds_until_start": 900, "affects_this_vm": True, "shared": False, "scope": "this_vm",
             "problems": ["a problem"]}
IMDS_EVENT = {"change": "appeared", "event_id": GUID, "scheduled_event": SCHEDULED, "outcome": None,
              "detail": "Reboot Scheduled for web_0", "source": "imds", "vm": "web_0", "changed": ["Description"],
              "meta": META}
FLEET_EVENT = dict(IMDS_EVENT, source="event_grid", delivery_id="8096d031-6df5-4a15-b96c-4bc6788ea6ac",
                   scheduled_event=dict(SCHEDULED, EventType="Redeploy", finished=False, location="westeurope",
                                        source="event_grid", row_id="/subscriptions/x/resourceGroups/prod-web/...",
                                        owner={"id": "/subscriptions/x/...", "kind": "availabilitySets",
                                               "name": "web-as", "resource_group": "prod-web", "subscription": "x"}))
del FLEET_EVENT["vm"]


def hostile_event(shape, text, values, **keep):
    """`shape` with every leaf (string, number, boolean, null) replaced by `text`, and every list by `values`; `keep`
    (top-level keys) holds the values that stay as given. event_id is the EventId verbatim, as the sources give it."""
    def walk(value):
        if isinstance(value, dict):
            return dict((key, walk(item)) for key, item in value.items())
        if isinstance(value, list):
            return list(values)
        return text
    out = walk(shape)
    out.update(keep)
    out["event_id"] = out["scheduled_event"]["EventId"]
    return out


class Checks(object):
    """The cases' findings, and every output for the final look for traces."""

    def __init__(self, canary):
        self.canary = canary
        self.failures = []
        self.outputs = []

    def expect(self, case, condition, what, output=""):
        if not condition:
            self.failures.append("%s: %s%s" % (case, what, "\n--- output:\n" + output[-6000:] if output else ""))


class Runner(object):
    """ansible-rulebook's run_playbook, reproduced: one private data dir per run."""

    def __init__(self, collection, inventory, workdir, env):
        self.collection = collection
        self.inventory = inventory
        self.workdir = workdir
        self.env = env

    def run(self, playbook, limit, event, text=None):
        """Run the collection's `playbook` (or, given its `text`, a playbook of that name) with the event."""
        data_dir = tempfile.mkdtemp(prefix="eda", dir=self.workdir)
        for part in ("env", "inventory", "project"):
            os.mkdir(os.path.join(data_dir, part))
        extravars = os.path.join(data_dir, "env", "extravars")
        with open(extravars, "w", encoding="utf-8") as handle:  # yaml.dump writes ASCII, escaping the rest
            handle.write(yaml.dump({"ansible_eda": {"ruleset": "Hostile events", "rule": "Run " + playbook,
                                                    "event": event}}))
        inventory = os.path.join(data_dir, "inventory", os.path.basename(self.inventory))
        shutil.copy(self.inventory, inventory)
        if text is None:
            name = "imds.scheduled_events." + playbook
            shutil.copy(os.path.join(self.collection, "playbooks", playbook + ".yml"),
                        os.path.join(data_dir, "project", name))
        else:
            name = playbook
            with open(os.path.join(data_dir, "project", name), "w", encoding="utf-8") as handle:
                handle.write(text)
        argv = ["ansible-playbook", "-i", inventory, "--limit", limit, "-e", "@" + extravars, name]
        proc = subprocess.run(argv, cwd=os.path.join(data_dir, "project"), env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=600, check=False)
        return proc.returncode, proc.stdout.decode("utf-8", "replace")


def doc_example(collection):
    """The playbook docs/eda.md shows in "Event data is data": the yaml block after its `tested` mark."""
    with open(os.path.join(collection, "docs", "eda.md"), encoding="utf-8") as handle:
        text = handle.read()
    after = text.split(EXAMPLE_MARK, 1)[1]
    return after.split("```yaml\n", 1)[1].split("\n```", 1)[0] + "\n"


def approvals(control, event_id):
    with urllib.request.urlopen("%s/approvals?event=%s" % (control, event_id), timeout=30) as answer:
        return json.loads(answer.read().decode("utf-8"))["approvals"]


def run_cases(args):
    workdir = pathlib.Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    canary = str(workdir / "canary")
    checks = Checks(canary)
    text = hostile.joined(canary, leave_out=UNLOADABLE)
    values = [case.value for case in hostile.strings(canary) if case.name not in UNLOADABLE]
    pager = Pager()
    try:
        tasks = dict((name, record_tasks(workdir, name)) for name in ("drained", "restored", "checked"))
        site = {"drain_tasks": str(tasks["drained"][0]), "restore_tasks": str(tasks["restored"][0]),
                "post_check_tasks": str(tasks["checked"][0]), "post_check_timeout": 60}
        notes = workdir / "notes"
        notes.mkdir()
        hosts = dict((host, dict(LOCAL, maintenance_note=str(notes / (host + ".json")), **site))
                     for host in ("localhost", "web_0", "db_0"))
        hosts["localhost"]["pager_url"] = pager.url
        inventory = write_inventory(workdir / "inventory.json", {"all": hosts, "web": {"web_0": {}}})
        env = dict(os.environ, IMDS_ENDPOINT=args.imds_endpoint, ANSIBLE_NOCOLOR="1")
        runner = Runner(args.collection, str(inventory), str(workdir), env)

        # The fleet: a page whose every value is hostile, posted intact.
        event = hostile_event(FLEET_EVENT, text, values, change="appeared", outcome=None)
        code, out = runner.run("page_on_call", "localhost", event)
        case = "page_on_call, every field hostile"
        checks.outputs.append(out)
        checks.expect(case, code == 0 and len(pager.pages) == 1, "one page, and exit 0 (got %d page(s), exit %s)"
                      % (len(pager.pages), code), out)
        for arrival in pager.pages[:1]:
            page = arrival["page"]
            checks.expect(case, page.get("scheduled_event") == event["scheduled_event"],
                          "the page's scheduled_event is not the event's, value for value")
            checks.expect(case, page.get("event_id") == text and page.get("change") == "appeared",
                          "the page's event_id or change is not the event's")
            checks.expect(case, text in page.get("summary", ""), "the summary does not quote the values intact")
        checks.outputs.extend(json.dumps(p["page"]) for p in pager.pages)

        # An event that is not one of the sources' is refused before anything uses it.
        code, out = runner.run("page_on_call", "localhost", dict(event, change=text))
        checks.outputs.append(out)
        checks.expect("page_on_call, a hostile change", code != 0 and len(pager.pages) == 1 and
                      "is not an event of this collection's sources" in out, "not refused by eda_event", out)

        # Completed: the VMs it lists, matched by name, never as host patterns. WEB_0 names web_0 and the value
        # "localhost" names localhost; all, *, web:&db, !localhost, ~.*, web[0:9], "web_0,db_0" name nothing.
        event = hostile_event(FLEET_EVENT, text, values + ["WEB_0"], change="gone", outcome="completed")
        code, out = runner.run("post_maintenance_check", "all", event)
        case = "post_maintenance_check, every field hostile, host patterns as VM names"
        checks.outputs.append(out)
        checked = records(tasks["checked"][1])
        checks.expect(case, code == 0, "exit %s" % code, out)
        checks.expect(case, sorted(r["host"] for r in checked) == ["localhost", "web_0"],
                      "checked %s, not exactly localhost and web_0" % sorted(r["host"] for r in checked), out)
        checks.expect(case, all(r["event_id"] == event["event_id"] for r in checked), "the checks did not get the event intact")

        # On the VM: drained, then the hostile EventId refused by event_approve, before any request.
        event = hostile_event(IMDS_EVENT, text, values, change="appeared", outcome=None)
        code, out = runner.run("drain_and_approve", "web", event)
        case = "drain_and_approve, every field hostile"
        checks.outputs.append(out)
        drained = records(tasks["drained"][1])
        checks.expect(case, [(r["host"], r["event_id"]) for r in drained] == [("web_0", event["event_id"])],
                      "the drain tasks did not run once on web_0 with the event intact", out)
        checks.expect(case, code != 0 and "not an EventId" in out, "event_approve did not refuse the EventId", out)

        # Every field hostile but a real pending EventId: that event, and only it, is approved.
        pending = dict(event, event_id=args.pending, scheduled_event=dict(event["scheduled_event"], EventId=args.pending))
        before = approvals(args.imds_control, args.pending)
        code, out = runner.run("drain_and_approve", "web", pending)
        case = "drain_and_approve, every field hostile but the EventId"
        checks.outputs.append(out)
        checks.expect(case, code == 0, "exit %s" % code, out)
        checks.expect(case, len(approvals(args.imds_control, args.pending)) == len(before) + 1,
                      "this run did not approve the pending event once", out)

        event = hostile_event(IMDS_EVENT, text, values, change="gone", outcome="completed")
        code, out = runner.run("restore_after_maintenance", "web", event)
        case = "restore_after_maintenance, every field hostile"
        checks.outputs.append(out)
        restored = records(tasks["restored"][1])
        checks.expect(case, code == 0 and [(r["host"], r["event_id"], r["change"]) for r in restored] ==
                      [("web_0", event["event_id"], "gone")], "the restore tasks did not run once on web_0 with the event", out)

        # docs/eda.md's pattern for a playbook of one's own, in a fleet rulebook's run (hosts: all)
        event = hostile_event(FLEET_EVENT, text, values + ["WEB_0"], change="appeared", outcome=None)
        code, out = runner.run("example.yml", "all", event, text=doc_example(args.collection))
        case = "docs/eda.md's example, every field hostile"
        checks.outputs.append(out)
        noted = dict((path.stem, json.loads(path.read_text(encoding="utf-8"))) for path in notes.glob("*.json"))
        checks.expect(case, code == 0 and sorted(noted) == ["localhost", "web_0"],
                      "exit %s, notes on %s, not exactly on localhost and web_0" % (code, sorted(noted)), out)
        checks.expect(case, all(note == event for note in noted.values()), "a note is not the event, value for value")

        checks.outputs.extend(json.dumps(records(directory)) for dummy, directory in tasks.values())
    finally:
        pager.stop()
    found = hostile.traces(canary, *checks.outputs)
    checks.failures.extend("hostile values left a trace: %s" % f for f in found)
    return checks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--collection", required=True, help="the collection's root (it has playbooks/)")
    parser.add_argument("--imds-endpoint", required=True)
    parser.add_argument("--imds-control", required=True, help="the simulator's control API")
    parser.add_argument("--pending", required=True, help="a Scheduled event of that VM, to be approved")
    parser.add_argument("--workdir", required=True)
    checks = run_cases(parser.parse_args(argv))
    if checks.failures:
        sys.stderr.write("\n\n".join(checks.failures) + "\n")
        return 1
    print("every case held: nothing ran or was rendered; pages, checks, drains and restores got the events intact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
