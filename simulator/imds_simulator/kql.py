"""The part of KQL the simulator's Resource Graph understands, and how it runs over rows.

Enough of Kusto's query language to run what the collection sends and ships: the modules' queries, the workbook
and the log search alert rules of deploy/arm/portal.json (plugins/module_utils/kql.py builds them all), and the
like. Everything else is a ``KqlError`` naming the token that was not understood: a query the simulator cannot run
faithfully is refused, never half-run.

Tables (any case): ``maintenanceresources`` (the scheduled-event rows; a query must first keep
``type == "microsoft.maintenance/scheduledevents"``, the only type the simulator holds there) and ``resources``
(the VMs, scale sets and availability sets). Tabular operators: ``where``, ``extend``, ``project``, ``summarize``
(aggregations ``count``, ``countif``, ``sum``, ``min``, ``max``, ``dcount``, ``make_set``, ``make_list``; ``by``
keys), ``mv-expand`` (``[Name =] expr [limit N]``), ``distinct``, ``order by`` / ``sort by`` and ``take`` /
``limit``. Expressions: string ("double", 'single', Kusto's escapes), long, real, bool and timespan (``30m``,
``1h``, ``2d``, ``10s``) literals, ``dynamic(<JSON>)``; columns and ``a.b`` / ``a[0]`` / ``a["k"]`` member access;
``not``, ``and``, ``or``; ``==``, ``!=``, ``=~``, ``!~``, ``<``, ``<=``, ``>``, ``>=``; ``in``, ``!in``, ``in~``,
``!in~`` with a parenthesised list; ``+``, ``-``, ``*``, ``/``; and the functions of ``FUNCTIONS``.

Kusto's rules kept: strings are never null (a missing property is ``""`` once ``tostring``-ed), a comparison with
a null is not true, ``and``/``or`` are three-valued, integer division truncates towards zero, ``toint`` truncates,
``order by`` defaults to descending with nulls first ascending and last descending, names of one ``extend`` cannot
be used in that same ``extend``, an unnamed column is named as Kusto names it (``properties.X`` is
``properties_X``, ``tostring(properties.X)`` too, ``count()`` is ``count_``), ``mv-expand`` gives no row for an
empty array and one row for a null, ``now()`` is one instant for the whole query (the simulated time).
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import json
import math
import re
import typing as t

TABLE = "maintenanceresources"
SCHEDULED_EVENTS_TYPE = "microsoft.maintenance/scheduledevents"
RESOURCES = "resources"
# The columns Resource Graph gives every row of both tables.
COLUMNS = ("id", "name", "type", "tenantId", "kind", "location", "resourceGroup", "subscriptionId", "managedBy", "sku",
           "plan", "properties", "tags", "identity", "zones", "extendedLocation")
TABLES = (TABLE, RESOURCES)
COMPARISONS = ("==", "!=", "=~", "!~", "<", "<=", ">", ">=")
LIST_OPERATORS = ("in", "!in", "in~", "!in~")
# Kusto's string and range comparisons, which the simulator refuses by name.
UNSUPPORTED_COMPARISONS = ("has", "contains", "startswith", "endswith", "between", "matches", "like", "has_any",
                           "has_all")
TIMESPAN_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# Conversions keep the name of the column they convert, as Kusto names an unnamed column.
NAME_KEEPING = ("tostring", "toint", "tolong", "toreal", "todouble", "todatetime", "tobool", "toboolean")
AGGREGATE_PREFIX = {"sum": "sum", "min": "min", "max": "max", "dcount": "dcount", "make_set": "set",
                    "make_list": "list"}

_TOKEN = re.compile(r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<timespan>\d+(?:\.\d+)?(?:ms|d|h|m|s))(?![A-Za-z0-9_])
  | (?P<real>\d+\.\d+)(?![A-Za-z0-9_])
  | (?P<number>\d+)(?![A-Za-z0-9_])
  | (?P<op>!in~|!in\b|in~|==|=~|!=|!~|<=|>=|[<>=+\-*/])
  | (?P<punct>[|(),.\[\]])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
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
    """One lexical token: its kind (string, timespan, real, number, op, punct, word, other, end), text, value and
    offset."""

    kind: str
    text: str
    value: t.Any
    position: int


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
            elif kind == "real":
                value = float(raw)
            elif kind == "timespan":
                unit = "ms" if raw.endswith("ms") else raw[-1]
                value = datetime.timedelta(seconds=float(raw[:-len(unit)]) * TIMESPAN_UNITS[unit])
            tokens.append(Token(kind, raw, value, position))
        position = match.end()
    tokens.append(Token("end", "", None, len(text)))
    return tokens


# --- values ---------------------------------------------------------------------------------------------------------


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _format_real(value):
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def to_string(value):
    """Kusto's tostring(): "" for null, JSON for arrays and objects, ISO 8601 for datetimes."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_real(value)
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + "%07dZ" % (value.microsecond * 10)
    if isinstance(value, datetime.timedelta):
        return _timespan_text(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _timespan_text(value):
    sign = "-" if value.total_seconds() < 0 else ""
    seconds = abs(value)
    days, rest = divmod(seconds.total_seconds(), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, rest = divmod(rest, 60)
    text = "%02d:%02d:%02d" % (hours, minutes, int(rest))
    if rest != int(rest):
        text += ".%07d" % round((rest - int(rest)) * 1e7)
    return sign + ("%d.%s" % (days, text) if days else text)


def to_json(value):
    """A result value as Resource Graph's JSON carries it."""
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ") if not value.microsecond else to_string(value)
    if isinstance(value, datetime.timedelta):
        return _timespan_text(value)
    return value


def _to_int(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                return _to_int(float(text))
            except ValueError:
                return None
    return None


def _to_real(value):
    if value is None or isinstance(value, (list, dict)):
        return None
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _to_datetime(value):
    if isinstance(value, datetime.datetime):
        return value
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:  # ISO 8601, as 2016-09-19T18:29:47Z or with an offset
        parsed = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        try:  # RFC 822/1123, as NotBefore is written: Mon, 19 Sep 2016 18:29:47 GMT
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc)


def _to_bool(value):
    if value is None or isinstance(value, bool):
        return value
    if _is_number(value):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _is_empty(value):
    return value is None or value == ""


def _substring(text, start, length=None):
    text = to_string(text)
    start, length = _to_int(start), _to_int(length) if length is not None else None
    if start is None:
        return ""
    start = max(start, 0)
    if length is None:
        return text[start:]
    return text[start:start + max(length, 0)]


def _index_of(text, lookup):
    return to_string(text).find(to_string(lookup))


def _split(text, separator):
    return to_string(text).split(to_string(separator))


def _strcat_array(values, delimiter):
    if not isinstance(values, list):
        return ""
    return to_string(delimiter).join(to_string(value) for value in values)


def _set_difference(first, *others):
    if not isinstance(first, list) or not all(isinstance(other, list) for other in others):
        return None
    out = []
    for value in first:
        if value not in out and not any(value in other for other in others):
            out.append(value)
    return out


def _set_intersect(first, *others):
    if not isinstance(first, list) or not all(isinstance(other, list) for other in others):
        return None
    out = []
    for value in first:
        if value not in out and all(value in other for other in others):
            out.append(value)
    return out


def _to_dynamic(value):
    """Kusto's todynamic(): a string's JSON read back (null if it is not JSON), any other value as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return None


def _array_length(value):
    return len(value) if isinstance(value, list) else None


def _iff(condition, then, otherwise):
    return then if condition is True else otherwise


def _not(value):
    value = _to_bool(value)
    return None if value is None else not value


def _coalesce(*values):
    for value in values:
        if not _is_empty(value):
            return value
    return values[-1] if values else None


# name -> (function, smallest and largest number of arguments); now() and ago() need the query's instant.
FUNCTIONS = {
    "tostring": (to_string, 1, 1),
    "toint": (_to_int, 1, 1),
    "tolong": (_to_int, 1, 1),
    "toreal": (_to_real, 1, 1),
    "todouble": (_to_real, 1, 1),
    "todatetime": (_to_datetime, 1, 1),
    "tobool": (_to_bool, 1, 1),
    "toboolean": (_to_bool, 1, 1),
    "isnull": (lambda value: value is None, 1, 1),
    "isnotnull": (lambda value: value is not None, 1, 1),
    "isempty": (_is_empty, 1, 1),
    "isnotempty": (lambda value: not _is_empty(value), 1, 1),
    "iff": (_iff, 3, 3),
    "iif": (_iff, 3, 3),
    "not": (_not, 1, 1),
    "coalesce": (_coalesce, 2, 64),
    "strcat": (lambda *values: "".join(to_string(value) for value in values), 1, 64),
    "strcat_array": (_strcat_array, 2, 2),
    "strlen": (lambda value: len(to_string(value)), 1, 1),
    "tolower": (lambda value: to_string(value).lower(), 1, 1),
    "toupper": (lambda value: to_string(value).upper(), 1, 1),
    "substring": (_substring, 2, 3),
    "indexof": (_index_of, 2, 2),
    "split": (_split, 2, 2),
    "array_length": (_array_length, 1, 1),
    "pack_array": (lambda *values: list(values), 1, 64),
    "set_difference": (_set_difference, 2, 64),
    "set_intersect": (_set_intersect, 2, 64),
    "todynamic": (_to_dynamic, 1, 1),
    "now": (None, 0, 0),
    "ago": (None, 1, 1),
}
AGGREGATES = {"count": (0, 0), "countif": (1, 1), "sum": (1, 1), "min": (1, 1), "max": (1, 1), "dcount": (1, 1),
              "make_set": (1, 1), "make_list": (1, 1)}


# --- expressions ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Expr:
    """A node of an expression: ``kind`` is literal, column, member, call, unary, binary, list or aggregate."""

    kind: str
    value: t.Any = None
    args: t.Tuple[t.Any, ...] = ()
    token: t.Optional[Token] = None

    def path(self):
        """``a.b.c`` as ("a", "b", "c") when the expression is a column with member names after it, else None."""
        if self.kind == "column":
            return (self.value,)
        if self.kind == "member" and isinstance(self.value, str):
            base = self.args[0].path()
            return None if base is None else base + (self.value,)
        return None


def _compare(left, right, insensitive=False):
    """-1, 0, 1, or None when a side is null or the two cannot be compared."""
    if left is None or right is None:
        return None
    if isinstance(left, bool) or isinstance(right, bool):
        if not isinstance(left, bool) or not isinstance(right, bool):
            return None
    elif _is_number(left) and _is_number(right):
        return (left > right) - (left < right)
    if isinstance(left, str) and isinstance(right, str) and insensitive:
        left, right = left.lower(), right.lower()
    try:
        return (left > right) - (left < right)
    except TypeError:
        return 0 if left == right else None


def _equals(left, right, insensitive=False):
    if left is None or right is None:
        return None
    if insensitive:
        if not isinstance(left, str) or not isinstance(right, str):
            return None
        return left.lower() == right.lower()
    if isinstance(left, (list, dict)) or isinstance(right, (list, dict)):
        return left == right
    order = _compare(left, right)
    return None if order is None and type(left) is not type(right) else order == 0


def _arithmetic(op, left, right, token):
    if left is None or right is None:
        return None
    try:
        if op == "+":
            if isinstance(left, str) or isinstance(right, str):
                raise TypeError
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        if isinstance(left, int) and isinstance(right, int) and not isinstance(left, bool):
            if right == 0:
                return None
            quotient = abs(left) // abs(right)
            return quotient if (left >= 0) == (right >= 0) else -quotient
        if isinstance(left, datetime.timedelta) and isinstance(right, datetime.timedelta):
            return left / right if right else None
        return left / right
    except (TypeError, ZeroDivisionError, OverflowError):
        raise KqlError(f"cannot apply '{op}' to {_kind_of(left)} and {_kind_of(right)}", token.text, token.position)


def _kind_of(value):
    return {bool: "bool", int: "long", float: "real", str: "string", datetime.datetime: "datetime",
            datetime.timedelta: "timespan"}.get(type(value), "dynamic")


class _Evaluator:
    """Evaluates expressions over one row (a dict) at the query's instant."""

    def __init__(self, now):
        self.now = now

    def value(self, expr, row):
        kind = expr.kind
        if kind == "literal":
            return expr.value
        if kind == "column":
            return row.get(expr.value)
        if kind == "member":
            base = self.value(expr.args[0], row)
            key = expr.value if isinstance(expr.value, str) else self.value(expr.value, row)
            if isinstance(base, dict) and isinstance(key, str):
                return base.get(key)
            if isinstance(base, list) and isinstance(key, int) and not isinstance(key, bool):
                return base[key] if -len(base) <= key < len(base) else None
            return None
        if kind == "unary":
            value = self.value(expr.args[0], row)
            if value is None:
                return None
            if isinstance(value, (str, bool, list, dict)):
                raise KqlError(f"cannot negate a {_kind_of(value)}", expr.token.text, expr.token.position)
            return -value
        if kind == "binary":
            return self.binary(expr, row)
        if kind == "list":
            return self.in_list(expr, row)
        if kind == "call":
            return self.call(expr, row)
        raise KqlError(f"'{expr.token.text}' cannot be used here", expr.token.text, expr.token.position)

    def binary(self, expr, row):
        op = expr.value
        if op in ("and", "or"):
            left = _to_bool(self.value(expr.args[0], row))
            if op == "and" and left is False or op == "or" and left is True:
                return left
            right = _to_bool(self.value(expr.args[1], row))
            if op == "and":
                return False if right is False else (None if left is None or right is None else True)
            return True if right is True else (None if left is None or right is None else False)
        left, right = self.value(expr.args[0], row), self.value(expr.args[1], row)
        if op in ("==", "!=", "=~", "!~"):
            equal = _equals(left, right, insensitive=op in ("=~", "!~"))
            return equal if equal is None or op in ("==", "=~") else not equal
        if op in ("<", "<=", ">", ">="):
            order = _compare(left, right)
            if order is None:
                return None
            return {"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[op]
        return _arithmetic(op, left, right, expr.token)

    def in_list(self, expr, row):
        op = expr.value
        left = self.value(expr.args[0], row)
        values = []
        for item in expr.args[1:]:
            value = self.value(item, row)
            values.extend(value if isinstance(value, list) else [value])
        if left is None:
            return None
        found = any(_equals(left, value, insensitive=op.endswith("~")) for value in values)
        return not found if op.startswith("!") else found

    def call(self, expr, row):
        name = expr.value
        args = [self.value(arg, row) for arg in expr.args]
        if name == "now":
            return self.now
        if name == "ago":
            if not isinstance(args[0], datetime.timedelta):
                raise KqlError("ago() takes a timespan", expr.token.text, expr.token.position)
            return self.now - args[0]
        return FUNCTIONS[name][0](*args)


# --- the parser -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Condition:
    """A ``where`` clause of the form ``field op "value"`` (or a list of values): ``field`` is ``"name"`` or
    ``"properties.EventStatus"`` (``tostring()`` around it is dropped)."""

    field: str
    op: str
    values: t.Tuple[t.Any, ...]


@dataclasses.dataclass
class Operator:
    """One tabular operator: its name, the token it starts at and what it holds."""

    name: str
    token: Token
    items: t.List[t.Any] = dataclasses.field(default_factory=list)  # (name, Expr) pairs, or Exprs for where
    by: t.List[t.Any] = dataclasses.field(default_factory=list)  # summarize's (name, Expr) keys; order's (Expr, desc)
    count: t.Optional[int] = None  # take's rows, mv-expand's limit


class _Parser:
    def __init__(self, text):
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    @property
    def current(self):
        return self.tokens[self.index]

    def peek(self, ahead=1):
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

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

    def at(self, text):
        return self.current.kind in ("word", "op", "punct") and self.current.text == text

    def parse(self):
        table = self.current
        if table.kind != "word" or table.text.lower() not in TABLES:
            self.fail(f"the simulator's Resource Graph has the tables {' and '.join(TABLES)} only")
        self.take()
        operators = []
        while self.current.kind != "end":
            self.expect("punct", "|", "expected '|' before the next operator")
            operators.append(self.operator())
        return Query(table.text.lower(), operators, self.text)

    def operator_name(self):
        """A tabular operator's name, dashes included (mv-expand): the words and dashes written without spaces."""
        token = self.current
        if token.kind != "word":
            self.fail("expected an operator (where, extend, project, summarize, mv-expand, distinct, order by, "
                      "sort by, take, limit)")
        name, end = token.text, token.position + len(token.text)
        self.take()
        while self.at("-") and self.current.position == end and self.peek().kind == "word" \
                and self.peek().position == end + 1:
            self.take()
            word = self.take()
            name += "-" + word.text
            end = word.position + len(word.text)
        return name, token

    def operator(self):
        name, token = self.operator_name()
        operator = Operator(name, token)
        if name == "where":
            operator.items = [self.expression()]
        elif name in ("extend", "project"):
            operator.items = self.assignments(allow_unnamed=True)
        elif name == "summarize":
            if not self.at("by"):
                operator.items = self.assignments(allow_unnamed=True, aggregate=True)
            if self.at("by"):
                self.take()
                operator.by = self.assignments(allow_unnamed=True)
        elif name == "mv-expand":
            if self.current.kind == "word" and self.current.text in ("kind", "bagexpansion", "with_itemindex") \
                    and self.peek().text == "=":
                self.fail("mv-expand's kind, bagexpansion and with_itemindex are not supported")
            operator.items = [self.assignment(allow_unnamed=True)]
            if self.at("to"):
                self.fail("mv-expand's 'to typeof()' is not supported")
            if self.at(","):
                self.fail("mv-expand of several columns at once is not supported")
            if self.at("limit"):
                self.take()
                operator.count = self.expect("number", what="expected a row count after 'limit'").value
        elif name == "distinct":
            operator.items = [self.column_name()]
            while self.at(","):
                self.take()
                operator.items.append(self.column_name())
        elif name in ("order", "sort"):
            self.expect("word", "by", f"expected 'by' after '{name}'")
            operator.by = self.sort_keys()
        elif name in ("take", "limit"):
            operator.count = self.expect("number", what=f"expected a row count after '{name}'").value
        else:
            self.fail("unsupported operator (the simulator understands where, extend, project, summarize, mv-expand, "
                      "distinct, order by, sort by, take and limit)", Token("word", name, name, token.position))
        if self.current.kind != "end" and not self.at("|"):
            self.fail("expected '|' or the end of the query")
        return operator

    def column_name(self):
        token = self.expect("word", what="expected a column name")
        return (token.text, Expr("column", token.text, token=token))

    def assignments(self, allow_unnamed, aggregate=False):
        items = [self.assignment(allow_unnamed, aggregate)]
        while self.at(","):
            self.take()
            items.append(self.assignment(allow_unnamed, aggregate))
        return items

    def assignment(self, allow_unnamed, aggregate=False):
        """``Name = expr`` or an unnamed expression (named as Kusto names it, or refused)."""
        start = self.current
        if start.kind == "word" and self.peek().text == "=" and self.peek().kind == "op":
            self.take()
            self.take()
            return (start.text, self.aggregate() if aggregate else self.expression())
        expr = self.aggregate() if aggregate else self.expression()
        if not allow_unnamed:
            self.fail("expected 'Name = expression'", start)
        return (self.name_of(expr, start), expr)

    def name_of(self, expr, token):
        """The column name Kusto gives an unnamed expression, for the forms whose naming the simulator knows."""
        path = expr.path()
        if path is not None:
            return "_".join(path)
        if expr.kind == "call" and expr.value in NAME_KEEPING and expr.args[0].path() is not None:
            return "_".join(expr.args[0].path())
        if expr.kind == "aggregate":
            if expr.value in ("count", "countif"):
                return expr.value + "_"
            if expr.args and expr.args[0].path() is not None:
                return AGGREGATE_PREFIX[expr.value] + "_" + "_".join(expr.args[0].path())
        self.fail("name this column (Name = expression): the simulator does not know the name Kusto would give it",
                  token)
        return None  # not reached

    def aggregate(self):
        token = self.current
        if token.kind != "word" or token.text not in AGGREGATES or self.peek().text != "(":
            self.fail("expected an aggregation (%s)" % ", ".join(f"{name}()" for name in AGGREGATES))
        self.take()
        args = self.arguments()
        low, high = AGGREGATES[token.text]
        if not low <= len(args) <= high:
            self.fail(f"{token.text}() takes {low if low == high else f'{low} to {high}'} argument(s)", token)
        return Expr("aggregate", token.text, tuple(args), token)

    def sort_keys(self):
        keys = []
        while True:
            expr = self.expression()
            descending = True  # KQL's default direction
            if self.current.kind == "word" and self.current.text in ("asc", "desc"):
                descending = self.take().text == "desc"
            if self.at("nulls"):
                self.fail("'nulls first' and 'nulls last' are not supported")
            keys.append((expr, descending))
            if not self.at(","):
                return keys
            self.take()

    def arguments(self):
        self.expect("punct", "(")
        args = []
        if not self.at(")"):
            args.append(self.expression())
            while self.at(","):
                self.take()
                args.append(self.expression())
        self.expect("punct", ")", "expected ',' or ')'")
        return args

    # precedence, lowest first: or, and, comparisons and in, + -, * /, unary -, member access
    def expression(self):
        return self.binary_level(("or",), self.conjunction)

    def conjunction(self):
        return self.binary_level(("and",), self.comparison)

    def binary_level(self, operators, operand):
        left = operand()
        while self.current.kind in ("word", "op") and self.current.text in operators:
            token = self.take()
            left = Expr("binary", token.text, (left, operand()), token)
        return left

    def comparison(self):
        left = self.additive()
        token = self.current
        if token.kind == "op" and token.text in COMPARISONS:
            self.take()
            return Expr("binary", token.text, (left, self.additive()), token)
        if (token.kind == "op" and token.text in LIST_OPERATORS) or (token.kind == "word" and token.text == "in"):
            self.take()
            self.expect("punct", "(", f"expected '(' after '{token.text}'")
            values = [self.expression()]
            while self.at(","):
                self.take()
                values.append(self.expression())
            self.expect("punct", ")", "expected ',' or ')' in the list of values")
            return Expr("list", token.text, (left,) + tuple(values), token)
        if token.kind == "word" and token.text in UNSUPPORTED_COMPARISONS:
            self.fail("unsupported operator (the simulator compares with ==, !=, =~, !~, <, <=, >, >=, in, in~, !in "
                      "and !in~)")
        if token.kind == "other" and token.text == "!":
            self.fail("unsupported operator")
        return left

    def additive(self):
        return self.binary_level(("+", "-"), self.multiplicative)

    def multiplicative(self):
        return self.binary_level(("*", "/"), self.unary)

    def unary(self):
        if self.at("-"):
            token = self.take()
            return Expr("unary", "-", (self.unary(),), token)
        return self.postfix(self.primary())

    def postfix(self, expr):
        while True:
            if self.at(".") and self.peek().kind == "word":
                self.take()
                name = self.take()
                expr = Expr("member", name.text, (expr,), name)
            elif self.at("["):
                token = self.take()
                index = self.expression()
                self.expect("punct", "]", "expected ']'")
                key = index.value if index.kind == "literal" and isinstance(index.value, str) else index
                expr = Expr("member", key, (expr,) if isinstance(key, str) else (expr, key), token)
            else:
                return expr

    def primary(self):
        token = self.current
        if token.kind in ("string", "number", "real", "timespan"):
            self.take()
            return Expr("literal", token.value, token=token)
        if self.at("("):
            self.take()
            expr = self.expression()
            self.expect("punct", ")", "expected ')'")
            return expr
        if token.kind == "word":
            if token.text in ("true", "false") and self.peek().text != "(":
                self.take()
                return Expr("literal", token.text == "true", token=token)
            if self.peek().text == "(" and self.peek().kind == "punct":
                return self.call()
            self.take()
            return Expr("column", token.text, token=token)
        self.fail("expected a value, a column or a function")
        return None  # not reached

    def call(self):
        token = self.take()
        name = token.text
        if name == "dynamic":
            return Expr("literal", self.dynamic_literal(token), token=token)
        if name in AGGREGATES and name not in FUNCTIONS:
            self.fail(f"{name}() is an aggregation: it belongs in summarize", token)
        if name not in FUNCTIONS:
            self.fail("unknown function (the simulator knows %s)" % ", ".join(sorted(FUNCTIONS)), token)
        args = self.arguments()
        _function, low, high = FUNCTIONS[name]
        if not low <= len(args) <= high:
            self.fail(f"{name}() takes {low if low == high else f'{low} to {high}'} argument(s)", token)
        return Expr("call", name, tuple(args), token)

    def dynamic_literal(self, keyword):
        """dynamic(<JSON>): the text between the parentheses, read as JSON."""
        opening = self.expect("punct", "(")
        depth, start = 1, opening.position + 1
        while depth:
            token = self.take()
            if token.kind == "end":
                self.fail("expected ')' closing dynamic(", token)
            if token.text in ("(", "["):
                depth += token.text == "("
            elif token.text == ")":
                depth -= 1
        try:
            return json.loads(self.text[start:token.position])
        except ValueError:
            self.fail("dynamic() holds no JSON value the simulator can read", keyword)
        return None  # not reached


# --- running a query ------------------------------------------------------------------------------------------------


def _sort_key(value):
    # null sorts first in ascending order, as in KQL; numbers before text; lists and objects by their text.
    if value is None:
        return (0, 0, "")
    if isinstance(value, bool):
        return (1, int(value), "")
    if _is_number(value):
        return (1, value, "")
    if isinstance(value, datetime.datetime):
        return (1, value.timestamp(), "")
    if isinstance(value, datetime.timedelta):
        return (1, value.total_seconds(), "")
    return (2, 0, to_string(value))


def _hashable(value):
    return json.dumps(to_json(value), sort_keys=True, default=str) if isinstance(value, (list, dict)) else value


class Query:
    """A parsed query: its table and operators. ``run`` returns the rows (dicts, in Resource Graph's JSON)."""

    def __init__(self, table, operators, text=""):
        self.table = table
        self.operators = operators
        self.text = text
        self.columns = self._check()

    # -- what the query says -----------------------------------------------------------------------------------

    @property
    def conditions(self):
        """Every ``where`` clause of the form ``field op literal(s)``, the conjuncts of an ``and`` one by one."""
        found = []
        for operator in self.operators:
            if operator.name == "where":
                found.extend(condition for condition in map(_condition, _conjuncts(operator.items[0])) if condition)
        return tuple(found)

    @property
    def project(self):
        """The names of the last ``project``, None without one."""
        projects = [operator for operator in self.operators if operator.name == "project"]
        return tuple(name for name, _expr in projects[-1].items) if projects else None

    @property
    def limit(self):
        takes = [operator.count for operator in self.operators if operator.name in ("take", "limit")]
        return takes[-1] if takes else None

    @property
    def keeps_id(self):
        """Whether the returned rows carry ``id`` (Resource Graph pages only such results)."""
        return "id" in self.columns

    # -- checks before running ---------------------------------------------------------------------------------

    def _check(self):
        """The result's columns; refuses a name no column has and, for maintenanceresources, a query that does not
        first keep the scheduled events (the only type the simulator's table holds)."""
        if self.table == TABLE:
            self._check_type_filter()
        columns = list(COLUMNS)
        for operator in self.operators:
            columns = self._columns_after(operator, columns)
        return tuple(columns)

    def _check_type_filter(self):
        for operator in self.operators:
            if operator.name != "where":
                break
            for condition in map(_condition, _conjuncts(operator.items[0])):
                if condition and condition.field == "type" and condition.op in ("==", "=~"):
                    wanted = condition.values[0]
                    wanted = wanted.lower() if condition.op == "=~" and isinstance(wanted, str) else wanted
                    if wanted != SCHEDULED_EVENTS_TYPE:
                        raise KqlError(f"unsupported type {condition.values[0]!r}: the simulator's {TABLE} only holds "
                                       f"{SCHEDULED_EVENTS_TYPE}", str(condition.values[0]), None)
                    return
        raise KqlError(f"the query must filter on | where type == \"{SCHEDULED_EVENTS_TYPE}\" first (the simulator's "
                       f"{TABLE} only holds scheduled events)", None, None)

    @staticmethod
    def _known(expr, columns):
        for node in _nodes(expr):
            if node.kind == "column" and node.value not in columns:
                raise KqlError(f"unknown column '{node.value}' (the columns here are {', '.join(columns)})",
                               node.value, node.token.position if node.token else None)
            if node.kind == "aggregate" and expr.kind != "aggregate":
                raise KqlError(f"{node.value}() cannot be nested in an expression", node.value, node.token.position)

    def _columns_after(self, operator, columns):
        name = operator.name
        if name == "where":
            self._known(operator.items[0], columns)
            return columns
        if name in ("extend", "project"):
            for _column, expr in operator.items:
                self._known(expr, columns)  # names made in the same extend are not columns yet, as in Kusto
            made = [column for column, _expr in operator.items]
            if len(set(made)) != len(made):
                raise KqlError(f"a column is named twice in '{name}'", name, operator.token.position)
            if name == "project":
                return made
            return columns + [column for column in made if column not in columns]  # a name taken is replaced
        if name == "summarize":
            for _column, expr in operator.items + operator.by:
                self._known(expr, columns)
            return [column for column, _expr in operator.by] + [column for column, _expr in operator.items]
        if name == "mv-expand":
            column, expr = operator.items[0]
            self._known(expr, columns)
            return columns if column in columns else columns + [column]
        if name == "distinct":
            for _column, expr in operator.items:
                self._known(expr, columns)
            return [column for column, _expr in operator.items]
        if name in ("order", "sort"):
            for expr, _descending in operator.by:
                self._known(expr, columns)
        return columns

    # -- running -----------------------------------------------------------------------------------------------

    def run(self, tables, now):
        """The result rows over ``tables`` ({table name: rows}) at the instant ``now`` (an aware datetime)."""
        evaluator = _Evaluator(now)
        rows = [dict(row) for row in tables.get(self.table, [])]
        for operator in self.operators:
            rows = getattr(self, "_" + operator.name.replace("-", "_"))(operator, rows, evaluator)
        return [dict((column, to_json(row.get(column))) for column in self.columns) for row in rows]

    @staticmethod
    def _where(operator, rows, evaluator):
        return [row for row in rows if _to_bool(evaluator.value(operator.items[0], row)) is True]

    @staticmethod
    def _extend(operator, rows, evaluator):
        out = []
        for row in rows:
            made = dict((column, evaluator.value(expr, row)) for column, expr in operator.items)
            out.append(dict(row, **made))
        return out

    @staticmethod
    def _project(operator, rows, evaluator):
        return [dict((column, evaluator.value(expr, row)) for column, expr in operator.items) for row in rows]

    @staticmethod
    def _summarize(operator, rows, evaluator):
        groups = {}
        for row in rows:
            keys = tuple(evaluator.value(expr, row) for _column, expr in operator.by)
            groups.setdefault(tuple(_hashable(key) for key in keys), (keys, []))[1].append(row)
        if not operator.by and not groups:
            groups[()] = ((), [])
        out = []
        for keys, members in groups.values():
            result = dict((column, key) for (column, _expr), key in zip(operator.by, keys))
            for column, expr in operator.items:
                result[column] = _aggregate(expr, members, evaluator)
            out.append(result)
        return out

    @staticmethod
    def _mv_expand(operator, rows, evaluator):
        column, expr = operator.items[0]
        limit = operator.count
        out = []
        for row in rows:
            value = evaluator.value(expr, row)
            if isinstance(value, list):
                items = value
            elif isinstance(value, dict):
                items = [{key: item} for key, item in value.items()]
            else:
                items = [value]
            for item in items[:limit] if limit is not None else items:
                out.append(dict(row, **{column: item}))
        return out

    @staticmethod
    def _distinct(operator, rows, evaluator):
        seen, out = set(), []
        for row in rows:
            values = tuple(evaluator.value(expr, row) for _column, expr in operator.items)
            key = tuple(_hashable(value) for value in values)
            if key not in seen:
                seen.add(key)
                out.append(dict((column, value) for (column, _expr), value in zip(operator.items, values)))
        return out

    @staticmethod
    def _order(operator, rows, evaluator):
        ordered = list(rows)
        for expr, descending in reversed(operator.by):  # stable: ties keep the rows' own order
            ordered.sort(key=lambda row, expr=expr: _sort_key(evaluator.value(expr, row)), reverse=descending)
        return ordered

    _sort = _order

    @staticmethod
    def _take(operator, rows, evaluator):
        del evaluator
        return rows[:operator.count]

    _limit = _take


def _aggregate(expr, rows, evaluator):
    name = expr.value
    if name == "count":
        return len(rows)
    values = [evaluator.value(expr.args[0], row) for row in rows]
    if name == "countif":
        return sum(1 for value in values if _to_bool(value) is True)
    present = [value for value in values if value is not None]
    if name == "sum":
        return sum(value for value in present if _is_number(value) or isinstance(value, datetime.timedelta)) \
            if present else None
    if name in ("min", "max"):
        if not present:
            return None
        pick = min if name == "min" else max
        return pick(present, key=_sort_key)
    if name == "dcount":
        return len(set(_hashable(value) for value in present))
    if name == "make_set":
        out = []
        for value in present:
            if value not in out:
                out.append(value)
        return [to_json(value) for value in out]
    return [to_json(value) for value in present]  # make_list


def _nodes(expr):
    yield expr
    for arg in expr.args:
        if isinstance(arg, Expr):
            yield from _nodes(arg)
    if isinstance(expr.value, Expr):
        yield from _nodes(expr.value)


def _conjuncts(expr):
    if expr.kind == "binary" and expr.value == "and":
        return _conjuncts(expr.args[0]) + _conjuncts(expr.args[1])
    return [expr]


def _condition(expr):
    """``field op literal(s)`` as a Condition, None for any other predicate."""
    if expr.kind not in ("binary", "list") or expr.value in ("and", "or"):
        return None
    target = expr.args[0]
    if target.kind == "call" and target.value == "tostring":
        target = target.args[0]
    path = target.path()
    values = expr.args[1:]
    if path is None or not values or any(value.kind != "literal" for value in values):
        return None
    if expr.kind == "binary" and expr.value not in COMPARISONS:
        return None
    return Condition(".".join(path), expr.value, tuple(value.value for value in values))


def parse(text):
    """Parse a query of the subset into a Query; anything else raises KqlError."""
    if not isinstance(text, str) or not text.strip():
        raise KqlError("the query is empty")
    return _Parser(text).parse()
