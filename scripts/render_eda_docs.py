# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the Event-Driven Ansible event sources' DOCUMENTATION and EXAMPLES into docs/eda-sources/, the way
antsibull-docs renders the modules into docs/plugins/ (simplified RST: the same sections, the same parameter table,
the same markup rendering, by antsibull-docs' own parser and formatters). antsibull-docs itself renders only
ansible-core's plugin types, and an event source (extensions/eda/plugins/event_source/) is not one of them.

Usage: python scripts/render_eda_docs.py DEST        (make docs: DEST is docs/eda-sources; make docs-check renders
                                                     into .build and compares)

The files are read, never imported. Exits 1, saying what and where, when a DOCUMENTATION is not YAML, lacks
short_description or description, an option lacks a description or has a type ansible-doc would not know, or
the markup does not parse.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import urllib.parse

import yaml
from markupsafe import escape
from antsibull_docs.markup.rstify import SimplifiedRSTFormatter
from antsibull_docs_parser import dom
from antsibull_docs_parser.format import LinkProvider
from antsibull_docs_parser.html import to_html
from antsibull_docs_parser.parser import Context, Whitespace, parse
from antsibull_docs_parser.rst import to_rst

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = os.path.join(ROOT, "extensions", "eda", "plugins", "event_source")
PLUGIN_TYPE = "event_source"
# antsibull-docs' documented_type filter
TYPES = {"str": "string", "bool": "boolean", "int": "integer", "float": "float", "list": "list", "dict": "dictionary",
         "path": "path", "raw": "raw", "any": "any"}
HEADER = ".. Created with scripts/render_eda_docs.py (antsibull-docs renders no event sources)\n"


class DocError(Exception):
    """What is wrong with a source's documentation."""


class Links(LinkProvider):
    """Links from docs/eda-sources/: this collection's modules and plugins are in ../plugins/, options here."""

    def __init__(self, collection, html_links):
        self.collection = collection
        self.html_links = html_links

    def plugin_link(self, plugin):
        namespace, name, short = plugin.fqcn.split(".", 2)
        if "%s.%s" % (namespace, name) != self.collection:
            return None
        if plugin.type == PLUGIN_TYPE:
            return "%s_%s.rst" % (short, plugin.type)
        return "../plugins/%s_%s.rst" % (short, plugin.type)

    def plugin_option_like_link(self, plugin, entrypoint, what, name, current_plugin):
        if not current_plugin:
            return self.plugin_link(plugin)
        prefix = "parameter" if what == "option" else "return"
        if self.html_links:
            return "#%s-%s" % (prefix, urllib.parse.quote("/".join(name)))
        return "%s-%s_" % (prefix, "/".join(name))


class Markup(object):
    """Ansible markup (C(), O(), M() ...) of one source, as antsibull-docs renders it in simplified RST."""

    def __init__(self, collection, fqcn, where):
        self.plugin = dom.PluginIdentifier(fqcn=fqcn, type=PLUGIN_TYPE)
        self.collection = collection
        self.where = where

    def _parse(self, text, what):
        try:
            return parse(str(text), Context(current_plugin=self.plugin), errors="exception",
                         whitespace=Whitespace.KEEP_SINGLE_NEWLINES)
        except ValueError as exc:
            raise DocError("%s: %s: %s" % (self.where, what, exc))

    def rst(self, text, what):
        return to_rst(self._parse(text, what), formatter=SimplifiedRSTFormatter(),
                      link_provider=Links(self.collection, False), current_plugin=self.plugin)

    def html(self, text, what):
        return to_html(self._parse(text, what), link_provider=Links(self.collection, True),
                       current_plugin=self.plugin, par_start="", par_end="")


def as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def read_source(path):
    """(DOCUMENTATION as data, EXAMPLES as text) of a source file, without importing it."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and \
                node.targets[0].id in ("DOCUMENTATION", "EXAMPLES") and isinstance(node.value, ast.Constant):
            found[node.targets[0].id] = node.value.value
    if "DOCUMENTATION" not in found:
        raise DocError("%s: no DOCUMENTATION string" % path)
    try:
        doc = yaml.safe_load(found["DOCUMENTATION"])
    except yaml.YAMLError as exc:
        raise DocError("%s: DOCUMENTATION is not YAML: %s" % (path, exc))
    if not isinstance(doc, dict):
        raise DocError("%s: DOCUMENTATION is not a mapping" % path)
    for key in ("short_description", "description"):
        if not doc.get(key):
            raise DocError("%s: DOCUMENTATION has no %s" % (path, key))
    for name, option in (doc.get("options") or {}).items():
        if not isinstance(option, dict) or not option.get("description"):
            raise DocError("%s: option %s has no description" % (path, name))
        for key in ("type", "elements"):
            if key in option and option[key] not in TYPES:
                raise DocError("%s: option %s: %s %r is not one of %s" % (path, name, key, option[key],
                                                                          ", ".join(sorted(TYPES))))
    return doc, found.get("EXAMPLES", "").strip("\n")


def indent(text, spaces):
    pad = " " * spaces
    return "\n".join(pad + line if line.strip() else "" for line in text.split("\n"))


def to_json(value):
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def parameter_rows(options, markup):
    rows = []
    for name in sorted(options):
        option = options[name]
        kind = option.get("type", "str")
        anchor = "parameter-%s" % urllib.parse.quote(name)
        rows.append("  <tr>\n    <td valign=\"top\">")
        rows.append("      <div class=\"ansibleOptionAnchor\" id=\"%s\"></div>" % anchor)
        rows.append("      <p style=\"display: inline;\"><strong>%s</strong></p>" % escape(name))
        rows.append("      <a class=\"ansibleOptionLink\" href=\"#%s\" title=\"Permalink to this option\"></a>" % anchor)
        if option.get("aliases"):
            rows.append("      <p style=\"font-size: small; margin-bottom: 0;\"><span style=\"color: darkgreen; "
                        "white-space: normal;\">aliases: %s</span></p>" % ", ".join(option["aliases"]))
        rows.append("      <p style=\"font-size: small; margin-bottom: 0;\">")
        rows.append("        <span style=\"color: purple;\">%s</span>" % TYPES[kind])
        if kind == "list" and option.get("elements"):
            rows.append("        / <span style=\"color: purple;\">elements=%s</span>" % TYPES[option["elements"]])
        if option.get("required"):
            rows.append("        / <span style=\"color: red;\">required</span>")
        rows.append("      </p>\n    </td>\n    <td valign=\"top\">")
        for index, text in enumerate(as_list(option["description"])):
            described = markup.html(text, "option %s description[%d]" % (name, index))
            rows.append("      <p>%s</p>" % indent(described, 6).lstrip())
        default = option.get("default")
        choices = [False, True] if kind == "bool" else as_list(option.get("choices"))
        if choices:
            rows.append("      <p style=\"margin-top: 8px;\"><b\">Choices:</b></p>\n      <ul>")
            for choice in choices:
                shown = escape(to_json(choice))
                if default == choice and default is not None:
                    rows.append("        <li><p><code style=\"color: blue;\"><b>%s</b></code> <span style=\"color: "
                                "blue;\">← (default)</span></p></li>" % shown)
                else:
                    rows.append("        <li><p><code>%s</code></p></li>" % shown)
            rows.append("      </ul>\n")
        if isinstance(default, list) or (default is not None and default not in choices):
            rows.append("      <p style=\"margin-top: 8px;\"><b style=\"color: blue;\">Default:</b> <code style=\"color: "
                        "blue;\">%s</code></p>" % escape(to_json(default)))
        rows.append("    </td>\n  </tr>")
    return rows


def render(fqcn, collection, version, doc, examples, where):
    """One source's page."""
    markup = Markup(collection, fqcn, where)
    title = "%s event source -- %s" % (fqcn, doc["short_description"])
    out = [HEADER, title, "+" * len(title), "",
           "This event source is part of the `%s collection <https://galaxy.ansible.com/ui/repo/published/%s/>`_ "
           "(version %s)." % (collection, collection.replace(".", "/"), version), "",
           "It runs in ``ansible-rulebook``, not in ``ansible-core``.",
           "To use it in a rulebook, name it under ``sources:``: ``%s``." % fqcn, ""]
    if doc.get("version_added"):
        out += ["New in %s %s" % (markup.rst(collection, "collection"), doc["version_added"]), ""]
    out += [".. contents::", "   :local:", "   :depth: 1", "", "", "Synopsis", "--------", ""]
    out += ["- %s" % markup.rst(text, "description[%d]" % index)
            for index, text in enumerate(as_list(doc["description"]))]
    out += ["", ""]
    if doc.get("requirements"):
        out += ["Requirements", "------------", "The below requirements are needed on the host that runs "
                "``ansible-rulebook``.", ""]
        out += ["- %s" % markup.rst(text, "requirements[%d]" % index)
                for index, text in enumerate(as_list(doc["requirements"]))]
        out += ["", ""]
    options = doc.get("options") or {}
    if options:
        out += ["Parameters", "----------", "", ".. raw:: html", "",
                "  <table style=\"width: 100%;\">", "  <thead>", "  <tr>", "    <th><p>Parameter</p></th>",
                "    <th><p>Comments</p></th>", "  </tr>", "  </thead>", "  <tbody>"]
        out += parameter_rows(options, markup)
        out += ["  </tbody>", "  </table>", "", ""]
    if doc.get("notes"):
        out += ["Notes", "-----", ""]
        out += ["- %s" % markup.rst(text, "notes[%d]" % index) for index, text in enumerate(as_list(doc["notes"]))]
        out += ["", ""]
    if examples:
        out += ["Examples", "--------", "", ".. code-block:: yaml", "", indent(examples, 4), "", ""]
    if doc.get("author"):
        out += ["Authors", "~~~~~~~", ""] + ["- %s" % author for author in as_list(doc["author"])] + ["", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def render_index(collection, version, entries):
    title = "Event sources of %s" % collection
    out = [HEADER, title, "=" * len(title), "",
           "Collection version %s" % version, "",
           "Event sources for Event-Driven Ansible (``ansible-rulebook``), in ``extensions/eda/plugins/event_source/``. "
           "How to use them: `docs/eda.md <../eda.md>`_. The modules, filters, lookups and roles are in "
           "`docs/plugins/ <../plugins/index.rst>`_.", ""]
    out += ["* `%s event source <%s_%s.rst>`_ -- %s" % (name, name, PLUGIN_TYPE, short) for name, short in entries]
    return "\n".join(out) + "\n"


def render_all(dest):
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as handle:
        galaxy = yaml.safe_load(handle)
    collection = "%s.%s" % (galaxy["namespace"], galaxy["name"])
    pages = {}
    entries = []
    for filename in sorted(os.listdir(SOURCES)):
        if not filename.endswith(".py") or filename.startswith("_"):
            continue
        name = filename[:-3]
        path = os.path.join(SOURCES, filename)
        doc, examples = read_source(path)
        fqcn = "%s.%s" % (collection, name)
        pages["%s_%s.rst" % (name, PLUGIN_TYPE)] = render(fqcn, collection, galaxy["version"], doc, examples,
                                                          os.path.relpath(path, ROOT))
        entries.append((name, markup_plain(doc["short_description"])))
    pages["index.rst"] = render_index(collection, galaxy["version"], entries)
    os.makedirs(dest, exist_ok=True)
    for stale in set(os.listdir(dest)) - set(pages):
        os.remove(os.path.join(dest, stale))
    for filename, text in pages.items():
        with open(os.path.join(dest, filename), "w", encoding="utf-8") as handle:
            handle.write(text)
    return sorted(pages)


def markup_plain(text):
    """A short description in the index, escaped as antsibull-docs does (RST, no markup expected)."""
    return to_rst(parse(str(text), Context(), errors="message"), formatter=SimplifiedRSTFormatter())


def main(argv):
    if len(argv) != 2:
        print("usage: %s DEST" % argv[0], file=sys.stderr)
        return 2
    try:
        written = render_all(argv[1])
    except DocError as exc:
        print("event source documentation: %s" % exc, file=sys.stderr)
        return 1
    for filename in written:
        print(os.path.join(argv[1], filename))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
