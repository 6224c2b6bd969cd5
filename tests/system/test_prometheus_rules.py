# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The shipped Prometheus rules and Alertmanager example, on the real tools of Debian's
`prometheus` and `prometheus-alertmanager` packages (promtool, amtool), installed with apt-get when missing.

- promtool check rules, and promtool test rules with prometheus/rules/tests/: every alert has a case where it fires
  and one where it stays silent; the cases are shown to catch a rule that never fires and one that always does;
- every alert's annotations and runbook_url (a section that exists in docs/alerts.md);
- the watcher's own metrics file passes promtool check metrics;
- amtool check-config on the Alertmanager example.

Needs root to install the packages when they are missing; without them it skips loudly, and CI=true fails a skip.
Nothing here opens a socket: promtool and amtool read files.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import debian_tools
from harness.ansible_env import ensure_collection

sys.path.insert(0, str(ensure_collection()))
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.metrics import Metrics  # noqa: E402  pylint: disable=wrong-import-position,import-error

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "prometheus"
RULES = PROM / "rules" / "imds-scheduled-events.rules"
TESTS = PROM / "rules" / "tests" / "imds-scheduled-events.test.yml"
ALERTMANAGER = PROM / "alertmanager" / "alertmanager.example.yml"
RUNBOOKS = ROOT / "docs" / "alerts.md"
SEVERITIES = ("critical", "warning", "info")


@pytest.fixture(scope="module")
def tools():
    found = debian_tools.ensure("promtool", "amtool")
    missing = sorted(p for p, path in found.items() if path is None)
    if missing:
        pytest.skip("skipped: %s missing and cannot be installed (needs root, apt-get and Debian's archive: packages "
                    "prometheus, prometheus-alertmanager)" % ", ".join(missing))
    return found


def run(argv, cwd=None, stdin=None):
    return subprocess.run(argv, cwd=cwd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120, check=False)


def load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def alerts(rules=None):
    rules = rules or load(RULES)
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def records(rules=None):
    rules = rules or load(RULES)
    return [r for g in rules["groups"] for r in g["rules"] if "record" in r]


def promtool_tests(tools, variants, tmp_path):
    """{name: CompletedProcess} of promtool test rules on the shipped cases against each variant of the rule file
    ({name: parsed rules}), run side by side."""
    running = {}
    for name, rules in variants.items():
        directory = tmp_path / name
        (directory / "tests").mkdir(parents=True)
        (directory / RULES.name).write_text(yaml.safe_dump(rules, sort_keys=False))
        (directory / "tests" / TESTS.name).write_text(TESTS.read_text())
        running[name] = subprocess.Popen([tools["promtool"], "test", "rules", TESTS.name], cwd=str(directory / "tests"),
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = {}
    for name, process in running.items():
        out = process.communicate(timeout=300)[0]
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out)
    return results


def test_promtool_check_rules(tools):
    result = run([tools["promtool"], "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout
    assert "SUCCESS: %d rules found" % (len(alerts()) + len(records())) in result.stdout


def test_promtool_test_rules(tools):
    result = run([tools["promtool"], "test", "rules", TESTS.name], cwd=str(TESTS.parent))
    assert result.returncode == 0, result.stdout
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_is_silent():
    cases = [c for t in load(TESTS)["tests"] for c in t.get("alert_rule_test", [])]
    for alert in alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c.get("exp_alerts") for c in mine), "%s never fires in the tests" % alert["alert"]
        assert any(not c.get("exp_alerts") for c in mine), "%s is never shown silent" % alert["alert"]
    assert set(c["alertname"] for c in cases) == set(a["alert"] for a in alerts())
    tested = set(e["expr"] for t in load(TESTS)["tests"] for e in t.get("promql_expr_test", []))
    assert tested == set(r["record"] for r in records())


def test_the_cases_catch_a_broken_alert(tools, tmp_path):
    """Each alert in turn made to never fire, or to fire for everything as well: the cases must fail both."""
    rules = load(RULES)
    variants = {"as-shipped": rules}
    for alert in alerts():
        for mutation in ("never", "always"):
            broken = copy.deepcopy(rules)
            rule = next(r for r in alerts(broken) if r["alert"] == alert["alert"])
            rule["expr"] = "vector(1) == 2" if mutation == "never" else \
                '(%s) or label_replace(vector(1), "broken", "yes", "", "")' % rule["expr"]
            variants["%s-%s" % (alert["alert"], mutation)] = broken
    results = promtool_tests(tools, variants, tmp_path)
    assert results.pop("as-shipped").returncode == 0  # the copies are faithful
    unnoticed = sorted(name for name, result in results.items() if result.returncode == 0)
    assert not unnoticed, "the cases did not notice these broken alerts: %s" % ", ".join(unnoticed)
    assert all("FAILED" in result.stdout for result in results.values())


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook():
    repository = re.search(r"^repository:\s*(\S+)", (ROOT / "galaxy.yml").read_text(), re.M).group(1)
    headings = set(m.group(1) for m in re.finditer(r"^## (\S+)$", RUNBOOKS.read_text(), re.M))
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in SEVERITIES, name
        assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert alert["annotations"]["runbook_url"] == "%s/blob/main/docs/alerts.md#%s" % (repository, name.lower())
        assert name in headings, "docs/alerts.md has no section for %s" % name
        assert name in (PROM / "README.md").read_text(), name


def test_the_watchers_metrics_file_passes_promtool_check_metrics(tools):
    metrics = Metrics()
    metrics.started(1750000000.0)
    metrics.inc("events_seen_total", type="Reboot")
    metrics.set_events([{"id": "E1", "type": "Reboot", "status": "Scheduled", "scope": "this_vm", "state": "ready",
                         "held": True, "first_seen": 1.0, "since": 2.0, "not_before": 3.0,
                         "event": {"EventSource": "Platform"}}])
    metrics.set_hold_reasons([{"id": "E1", "holder": "imds-watcher", "event_id": "E1",
                               "since": "2025-06-15T15:00:02Z"}], 1750000000.0)
    result = run([tools["promtool"], "check", "metrics"], stdin=metrics.render())
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout


def test_the_alertmanager_example(tools):
    result = run([tools["amtool"], "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout
    assert "SUCCESS" in result.stdout
    routed = json.dumps(load(ALERTMANAGER))
    assert "ImdsWatcherTextfileStale" in routed and "ImdsMaintenanceInProgress" in routed
