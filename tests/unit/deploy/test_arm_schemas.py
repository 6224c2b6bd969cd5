"""Every ARM template under deploy/ against Microsoft's published template schemas (tests/harness/arm_schema.py on the
copy in tests/schemas/arm/), and the proof that the check can fail: each kind of mistake it must catch is made
once, on a small template of its own, and is reported with the template, the resource, the JSON path and the
schema's complaint."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil

import pytest

from harness import arm_schema
from harness.arm_template import Deployment

SCHEMAS = arm_schema.Schemas()
TEMPLATES = arm_schema.shipped_templates()
TEMPLATE_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
BOOTSTRAP = {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
             "autoUpgradeMinorVersion": True, "settings": {}, "protectedSettings": {"script": "[parameters('secret')]"}}

# A VM, its NIC and a Custom Script extension nested in the VM: valid (test_the_small_templates_are_valid), so each
# test below adds exactly one mistake. It uses what a template may: a secureString parameter, a String output,
# condition, comments and dependsOn, expressions where the schema wants a boolean or an object.
VM = {
    "$schema": TEMPLATE_SCHEMA,
    "contentVersion": "1.0.0.0",
    "parameters": {"vmName": {"type": "string"}, "secret": {"type": "secureString", "defaultValue": ""},
                   "passwordLogin": {"type": "bool", "defaultValue": False}},
    "variables": {"ssh": {"publicKeys": []}},
    "resources": [
        {"type": "Microsoft.Network/networkInterfaces", "apiVersion": "2024-05-01", "name": "nic",
         "location": "westeurope",
         "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {
             "privateIPAllocationMethod": "Dynamic",
             "subnet": {"id": "[resourceId('Microsoft.Network/virtualNetworks/subnets', 'vnet', 'default')]"}}}]}},
        {"type": "Microsoft.Compute/virtualMachines", "apiVersion": "2025-04-01", "name": "[parameters('vmName')]",
         "location": "westeurope", "condition": "[not(empty(parameters('vmName')))]", "comments": "the VM",
         "dependsOn": ["[resourceId('Microsoft.Network/networkInterfaces', 'nic')]"],
         "properties": {
             "hardwareProfile": {"vmSize": "Standard_B2s"},
             "osProfile": {"computerName": "[parameters('vmName')]", "adminUsername": "azureuser",
                           "linuxConfiguration": {"disablePasswordAuthentication": "[not(parameters('passwordLogin'))]",
                                                  "ssh": "[variables('ssh')]"}},
             "networkProfile": {"networkInterfaces": [{"id": "[resourceId('Microsoft.Network/networkInterfaces', 'nic')]"}]}},
         "resources": [
             {"type": "extensions", "apiVersion": "2025-04-01", "name": "bootstrap", "location": "westeurope",
              "dependsOn": ["[parameters('vmName')]"], "properties": copy.deepcopy(BOOTSTRAP)}]},
    ],
    "outputs": {"vmName": {"type": "String", "value": "[parameters('vmName')]"}},
}

# A scale set with the extension in its profile, and an Event Grid subscription (a discriminated union: the
# destination's endpointType picks its variant).
FLEET = {
    "$schema": TEMPLATE_SCHEMA,
    "contentVersion": "1.0.0.0",
    "parameters": {"secret": {"type": "securestring", "defaultValue": ""}},
    "resources": [
        {"type": "Microsoft.Compute/virtualMachineScaleSets", "apiVersion": "2025-04-01", "name": "web",
         "location": "westeurope", "sku": {"name": "Standard_B2s", "capacity": 2},
         "properties": {"orchestrationMode": "Flexible", "platformFaultDomainCount": 1, "virtualMachineProfile": {
             "extensionProfile": {"extensions": [{"name": "bootstrap", "properties": copy.deepcopy(BOOTSTRAP)}]}}}},
        {"type": "Microsoft.EventGrid/systemTopics", "apiVersion": "2025-02-15", "name": "maintenance",
         "location": "global",
         "properties": {"source": "[subscription().id]",
                        "topicType": "Microsoft.ResourceNotifications.MaintenanceResources"},
         "resources": [
             {"type": "eventSubscriptions", "apiVersion": "2025-02-15", "name": "webhook",
              "dependsOn": ["[resourceId('Microsoft.EventGrid/systemTopics', 'maintenance')]"],
              "properties": {
                  "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": "https://hooks.example.com/se",
                                                                            "maxEventsPerBatch": 1}},
                  "filter": {"advancedFilters": [{"operatorType": "StringIn", "key": "data.resourceInfo.type",
                                                  "values": ["microsoft.maintenance/scheduledevents"]}]}}}]},
    ],
}

VM_LABEL = "small.json: Microsoft.Compute/virtualMachines \"[parameters('vmName')]\" (apiVersion 2025-04-01)"
EXTENSION_LABEL = 'small.json: extensions "bootstrap" (apiVersion 2025-04-01)'


def problems(template, change=None):
    template = copy.deepcopy(template)
    if change:
        change(template)
    return arm_schema.check_template(template, "small.json", SCHEMAS)


def vm(template):
    return template["resources"][1]


def load(path):
    with open(os.path.join(arm_schema.ROOT, path)) as handle:
        return json.load(handle)


# --- the shipped templates ---------------------------------------------------------------------------------------

def test_the_shipped_templates_are_found_by_looking_through_deploy():
    assert {"deploy/arm/vm.json", "deploy/arm/vmss.json"} <= set(TEMPLATES)


def test_a_template_at_any_depth_is_found_and_other_json_is_not(tmp_path):
    files = {
        "arm/vm.json": {"$schema": TEMPLATE_SCHEMA, "resources": []},
        "monitor/alerts/rules.json": {"contentVersion": "1.0.0.0", "resources": []},  # no $schema: still a template
        "arm/vm.parameters.json": {"$schema": TEMPLATE_SCHEMA.replace("Template", "Parameters"),
                                   "contentVersion": "1.0.0.0", "parameters": {}},
        "monitor/view.workbook.json": {"version": "Notebook/1.0", "items": []},
    }
    for name, document in files.items():
        os.makedirs(os.path.dirname(str(tmp_path / "deploy" / name)), exist_ok=True)
        (tmp_path / "deploy" / name).write_text(json.dumps(document))
    assert arm_schema.shipped_templates(str(tmp_path / "deploy")) == ["deploy/arm/vm.json",
                                                                      "deploy/monitor/alerts/rules.json"]
    assert problems(files["monitor/alerts/rules.json"]) == [
        "small.json: $.$schema: None is not a deploymentTemplate.json of schema.management.azure.com"]


@pytest.mark.parametrize("path", TEMPLATES)
def test_the_template_matches_microsofts_schemas(path):
    found = arm_schema.check_file(path, SCHEMAS)
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("path", TEMPLATES)
def test_every_resource_of_the_template_is_checked(path):
    """A property no schema has, put into each resource's properties in turn, is reported for that resource: no
    resource of a shipped template escapes its schema."""
    template = load(path)
    for where, resource, _parent in list(arm_schema.walk_resources(template["resources"])):
        target, at = (resource["properties"], where + ".properties") if isinstance(
            resource.get("properties"), dict) else (resource, where)
        target["notInAnySchema"] = True
        found = arm_schema.check_template(template, path, SCHEMAS)
        del target["notInAnySchema"]
        assert found == ["%s: %s %s (apiVersion %s): %s: Additional properties are not allowed ('notInAnySchema' was "
                         "unexpected)" % (path, resource["type"], json.dumps(resource["name"]), resource["apiVersion"],
                                          at)]


def test_the_copy_holds_exactly_the_schemas_the_templates_need():
    """Nothing missing (a template would fail above), nothing more than the closure of the templates' and PLANNED's
    definitions: refresh.py's selection, recomputed on the copy."""
    needed = arm_schema.needed_files(arm_schema.Schemas(), [load(path) for path in TEMPLATES])
    present = set(os.path.relpath(os.path.join(directory, name), arm_schema.SCHEMAS)
                  for directory, _dirs, names in os.walk(arm_schema.SCHEMAS) for name in names
                  if name.endswith(".json"))
    assert present == needed


# --- what the check must catch -----------------------------------------------------------------------------------

def test_the_small_templates_are_valid():
    assert problems(VM) == []
    assert problems(FLEET) == []


def test_a_misspelt_property_is_reported():
    def misspell(template):
        vm(template)["properties"]["osProfle"] = vm(template)["properties"].pop("osProfile")
    assert problems(VM, misspell) == [
        VM_LABEL + ": $.resources[1].properties: Additional properties are not allowed ('osProfle' was unexpected)"]


def test_a_misspelt_key_of_the_resource_itself_is_reported():
    def misspell(template):
        vm(template)["dependOn"] = vm(template).pop("dependsOn")
    assert problems(VM, misspell) == [
        VM_LABEL + ": $.resources[1]: Additional properties are not allowed ('dependOn' was unexpected)"]


def test_a_value_outside_the_enum_is_reported():
    def change(template):
        template["resources"][0]["properties"]["ipConfigurations"][0]["properties"]["privateIPAllocationMethod"] = \
            "Dynamik"
    assert problems(VM, change) == [
        "small.json: Microsoft.Network/networkInterfaces \"nic\" (apiVersion 2024-05-01): "
        "$.resources[0].properties.ipConfigurations[0].properties.privateIPAllocationMethod: "
        "'Dynamik' is not one of ['Static', 'Dynamic']"]


@pytest.mark.parametrize("value, complaint", [
    ("yes", "'yes' is not of type 'boolean'"),
    (1, "1 is not of type 'boolean'"),
    ("[[not(parameters('passwordLogin'))]", "\"[[not(parameters('passwordLogin'))]\" is not of type 'boolean'"),
])
def test_a_value_of_the_wrong_type_is_reported(value, complaint):
    """An expression may stand for a boolean (the schema says so); a string that is not one ("[[" is a literal "[")
    or a number may not."""
    def change(template):
        vm(template)["properties"]["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] = value
    assert problems(VM, change) == [
        VM_LABEL + ": $.resources[1].properties.osProfile.linuxConfiguration.disablePasswordAuthentication: " + complaint]


def test_a_string_where_an_object_belongs_is_reported_unless_it_is_an_expression():
    def change(template):
        vm(template)["properties"]["hardwareProfile"] = "Standard_B2s"
    assert problems(VM, change) == [
        VM_LABEL + ": $.resources[1].properties.hardwareProfile: 'Standard_B2s' is not of type 'object'"]
    assert problems(VM, lambda t: vm(t)["properties"].update(hardwareProfile="[variables('ssh')]")) == []


@pytest.mark.parametrize("type_name, api_version, known", [
    ("Microsoft.Compute/virtualMachines", "2099-01-01", "2025-04-01"),
    ("Microsoft.Compute/virtualMachinez", "2025-04-01", "none"),
])
def test_a_type_and_api_version_without_a_schema_is_reported(type_name, api_version, known):
    """The nested extension of a resource without a schema is not checked, and not reported twice."""
    def change(template):
        vm(template).update(type=type_name, apiVersion=api_version)
    assert problems(VM, change) == [
        "small.json: %s \"[parameters('vmName')]\" (apiVersion %s): $.resources[1]: no schema in tests/schemas/arm "
        "defines this type and apiVersion (it has %s); use an apiVersion that Azure publishes and run "
        "tests/schemas/arm/refresh.py" % (type_name, api_version, known)]


def test_a_misspelt_property_of_a_nested_extension_is_reported():
    def misspell(template):
        properties = vm(template)["resources"][0]["properties"]
        properties["protectedSetings"] = properties.pop("protectedSettings")
    assert problems(VM, misspell) == [
        EXTENSION_LABEL + ": $.resources[1].resources[0].properties: "
        "Additional properties are not allowed ('protectedSetings' was unexpected)"]


def test_a_nested_resource_its_parent_does_not_have_is_reported():
    assert problems(VM, lambda t: vm(t)["resources"][0].update(type="extensionz")) == [
        "small.json: extensionz \"bootstrap\" (apiVersion 2025-04-01): $.resources[1].resources[0]: no schema in "
        "tests/schemas/arm defines this type and apiVersion as a child of Microsoft.Compute/virtualMachines; use an "
        "apiVersion that Azure publishes and run tests/schemas/arm/refresh.py"]


def test_a_misspelt_property_of_a_scale_set_extension_is_reported():
    def misspell(template):
        extension = template["resources"][0]["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"][0]
        extension["properties"]["autoUpgradeMinorVersoin"] = extension["properties"].pop("autoUpgradeMinorVersion")
    assert problems(FLEET, misspell) == [
        "small.json: Microsoft.Compute/virtualMachineScaleSets \"web\" (apiVersion 2025-04-01): "
        "$.resources[0].properties.virtualMachineProfile.extensionProfile.extensions[0].properties: "
        "Additional properties are not allowed ('autoUpgradeMinorVersoin' was unexpected)"]


def test_a_misspelt_property_of_a_union_variant_is_reported():
    def misspell(template):
        destination = template["resources"][1]["resources"][0]["properties"]["destination"]["properties"]
        destination["endpointUrll"] = destination.pop("endpointUrl")
    assert problems(FLEET, misspell) == [
        "small.json: eventSubscriptions \"webhook\" (apiVersion 2025-02-15): "
        "$.resources[1].resources[0].properties.destination.properties: "
        "Additional properties are not allowed ('endpointUrll' was unexpected)"]


def test_a_parameter_of_an_unknown_type_is_reported():
    def change(template):
        template["parameters"]["vmName"]["type"] = "strng"
    assert problems(VM, change) == [
        "small.json: $.parameters.vmName.type: "
        "'strng' is not one of ['string', 'securestring', 'int', 'bool', 'object', 'secureObject', 'array']"]


def test_parameter_and_output_types_are_compared_without_regard_to_case():
    def change(template):
        template["parameters"]["vmName"]["type"] = "STRING"
        template["parameters"]["secret"]["type"] = "SecureObject"
        template["parameters"]["secret"]["defaultValue"] = {}
        template["outputs"]["vmName"]["type"] = "string"
    assert problems(VM, change) == []


def test_a_schema_url_that_is_not_a_template_schema_is_reported():
    assert problems(VM, lambda t: t.update({"$schema": "https://example.com/template.json#"})) == [
        "small.json: $.$schema: 'https://example.com/template.json#' is not a deploymentTemplate.json of "
        "schema.management.azure.com"]


# --- refresh.py ----------------------------------------------------------------------------------------------------

def test_refresh_copies_the_closure_escapes_quotation_marks_and_removes_what_is_no_longer_needed(tmp_path):
    source, dest = tmp_path / "source", tmp_path / "dest"
    shutil.copytree(arm_schema.SCHEMAS, str(source))
    (source / "2099-01-01").mkdir()
    (source / "2099-01-01" / "Microsoft.Unneeded.json").write_text('{"resourceDefinitions": {}}')
    definitions = source / "common" / "definitions.json"
    text = definitions.read_text(encoding="utf-8")
    definitions.write_text(text.replace("Deployment template expression.", "A template\u2019s expression."),
                           encoding="utf-8")
    (dest / "2000-01-01").mkdir(parents=True)
    (dest / "2000-01-01" / "Microsoft.Stale.json").write_text("{}")
    shutil.copyfile(os.path.join(arm_schema.SCHEMAS, "README.md"), str(dest / "README.md"))

    spec = importlib.util.spec_from_file_location("refresh", os.path.join(arm_schema.SCHEMAS, "refresh.py"))
    refresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refresh)
    refresh.main([str(source), "--dest", str(dest), "--commit", "0" * 40])

    copied = refresh.copied(str(dest))
    assert copied == refresh.copied(arm_schema.SCHEMAS)
    for relative in copied - {"common/definitions.json"}:
        assert (dest / relative).read_bytes() == (source / relative).read_bytes(), relative
    escaped = (dest / "common" / "definitions.json").read_text(encoding="utf-8")
    assert "\u2019" not in escaped and "A template\\u2019s expression." in escaped
    assert json.loads(escaped) == json.loads(definitions.read_text(encoding="utf-8"))
    assert "commit %s" % ("0" * 40) in (dest / "README.md").read_text()
    assert (dest / "LICENSE").read_bytes() == (source / "LICENSE").read_bytes()


# --- what only exists once ARM evaluates the template ------------------------------------------------------------

def _without_nulls(value):
    """ARM leaves out a property whose value is null (null() in an if())."""
    if isinstance(value, dict):
        return dict((k, _without_nulls(v)) for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def evaluated_problems(template, path, parameters, method):
    deployment = Deployment(template, dict(parameters, bootstrapMethod=method))
    resources = [_without_nulls(deployment.evaluate(resource)) for resource in template["resources"]
                 if "condition" not in resource or deployment.evaluate(resource["condition"])]
    evaluated = {"$schema": template["$schema"], "contentVersion": "1.0.0.0", "resources": resources}
    return arm_schema.check_template(evaluated, "%s (evaluated)" % path, SCHEMAS)


@pytest.mark.parametrize("method", ["customData", "customScript"])
@pytest.mark.parametrize("path, parameters", [
    ("deploy/arm/vm.json", {"vmName": "web-01"}),
    ("deploy/arm/vmss.json", {"scaleSetName": "web"}),
])
def test_the_evaluated_resources_match_the_schemas_too(path, parameters, method):
    """What a template builds in variables (the scale set's extension, the Linux configuration) is an expression
    to the checks above; evaluated (tests/harness/arm_template.py), each resource is checked as ARM sends it."""
    found = evaluated_problems(load(path), path, parameters, method)
    assert found == [], "\n".join(found)


def test_a_misspelt_property_in_a_variable_is_found_once_evaluated():
    template = load("deploy/arm/vmss.json")
    extension = next(value for value in template["variables"].values()
                     if isinstance(value, dict) and "publisher" in value.get("properties", {}))
    extension["properties"]["notInAnySchema"] = True
    assert arm_schema.check_template(template, "vmss.json", SCHEMAS) == []  # to the static check, an expression
    found = evaluated_problems(template, "vmss.json", {"scaleSetName": "web"}, "customScript")
    assert len(found) == 1 and found[0].endswith(
        ".properties.virtualMachineProfile.extensionProfile.extensions[0].properties: "
        "Additional properties are not allowed ('notInAnySchema' was unexpected)"), found
