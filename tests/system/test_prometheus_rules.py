# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The shipped Prometheus rules, Alertmanager example and Grafana dashboard, on the real tools of Debian's
`prometheus` and `prometheus-alertmanager` packages (promtool, amtool), installed with apt-get when missing.

- promtool check rules, and promtool test rules with prometheus/rules/tests/: every alert has a case where it fires
  and one where it stays silent; the cases are shown to catch a rule that never fires and one that always does;
- every hostile value (tests/unit/utils/hostile.py) as a label value comes through the annotations as text
  (prometheus/rules/tests/imds-scheduled-events-hostile.test.yml, which hostile_cases() writes);
- every alert's annotations and runbook_url (a section that exists in docs/alerts.md);
- the watcher's own metrics file passes promtool check metrics;
- amtool check-config on the Alertmanager example;
- no dashboard panel shows a label value as HTML or Markdown, or builds a link from one;
- every dashboard query parses (promtool) and names only series that exist: the watcher's, node_exporter's
  textfile and stat collectors', Prometheus's `up`, or the rules' records;
- the dashboard's "Watchers not polling" and "Watchers whose metrics vanished" count what ImdsWatcherNotPolling and
  ImdsWatcherMetricsMissing fire on (the same expressions, so the same start grace), and the panels, evaluated by
  promtool over a fleet fed to it, count a watcher that is starting or whose VM just booted as polling.

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
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.metrics import METRICS, Metrics  # noqa: E402  pylint: disable=wrong-import-position,import-error
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.metrics import _label as watcher_label  # noqa: E402  pylint: disable=wrong-import-position,import-error,protected-access
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile  # noqa: E402  pylint: disable=wrong-import-position,import-error

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "prometheus"
RULES = PROM / "rules" / "imds-scheduled-events.rules"
TESTS = PROM / "rules" / "tests" / "imds-scheduled-events.test.yml"
HOSTILE_TESTS = PROM / "rules" / "tests" / "imds-scheduled-events-hostile.test.yml"
HOSTILE_ALERT = "ImdsMaintenanceInProgress"
ALERTMANAGER = PROM / "alertmanager" / "alertmanager.example.yml"
DASHBOARD = PROM / "dashboards" / "imds-scheduled-events.json"
RUNBOOKS = ROOT / "docs" / "alerts.md"
# Grafana's variables, as a query sees them once Grafana substituted them
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}
# node_exporter's textfile collector (the file's modification time) and stat collector (the boot time), and the
# target's health that Prometheus records for every scrape
NODE_EXPORTER_SERIES = {"node_textfile_mtime_seconds", "node_boot_time_seconds", "up"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
                "unless", "inf", "nan"}
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


def grafana_substituted(query):
    """A query as Grafana sends it to Prometheus, its variables substituted."""
    for name, value in GRAFANA_VARIABLES.items():
        query = query.replace(name, value)
    return query


def panel_queries():
    """{panel title: [its queries]}, Grafana's variables substituted."""
    board = json.loads(DASHBOARD.read_text())
    return dict((p["title"], [grafana_substituted(t["expr"]) for t in p["targets"]]) for p in board["panels"]
                if p.get("targets"))


def dashboard_queries():
    """Every PromQL query of the dashboard (panel targets and the template variable's), Grafana's variables
    substituted."""
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        match = re.match(r"label_values\((.*),\s*\w+\)$", variable["query"]["query"])
        queries.append(match.group(1) if match else variable["query"]["query"])
    return [grafana_substituted(q) for q in queries]


def series_named(query):
    """The series names a PromQL query reads: identifiers that are not functions, keywords, label names or
    durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)      # string literals
    text = re.sub(r"\{[^}]*\}", "", text)                    # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                    # range durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end():].lstrip()[:1]
        if following != "(" and match.group(0).lower() not in PROMQL_WORDS:
            names.add(match.group(0))
    return names


def test_the_dashboard_is_importable():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    assert [i["pluginId"] for i in board["__inputs"]] == ["prometheus"]
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(set(p["id"] for p in board["panels"])) == len(board["panels"])
    for panel in panels:
        assert panel["title"] and panel["targets"], panel
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])
    titles = " ".join(p["title"] for p in panels).lower()
    for subject in ("pending", "running", "hold", "approval", "failure"):
        assert subject in titles, subject
    assert board["templating"]["list"][0]["name"] == "instance"  # the per-VM drill-down


def test_every_dashboard_query_parses(tools, tmp_path):
    queries = dashboard_queries()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": "dashboard:query_%d" % i, "expr": q} for i, q in enumerate(queries)]}]}
    path = tmp_path / "dashboard.rules"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    result = run([tools["promtool"], "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout
    assert "SUCCESS: %d rules found" % len(queries) in result.stdout


def test_every_dashboard_query_names_only_series_that_exist():
    known = set("imds_scheduled_events_" + name for name in METRICS) | NODE_EXPORTER_SERIES | \
        set(r["record"] for r in records())
    assert series_named('sum by (type) (increase(a_total{x="y{"}[5m])) - on (i) b or vector(0)') == {"a_total", "b"}
    for query in dashboard_queries():
        named = series_named(query)
        assert named, query
        assert named <= known, "%s reads series no one writes: %s" % (query, ", ".join(sorted(named - known)))


def one_line(query):
    """A PromQL expression with its whitespace collapsed and the dashboard's per-VM drill-down taken out."""
    query = re.sub(r'\{instance=~"\$instance"\}|,\s*instance=~"\$instance"|instance=~"\$instance",\s*', "", query)
    return " ".join(query.split())


def test_the_dashboard_counts_what_the_alerts_fire_on():
    """One definition each of "not polling" (and so of the start's grace) and of "metrics vanished": the panels'
    expressions are the alerts'."""
    board = json.loads(DASHBOARD.read_text())
    panels = dict((p["title"], p["targets"][0]["expr"]) for p in board["panels"] if p.get("targets"))
    rules = dict((r["alert"], r["expr"]) for r in alerts())
    for panel, alert in (("Watchers not polling", "ImdsWatcherNotPolling"),
                         ("Watchers whose metrics vanished", "ImdsWatcherMetricsMissing")):
        assert one_line(panels[panel]) == "count(%s) or vector(0)" % one_line(rules[alert]), panel


# A fleet at 20 min, for the dashboard's panels (interval 1m): vm1 polls; vm2's last answer was at 60 s; vm3's watcher
# restarted at 19 min and IMDS has not answered it yet; vm4 booted at 18 min after being down since 11 min, and
# node_exporter serves the file written before (last answer at 600 s); vm5's metrics vanished at 10 min while its
# node_exporter answers.
PANEL_FLEET = {
    "vm1": {"last_successful_poll_timestamp_seconds": "0+60x30", "watcher_start_time_seconds": "0x30",
            "watcher_info": "1x30", "up": "1x30"},
    "vm2": {"last_successful_poll_timestamp_seconds": "60x30", "watcher_start_time_seconds": "0x30",
            "watcher_info": "1x30", "up": "1x30"},
    "vm3": {"last_successful_poll_timestamp_seconds": "0+60x18 0x11", "watcher_start_time_seconds": "0x18 1140x11",
            "watcher_info": "1x30", "up": "1x30"},
    "vm4": {"last_successful_poll_timestamp_seconds": "0+60x10 stale _x6 600x11",
            "watcher_start_time_seconds": "0x10 stale _x6 0x11", "node_boot_time_seconds": "0x10 stale _x6 1080x11",
            "watcher_info": "1x10 stale _x6 1x11", "up": "1x10 0x6 1x12"},
    "vm5": {"last_successful_poll_timestamp_seconds": "0+60x9 stale", "watcher_start_time_seconds": "0x9 stale",
            "watcher_info": "1x9 stale", "up": "1x30"},
}
# panel title: {VM (None: the panel's single number): value at 20 min}
PANEL_VALUES = {
    "Watchers reporting": {None: 4},
    "Watchers not polling": {None: 1},
    "Watchers whose metrics vanished": {None: 1},
    "Seconds without an answer from IMDS": {"vm1": 0, "vm2": 1140, "vm3": 60, "vm4": 600},
}


def test_the_dashboard_panels_over_a_fleet(tools, tmp_path):
    """promtool evaluates the panels' queries over PANEL_FLEET: a watcher that is starting, or whose VM just booted,
    is not counted as not polling; a VM that lost the watcher's metrics is counted."""
    series = []
    for vm, families in PANEL_FLEET.items():
        for family, values in families.items():
            name = family if family in NODE_EXPORTER_SERIES else "imds_scheduled_events_" + family
            labels = 'instance="%s:9100", job="node"' % vm
            if family == "watcher_info":
                labels += ', version="0.1.0"'
            series.append({"series": "%s{%s}" % (name, labels), "values": values})
    queries = panel_queries()
    cases = []
    for title, values in PANEL_VALUES.items():
        samples = [{"labels": "{}" if vm is None else '{instance="%s:9100", job="node"}' % vm, "value": value}
                   for vm, value in values.items()]
        cases.append({"expr": queries[title][0], "eval_time": "20m", "exp_samples": samples})
    document = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [
        {"name": "the dashboard's panels over a fleet", "interval": "1m", "input_series": series,
         "promql_expr_test": cases}]}
    path = tmp_path / "dashboard.test.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    result = run([tools["promtool"], "test", "rules", str(path)])
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout[-5000:]


def promql_string(value):
    """A label value as a PromQL string literal's content (Go's escapes)."""
    out = []
    for char in value:
        if char in "\\\"":
            out.append("\\" + char)
        elif char.isprintable() and char not in "\u2028\u2029":
            out.append(char)
        else:
            out.append("\\u%04x" % ord(char) if ord(char) < 0x10000 else "\\U%08x" % ord(char))
    return "".join(out)


def hostile_cases():
    """The promtool test document of HOSTILE_TESTS: a Started event per hostile value, that value (as the watcher
    writes a label: metrics._label) in event_id, type, source and scope, on a VM whose watcher polls (the notice
    needs an answer from IMDS since the watcher's start); the annotations expected are the rule's with
    each value put in verbatim. PromQL's lexer refuses U+FFFD (the watcher's stand-in for a NUL or a lone
    surrogate), so those two values are left to metrics' own tests."""
    rule = next(r for r in alerts() if r["alert"] == HOSTILE_ALERT)
    series, expected = [], []
    for case in hostile.strings("/nonexistent/canary"):
        value = watcher_label(case.value, "unknown")
        if "\ufffd" in value:
            continue
        labels = {"instance": "vm-%s:9100" % case.name, "job": "node", "event_id": value, "type": value,
                  "source": value, "scope": value}
        selector = ", ".join('%s="%s"' % (k, promql_string(v)) for k, v in labels.items())
        series.append({"series": 'imds_scheduled_events_event_info{%s, status="Started", state="started", held="true"}'
                                 % selector, "values": "1x5"})
        for family, values in (("last_successful_poll_timestamp_seconds", "0+60x5"), ("watcher_start_time_seconds", "0x5")):
            series.append({"series": 'imds_scheduled_events_%s{instance="%s", job="node"}'
                                     % (family, promql_string(labels["instance"])), "values": values})
        annotations = dict((key, re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text))
                           for key, text in rule["annotations"].items())
        expected.append({"exp_labels": dict(labels, severity="info"), "exp_annotations": annotations})
    return {"rule_files": ["../imds-scheduled-events.rules"], "evaluation_interval": "1m", "tests": [{
        "name": "hostile label values (tests/unit/utils/hostile.py, as the watcher writes them) come through the "
                "annotations as text", "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": "2m", "alertname": HOSTILE_ALERT, "exp_alerts": expected}]}]}


class _IndentedSequences(yaml.SafeDumper):
    """Sequences indented under their key, as ansible-lint's yamllint wants them."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def write_hostile_cases():
    """Write HOSTILE_TESTS from hostile_cases(), keeping its header comment (after a change to the table or the rule:
    `PYTHONPATH=tests python tests/system/test_prometheus_rules.py`)."""
    text = HOSTILE_TESTS.read_text(encoding="utf-8")
    header = text[:text.index("rule_files:")]
    HOSTILE_TESTS.write_text(header + yaml.dump(hostile_cases(), Dumper=_IndentedSequences, sort_keys=False,
                                                width=120, allow_unicode=True), encoding="utf-8")


def test_hostile_label_values_come_through_the_annotations_as_text(tools):
    assert load(HOSTILE_TESTS) == hostile_cases(), \
        "the shipped case file is not the hostile table's: PYTHONPATH=tests python tests/system/test_prometheus_rules.py writes it"
    result = run([tools["promtool"], "test", "rules", HOSTILE_TESTS.name], cwd=str(HOSTILE_TESTS.parent))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout[-3000:]


def test_the_dashboard_renders_no_label_as_markup_or_link():
    """Grafana shows label values as text in stat, time series and table panels; a text panel (HTML or Markdown),
    a data link or a panel link could render one as markup or make it a URL. None may, and a link built from a
    label must percent-encode it."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"] + [p for row in dashboard["panels"] for p in row.get("panels", [])]
    assert not [p["title"] for p in panels if p.get("type") in ("text", "news", "dashlist", "annolist")]
    links = [link for p in panels for link in p.get("links", []) + p.get("fieldConfig", {}).get("defaults", {})
             .get("links", [])] + dashboard.get("links", [])
    for link in links:
        url = link.get("url", "")
        assert all(m.endswith(":percentencode") for m in re.findall(r"\$\{([^}]*)\}", url)), url
    assert links == [], "no link: if one is added, the loop above says how it must treat labels"


if __name__ == "__main__":
    write_hostile_cases()
