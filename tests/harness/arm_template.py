"""Enough of Azure Resource Manager's template expression language to read deploy/arm/*.json the way ARM does.

Tests take what a template would send to Azure (the Custom Script extension's protected settings, a VM's custom
data) from the template itself instead of retyping it. Only the functions the shipped templates use are known;
an expression with any other fails loudly, so a template change cannot slip past the tests unevaluated.
Function names are case-insensitive, as in ARM; '' is a quote inside a string literal; a string starting with
"[[" is a literal "[".
"""

import base64
import datetime
import hashlib
import json
import re
import uuid


class TemplateError(Exception):
    """The template uses something this evaluator does not know, or refers to an undeclared name."""


_TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<punct>[(),.\[\]]))")


def _tokens(text):
    pos, out = 0, []
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match:
            raise TemplateError("cannot read the expression at %r" % text[pos:pos + 30])
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "string":
            value = value[1:-1].replace("''", "'")
        elif kind == "number":
            value = int(value)
        out.append((kind, value))
    return out


class _Parser(object):
    """expression := call accessor* | string | number ; call := name '(' [expression (',' expression)*] ')'."""

    def __init__(self, tokens):
        self.tokens = tokens
        self.pos = 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def take(self, value=None):
        token = self.peek()
        if token[0] is None or (value is not None and token[1] != value):
            raise TemplateError("expected %r, found %r" % (value, token[1]))
        self.pos += 1
        return token

    def expression(self):
        kind, value = self.take()
        if kind in ("string", "number"):
            node = ("literal", value)
        elif kind == "name":
            self.take("(")
            args = []
            while self.peek()[1] != ")":
                args.append(self.expression())
                if self.peek()[1] == ",":
                    self.take(",")
            self.take(")")
            node = ("call", value.lower(), args)
        else:
            raise TemplateError("unexpected %r" % value)
        while self.peek()[1] in (".", "["):
            if self.take()[1] == ".":
                node = ("member", node, ("literal", self.take()[1]))
            else:
                node = ("member", node, self.expression())
                self.take("]")
        return node


def parse(text):
    parser = _Parser(_tokens(text))
    node = parser.expression()
    if parser.pos != len(parser.tokens):
        raise TemplateError("trailing text in expression %r" % text)
    return node


def _format(fmt, *args):
    def one(match):
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        value = args[int(match.group(1))]
        return _as_text(value)
    return re.sub(r"\{\{|\}\}|\{(\d+)\}", one, fmt)


def _as_text(value):
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _string(value):
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return _as_text(value)


def _empty(value):
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


def _b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def _guid(*parts):
    """A stand-in for ARM's guid(): deterministic in its arguments (not ARM's own hash)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "\x00".join(parts)))


def _unique_string(*parts):
    """A stand-in for ARM's uniqueString(): 13 lower-case characters, deterministic in its arguments."""
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:13]


class Deployment(object):
    """A template with parameter values, as ARM evaluates it (no Azure: resourceGroup() and resourceId() are stand-ins)."""

    FUNCTIONS = {
        "format": _format,
        "base64": _b64,
        "string": _string,
        "concat": lambda *a: [x for part in a for x in part] if a and isinstance(a[0], list) else "".join(map(_string, a)),
        "equals": lambda a, b: a == b,
        "not": lambda a: not a,
        "and": lambda *a: all(a),
        "or": lambda *a: any(a),
        "empty": _empty,
        "null": lambda: None,
        "split": lambda text, sep: text.split(sep),
        "first": lambda v: v[0] if v else None,
        "last": lambda v: v[-1] if v else None,
        "createarray": lambda *a: list(a),
        "tolower": lambda text: text.lower(),
        "true": lambda: True,
        "false": lambda: False,
        "json": json.loads,
        "length": len,
        "sub": lambda a, b: a - b,
        "createobject": lambda *a: dict(zip(a[::2], a[1::2])),
        "guid": _guid,
        "uniquestring": _unique_string,
        "subscription": lambda: {"id": "/subscriptions/" + SUBSCRIPTION, "subscriptionId": SUBSCRIPTION},
        "subscriptionresourceid": lambda kind, *names: "/subscriptions/%s/providers/%s/%s" % (
            SUBSCRIPTION, kind, "/".join(names)),
        # what ARM would read from the deployed resource: a managed identity's principal, derived from its id
        "reference": lambda resource_id, _api=None: {"principalId": _guid("principal", resource_id)},
    }

    def __init__(self, template, parameters, resource_group="test-rg", location="westeurope", now=None):
        self.template = template
        self.now = now or datetime.datetime.now(datetime.timezone.utc)
        self._in_default = False
        declared = template.get("parameters", {})
        unknown = sorted(set(parameters) - set(declared))
        if unknown:
            raise TemplateError("the template declares no parameter(s) %s" % ", ".join(unknown))
        self.parameters = dict(parameters)
        self.resource_group = resource_group
        self.location = location
        self._variables = {}
        self._copy_index = {}

    # --- names -----------------------------------------------------------------------------------------------

    def parameter(self, name):
        declared = self.template.get("parameters", {})
        if name not in declared:
            raise TemplateError("parameters(%r): not declared" % name)
        if name in self.parameters:
            value = self.parameters[name]
        elif "defaultValue" in declared[name]:
            outer, self._in_default = self._in_default, True  # where ARM allows utcNow()
            try:
                value = self.evaluate(declared[name]["defaultValue"])
            finally:
                self._in_default = outer
        else:
            raise TemplateError("parameter %r has no value and no default" % name)
        allowed = declared[name].get("allowedValues")
        if allowed is not None and value not in allowed:
            raise TemplateError("parameter %r = %r is not one of %s" % (name, value, allowed))
        return value

    def variable(self, name):
        declared = self.template.get("variables", {})
        loops = dict((loop["name"], loop) for loop in declared.get("copy", []))
        if name not in declared and name not in loops or name == "copy":
            raise TemplateError("variables(%r): not declared" % name)
        if name not in self._variables:
            if name in loops:  # a variable copy loop: its input once per index, copyIndex(name) the index
                items = []
                for index in range(self.evaluate(loops[name]["count"])):
                    self._copy_index[name] = index
                    items.append(self.evaluate(loops[name]["input"]))
                self._copy_index.pop(name, None)
                self._variables[name] = items
            else:
                self._variables[name] = self.evaluate(declared[name])
        return self._variables[name]

    # --- evaluation -------------------------------------------------------------------------------------------

    def evaluate(self, value):
        """A template value with every expression in it evaluated (objects and arrays recursively)."""
        if isinstance(value, dict):  # a property name may be an expression too (userAssignedIdentities' keys)
            return dict((self.evaluate(k), self.evaluate(v)) for k, v in value.items())
        if isinstance(value, list):
            return [self.evaluate(v) for v in value]
        if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
            if value.startswith("[["):
                return value[1:]
            return self._eval(parse(value[1:-1]))
        return value

    def _eval(self, node):
        kind = node[0]
        if kind == "literal":
            return node[1]
        if kind == "member":
            base, key = self._eval(node[1]), self._eval(node[2])
            try:
                return base[key]
            except (KeyError, IndexError, TypeError):
                raise TemplateError("cannot take %r of %r" % (key, base))
        name, args = node[1], node[2]
        if name == "if":  # ARM evaluates only the branch it takes
            return self._eval(args[1] if self._eval(args[0]) else args[2])
        values = [self._eval(a) for a in args]
        if name == "parameters":
            return self.parameter(values[0])
        if name == "variables":
            return self.variable(values[0])
        if name == "copyindex":
            if values[0] not in self._copy_index:
                raise TemplateError("copyIndex(%r) outside its copy loop" % values[0])
            return self._copy_index[values[0]]
        if name == "utcnow":
            if not self._in_default or values:
                raise TemplateError("utcNow() is allowed only, without a format here, as a parameter's defaultValue "
                                    "(ARM refuses it anywhere else)")
            return self.now.strftime("%Y%m%dT%H%M%SZ")  # its default format, yyyyMMddTHHmmssZ
        if name == "resourcegroup":
            return {"name": self.resource_group, "location": self.location,
                    "id": "/subscriptions/%s/resourceGroups/%s" % (SUBSCRIPTION, self.resource_group)}
        if name == "resourceid":
            return "/subscriptions/%s/resourceGroups/%s/providers/%s/%s" % (
                SUBSCRIPTION, self.resource_group, values[0], "/".join(values[1:]))
        if name not in self.FUNCTIONS:
            raise TemplateError("the evaluator does not know the function %s()" % name)
        return self.FUNCTIONS[name](*values)

    # --- what the tests ask for -------------------------------------------------------------------------------

    def resources(self, type_name):
        """The template's resources of a type whose condition holds, evaluated."""
        found = []
        for resource in self.template.get("resources", []):
            if resource.get("type", "").lower() != type_name.lower():
                continue
            if "condition" in resource and not self.evaluate(resource["condition"]):
                continue
            found.append(self.evaluate(resource))
        return found


def references(value, function):
    """Every name a template value passes to parameters() or variables() (function), anywhere inside it."""
    text = json.dumps(value)
    return set(re.findall(r"%s\(\s*'([^']+)'\s*\)" % function, text, flags=re.IGNORECASE))
