# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Each event source's DOCUMENTATION is its manual (rendered into docs/eda-sources/ by make docs): it must be YAML
and say the arguments the source accepts, with their kinds and defaults. ansible-test's validate-modules does this
for modules; nothing else checks an event source."""

from __future__ import annotations

import importlib

import pytest
import yaml

SOURCES = ("imds", "event_grid", "resource_graph")
# An argument's kind (module_utils/sources.py) and the DOCUMENTATION types that say it
TYPES = {"str": ("str",), "secret": ("str",), "path": ("str", "path"), "bool": ("bool",), "int": ("int",),
         "float": ("float",), "list": ("list",)}


def source(name):
    return importlib.import_module("ansible_collections.imds.scheduled_events.extensions.eda.plugins.event_source."
                                   + name)


@pytest.mark.parametrize("name", SOURCES)
def test_the_documentation_says_every_argument_its_kind_and_default(name):
    module = source(name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert isinstance(doc, dict) and doc["short_description"] and doc["description"]
    options = doc.get("options") or {}
    assert sorted(options) == sorted(module.ARGS), "documented and accepted arguments differ"
    for arg_name, arg in module.ARGS.items():
        option = options[arg_name]
        assert option.get("description"), arg_name
        assert option.get("type", "str") in TYPES[arg.kind], "%s: type %s for an argument of kind %s" % (
            arg_name, option.get("type"), arg.kind)
        assert option.get("default") == arg.default, "%s: documented default %r, real %r" % (
            arg_name, option.get("default"), arg.default)
        assert bool(option.get("required")) == arg.required, arg_name


@pytest.mark.parametrize("name", SOURCES)
def test_the_examples_are_rulebooks_that_name_the_source(name):
    examples = yaml.safe_load(source(name).EXAMPLES)
    assert isinstance(examples, list) and examples
    for rulebook in examples:
        assert any("imds.scheduled_events.%s" % name in item for item in rulebook["sources"])
