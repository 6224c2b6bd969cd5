"""The portal view's moving parts as the tests run them: scripts/portal.py (the builder), the workbook's writing of
its parameters into a query, and Azure Monitor's evaluation of a log search alert rule over the rows its query
returns.

How a rule evaluates is Microsoft's "Create or edit a log search alert rule": the rows are grouped by the rule's
dimension columns (Include/Exclude a list of values, "*" for every value), each group's measure is aggregated
(Count: its rows; Minimum, Maximum, Total: of the measure column) and compared with the threshold; each group that
meets it is an alert. A stateful rule (autoMitigate) notifies when a group starts meeting it and resolves the alert
when it stops; ``Monitor`` keeps that state between evaluations.
"""

from __future__ import annotations

import importlib.util
import operator
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OPERATORS = {"GreaterThan": operator.gt, "GreaterThanOrEqual": operator.ge, "LessThan": operator.lt,
             "LessThanOrEqual": operator.le, "Equals": operator.eq}
AGGREGATIONS = {"Minimum": min, "Maximum": max, "Total": sum}
_BUILDER = []


def builder():
    """scripts/portal.py as a module (loaded once)."""
    if not _BUILDER:
        spec = importlib.util.spec_from_file_location("portal_builder", os.path.join(ROOT, "scripts", "portal.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _BUILDER.append(module)
    return _BUILDER[0]


def workbook_query(text, parameters):
    """The query a workbook runs: each {Name} replaced by the parameter's values, single-quoted and joined by
    commas, as a multi-select parameter with quote ' and delimiter , writes them."""
    for name, values in parameters.items():
        text = text.replace("{%s}" % name, ",".join("'%s'" % value for value in values))
    return text


def _kept(value, dimension):
    listed = "*" in dimension["values"] or value in dimension["values"]
    return listed if dimension["operator"] == "Include" else not listed


def firing(criterion, rows):
    """The dimension values (tuples, in the criterion's order) of the groups that meet one condition of a rule."""
    dimensions = criterion.get("dimensions", [])
    groups = {}
    for row in rows:
        values = tuple(row[d["name"]] for d in dimensions)
        if all(_kept(value, d) for value, d in zip(values, dimensions)):
            groups.setdefault(values, []).append(row)
    compare = OPERATORS[criterion["operator"]]
    met = set()
    for values, members in groups.items():
        if criterion["timeAggregation"] == "Count":
            measured = len(members)
        else:
            numbers = [row[criterion["metricMeasureColumn"]] for row in members
                       if row[criterion["metricMeasureColumn"]] is not None]
            if not numbers:
                continue
            measured = AGGREGATIONS[criterion["timeAggregation"]](numbers)
        if compare(measured, criterion["threshold"]):
            met.add(values)
    return met


class Monitor(object):
    """One stateful log search alert rule: evaluate() with its query's rows gives what it notifies."""

    def __init__(self, rule):
        self.rule = rule
        (self.criterion,) = rule["properties"]["criteria"]["allOf"]
        self.fired = set()

    def evaluate(self, rows):
        """(alerts that fire now, alerts that resolve now): sets of dimension values. A disabled rule never fires."""
        met = firing(self.criterion, rows) if self.rule["properties"]["enabled"] else set()
        new, resolved = met - self.fired, self.fired - met
        if not self.rule["properties"].get("autoMitigate", True):
            new, resolved = met, set()
        self.fired = met
        return new, resolved
