"""The blocks of a document that tests read, taken from the document itself: one copy, not two.

The blocks and their markers are found by tests/harness/doc_commands.py (the one reader of the docs' fenced blocks).
A block a test reads names it in its marker's note (after the comma; for a json or yaml block, the whole marker):

    <!-- tested: firstboot, tests/system/test_first_boot.py runs it as "status" -->
    <!-- tested: no: azure, tests/unit/deploy/test_readme.py checks it as "existing VM" -->
    <!-- tested: tests/system/test_first_boot.py deploys it as "watcher.parameters.json" -->

that is `<the test file> <what it does with> it as "<its name>"`. A test asks for a block by its own path and the
name; `az` commands are read into their parameters as the Azure CLI would pass them to a template.
"""

import json
import re
import shlex
from pathlib import Path

from harness import doc_commands

ROOT = Path(__file__).resolve().parent.parent.parent
_NAMED = re.compile(r'^(?P<test>\S+\.py) (?P<what>[^"]+?) it as "(?P<name>[^"]+)"$')
_NAMING_MARK = re.compile(r'^\s*<!--\s*tested:.* it as "[^"]+"\s*-->\s*$', re.MULTILINE)


class Block(object):
    """A named block: the test that reads it, its name, language, text, the line of its first line in the document,
    and where doc_commands says it runs (a shell block; None for the others)."""

    def __init__(self, document, line, lang, body, mark):
        self.document = document
        self.lang = lang
        self.text = "\n".join(body) + "\n"
        self.line = line
        self.where = None
        note = mark
        if lang in doc_commands.SHELLS:
            self.where, dummy, note, dummy = doc_commands.parse_mark(mark)
        named = _NAMED.match(note or "")
        self.test, self.what, self.name = named.group("test", "what", "name") if named else (None, None, None)

    def __repr__(self):
        return "%s:%d (%s block %r)" % (self.document, self.line, self.lang, self.name)


def blocks(document):
    """Every named block of a document (a path relative to the repository's root, or absolute). A naming marker
    that does not stand right above a fenced block is an error: a test would silently lose its block."""
    text = (ROOT / document).read_text()
    found = [Block(document, *parts) for parts in doc_commands.markdown_blocks(text) if parts[3] is not None]
    found = [item for item in found if item.name is not None]
    if len(found) != len(_NAMING_MARK.findall(text)):
        raise ValueError('%s: a \'<!-- tested: ... it as "<name>" -->\' marker is not right above its fenced block'
                         % document)
    return found


def block(document, test, name):
    """The block `name` that `test` (its path relative to the repository's root) reads in `document`."""
    mine = [b for b in blocks(document) if b.test == test and b.name == name]
    if len(mine) != 1:
        raise LookupError("%s has %d block(s) named %r for %s" % (document, len(mine), name, test))
    return mine[0]


def shell_commands(text):
    """A shell block's commands as argv lists, as sh splits them (continuation lines joined, comments dropped). A
    `$(...)` or `$VAR` stays in its word, unexpanded."""
    joined = re.sub(r"\\\n", " ", text)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip() and
            not line.lstrip().startswith("#")]


class AzDeployment(object):
    """`az deployment group create`: its template file, and its `--parameters` in order (name=value words and
    @files)."""

    def __init__(self, argv):
        self.argv = argv
        self.options = {}
        self.parameters = []  # ("file", path) or ("value", name, raw text)
        position = 4  # after az deployment group create
        while position < len(argv):
            word = argv[position]
            if not word.startswith("--"):
                raise ValueError("unexpected %r in %s" % (word, " ".join(argv)))
            values = []
            position += 1
            while position < len(argv) and not argv[position].startswith("--"):
                values.append(argv[position])
                position += 1
            if word == "--parameters":
                for value in values:
                    if value.startswith("@"):
                        self.parameters.append(("file", value[1:]))
                    else:
                        name, sep, raw = value.partition("=")
                        if not sep:
                            raise ValueError("--parameters %r is neither @file nor name=value" % value)
                        self.parameters.append(("value", name, raw))
            else:
                self.options[word] = values[0] if len(values) == 1 else values

    @property
    def template_file(self):
        return self.options["--template-file"]

    def values(self):
        """{name: raw text} of the name=value parameters (the last one wins, as in the CLI)."""
        return dict((p[1], p[2]) for p in self.parameters if p[0] == "value")

    def files(self):
        return [p[1] for p in self.parameters if p[0] == "file"]


def az_deployments(text):
    """The `az deployment group create` commands of a shell block."""
    return [AzDeployment(argv) for argv in shell_commands(text) if argv[:4] == ["az", "deployment", "group", "create"]]


def from_shell(raw):
    """Whether a value is the shell's (a `$(...)` or `$VAR` the CLI receives already expanded)."""
    return raw.startswith("$")


def typed(raw, spec):
    """A name=value word's value as the Azure CLI hands it to a parameter of this template spec (type and allowed
    values); ValueError when it cannot. A value from the shell is a string, which only a string parameter takes."""
    kind = spec["type"].lower()
    if from_shell(raw):
        if kind not in ("string", "securestring"):
            raise ValueError("%s comes from the shell: a string, for a %s parameter" % (raw, spec["type"]))
        return raw
    if kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise ValueError("%r is not a bool" % raw)
        value = raw.lower() == "true"
    elif kind == "int":
        if not re.fullmatch(r"-?\d+", raw):
            raise ValueError("%r is not an int" % raw)
        value = int(raw)
    elif kind in ("object", "secureobject", "array"):
        value = json.loads(raw)
        if not isinstance(value, list if kind == "array" else dict):
            raise ValueError("%r is not an %s" % (raw, kind))
    else:
        value = raw
    if "allowedValues" in spec and value not in spec["allowedValues"]:
        raise ValueError("%r is not one of %s" % (value, spec["allowedValues"]))
    return value


def parameters_file(document, name):
    """{parameter: value} of a deploymentParameters JSON block of the document, named as the file the commands
    pass with @."""
    found = [b for b in blocks(document) if b.name == name and b.lang == "json"]
    if len(found) != 1:
        raise LookupError("%s has %d json block(s) named %r" % (document, len(found), name))
    content = json.loads(found[0].text)
    if not content.get("$schema", "").endswith("/deploymentParameters.json#"):
        raise ValueError("%r is not a deploymentParameters file" % name)
    return dict((key, entry["value"]) for key, entry in content["parameters"].items())
