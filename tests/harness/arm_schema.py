"""ARM templates checked against Microsoft's published template schemas, offline, on the copy in tests/schemas/arm/.

Microsoft's editors validate a template against deploymentTemplate.json, which reaches every provider's resources
through a list of hundreds of megabytes. This does the same in two steps on a small copy:

1. the template's frame ($schema, parameters, variables, outputs) against the deploymentTemplate.json that its
   $schema names, with ``resources`` emptied; parameter and output types are compared without regard to case, as ARM
   compares them (``secureString`` deploys; the schema's enum spells it ``securestring``);
2. each resource, nested ones included, against the provider schema's definition whose ``type`` and ``apiVersion``
   enums match it (a nested resource: the ``*_childResource`` definition among those its parent's schema lists),
   together with the frame's ``resourceBase`` (condition, dependsOn, copy...). A (type, apiVersion) that no schema
   of the copy defines is an error.

Template expressions ("[parameters('x')]") stand where an object, a number or a boolean is expected: the schemas
allow them themselves (common/definitions.json#/definitions/expression in a oneOf), so nothing is relaxed here.

One thing is added. Microsoft's generated schemas leave every object open, so a misspelt property ("osProfle")
passes them, while Azure's resource providers refuse it and Bicep warns about it from the same API definitions.
Here an object of a provider schema that lists its properties allows only those (an object of a discriminated
union: the common ones and its variant's). The hand-written extension shapes of Microsoft.Compute.Extensions.json
stay as they are (incomplete: no protectedSettings in the generic one); Microsoft's generator put them where the
API's own extension type was (generator/processors/Microsoft.Compute.ts), so that type, still defined in
Microsoft.Compute.json, is checked there as well.

`Schemas.closure` lists the schema files a set of definitions needs ($refs followed one pointer at a time);
tests/schemas/arm/refresh.py uses it to copy exactly those files.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import re

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCHEMAS = os.path.join(ROOT, "tests", "schemas", "arm")
DEPLOY = os.path.join(ROOT, "deploy")
BASE_URL = "https://schema.management.azure.com/schemas/"
REFRESH = "tests/schemas/arm/refresh.py"
EXPRESSION_PATTERN = r"^\[([^\[].*)?\]$"

# Resources no template ships yet whose schemas the copy keeps (the workbook and alert rules to come): the newest
# apiVersion of each that is not a preview. A template that uses another apiVersion needs refresh.py run again.
PLANNED = (
    ("Microsoft.Insights/scheduledQueryRules", "2026-03-01"),
    ("Microsoft.Insights/actionGroups", "2023-01-01"),
    ("Microsoft.Insights/workbooks", "2023-06-01"),
    ("Microsoft.OperationalInsights/workspaces", "2025-07-01"),
    ("Microsoft.ManagedIdentity/userAssignedIdentities", "2024-11-30"),
    ("Microsoft.Authorization/roleAssignments", "2022-04-01"),
    ("Microsoft.EventGrid/systemTopics", "2025-02-15"),
)

# Where Microsoft's generator put its hand-written extension shapes in place of the API's type: (file, section,
# definition whose "properties" property it replaced) -> the API's type in Microsoft.Compute.json of the same version.
EXTENSION_PROPERTIES = {
    ("Microsoft.Compute.Extensions.json", "resourceDefinitions", "virtualMachines_extensions"):
        "VirtualMachineExtensionProperties",
    ("Microsoft.Compute.Extensions.json", "resourceDefinitions", "virtualMachineScaleSets_extensions"):
        "VirtualMachineScaleSetExtensionProperties",
    ("Microsoft.Compute.json", "definitions", "virtualMachines_extensions_childResource"):
        "VirtualMachineExtensionProperties",
    ("Microsoft.Compute.json", "definitions", "VirtualMachineScaleSetExtension"):
        "VirtualMachineScaleSetExtensionProperties",
}
HAND_WRITTEN = ("Microsoft.Compute.Extensions.json",)


class SchemaMissing(Exception):
    """Schema files the templates need are not in the directory."""


def url_of(relative):
    return BASE_URL + relative


def relative_of(url):
    """The directory's path for a schema URL (its fragment dropped), None for a URL elsewhere."""
    url = url.split("#", 1)[0]
    return url[len(BASE_URL):] if url.startswith(BASE_URL) else None


def _absolute(ref, base_url):
    return ref if "://" in ref else base_url.split("#", 1)[0] + ref


def _pointer(document, pointer):
    node = document
    for part in [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _enum(definition, key):
    found = definition.get("properties", {}).get(key, {}) if isinstance(definition, dict) else {}
    return found.get("enum", []) if isinstance(found, dict) else []


def _defines(definition, type_name, api_version):
    """ARM compares resource types without regard to case, apiVersions as they are."""
    types = [t.lower() for t in _enum(definition, "type") if isinstance(t, str)]
    return type_name.lower() in types and api_version in _enum(definition, "apiVersion")


def _close(node, top=True):
    """Make every object that lists its properties allow only those (see the module's doc)."""
    if isinstance(node, list):
        for item in node:
            _close(item)
        return
    if not isinstance(node, dict):
        return
    for key in ("properties", "patternProperties"):
        if isinstance(node.get(key), dict):
            for child in node[key].values():
                _close(child)
    for key in ("oneOf", "anyOf", "allOf", "items", "not", "additionalProperties", "additionalItems"):
        if isinstance(node.get(key), (dict, list)):
            _close(node[key])
    if not top or not isinstance(node.get("properties"), dict):
        return
    if "additionalProperties" in node or "patternProperties" in node or "allOf" in node:
        return
    variants = node.get("oneOf", []) + node.get("anyOf", [])
    if not variants:
        node["additionalProperties"] = False
    elif all(isinstance(v, dict) and isinstance(v.get("properties"), dict) and "$ref" not in v for v in variants):
        # a discriminated union: the base lists the common properties, each (closed) variant its own
        for variant in variants:
            variant["properties"] = dict(dict((name, {}) for name in node["properties"]), **variant["properties"])


def prepare(relative, contents):
    """A schema file as the checks use it: objects closed, the API's extension type checked as well."""
    contents = copy.deepcopy(contents)
    name, api_version = os.path.basename(relative), os.path.dirname(relative)
    for (file_name, section, key), api_type in EXTENSION_PROPERTIES.items():
        node = contents.get(section, {}).get(key) if file_name == name else None
        if node and "properties" in node.get("properties", {}):
            api_ref = {"$ref": url_of("%s/Microsoft.Compute.json#/definitions/%s" % (api_version, api_type))}
            node["properties"]["properties"] = {"allOf": [node["properties"]["properties"], api_ref]}
    if "resourceDefinitions" not in contents or name in HAND_WRITTEN:
        return contents
    for section in ("resourceDefinitions", "definitions"):
        for key, node in contents.get(section, {}).items():
            # a resource's own level is closed together with the frame's resourceBase (Schemas.resource_schema)
            _close(node, top=not (section == "resourceDefinitions" or key.endswith("_childResource")))
    return contents


def _refs(node, skip_definitions):
    """Every $ref in a schema node (a document's definitions are reached through $refs, not scanned)."""
    if isinstance(node, list):
        for item in node:
            yield from _refs(item, False)
    elif isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for key, value in node.items():
            if not (skip_definitions and key in ("definitions", "resourceDefinitions")):
                yield from _refs(value, False)


def is_template(document):
    """An ARM template: its $schema says so, or it has what only templates have (resources, or a contentVersion
    outside a parameters file)."""
    if not isinstance(document, dict):
        return False
    schema = str(document.get("$schema", ""))
    return "deploymentTemplate.json" in schema or "resources" in document or (
        "contentVersion" in document and "deploymentParameters.json" not in schema)


def shipped_templates(deploy_dir=DEPLOY):
    """Every ARM template under deploy/, at any depth, found by content: paths relative to deploy/'s parent (the
    repository)."""
    found = []
    for path in sorted(glob.glob(os.path.join(deploy_dir, "**", "*.json"), recursive=True)):
        with open(path) as handle:
            if is_template(json.load(handle)):
                found.append(os.path.relpath(path, os.path.dirname(os.path.abspath(deploy_dir))))
    return found


def walk_resources(resources, path="$.resources", parent=None):
    """(JSON path, resource, parent resource or None) of every resource, each nested one after its parent."""
    items = sorted(resources.items()) if isinstance(resources, dict) else enumerate(resources or [])
    for key, resource in items:
        here = "%s[%s]" % (path, json.dumps(key) if isinstance(key, str) else key)
        yield here, resource, parent
        if isinstance(resource, dict) and isinstance(resource.get("resources"), list):
            yield from walk_resources(resource["resources"], here + ".resources", resource)


class Schemas(object):
    """A directory laid out like schema.management.azure.com/schemas/: files are loaded (and prepared) on first use,
    and validators get a `referencing` registry of the files loaded, so no $ref is ever fetched."""

    def __init__(self, schemas_dir=SCHEMAS):
        self.dir = schemas_dir
        self.documents = {}
        self._registry = referencing.Registry()
        self._registered = set()

    def document(self, relative):
        if relative not in self.documents:
            path = os.path.join(self.dir, relative)
            if not os.path.isfile(path):
                raise SchemaMissing(relative)
            with open(path) as handle:
                self.documents[relative] = prepare(relative, json.load(handle))
        return self.documents[relative]

    def resolve(self, url):
        relative = relative_of(url)
        if relative is None:
            raise SchemaMissing(url)
        return _pointer(self.document(relative), url.partition("#")[2])

    def closure(self, urls):
        """The files every schema node named by the URLs refers to, $ref after $ref; SchemaMissing names those the
        directory lacks (with the $ref that wants them)."""
        queue, seen, files, missing = [(url, None) for url in urls], set(), set(), {}
        while queue:
            url, wanted_by = queue.pop()
            relative = relative_of(url)
            if relative is None or not os.path.isfile(os.path.join(self.dir, relative)):
                missing.setdefault(url.split("#")[0], wanted_by)
                continue
            pointer = url.partition("#")[2].rstrip("/")
            if (relative, pointer) in seen:
                continue
            seen.add((relative, pointer))
            files.add(relative)
            node = self.resolve(url)
            queue.extend((_absolute(ref, url), url) for ref in _refs(node, skip_definitions=pointer == ""))
        if missing:
            wanted = sorted(missing.items(), key=str)
            raise SchemaMissing("; ".join("%s (wanted by %s)" % (url, by) for url, by in wanted))
        return files

    def frame_roots(self, frame_url):
        """What the checks use of a deploymentTemplate.json: all but its resources (checked one by one, through
        their providers' schemas), and the resourceBase every resource is checked with."""
        names = sorted(set(self.resolve(frame_url).get("properties", {})) - {"resources"})
        return [frame_url + "#/definitions/resourceBase"] + [frame_url + "#/properties/" + name for name in names]

    def definition(self, type_name, api_version):
        """The URL of the top-level definition of (type, apiVersion), or None."""
        if not re.match(r"^[0-9A-Za-z.-]+$", api_version):
            return None
        for path in sorted(glob.glob(os.path.join(self.dir, api_version, "*.json"))):
            relative = os.path.relpath(path, self.dir)
            for key, definition in sorted(self.document(relative).get("resourceDefinitions", {}).items()):
                if _defines(definition, type_name, api_version):
                    return "%s#/resourceDefinitions/%s" % (url_of(relative), key)
        return None

    def api_versions(self, type_name):
        """The apiVersions of a resource type that the directory defines (for an error message)."""
        versions = set()
        for path in glob.glob(os.path.join(self.dir, "*", "*.json")):
            for definition in self.document(os.path.relpath(path, self.dir)).get("resourceDefinitions", {}).values():
                if type_name.lower() in [t.lower() for t in _enum(definition, "type") if isinstance(t, str)]:
                    versions.update(_enum(definition, "apiVersion"))
        return sorted(versions)

    def child_definition(self, parent_url, type_name, api_version):
        """The URL of a nested resource's definition among those its parent's definition lists, or None."""
        children = self.resolve(parent_url).get("properties", {}).get("resources", {}).get("items", {})
        for option in children.get("oneOf", []) + children.get("anyOf", []) + [children]:
            if isinstance(option.get("$ref"), str):
                url = _absolute(option["$ref"], parent_url)
                if _defines(self.resolve(url), type_name, api_version):
                    return url
        return None

    def property_names(self, url):
        """The property names a schema lists, through allOf (the frame's resourceBase is made that way)."""
        node = self.resolve(url)
        names = set(node.get("properties", {}))
        for part in node.get("allOf", []):
            names |= self.property_names(_absolute(part["$ref"], url)) if "$ref" in part else set(
                part.get("properties", {}))
        return names

    def resource_schema(self, definition_url, frame_url):
        """A resource's definition with the frame's resourceBase, closed to the properties of the two."""
        base = frame_url + "#/definitions/resourceBase"
        names = self.property_names(definition_url) | self.property_names(base)
        return {"allOf": [{"$ref": base}, {"$ref": definition_url}],
                "properties": dict((name, {}) for name in sorted(names)), "additionalProperties": False}

    def validator(self, schema, roots):
        """A draft-04 validator of a schema whose $refs lead (only) into the closure of roots."""
        for relative in sorted(self.closure(roots) - self._registered):
            resource = referencing.jsonschema.DRAFT4.create_resource(self.document(relative))
            self._registry = self._registry.with_resource(url_of(relative), resource)
            self._registered.add(relative)
        self._registry = self._registry.crawl()
        return jsonschema.Draft4Validator(schema, registry=self._registry)


def _is_expression_complaint(error):
    """The complaint of a oneOf's expression alternative, beside the one that matters (the value is no expression)."""
    return isinstance(error.schema, dict) and error.schema.get("pattern") == EXPRESSION_PATTERN


def _discriminated_away(complaints):
    """An alternative of a discriminated union whose discriminator (an enum of one value) the object does not have."""
    return any(c.validator == "enum" and len(c.relative_path) == 1 and len(c.validator_value) == 1
               for c in complaints)


def _specific(error):
    """The complaints that say what is wrong: inside a oneOf/anyOf, those of the one alternative the value was meant
    for when that is clear (the others are the expression alternative, or variants with another discriminator),
    else jsonschema's best match."""
    if not error.context:
        return [error]
    alternatives = {}
    for sub in error.context:
        alternatives.setdefault(sub.relative_schema_path[0], []).append(sub)
    meant = [subs for subs in alternatives.values() if not all(_is_expression_complaint(s) for s in subs)]
    if len(meant) > 1:
        meant = [subs for subs in meant if not _discriminated_away(subs)] or meant
    if len(meant) == 1:
        return [leaf for sub in meant[0] for leaf in _specific(sub)]
    return [jsonschema.exceptions.best_match([error])]


def _message(error):
    """jsonschema's message, except that an object none of whose alternatives fit is not printed in full."""
    if error.validator not in ("oneOf", "anyOf") or not isinstance(error.instance, (dict, list)):
        return error.message
    names = [alternative["$ref"].rsplit("/", 1)[-1] if "$ref" in alternative else "an unnamed shape"
             for alternative in error.validator_value]
    return "none of the %d alternatives the schema allows here fits (%s%s)" % (
        len(names), ", ".join(names[:6]), ", ..." if len(names) > 6 else "")


def _where(error, prefix):
    path = prefix
    for part in error.absolute_path:
        if isinstance(part, int):
            path += "[%d]" % part
        else:
            path += "." + part if re.match(r"^[A-Za-z_$][\w$]*$", part) else "[%s]" % json.dumps(part)
    return path


def _complaints(validator, instance, prefix):
    lines = []
    for error in validator.iter_errors(instance):
        lines += ["%s: %s" % (_where(leaf, prefix), _message(leaf)) for leaf in _specific(error)]
    return sorted(set(lines))


def _frame(template, frame_schema):
    """The template without its resources, parameter and output types in the schema's spelling when they match it
    without regard to case (an unknown type is left as it is, for the schema to refuse)."""
    frame = copy.deepcopy(template)
    frame["resources"] = {} if isinstance(frame.get("resources"), dict) else []
    spelling = dict((t.lower(), t) for t in frame_schema["definitions"]["parameterTypes"]["enum"])
    for section in ("parameters", "outputs"):
        specs = frame.get(section)
        for spec in specs.values() if isinstance(specs, dict) else []:
            if isinstance(spec, dict) and isinstance(spec.get("type"), str):
                spec["type"] = spelling.get(spec["type"].lower(), spec["type"])
    return frame


def frame_url_of(template):
    """The deploymentTemplate.json URL a template's $schema names (no fragment), or None."""
    schema = template.get("$schema") if isinstance(template, dict) else None
    relative = relative_of(schema) if isinstance(schema, str) else None
    return url_of(relative) if relative and relative.endswith("deploymentTemplate.json") else None


def check_template(template, name, schemas=None):
    """What the schemas find wrong in a template: one line per complaint, each naming the template (name), the
    resource (type, name, apiVersion), the JSON path and the complaint. Empty when the template is valid."""
    schemas = schemas or Schemas()
    frame_url = frame_url_of(template)
    if frame_url is None:
        return ["%s: $.$schema: %r is not a deploymentTemplate.json of schema.management.azure.com" % (
            name, template.get("$schema") if isinstance(template, dict) else template)]
    try:
        frame_schema = schemas.resolve(frame_url)
        validator = schemas.validator(frame_schema, schemas.frame_roots(frame_url))
    except SchemaMissing as missing:
        return ["%s: $.$schema: not in tests/schemas/arm: %s (run %s)" % (name, missing, REFRESH)]
    problems = ["%s: %s" % (name, line) for line in _complaints(validator, _frame(template, frame_schema), "$")]
    definitions = {}
    for path, resource, parent in walk_resources(template.get("resources")):
        if not isinstance(resource, dict) or not all(isinstance(resource.get(k), str) for k in ("type", "apiVersion")):
            problems.append("%s: %s: a resource needs a type and an apiVersion" % (name, path))
            continue
        type_name, api_version = resource["type"], resource["apiVersion"]
        label = "%s: %s %s (apiVersion %s)" % (name, type_name, json.dumps(resource.get("name")), api_version)
        if parent is None or "/" in type_name:
            definition = schemas.definition(type_name, api_version)
            known = "" if definition else " (it has %s)" % (", ".join(schemas.api_versions(type_name)) or "none")
        elif id(parent) not in definitions:
            continue  # its parent has no schema: reported already
        else:
            definition = schemas.child_definition(definitions[id(parent)], type_name, api_version)
            known = " as a child of %s" % parent.get("type")
        if definition is None:
            problems.append("%s: %s: no schema in tests/schemas/arm defines this type and apiVersion%s; use an "
                            "apiVersion that Azure publishes and run %s" % (label, path, known, REFRESH))
            continue
        definitions[id(resource)] = definition
        body = dict((k, v) for k, v in resource.items() if k != "resources")
        try:
            roots = [definition, frame_url + "#/definitions/resourceBase"]
            validator = schemas.validator(schemas.resource_schema(definition, frame_url), roots)
        except SchemaMissing as missing:
            problems.append("%s: %s: schema files not in tests/schemas/arm: %s (run %s)" % (
                label, path, missing, REFRESH))
            continue
        problems += ["%s: %s" % (label, line) for line in _complaints(validator, body, path)]
    return problems


def check_file(path, schemas=None):
    """check_template of a file (a path relative to the repository, or absolute)."""
    with open(os.path.join(ROOT, path)) as handle:
        return check_template(json.load(handle), path, schemas)


def needed_files(schemas, templates):
    """The schema files that checking the templates (and the PLANNED resources) takes, from a directory laid out like
    schema.management.azure.com/schemas/ (a clone of Azure/azure-resource-manager-schemas, or the copy). A nested
    resource's schema comes with its parent's."""
    urls, resources = [], list(PLANNED)
    for template in templates:
        frame_url = frame_url_of(template)
        urls += schemas.frame_roots(frame_url) if frame_url else []
        for _path, resource, parent in walk_resources(template.get("resources")):
            if isinstance(resource, dict) and (parent is None or "/" in str(resource.get("type"))):
                resources.append((resource.get("type"), resource.get("apiVersion")))
    absent = set()
    for type_name, api_version in resources:
        url = schemas.definition(type_name, api_version) if isinstance(type_name, str) and isinstance(
            api_version, str) else None
        if url is None:
            absent.add("%s@%s" % (type_name, api_version))
        urls.append(url)
    if absent:
        raise SchemaMissing("no definition of " + ", ".join(sorted(absent)))
    return schemas.closure(urls)
