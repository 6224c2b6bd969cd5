"""Microsoft's own Kusto parser for the tests: tests/kusto/check.js runs @kusto/language-service-next (the
Kusto.Language library Azure Data Explorer, Log Analytics and Resource Graph editors use, published on npm by
Microsoft) under Node over a batch of queries.

``make kql`` installs the package from tests/kusto/package-lock.json (``npm ci``, pinned, into .build/kusto, npm's
cache under IMDS_SE_TEST_CACHE) and runs tests/kusto with IMDS_SE_KUSTO_MODULES naming its node_modules.

What Resource Graph alerts do not support comes from Microsoft's pages, listed in ALERT_RULES: a query a log search
alert rule sends through arg("") is checked against it (``alert_problems``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHECKER = os.path.join(ROOT, "tests", "kusto", "check.js")
MODULES_ENV = "IMDS_SE_KUSTO_MODULES"
PACKAGE = ("@kusto", "language-service-next")
TIMEOUT = 300

# What a query that a log search alert rule sends to Resource Graph may not use, and where Microsoft says so:
# "Troubleshoot Azure Resource Graph alerts" (governance/resource-graph/troubleshoot/alerts), "Correlate data in
# Azure Data Explorer and Azure Resource Graph with data in a Log Analytics workspace" (its Azure Resource Graph
# cross-service query limitations) and "Create or edit a log search alert rule" (query limitations; a one-minute
# frequency, which the template allows, refuses search, union and take).
UNSUPPORTED_FUNCTIONS = ("arg_min", "arg_max", "avg", "avgif", "avg_if", "countif", "sumif", "percentile",
                         "percentiles", "percentilew", "percentilesw", "rand", "stdev", "stdevif", "stdevp",
                         "variance", "varianceif", "variancep", "ingestion_time")
UNSUPPORTED_OPERATORS = {
    "JoinOperator": "join of Resource Graph tables (alerts support a join only with a Log Analytics table)",
    "LookupOperator": "lookup of Resource Graph tables (a join)",
    "MvApplyOperator": "mv-apply",
    "EvaluateOperator": "evaluate (bag_unpack, pivot and narrow are not supported in log search alerts)",
    "SearchOperator": "search (not with a one-minute frequency)",
    "UnionOperator": "union (not with a one-minute frequency)",
    "TakeOperator": "take/limit (not with a one-minute frequency; Resource Graph alerts return 1000 rows at most)",
}
MV_EXPAND_LIMIT = 400
RESERVED = ("AggregatedValue",)


class KustoUnavailable(Exception):
    """Node or the npm package is missing: run make kql."""


def modules_dir():
    return os.path.abspath(os.environ.get(MODULES_ENV) or os.path.join(ROOT, ".build", "kusto", "node_modules"))


def available():
    """None when the checker can run, else why not."""
    if shutil.which("node") is None:
        return "node is not installed (Node 20 runs the checker)"
    if not os.path.isdir(os.path.join(modules_dir(), *PACKAGE)):
        return "%s is not installed in %s: run make kql" % ("/".join(PACKAGE), modules_dir())
    return None


def check(queries, tables):
    """{name: (text, analyze)} -> {name: {"diagnostics", "columns", "operators", "functions", "mvExpandLimits"}}.
    `tables`: {table: ((column, type), ...)}, the only tables and columns analysis knows."""
    missing = available()
    if missing:
        raise KustoUnavailable(missing)
    request = {"tables": dict((name, [list(column) for column in columns]) for name, columns in tables.items()),
               "queries": dict((name, {"text": text, "analyze": analyze}) for name, (text, analyze) in queries.items())}
    env = dict(os.environ, **{MODULES_ENV: modules_dir()})
    proc = subprocess.run(["node", CHECKER], input=json.dumps(request), capture_output=True, text=True,
                          timeout=TIMEOUT, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError("tests/kusto/check.js failed (%d): %s" % (proc.returncode, proc.stderr[-3000:]))
    return json.loads(proc.stdout)


def alert_problems(result, text):
    """What in a query (`result` of check(), `text` the query) a Resource Graph alert does not support."""
    problems = []
    for operator in result["operators"]:
        if operator in UNSUPPORTED_OPERATORS:
            problems.append(UNSUPPORTED_OPERATORS[operator])
    for call in result["functions"]:
        name = call["name"]
        if name.lower() in UNSUPPORTED_FUNCTIONS:
            problems.append("%s() is not supported" % name)
        if name.lower().startswith("bag_"):
            problems.append("%s(): bag functions with keys are not supported" % name)
        if name == "ago" and call["args"] != ["TimespanLiteralExpression"]:
            problems.append("ago() takes a timespan literal only in log search alerts")
    for limit in result["mvExpandLimits"]:
        if limit is None or not limit.isdigit() or int(limit) > MV_EXPAND_LIMIT:
            problems.append("mv-expand needs a limit of at most %d (it has %s)" % (MV_EXPAND_LIMIT, limit))
    for word in RESERVED:
        if word in text:
            problems.append("%s is a reserved word in log search alerts" % word)
    return problems
