# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The fleet report end to end, on real parts.

- 200 simulated VMs in ONE simulator process (ten availability sets and standalone VMs), each an
  inventory host with `ansible_connection: local` reading its own simulated IMDS, its own hold
  record (written with the hold library) and its own watcher journal; two hosts that cannot be
  reached over ssh, and one whose IMDS does not answer.
- The fleet_report role runs twice with real ansible-playbook (forks 20). A real SMTP server on
  loopback (aiosmtpd) and a loopback http.server webhook receive the alert of the first run and
  nothing from the second, unchanged, run. Secrets appear nowhere in the output or the files.
- One report with every hostile value (tests/unit/utils/hostile.py) in every field, opened in the same Chromium (no
  script of the data runs, no request, every value shows as text) and rendered by GitHub's cmark-gfm (no link,
  markup or HTML from the data).
- The HTML report is opened in headless Chromium (Debian's package): checked through the DOM
  (--dump-dom, and a DevTools session that clicks column headers to sort), and screenshotted
  (--screenshot) into docs/images/fleet-report.png.
- The rolling-approval playbook drains, approves and waits in waves on a small fleet, and the
  simulator's own record shows that no availability set ever had more hosts in maintenance than allowed.

Needs root (hold records are trusted only when root owns them; Chromium is installed with apt-get
when missing). Without root, or without aiosmtpd or Chromium, it skips loudly; CI=true fails a skip.
"""

from __future__ import annotations

import email
import email.policy
import html.parser
import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLEET = Path(__file__).resolve().parent / "fleet"
BIN = Path(sys.executable).parent
SCREENSHOT = ROOT / "docs" / "images" / "fleet-report.png"

sys.path.insert(0, str(FLEET))
sys.path.insert(0, str(ROOT / "simulator"))
sys.path.insert(0, str(ROOT / "tests" / "unit" / "utils"))
import browser  # noqa: E402  pylint: disable=wrong-import-position,import-error
import hostile  # noqa: E402  pylint: disable=wrong-import-position,import-error
import hostile_fleet  # noqa: E402  pylint: disable=wrong-import-position,import-error
import loopback  # noqa: E402  pylint: disable=wrong-import-position,import-error
from harness.ansible_env import COLLECTIONS, ansible_env as harness_ansible_env  # noqa: E402  pylint: disable=wrong-import-position
from imds_simulator import ControlClient  # noqa: E402  pylint: disable=wrong-import-position
from harness.ansible_env import ensure_collection  # noqa: E402  pylint: disable=wrong-import-position

sys.path.insert(0, str(ensure_collection()))
from ansible_collections.imds.scheduled_events.plugins.module_utils.fleet import build_report  # noqa: E402  pylint: disable=wrong-import-position,import-error

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the fleet report suite needs root (hold records are "
                                                          "trusted only when root owns them)")

SETS = 10
PER_SET = 19
SOLO = 10
FREEZE = "F0000000-0000-4000-8000-000000000001"
REBOOT = "F0000000-0000-4000-8000-000000000002"
PAIR = "F0000000-0000-4000-8000-000000000003"
PREEMPT = "F0000000-0000-4000-8000-000000000004"
STARTED = "F0000000-0000-4000-8000-000000000005"
INJECTED = ["F0000000-0000-4000-8000-0000000000A1", "F0000000-0000-4000-8000-0000000000A2"]
ALL_EVENTS = {FREEZE, REBOOT, PAIR, PREEMPT, STARTED} | set(INJECTED)
HOSTILE = "kernel <script>alert('x')</script> & <b>patching</b> | now"
UNREACHABLE = ["down-01", "down-02"]
NO_IMDS = "imds-down"


def vm_names():
    names = ["as%d-vm%02d" % (s, i) for s in range(SETS) for i in range(PER_SET)]
    return names + ["solo-%02d" % i for i in range(SOLO)]


def ansible_env(**extra):
    return harness_ansible_env(PYTHONDONTWRITEBYTECODE="1", **extra)


class Simulator(object):
    """The bundled simulator as a process, on ephemeral loopback ports."""

    def __init__(self, scenario, workdir, *args):
        self.ready = workdir / "ready.json"
        self.log = open(workdir / "simulator.log", "wb")
        env = dict(ansible_env(), PYTHON=sys.executable)
        self.proc = subprocess.Popen([str(ROOT / "simulator" / "imds-simulator"), "--scenario", str(scenario),
                                      "--port", "0", "--control-port", "0", "--ready-file", str(self.ready)]
                                     + list(args), env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (self.ready.exists() and self.ready.stat().st_size):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the simulator did not start: %s" % (workdir / "simulator.log").read_text())
            time.sleep(0.1)
        info = json.loads(self.ready.read_text())
        self.control = ControlClient(info["control"])
        self.vms = info["vms"]
        self.arm = info.get("arm")  # with --arm-port: the control-plane face, and its managed-identity secret
        self.identity_header = info.get("identity_header")

    def call(self, method, path, body=None):
        return self.control.call(method, path, body)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- receivers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smtp():
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    box, controller = loopback.start_mailbox(controller_mod)
    controller.start()
    yield box
    controller.stop()


@pytest.fixture(scope="module")
def webhook():
    hook = loopback.WebhookReceiver(path="/hooks/fleet")
    yield hook
    hook.stop()


# --- the fleet ----------------------------------------------------------------------------


def scenario():
    vms = [{"name": "as%d-vm%02d" % (s, i), "availability_set": "as-%d" % s, "update_domain": i % 5,
            "fault_domain": i % 2} for s in range(SETS) for i in range(PER_SET)]
    vms += [{"name": "solo-%02d" % i} for i in range(SOLO)]
    events = [
        {"id": FREEZE, "type": "Freeze", "availability_set": "as-0", "notice": 900},
        {"id": REBOOT, "type": "Reboot", "resources": ["as1-vm03"], "notice": 1800},
        {"id": PAIR, "type": "Redeploy", "resources": ["as2-vm00", "as2-vm01"], "notice": 600},
        {"id": PREEMPT, "type": "Preempt", "resources": ["solo-03"], "notice": 30},
        {"id": STARTED, "type": "Reboot", "resources": ["as3-vm05"], "initial_status": "Started"},
    ]
    return {"name": "fleet-report", "clock": "manual", "seed": 61, "vms": vms, "events": events}


def hold(state_file, reason_id, text, event_id=None, holder="imds-watcher", command="myjob"):
    sys.path.insert(0, str(COLLECTIONS))
    from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.backends import (  # pylint: disable=import-outside-toplevel
        CommandBackend, GuardBackend)
    from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import (  # pylint: disable=import-outside-toplevel
        HoldManager, Reason)
    os.makedirs(os.path.dirname(state_file), mode=0o755, exist_ok=True)
    os.chmod(os.path.dirname(state_file), 0o755)
    targets = [GuardBackend.target(wait_timeout=0), CommandBackend.target(command, ["true"], ["true"])]
    outcome = HoldManager(state_file=state_file).hold(Reason(reason_id, text, event_id=event_id, holder=holder),
                                                      targets)
    assert not outcome.failed, outcome.errors


HOLDS = {
    "as0-vm00": [(FREEZE, "Freeze pending: live migration", FREEZE, "imds-watcher")],
    "as0-vm01": [(FREEZE, "Freeze pending: live migration", FREEZE, "imds-watcher")],
    "as2-vm00": [(PAIR, "Redeploy pending", PAIR, "imds-watcher"), ("CHG-77", "database failover drill", None, "bob")],
    "solo-01": [("CHG-1234", HOSTILE, None, "alice")],
}
JOURNALS = {
    "as3-vm05": [{"time": "2026-04-11T22:00:00Z", "event_id": STARTED, "event_type": "Reboot", "state": "detected",
                  "detail": "new event"},
                 "this line is not JSON",
                 {"time": "2026-04-11T22:00:02Z", "event_id": STARTED, "event_type": "Reboot", "state": "approved",
                  "detail": "policy reboot-after-hooks", "by": "policy reboot-after-hooks"}],
    "as0-vm01": [{"time": "2026-04-11T21:59:00Z", "event_id": FREEZE, "event_type": "Freeze", "state": "approved",
                  "detail": "approved by hand", "by": "alice"}],
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet-report")
    os.chmod(str(work), 0o755)
    scenario_file = work / "scenario.json"  # JSON is YAML
    scenario_file.write_text(json.dumps(scenario()))
    sim = Simulator(scenario_file, work)
    try:
        for index, event_id in enumerate(INJECTED):
            sim.call("POST", "/events", {"id": event_id, "type": ["Reboot", "Redeploy"][index],
                                         "resources": [["as4-vm07"], ["solo-05"]][index], "notice": 1200})
        hosts = {}
        for name in vm_names():
            home = work / "hosts" / name
            hosts[name] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                           "imds_endpoint": sim.vms[name], "fleet_report_hold_state_file": str(home / "holds.json"),
                           "fleet_report_journal_file": str(home / "journal.jsonl")}
            if name.startswith("as"):
                hosts[name]["availability_set"] = "as-" + name[2:name.index("-")]
        for name, reasons in HOLDS.items():
            for reason_id, text, event_id, holder in reasons:
                hold(hosts[name]["fleet_report_hold_state_file"], reason_id, text, event_id, holder)
        for name, entries in JOURNALS.items():
            os.makedirs(os.path.dirname(hosts[name]["fleet_report_journal_file"]), mode=0o755, exist_ok=True)
            with open(hosts[name]["fleet_report_journal_file"], "w") as handle:
                handle.write("\n".join(e if isinstance(e, str) else json.dumps(e) for e in entries) + "\n")
        for name in UNREACHABLE:
            hosts[name] = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": loopback.free_port(),
                           "ansible_user": "nobody",
                           "ansible_ssh_common_args": "-o ConnectTimeout=5 -o BatchMode=yes -o UserKnownHostsFile=/dev/null"}
        hosts[NO_IMDS] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                          "imds_endpoint": "http://127.0.0.1:%d" % loopback.free_port(), "fleet_report_imds_retries": 0,
                          "fleet_report_imds_first_timeout": 3, "fleet_report_imds_timeout": 3,
                          "fleet_report_hold_state_file": str(work / "hosts" / NO_IMDS / "holds.json"),
                          "fleet_report_journal_file": str(work / "hosts" / NO_IMDS / "journal.jsonl")}
        inventory = work / "inventory.json"
        inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
        yield {"work": work, "sim": sim, "inventory": inventory, "hosts": hosts}
    finally:
        sim.stop()


def run_playbook(playbook, inventory, extra, *options, forks=20, env=None):
    command = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), "-f", str(forks),
               "-e", "@%s" % extra] + list(options)
    return subprocess.run(command, env=env or ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=600, check=False, universal_newlines=True)


@pytest.fixture(scope="module")
def runs(fleet, smtp, webhook):
    """Two runs of the role: the first alerts about everything, the second (nothing changed) sends nothing."""
    work = fleet["work"]
    secret = "whsec-" + secrets.token_hex(16)
    password = "smtp-" + secrets.token_hex(16)  # sent nowhere (no login without TLS); must be logged nowhere either
    extra = work / "extra.json"
    extra.write_text(json.dumps({
        "fleet_report_dest_dir": str(work / "report"), "fleet_report_title": "Simulated fleet",
        "fleet_report_group_by": "availability_set", "fleet_report_url": "file://%s" % (work / "report"),
        "fleet_report_smtp_host": "127.0.0.1", "fleet_report_smtp_port": smtp.port,
        "fleet_report_smtp_to": ["oncall@example.test", "ops@example.test"],
        "fleet_report_smtp_from": "fleet@example.test", "fleet_report_smtp_password": password,
        "fleet_report_webhook_url": webhook.url, "fleet_report_webhook_secret_header": "X-Fleet-Secret",
        "fleet_report_webhook_secret": secret, "fleet_report_webhook_headers": {"X-Team": "platform"},
    }))
    playbook = ROOT / "playbooks" / "fleet_report.yml"
    outcome = {"secret": secret, "password": password}
    outcome["first"] = run_playbook(playbook, fleet["inventory"], extra, "-v")
    outcome["mail_after_first"] = list(smtp.messages)
    outcome["hooks_after_first"] = list(webhook.requests)
    outcome["report"] = json.loads((work / "report" / "fleet-report.json").read_text())
    outcome["second"] = run_playbook(playbook, fleet["inventory"], extra, "-v")
    outcome["mail_after_second"] = list(smtp.messages)
    outcome["hooks_after_second"] = list(webhook.requests)
    return outcome


def check_run(proc):
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


def test_every_host_is_reported(fleet, runs):
    check_run(runs["first"])
    report = runs["report"]
    names = vm_names()
    assert [h["host"] for h in report["hosts"]] == list(fleet["hosts"]), "inventory order"
    by_host = dict((h["host"], h) for h in report["hosts"])
    assert all(by_host[n]["status"] == "ok" for n in names)
    summary = report["summary"]
    assert summary["hosts"] == len(names) + 3 and summary["ok"] == len(names) + 1 and summary["unreachable"] == 2
    assert sorted(u["host"] for u in report["unreachable"]) == UNREACHABLE
    assert all(u["status"] == "unreachable" and u["msg"] for u in report["unreachable"])
    assert by_host[NO_IMDS]["status"] == "ok" and "127.0.0.1" in by_host[NO_IMDS]["events_error"]
    assert by_host["as1-vm00"]["group"] == "as-1" and by_host["solo-00"]["group"] is None


def test_events_are_merged_across_hosts(runs):
    report = runs["report"]
    events = dict((e["event_id"], e) for e in report["events"])
    assert set(events) == ALL_EVENTS
    assert events[FREEZE]["hosts"] == ["as0-vm%02d" % i for i in range(PER_SET)] and events[FREEZE]["shared"]
    assert sorted(events[FREEZE]["seen_by"]) == ["as0-vm%02d" % i for i in range(PER_SET)]
    assert events[PAIR]["hosts"] == ["as2-vm00", "as2-vm01"] and events[PAIR]["event_type"] == "Redeploy"
    assert len(events[PAIR]["seen_by"]) == PER_SET, "availability-set peers see it too"
    assert events[STARTED]["status"] == "Started" and events[STARTED]["seconds_until_start"] == 0
    assert events[REBOOT]["seconds_until_start"] > events[PAIR]["seconds_until_start"] > 0
    assert report["events"][0]["event_id"] == STARTED, "started first, then soonest NotBefore"
    by_host = dict((h["host"], h) for h in report["hosts"])
    assert by_host["as3-vm05"]["in_progress"] and by_host["as4-vm07"]["event_ids"] == [INJECTED[0]]
    assert by_host["as4-vm07"]["pending"] and by_host["as4-vm07"]["seconds_until_next"] > 0
    assert by_host["as1-vm00"]["event_ids"] == [] and not by_host["as1-vm00"]["pending"]
    assert report["summary"]["hosts_pending"] == PER_SET + 1 + 2 + 1 + 2


def test_holds_and_approvals(runs):
    report = runs["report"]
    holds = dict(((h["host"], h["reason_id"]), h) for h in report["holds"])
    assert sorted(holds) == sorted((host, r[0]) for host, reasons in HOLDS.items() for r in reasons)
    assert holds[("solo-01", "CHG-1234")]["text"] == HOSTILE and holds[("solo-01", "CHG-1234")]["holder"] == "alice"
    assert holds[("as0-vm00", FREEZE)]["event_id"] == FREEZE
    assert holds[("as0-vm00", FREEZE)]["targets"] == ["command:myjob", "guard"]
    by_host = dict((h["host"], h) for h in report["hosts"])
    assert by_host["as2-vm00"]["held"] and by_host["as2-vm00"]["hold_reasons"] == ["CHG-77", PAIR]
    assert by_host["as2-vm01"]["held"] is False
    assert [(a["host"], a["event_id"], a["by"]) for a in report["approvals"]] == [
        ("as0-vm01", FREEZE, "alice"), ("as3-vm05", STARTED, "policy reboot-after-hooks")]
    assert by_host["as3-vm05"]["journal_unparseable"] == 1


def test_markdown_has_the_same_data(fleet, runs):
    text = (fleet["work"] / "report" / "fleet-report.md").read_text()
    assert text.startswith("# Simulated fleet\n")
    for event_id in ALL_EVENTS:
        assert "\n| %s | " % event_id in text
    for name in vm_names() + UNREACHABLE + [NO_IMDS]:
        assert "\n| %s | " % name in text
    assert "kernel &lt;script&gt;alert('x')&lt;/script&gt; &amp; &lt;b&gt;patching&lt;/b&gt; &#124; now" in text


def test_first_run_alerts_by_email(runs):
    mail = runs["mail_after_first"]
    assert len(mail) == 1, mail
    message = mail[0]
    assert message["from"] == "fleet@example.test"
    assert sorted(message["to"]) == ["oncall@example.test", "ops@example.test"]
    data = message["data"]
    parsed = email.message_from_string(data, policy=email.policy.default)
    assert parsed["Subject"] == "[Simulated fleet] 7 new events; 5 new holds; 2 hosts newly unreachable"
    data = parsed.get_content()
    for event_id in ALL_EVENTS:
        assert event_id in data
    assert "down-01 (unreachable)" in data and "down-02 (unreachable)" in data
    assert "Freeze %s (Scheduled) NotBefore" % FREEZE in data and "as0-vm00, as0-vm01" in data
    assert "solo-01: command:myjob, guard held by alice since" in data and "CHG-1234" in data


def test_first_run_alerts_the_webhook(runs):
    hooks = runs["hooks_after_first"]
    assert len(hooks) == 1
    request = hooks[0]
    headers = dict((k.lower(), v) for k, v in request["headers"].items())
    assert request["path"] == "/hooks/fleet" and headers["content-type"] == "application/json"
    assert headers["x-fleet-secret"] == runs["secret"] and headers["x-team"] == "platform"
    payload = json.loads(request["body"])
    assert payload["counts"] == {"new_events": 7, "gone_events": 0, "started_events": 0, "finished_events": 0, "new_holds": 5,
                                 "released_holds": 0, "newly_unreachable": 2, "reachable_again": 0}
    assert sorted(e["event_id"] for e in payload["changes"]["new_events"]) == sorted(ALL_EVENTS)
    assert payload["summary"]["hosts"] == len(vm_names()) + 3 and payload["text"].startswith("Simulated fleet, ")
    assert payload["report"].startswith("file://")


def test_second_run_without_changes_sends_nothing(runs):
    check_run(runs["second"])
    assert len(runs["mail_after_second"]) == 1 and len(runs["hooks_after_second"]) == 1
    assert "'email': 'nothing new'" in runs["second"].stdout and "'webhook': 'nothing new'" in runs["second"].stdout
    assert "changes: none" in runs["second"].stdout


def test_secrets_are_logged_nowhere(fleet, runs):
    for secret in (runs["secret"], runs["password"]):
        for proc in (runs["first"], runs["second"]):
            assert secret not in proc.stdout and secret not in proc.stderr
        for path in (fleet["work"] / "report").iterdir():
            assert secret not in path.read_text(errors="replace"), path
        for message in runs["mail_after_first"]:
            assert secret not in message["data"]
        assert secret not in runs["hooks_after_first"][0]["body"].decode("utf-8")
    state = fleet["work"] / "report" / "alert-state.json"
    assert oct(state.stat().st_mode & 0o777) == "0o600"


# --- the HTML report in a browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    binary = browser.ensure_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed and cannot be (needs root and apt-get)")
    return binary


@pytest.fixture(scope="module")
def report_url(fleet, runs):
    check_run(runs["first"])
    return (fleet["work"] / "report" / "fleet-report.html").as_uri()


class DomSummary(html.parser.HTMLParser):
    """What the dumped DOM contains: tags with attributes, rows per section, text per section."""

    def __init__(self):
        super(DomSummary, self).__init__()
        self.tags = []
        self.section = None
        self.rows = {}
        self.text = {}
        self.in_body = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self.section = attrs.get("id")
        if tag == "tbody":
            self.in_body = True
        if tag == "tr" and self.in_body and self.section:
            self.rows[self.section] = self.rows.get(self.section, 0) + 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False
        if tag == "section":
            self.section = None

    def handle_data(self, data):
        if self.section:
            self.text[self.section] = self.text.get(self.section, "") + data


def test_report_dom(chromium, report_url, runs):
    dom = DomSummary()
    dom.feed(browser.dump_dom(chromium, report_url))
    hosts = len(vm_names()) + 3
    assert dom.rows == {"events": len(ALL_EVENTS), "hosts": hosts, "holds": 5, "approvals": 2, "unreachable": 2}
    scripts = [attrs for tag, attrs in dom.tags if tag == "script"]
    assert len(scripts) == 1 and "src" not in scripts[0], "one inline script, the report's own"
    external = [(tag, attrs) for tag, attrs in dom.tags
                if any(k in ("src", "href", "action") and "//" in (v or "") for k, v in attrs.items())]
    assert external == [], "self-contained: nothing loaded from anywhere"
    assert any(tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"
               and "default-src 'none'" in attrs.get("content", "") for tag, attrs in dom.tags)
    assert ("html", {"lang": "en", "data-ready": "true"}) in dom.tags, "the page's script ran"
    assert HOSTILE in dom.text["holds"], "a hold reason is shown as text, never as markup"
    assert not [t for t, a in dom.tags if t == "b"], "no markup from the data"
    assert "down-01" in dom.text["unreachable"] and "policy reboot-after-hooks" in dom.text["approvals"]


def test_report_sorts_and_filters_in_the_browser(chromium, report_url):
    column = ("Array.from(document.querySelectorAll('#%s tbody tr')).filter(r => !r.hidden)"
              ".map(r => r.cells[%d].getAttribute('data-sort') ?? r.cells[%d].textContent.trim())")
    with browser.Browser(chromium, report_url) as page:
        assert page.evaluate("document.querySelectorAll('#hosts tbody tr').length") == len(vm_names()) + 3
        assert page.evaluate("document.querySelector('#summary [data-key=events]').textContent") == "7"
        times = "#events thead th:nth-child(5)"
        page.click(times)
        ascending = page.evaluate(column % ("events", 4, 4))
        numbers = [int(v) for v in ascending if v != ""]
        assert numbers == sorted(numbers) and ascending[0] == "0", ascending
        assert page.evaluate("document.querySelector('%s').getAttribute('aria-sort')" % times) == "ascending"
        page.click(times)
        descending = [int(v) for v in page.evaluate(column % ("events", 4, 4)) if v != ""]
        assert descending == sorted(numbers, reverse=True)
        page.click("#hosts thead th:nth-child(1)")
        page.click("#hosts thead th:nth-child(1)")
        names = page.evaluate("Array.from(document.querySelectorAll('#hosts tbody tr'))"
                              ".map(r => r.getAttribute('data-host'))")
        assert names == sorted(names, reverse=True)
        page.click("#hosts thead th:nth-child(6)")
        waiting = page.evaluate(column % ("hosts", 5, 5))
        filled = [int(v) for v in waiting if v != ""]
        assert filled == sorted(filled) and len(filled) == PER_SET + 1 + 2 + 1 + 2
        assert waiting[len(filled):] == [""] * (len(waiting) - len(filled)), "hosts without events sort last"
        page.evaluate("(() => { const i = document.querySelector('#hosts input'); i.value = 'solo';"
                      " i.dispatchEvent(new Event('input')); })()")
        assert page.evaluate("Array.from(document.querySelectorAll('#hosts tbody tr')).filter(r => !r.hidden)"
                             ".length") == SOLO
        countdown = page.evaluate("document.querySelector('#events tbody tr[data-event-id=\"%s\"] td.countdown')"
                                  ".textContent" % REBOOT)
        assert countdown.startswith("in "), countdown


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_screenshot(chromium, report_url, fleet):
    shot = fleet["work"] / "fleet-report.png"
    data = browser.screenshot(chromium, report_url, str(shot))
    width, height = png_size(data)
    assert (width, height) == (1400, 1800) and len(data) > 50000, "a real rendering, not a blank page"
    if os.environ.get("UPDATE_SCREENSHOT") == "1":  # the docs' picture is refreshed on request, never by make test
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(str(shot), str(SCREENSHOT))


# --- rolling approvals --------------------------------------------------------------------------------

ROLLING_LIMIT = 2
WAVE_EVENTS = {
    "BB000000-0000-4000-8000-00000000000A": ("Reboot", ["a0"], 700000),
    "BB000000-0000-4000-8000-00000000000B": ("Reboot", ["a1"], 700100),
    "BB000000-0000-4000-8000-00000000000C": ("Reboot", ["a2"], 700200),
    "BB000000-0000-4000-8000-00000000000D": ("Reboot", ["a3"], 700300),
    "BB000000-0000-4000-8000-00000000000E": ("Redeploy", ["a4", "a5"], 700400),
    "BB000000-0000-4000-8000-00000000000F": ("Reboot", ["b0"], 700000),
    "BB000000-0000-4000-8000-000000000010": ("Freeze", ["b0", "b1", "b2", "b3"], 700050),
}


ROLLING_SUBSCRIPTION = "5e1f0a2b-6c7d-4e8f-9a0b-1c2d3e4f5a6b"


@pytest.fixture(scope="module", params=["imds", "control_plane"])
def rolling(request, tmp_path_factory):
    """The rolling playbook, approving through each host's IMDS or once per wave through the control plane."""
    via = request.param
    work = tmp_path_factory.mktemp("rolling-" + via)
    names = ["a%d" % i for i in range(6)] + ["b%d" % i for i in range(4)] + ["c0"]
    vms = [{"name": n, "availability_set": "as-" + n[0]} if n[0] != "c" else {"name": n} for n in names]
    events = [{"id": i, "type": t, "resources": r, "notice": n, "started_for": 60}
              for i, (t, r, n) in WAVE_EVENTS.items()]
    scenario = {"name": "rolling", "time_scale": 600, "vms": vms, "events": events,
                "subscription_id": ROLLING_SUBSCRIPTION, "control_plane": {"opted_in": "all"}}
    (work / "scenario.json").write_text(json.dumps(scenario))
    sim = Simulator(work / "scenario.json", work, *(["--arm-port", "0"] if via == "control_plane" else []))
    env = None
    if via == "control_plane":
        env = ansible_env(IDENTITY_ENDPOINT=sim.arm + "/msi/token", IDENTITY_HEADER=sim.identity_header)
    try:
        hosts = dict((n, {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                          "imds_endpoint": sim.vms[n]}) for n in names)
        for name in names:
            if name[0] != "c":
                hosts[name]["availability_set"] = "as-" + name[0]
        (work / "inventory.json").write_text(json.dumps({"all": {"hosts": hosts}}))
        (work / "extra.json").write_text(json.dumps({
            "rolling_group_by": "availability_set", "rolling_max_hosts": ROLLING_LIMIT, "rolling_wait_interval": 0.3,
            "rolling_drain_tasks": str(FLEET / "drain.yml"), "rolling_restore_tasks": str(FLEET / "restore.yml"),
            "rolling_approve_via": via, "rolling_control_plane": {
                "subscriptions": [ROLLING_SUBSCRIPTION], "management_endpoint": sim.arm, "auth_source": "msi"}}))
        started = time.time()
        proc = run_playbook(ROOT / "playbooks" / "rolling_approvals.yml", work / "inventory.json",
                            work / "extra.json", forks=11, env=env)
        yield {"proc": proc, "events": sim.call("GET", "/events"), "approvals": sim.call("GET", "/approvals"),
               "started": started, "via": via}
    finally:
        sim.stop()


def _records(body, key):
    return body[key] if isinstance(body, dict) else body


def test_rolling_approvals_in_waves(rolling):
    check_run(rolling["proc"])
    events = dict((e["id"], e) for e in _records(rolling["events"], "events"))
    freeze = "BB000000-0000-4000-8000-000000000010"
    assert events[freeze]["status"] == "Scheduled" and not events[freeze]["approved_by"], \
        "4 hosts of as-b at once is over the limit: never approved, it starts at NotBefore"
    approvals = _records(rolling["approvals"], "approvals")
    source = "control-plane" if rolling["via"] == "control_plane" else "imds"
    assert set(a["source"] for a in approvals) == {source}, "every approval went the way asked"
    for event_id, event in events.items():
        if event_id != freeze:
            assert event["status"] == "gone" and [a for a in approvals if a["event_id"] == event_id], (event_id, event)
    # Never more than the limit of one availability set in maintenance at once (simulated time).
    for group in ("a", "b"):
        spans = [(e["started_at"], e["gone_at"], len([r for r in e["resources"] if r.startswith(group)]))
                 for e in events.values() if e["started_at"] is not None]
        for start, dummy, dummy2 in spans:
            busy = sum(n for s, g, n in spans if s <= start < g)
            assert busy <= ROLLING_LIMIT, (group, start, spans)
    # The shared Redeploy was approved once, whole, after both of its hosts were drained.
    pair = [a for a in approvals if a["event_id"] == "BB000000-0000-4000-8000-00000000000E"]
    assert len(pair) == 1
    hooks = re.findall(r"(DRAIN|RESTORE) (\S+) wave (\d+) at ([\d.]+)", rolling["proc"].stdout)
    drains = dict((host, (int(wave), float(at))) for kind, host, wave, at in hooks if kind == "DRAIN")
    restores = dict((host, (int(wave), float(at))) for kind, host, wave, at in hooks if kind == "RESTORE")
    assert sorted(drains) == ["a0", "a1", "a2", "a3", "a4", "a5", "b0"], "c0 and b1-b3 had nothing to approve"
    assert sorted(restores) == sorted(drains)
    assert max(drains["a4"][1], drains["a5"][1]) <= pair[0]["wall_time"]
    waves = dict((host, wave) for host, (wave, dummy) in drains.items())
    assert waves == {"a0": 1, "a1": 1, "b0": 1, "a2": 2, "a3": 2, "a4": 3, "a5": 3}, waves
    for host, (wave, at) in drains.items():
        approval = [a for a in approvals if a["vm"] == host]
        assert restores[host][1] >= at and (not approval or approval[0]["wall_time"] >= at)
    assert "not approved: ['%s: affects more hosts of a group than its limit']" % freeze in rolling["proc"].stdout


# --- every hostile value in one report: Chromium and GitHub's Markdown ------------------------------------------


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    """One report with every value of tests/unit/utils/hostile.py in every field a host or Resource Graph sets,
    rendered by Ansible's templating as the role renders it; the title is hostile too."""
    work = tmp_path_factory.mktemp("hostile-report")
    canary = str(work / "canary")
    values = hostile.strings(canary)
    report = build_report(hostile_fleet.table_hosts(values), now=hostile_fleet.NOW, title=HOSTILE_TITLE,
                          control_plane=hostile_fleet.control_plane(values[0].value, tag="cp/"))
    page = work / "fleet-report.html"
    page.write_text(hostile_fleet.render("fleet-report.html.j2", report), encoding="utf-8")
    markdown = hostile_fleet.render("fleet-report.md.j2", report)
    hostile.assert_no_trace(canary, page.read_text(encoding="utf-8"), markdown)
    return {"report": report, "url": page.as_uri(), "markdown": markdown}


HOSTILE_TITLE = "<script>document.title='pwned'</script>{{ 'x' }}"


def shown_text(value):
    """A value as the HTML parser gives it back: line breaks normalised to LF."""
    return value.replace("\r\n", "\n").replace("\r", "\n")


def test_hostile_values_in_chromium(chromium, hostile_report):
    """No script from the data runs (the title is the template's, no request, no element or handler of the data),
    and every value shows as text, intact."""
    report = hostile_report["report"]
    with browser.Browser(chromium, hostile_report["url"]) as page:
        assert page.evaluate("document.title") == "%s \u2013 %s" % (HOSTILE_TITLE, report["generated"])
        assert page.evaluate("performance.getEntriesByType('resource').length") == 0, "no request"
        tags = set(page.evaluate("Array.from(document.querySelectorAll('*')).map(e => e.localName)"))
        assert tags <= hostile_fleet.TEMPLATE_TAGS, tags - hostile_fleet.TEMPLATE_TAGS
        assert page.evaluate("document.scripts.length") == 1
        assert page.evaluate("Array.from(document.querySelectorAll('*')).filter(e => Array.from(e.attributes)"
                             ".some(a => a.name.startsWith('on'))).length") == 0, "no event handler"
        assert page.evaluate("Array.from(document.querySelectorAll('#hosts tbody tr')).map(r => r.dataset.host)") \
            == [shown_text(h["host"]) for h in report["hosts"]]
        reasons = page.evaluate("Array.from(document.querySelectorAll('#holds tbody tr')).map(r => r.cells[2]"
                                ".textContent)")
        assert sorted(reasons) == sorted(shown_text(h["text"]) for h in report["holds"])
        described = page.evaluate("Array.from(document.querySelectorAll('#events tbody tr')).map(r => r.cells[8]"
                                  ".textContent)")
        assert sorted(described) == sorted(shown_text(e["description"] or "") for e in report["events"])
        assert page.evaluate("document.querySelector('#title').textContent") == HOSTILE_TITLE


GFM_ALLOWED = {"h1", "h2", "p", "table", "thead", "tbody", "tr", "th", "td"}


def test_hostile_values_in_githubs_markdown(hostile_report):
    """GitHub's own renderer (cmark-gfm, with its table, autolink, strikethrough and tagfilter extensions, raw
    HTML allowed so that none may hide): no link, address, emphasis, code, list, heading or HTML from the data,
    each row keeps its cells, and every hold reason shows intact (a line break as a space)."""
    cmarkgfm = pytest.importorskip("cmarkgfm")
    from cmarkgfm.cmark import Options  # pylint: disable=import-outside-toplevel,import-error
    out = cmarkgfm.github_flavored_markdown_to_html(hostile_report["markdown"], options=Options.CMARK_OPT_UNSAFE)
    parser = DomSummary()
    parser.feed(out)
    tags = set(tag for tag, attrs in parser.tags)
    assert tags <= GFM_ALLOWED, tags - GFM_ALLOWED
    cells = CellTexts()
    cells.feed(out)
    report = hostile_report["report"]
    holds = [row for row in cells.rows if len(row) == 7]
    assert len(holds) == len(report["holds"]) + 1, "every row of the holds table has its 7 cells"
    want = sorted(re.sub("[\r\n]+", " ", h["text"]).strip() for h in report["holds"])
    assert sorted(row[2].replace("\u2060", "").strip() for row in holds[1:]) == want


class CellTexts(html.parser.HTMLParser):
    """Each table row's cells as text."""

    def __init__(self):
        super(CellTexts, self).__init__(convert_charrefs=True)
        self.rows = []
        self.cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)
