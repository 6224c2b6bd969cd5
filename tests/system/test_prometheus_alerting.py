# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""An alert's whole path on the real engines, all on loopback: two watchers poll the simulator, Debian's
prometheus-node-exporter serves each one's textfile, Debian's prometheus scrapes them and evaluates the shipped
rules, Debian's prometheus-alertmanager mails a loopback SMTP server (aiosmtpd) when an event has been pending too
long, then the resolved notice once the event is gone and released. Every dashboard query, evaluated against that
Prometheus, returns data. Then one watcher is removed with its metrics file (as the role's watcher_state=absent
does) while its node_exporter answers: ImdsWatcherMetricsMissing fires for that VM, on the real `up` series.

The shipped Alertmanager example, pointed at loopback, receives alerts whose labels and annotations carry every
hostile value (tests/unit/utils/hostile.py): no mail header, HTML element or handler comes from them, and the chat
webhook's JSON carries them intact.

The shipped rules are used as they are but for ImdsEventPendingTooLong, whose threshold (six hours) and `for`
(five minutes) are cut to seconds so the test need not wait hours, and ImdsWatcherMetricsMissing's `for` (five
minutes), cut to seconds. Every wait polls a condition with a generous
bound; nothing is timed. Needs root (the watcher trusts only root's files; apt-get installs what is missing);
without it, the packages or aiosmtpd it skips loudly, and CI=true fails a skip.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import json
import re
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from harness import debian_tools
from harness.ansible_env import GUARD, ensure_collection
from harness.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "simulator"))
sys.path.insert(0, str(ROOT / "tests" / "unit" / "utils"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile  # noqa: E402  pylint: disable=wrong-import-position,import-error
import loopback  # noqa: E402  pylint: disable=wrong-import-position,import-error
import test_prometheus_rules as shipped  # noqa: E402  pylint: disable=wrong-import-position,import-error
from imds_simulator import Simulator  # noqa: E402  pylint: disable=wrong-import-position,import-error

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="skipped: needs root (the watcher trusts only root's "
                                                          "config files; apt-get installs the engines)")

EVENT = "5E1C6A2B-7D3F-4A8E-9B0C-1D2E3F4A5B6C"
VMS = ("vm-a", "vm-b")
SCENARIO = {"name": "prometheus-alerting", "vms": [{"name": vm} for vm in VMS],
            "events": [{"id": EVENT, "type": "Redeploy", "resources": ["vm-a"], "at": 0, "notice": 86400}]}
WATCHER = ("import sys; from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.cli import main; "
           "sys.exit(main(sys.argv[1:]))")
ALERT = "ImdsEventPendingTooLong"
MISSING = "ImdsWatcherMetricsMissing"
BOUND = 180  # seconds: ends a wait that would hang, on a loaded machine; never what is checked


def http_get(url):
    with urllib.request.urlopen(url, timeout=30) as reply:  # nosec - loopback only, guarded
        return reply.read()


def http_post(url):
    request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:  # nosec - loopback only, guarded
        return reply.read()


class Processes(object):
    """The programs this test starts, each with its log; stopped (by pid) at the end."""

    def __init__(self, directory):
        self.directory = directory
        self.running = []

    def start(self, name, argv, ready_url=None, env=None):
        """Start `argv` (its port from loopback.free_port(), retried if another process took it first) and wait
        until `ready_url` answers."""
        for dummy in range(3):
            port = loopback.free_port()
            log = self.directory / ("%s.log" % name)
            handle = open(log, "ab")  # pylint: disable=consider-using-with
            process = subprocess.Popen([a.replace("{port}", str(port)) for a in argv], stdout=handle,
                                       stderr=subprocess.STDOUT, env=env)
            handle.close()
            self.running.append(process)
            if ready_url is None:
                return process, port
            url = ready_url.replace("{port}", str(port))

            def ready():
                if process.poll() is not None:
                    return "exited"
                try:
                    http_get(url)
                except OSError:
                    return None
                return "ready"

            if wait_for(ready, BOUND, what="%s to answer at %s" % (name, url), diagnose=log.read_text) \
                    == "ready":
                return process, port
        pytest.fail("%s exited at start three times:\n%s" % (name, log.read_text()))
        return None

    def stop(self):
        for process in self.running:
            if process.poll() is None:
                process.terminate()
        for process in self.running:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def private_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(str(path), 0o755)  # the watcher refuses files in a directory others may write
    return path


def watcher_config(directory, vm, endpoint):
    config = {
        "vm_name": vm, "endpoint": endpoint, "poll_interval": 1,
        "state_dir": str(private_dir(directory / "state")), "hooks_dir": str(private_dir(directory / "hooks")),
        "metrics_file": str(private_dir(directory / "textfile") / "imds_scheduled_events.prom"),
        "hold": {"state_file": str(private_dir(directory / "holds") / "holds.json"),
                 "commands": [{"name": "marker", "hold": ["/bin/true"], "release": ["/bin/true"]}]},
        "notify": {"syslog": True},
    }
    path = private_dir(directory / "etc") / "watcher.json"
    path.write_text(json.dumps(config))
    os.chmod(str(path), 0o644)
    return path


def rules_for_the_test(directory):
    """The shipped rules, but ImdsEventPendingTooLong fires after seconds instead of six hours, and
    ImdsWatcherMetricsMissing after seconds instead of five minutes."""
    rules = yaml.safe_load(shipped.RULES.read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == ALERT)
    assert "> 21600" in rule["expr"]
    rule["expr"] = rule["expr"].replace("> 21600", "> 5")
    rule["for"] = "2s"
    next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == MISSING)["for"] = "2s"
    path = directory / "imds-scheduled-events.rules"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def query(prometheus, expr):
    reply = json.loads(http_get("http://127.0.0.1:%d/api/v1/query?%s"
                                % (prometheus, urllib.parse.urlencode({"query": expr}))))
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def prometheus_alerts(prometheus):
    return json.loads(http_get("http://127.0.0.1:%d/api/v1/alerts" % prometheus))["data"]["alerts"]


def firing(prometheus, name):
    return [a for a in prometheus_alerts(prometheus) if a["labels"]["alertname"] == name and a["state"] == "firing"]


def mails(box, subject_part):
    found = []
    for message in box.messages:
        parsed = email.message_from_string(message["data"], policy=email.policy.default)
        if subject_part in str(parsed["Subject"]):
            found.append(parsed)
    return found


@pytest.fixture
def engines():
    found = debian_tools.ensure("prometheus", "promtool", "prometheus-alertmanager", "prometheus-node-exporter")
    missing = sorted(p for p, path in found.items() if path is None)
    if missing:
        pytest.skip("skipped: %s missing and cannot be installed (needs root, apt-get and Debian's archive: "
                    "packages prometheus, prometheus-alertmanager, prometheus-node-exporter)" % ", ".join(missing))
    return found


def test_an_event_pending_too_long_is_mailed_then_resolved_once_released(engines, tmp_path):
    # pylint: disable=too-many-locals,redefined-outer-name
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    stamps = {}
    box, smtp = loopback.start_mailbox(controller_mod)
    smtp.start()
    procs = Processes(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(GUARD), str(ensure_collection())]))
    env = dict((k, v) for k, v in env.items() if not k.lower().endswith("_proxy"))
    try:
        with Simulator.from_scenario(SCENARIO, port=0, control_port=0) as sim:
            stamps["event announced by the simulator"] = time.time()
            exporters, watchers = {}, {}
            for vm in VMS:
                directory = private_dir(tmp_path / vm)
                config = watcher_config(directory, vm, sim.endpoint(vm))
                watchers[vm] = procs.start("watcher-" + vm, [
                    sys.executable, "-c", WATCHER, "--config", str(config), "--secrets",
                    str(directory / "etc" / "secrets.json"), "run"], env=env)[0]
                dummy, exporters[vm] = procs.start("node-exporter-" + vm, [
                    engines["prometheus-node-exporter"], "--web.listen-address=127.0.0.1:{port}",
                    "--collector.disable-defaults", "--collector.textfile", "--collector.stat",
                    "--collector.textfile.directory=%s" % (directory / "textfile")],
                    ready_url="http://127.0.0.1:{port}/metrics")
            am_config = tmp_path / "alertmanager.yml"
            am_config.write_text(yaml.safe_dump({
                "global": {"smtp_smarthost": "127.0.0.1:%d" % box.port, "smtp_from": "alertmanager@localhost",
                           "smtp_require_tls": False},
                "route": {"receiver": "none", "group_by": ["alertname", "instance", "event_id"], "group_wait": "1s",
                          "group_interval": "1s", "repeat_interval": "1h",
                          "routes": [{"matchers": ['alertname="%s"' % ALERT], "receiver": "oncall"}]},
                "receivers": [{"name": "none"},
                              {"name": "oncall", "email_configs": [{"to": "oncall@localhost", "send_resolved": True}]}],
            }))
            dummy, alertmanager = procs.start("alertmanager", [
                engines["prometheus-alertmanager"], "--config.file=%s" % am_config,
                "--storage.path=%s" % private_dir(tmp_path / "am-data"), "--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address="], ready_url="http://127.0.0.1:{port}/-/ready")
            prom_config = tmp_path / "prometheus.yml"
            prom_config.write_text(yaml.safe_dump({
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules_for_the_test(tmp_path))],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:%d" % alertmanager]}]}]},
                "scrape_configs": [{"job_name": "node", "static_configs": [
                    {"targets": ["127.0.0.1:%d" % exporters[vm]], "labels": {"vm": vm}} for vm in VMS]}],
            }))
            check = subprocess.run([engines["promtool"], "check", "config", str(prom_config)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=120, check=False)
            assert check.returncode == 0, check.stdout
            dummy, prometheus = procs.start("prometheus", [
                engines["prometheus"], "--config.file=%s" % prom_config,
                "--storage.tsdb.path=%s" % private_dir(tmp_path / "prom-data"),
                "--web.listen-address=127.0.0.1:{port}", "--rules.alert.resend-delay=1s"],
                ready_url="http://127.0.0.1:{port}/-/ready")

            def logs():
                return "\n".join("--- %s\n%s" % (p.name, p.read_text()[-3000:]) for p in sorted(tmp_path.glob("*.log")))

            # the metric: vm-a's watcher tracks the event, held, and Prometheus has scraped it
            series = wait_for(lambda: query(prometheus, 'imds_scheduled_events_event_info{event_id="%s"}' % EVENT),
                              BOUND, what="the event's series in Prometheus", diagnose=logs)
            stamps["watcher detected the event (metric)"] = float(query(
                prometheus, 'imds_scheduled_events_event_detected_timestamp_seconds{event_id="%s"}' % EVENT)[0]["value"][1])
            stamps["series seen in Prometheus by the test"] = float(series[0]["value"][0])
            assert series[0]["metric"]["vm"] == "vm-a" and series[0]["metric"]["held"] == "true"
            # the rule fires; Alertmanager mails the on-call
            active = wait_for(lambda: firing(prometheus, ALERT), BOUND, what="%s firing in Prometheus" % ALERT,
                              diagnose=logs)
            stamps["rule active (pending) since"] = _epoch(active[0]["activeAt"])
            stamps["rule firing, seen by the test"] = time.time()
            fired = wait_for(lambda: mails(box, "[FIRING:1] %s" % ALERT), BOUND, what="the firing mail",
                             diagnose=logs)
            stamps["firing mail received"] = time.time()
            body = fired[0].get_body(preferencelist=("plain", "html")).get_content()
            assert EVENT in body and "Redeploy" in body and "docs/alerts.md#imdseventpendingtoolong" in body
            assert [m["To"] for m in fired] == ["oncall@localhost"]
            # every dashboard query answers with data from this Prometheus (rates want two scrapes: waited for)
            queries = shipped.dashboard_queries()
            wait_for(lambda: all(query(prometheus, q) for q in queries), BOUND, what="data for every dashboard query",
                     diagnose=lambda: "\nwithout data: %s" % [q for q in queries if not query(prometheus, q)])
            # vm-b has no event: nothing fires for it, and no other alert fires at all
            alerts = prometheus_alerts(prometheus)
            assert [(a["labels"]["alertname"], a["labels"]["vm"]) for a in alerts] == [(ALERT, "vm-a")]
            # the event is cancelled: gone after three polls, released, forgotten; the alert resolves
            http_post("%s/events/%s/cancel" % (sim.control_url, EVENT))
            stamps["event cancelled in the simulator"] = time.time()
            journal = tmp_path / "vm-a" / "state" / "journal.jsonl"

            def released():
                return [e for e in (json.loads(line) for line in journal.read_text().splitlines() if line.strip())
                        if e["transition"] == "released"]

            stamps["watcher released the hold (journal)"] = wait_for(released, BOUND, what="the release",
                                                                     diagnose=logs)[0]["ts"]
            wait_for(lambda: mails(box, "[RESOLVED] %s" % ALERT), BOUND, what="the resolved mail", diagnose=logs)
            stamps["resolved mail received"] = time.time()
            assert len(mails(box, "[FIRING:1] %s" % ALERT)) == 1  # once, not once per evaluation
            # vm-b's watcher removed with its metrics file, its node_exporter still answering: the metrics vanish
            watchers["vm-b"].terminate()
            watchers["vm-b"].wait(timeout=60)
            (tmp_path / "vm-b" / "textfile" / "imds_scheduled_events.prom").unlink()
            stamps["vm-b's watcher and metrics file removed"] = time.time()
            missing = wait_for(lambda: firing(prometheus, MISSING), BOUND, what="%s firing in Prometheus" % MISSING,
                               diagnose=logs)
            stamps["%s firing, seen by the test" % MISSING] = time.time()
            assert [a["labels"]["instance"] for a in missing] == ["127.0.0.1:%d" % exporters["vm-b"]]
    finally:
        procs.stop()
        smtp.stop()
    order = ["event announced by the simulator", "watcher detected the event (metric)",
             "series seen in Prometheus by the test", "rule active (pending) since",
             "rule firing, seen by the test", "firing mail received", "event cancelled in the simulator",
             "watcher released the hold (journal)", "resolved mail received", "vm-b's watcher and metrics file removed",
             "%s firing, seen by the test" % MISSING]
    print("\nthe alert's path (UTC):")  # shown with -s; times are reported, never asserted
    for name in order:
        print("  %s.%03d  %s" % (time.strftime("%H:%M:%S", time.gmtime(stamps[name])), stamps[name] % 1 * 1000, name))


def _epoch(text):
    """Prometheus's RFC 3339 times (nanoseconds) as Unix time."""
    text = text.rstrip("Z")
    whole, dummy, fraction = text.partition(".")
    moment = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp() + float("0." + (fraction or "0"))


HOSTILE_INSTANCE = "vm-hostile:9100"


def hostile_alerts():
    """Alerts as Prometheus sends them for the shipped rules when every event label holds a hostile value (its
    annotations expanded verbatim, as prometheus/rules/tests/imds-scheduled-events-hostile.test.yml shows): one
    critical group (ImdsEventImminentUnheld, to the on-call's mail) with a value per alert, one whose instance
    label, which the mail's subject shows, is the header injection, and a maintenance notice per value (to the
    chat webhook)."""
    rules = dict((r["alert"], r) for r in shipped.alerts())
    found = []
    for case in hostile.strings("/nonexistent/canary"):
        value = shipped.watcher_label(case.value, "unknown")  # as the watcher writes a label
        for alert, instance in (("ImdsEventImminentUnheld", HOSTILE_INSTANCE), ("ImdsMaintenanceInProgress",
                                                                                "vm-%s:9100" % case.name)):
            labels = {"alertname": alert, "instance": instance, "job": "node", "event_id": value,
                      "type": value, "source": value, "scope": value, "severity": rules[alert]["labels"]["severity"]}
            annotations = dict((k, re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], v))
                               for k, v in rules[alert]["annotations"].items() if "$value" not in v)
            found.append({"labels": labels, "annotations": annotations})
    injection = next(c.value for c in hostile.strings("/") if c.name == "header-injection")
    found.append({"labels": {"alertname": "ImdsWatcherNotPolling", "instance": injection, "job": "node",
                             "severity": "critical"}, "annotations": {"summary": injection}})
    return found


def test_hostile_labels_through_the_shipped_alertmanager_example(engines, tmp_path):
    """The shipped Alertmanager example (addresses pointed at loopback, routes and receivers as shipped): a hostile
    label value adds no mail header, no element or handler to the mail's HTML, and reaches the chat webhook's JSON
    intact."""
    # pylint: disable=redefined-outer-name,too-many-locals
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    box, smtp = loopback.start_mailbox(controller_mod)
    smtp.start()
    hook = loopback.WebhookReceiver(status=200)
    procs = Processes(tmp_path)
    try:
        config = yaml.safe_load(shipped.ALERTMANAGER.read_text())
        config["global"].update(smtp_smarthost="127.0.0.1:%d" % box.port, smtp_require_tls=False)
        for receiver in config["receivers"]:
            for webhook in receiver.get("webhook_configs", []):
                webhook["url"] = hook.url
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config))
        dummy, port = procs.start("alertmanager", [
            engines["prometheus-alertmanager"], "--config.file=%s" % path,
            "--storage.path=%s" % private_dir(tmp_path / "am-data"), "--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address="], ready_url="http://127.0.0.1:{port}/-/ready")
        sent = hostile_alerts()
        request = urllib.request.Request("http://127.0.0.1:%d/api/v2/alerts" % port, data=json.dumps(sent).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:  # nosec - loopback only, guarded
            assert reply.status == 200
        notices = [a for a in sent if a["labels"]["alertname"] == "ImdsMaintenanceInProgress"]
        log = (tmp_path / "alertmanager.log").read_text
        wait_for(lambda: len(hook.requests) >= len(notices) or None, BOUND, what="a webhook per notice", diagnose=log)
        mail = wait_for(lambda: mails(box, "ImdsEventImminentUnheld") or None, BOUND, what="the on-call's mail",
                        diagnose=log)[0]
        injected = wait_for(lambda: mails(box, "ImdsWatcherNotPolling") or None, BOUND, what="the second mail",
                            diagnose=log)[0]
    finally:
        procs.stop()
        smtp.stop()
        hook.stop()
    for message in (mail, injected):
        assert "Bcc" not in message and "X-Hostile" not in message, "no label value adds a header"
        assert [m for m in box.messages if "injected@example.invalid" in m["to"]] == []
    assert "header-injection" not in str(injected["Subject"]) and "Bcc: injected" in str(injected["Subject"]), \
        "the value stays inside the (encoded) subject"
    page = hostile.HtmlCensus(mail.get_body(preferencelist=("html",)).get_content())
    tags = set(tag for tag, attrs in page.tags)
    assert not tags & {"script", "img", "iframe", "object", "x-evil"}, tags
    assert not page.handlers()
    text = "".join(page.text)
    for alert in sent:
        if alert["labels"]["alertname"] == "ImdsEventImminentUnheld":
            assert alert["annotations"]["summary"].split("\n")[0] in text
    received = dict((r["json"]["alerts"][0]["labels"]["instance"], r["json"]["alerts"][0]) for r in hook.requests)
    for alert in notices:
        got = received[alert["labels"]["instance"]]
        assert got["labels"] == alert["labels"] and got["annotations"] == alert["annotations"], "JSON intact"
