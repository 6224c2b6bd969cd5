"""The reduced KQL the simulator's Resource Graph understands, and how it runs over rows.

Only what a client needs to read scheduled events::

    maintenanceresources
    | where type == "microsoft.maintenance/scheduledevents"      (required; =~ too)
    | where <field> <op> <value> [and <field> <op> <value> ...]  (zero or more, ANDed)
    | project <col>, <col>, ...                                  (optional)
    | order by <col> [asc|desc] [, <col> [asc|desc] ...]         (or sort by; optional)
    | limit N                                                    (or take N; optional)

``<field>`` is a top-level row key (type, name, id, resourceGroup, subscriptionId, location) or
``properties.X`` for X in EventId, EventType, EventStatus, EventSource, ResourceType, also written
``tostring(properties.X)``. ``<op>`` is ``==``, ``=~`` (case-insensitive), ``!=``, ``!~``, ``in``,
``in~``, ``!in``, ``!in~`` with a parenthesised list. Values are "double" or 'single' quoted strings.
Anything else is a ``KqlError`` naming the token that was not understood.
"""

from __future__ import annotations

import dataclasses
import re
import typing as t

TABLE = "maintenanceresources"
SCHEDULED_EVENTS_TYPE = "microsoft.maintenance/scheduledevents"
TOP_FIELDS = ("type", "name", "id", "resourceGroup", "subscriptionId", "location")
PROPERTY_FIELDS = ("EventId", "EventType", "EventStatus", "EventSource", "ResourceType")
# Columns ``project`` and ``order by`` accept besides the filter fields.
PROJECT_COLUMNS = ("id", "name", "type", "tenantId", "kind", "location", "resourceGroup", "subscriptionId", "managedBy",
                   "sku", "plan", "properties", "tags", "identity", "zones", "extendedLocation")
PROJECT_PROPERTIES = PROPERTY_FIELDS + ("Resources", "NotBefore", "Description", "DurationInSeconds")
OPERATORS = ("==", "=~", "!=", "!~", "in", "in~", "!in", "!in~")

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<op>!in~|!in\b|in~|in\b|==|=~|!=|!~)
  | (?P<punct>[|(),.])
  | (?P<number>\d+)(?![A-Za-z_])
  | (?P<word>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)


class KqlError(ValueError):
    """A query outside the subset: ``message`` says what was not understood, ``token`` and ``position`` where."""

    def __init__(self, message, token=None, position=None):
        self.message = message
        self.token = token
        self.position = position
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class Token:
    """One lexical token: its kind (string, op, punct, number, word, end), text, value and offset."""

    kind: str
    text: str
    value: t.Any
    position: int


@dataclasses.dataclass(frozen=True)
class Condition:
    """``field op values``; ``field`` is ``"name"`` or ``"properties.EventStatus"``."""

    field: str
    op: str
    values: t.Tuple[str, ...]

    def test(self, row):
        """Whether a row passes."""
        actual = field_value(row, self.field)
        actual = "" if actual is None else str(actual)
        insensitive = self.op in ("=~", "!~", "in~", "!in~")
        if insensitive:
            actual = actual.lower()
            values = [value.lower() for value in self.values]
        else:
            values = self.values
        found = actual in values
        return not found if self.op.startswith("!") else found


@dataclasses.dataclass(frozen=True)
class Query:
    """A parsed query: conditions (ANDed), projected columns (None: all), sort keys, row limit."""

    conditions: t.Tuple[Condition, ...]
    project: t.Optional[t.Tuple[str, ...]] = None
    order: t.Tuple[t.Tuple[str, bool], ...] = ()
    limit: t.Optional[int] = None

    def run(self, rows):
        """Filter, sort (stable: ties keep the rows' own order, which is by id) and limit ``rows``."""
        selected = [row for row in rows if all(condition.test(row) for condition in self.conditions)]
        for field, descending in reversed(self.order):
            selected.sort(key=lambda row, field=field: _sort_key(field_value(row, field)), reverse=descending)
        if self.limit is not None:
            selected = selected[:self.limit]
        return selected

    def shape(self, row):
        """The row as returned: every column, or the projected ones (``properties.X`` as ``properties_X``)."""
        if self.project is None:
            return row
        return {column.replace(".", "_"): field_value(row, column) for column in self.project}

    @property
    def keeps_id(self):
        """Whether the returned rows carry ``id`` (Resource Graph pages only such results)."""
        return self.project is None or "id" in self.project


def field_value(row, field):
    """A row's value for ``name`` or ``properties.X``."""
    if field.startswith("properties."):
        return (row.get("properties") or {}).get(field[len("properties."):])
    return row.get(field)


def _sort_key(value):
    # null sorts first in ascending order, as in KQL; numbers before text; lists and objects by their text.
    if value is None:
        return (0, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value, "")
    return (2, 0, str(value))


# Kusto's escapes in a quoted string: the quotes, the backslash, \t \n \r; any other escaped character is itself.
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r"}


def unquote(literal):
    """The value of a "double" or 'single' quoted string literal."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), literal[1:-1], flags=re.DOTALL)


def tokenize(text):
    """The tokens of ``text``; a character of no known token is an ``other`` token the parser refuses in context."""
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        kind = match.lastgroup
        raw = match.group()
        if kind != "space":
            value = raw
            if kind == "string":
                value = unquote(raw)
            elif kind == "number":
                value = int(raw)
            tokens.append(Token(kind, raw, value, position))
        position = match.end()
    tokens.append(Token("end", "", None, len(text)))
    return tokens


class _Parser:
    def __init__(self, text):
        self.tokens = tokenize(text)
        self.index = 0

    @property
    def current(self):
        return self.tokens[self.index]

    def take(self):
        token = self.current
        self.index += 1
        return token

    def fail(self, what, token=None):
        token = token or self.current
        shown = "the end of the query" if token.kind == "end" else f"'{token.text}'"
        raise KqlError(f"{what}, found {shown} at position {token.position}", token.text or None, token.position)

    def expect(self, kind, text=None, what=None):
        token = self.current
        if token.kind != kind or (text is not None and token.text != text):
            self.fail(what or (f"expected '{text}'" if text else f"expected a {kind}"))
        return self.take()

    def parse(self):
        table = self.current
        if table.kind != "word" or table.text.lower() != TABLE:
            self.fail(f"the simulator's Resource Graph only has the table '{TABLE}'")
        self.take()
        conditions, project, order, limit = [], None, [], None
        while self.current.kind != "end":
            self.expect("punct", "|", "expected '|' before the next operator")
            operator = self.current
            if operator.kind != "word":
                self.fail("expected an operator (where, project, order by, sort by, limit, take)")
            self.take()
            if operator.text == "where":
                conditions.extend(self.where())
            elif operator.text == "project":
                if project is not None:
                    self.fail("only one 'project' is supported", operator)
                project = self.columns()
            elif operator.text in ("order", "sort"):
                self.expect("word", "by", f"expected 'by' after '{operator.text}'")
                order = self.sort_keys()
            elif operator.text in ("limit", "take"):
                limit = self.expect("number", what=f"expected a row count after '{operator.text}'").value
            else:
                self.fail("unsupported operator (the simulator understands where, project, order by, sort by, "
                          "limit and take)", operator)
        if not any(condition.field == "type" and condition.op in ("==", "=~") for condition in conditions):
            raise KqlError(f"the query must filter on | where type == \"{SCHEDULED_EVENTS_TYPE}\" (the simulator's "
                           f"{TABLE} only holds scheduled events)", None, None)
        for condition in conditions:
            if condition.field == "type" and condition.op in ("==", "=~"):
                wanted = condition.values[0].lower() if condition.op == "=~" else condition.values[0]
                if wanted != SCHEDULED_EVENTS_TYPE:
                    raise KqlError(f"unsupported type {condition.values[0]!r}: the simulator's {TABLE} only holds "
                                   f"{SCHEDULED_EVENTS_TYPE}", condition.values[0], None)
        return Query(tuple(conditions), project, tuple(order), limit)

    def field(self, allowed_top, allowed_properties, what):
        """``name``, ``properties.X`` or ``tostring(properties.X)``."""
        start = self.current
        if start.kind == "word" and start.text == "tostring" and self.tokens[self.index + 1].text == "(":
            self.take()
            self.take()
            name = self.field(allowed_top, allowed_properties, what)
            self.expect("punct", ")", "expected ')' closing tostring(")
            return name
        word = self.expect("word", what=f"expected {what}")
        if word.text == "properties" and self.current.text == ".":
            self.take()
            key = self.expect("word", what="expected a property name after 'properties.'")
            if key.text not in allowed_properties:
                self.fail(f"unsupported property (the simulator knows properties.{', properties.'.join(allowed_properties)})",
                          key)
            return "properties." + key.text
        if word.text not in allowed_top:
            self.fail(f"unsupported column (expected one of {', '.join(allowed_top)}"
                      f"{' or properties.<name>' if allowed_properties else ''})", word)
        return word.text

    def value(self):
        token = self.current
        if token.kind != "string":
            self.fail("expected a quoted string value")
        return self.take().value

    def where(self):
        conditions = [self.condition()]
        while self.current.kind == "word" and self.current.text in ("and", "or"):
            if self.current.text == "or":
                self.fail("'or' is not supported (use 'in' for alternatives)")
            self.take()
            conditions.append(self.condition())
        if self.current.kind not in ("end",) and self.current.text != "|":
            self.fail("expected 'and', '|' or the end of the query")
        return conditions

    def condition(self):
        field = self.field(TOP_FIELDS, PROPERTY_FIELDS, "a column to filter on")
        op = self.current
        if op.kind != "op":
            self.fail(f"expected a comparison ({', '.join(OPERATORS)})")
        self.take()
        if op.text in ("==", "=~", "!=", "!~"):
            return Condition(field, op.text, (self.value(),))
        self.expect("punct", "(", f"expected '(' after '{op.text}'")
        values = [self.value()]
        while self.current.text == ",":
            self.take()
            values.append(self.value())
        self.expect("punct", ")", "expected ',' or ')' in the list of values")
        return Condition(field, op.text, tuple(values))

    def columns(self):
        columns = [self.field(PROJECT_COLUMNS, PROJECT_PROPERTIES, "a column to project")]
        while self.current.text == ",":
            self.take()
            columns.append(self.field(PROJECT_COLUMNS, PROJECT_PROPERTIES, "a column to project"))
        return tuple(dict.fromkeys(columns))

    def sort_keys(self):
        keys = []
        while True:
            column = self.field(PROJECT_COLUMNS, PROJECT_PROPERTIES, "a column to sort by")
            descending = True  # KQL's default direction
            if self.current.kind == "word" and self.current.text in ("asc", "desc"):
                descending = self.take().text == "desc"
            keys.append((column, descending))
            if self.current.text != ",":
                return keys
            self.take()


def parse(text):
    """Parse a query of the subset into a Query; anything else raises KqlError."""
    if not isinstance(text, str) or not text.strip():
        raise KqlError("the query is empty")
    return _Parser(text).parse()
