"""deploy/arm/*.json, checked as ARM would read them (tests/harness/arm_template.py evaluates the expressions)."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import subprocess

import pytest

import bootstrap
from harness.arm_template import Deployment, TemplateError, references

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
ARM = os.path.join(ROOT, "deploy", "arm")
TEMPLATES = {"vm.json": "vmName", "vmss.json": "scaleSetName"}
# Templates with tests of their own (the checks of every template below apply to them too).
OTHER_TEMPLATES = {"portal.json": "test_portal.py"}
# The Compute API version that knows scheduledEventsPolicy (azure-control-plane.md: 2025-04-01 or later).
POLICY_API = "2025-04-01"


def load(name):
    with open(os.path.join(ARM, name)) as handle:
        return json.load(handle)


def deploy(name, **params):
    params.setdefault(TEMPLATES[name], "vm1")
    return Deployment(load(name), params)


def bootstrap_extension(name, deployment):
    if name == "vm.json":
        found = deployment.resources("Microsoft.Compute/virtualMachines/extensions")
        return found[0]["properties"] if found else None
    scale_set = deployment.resources("Microsoft.Compute/virtualMachineScaleSets")[0]
    found = scale_set["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"]
    return found[0]["properties"] if found else None


def custom_data(name, deployment):
    kind = "virtualMachines" if name == "vm.json" else "virtualMachineScaleSets"
    resource = deployment.resources("Microsoft.Compute/" + kind)[0]["properties"]
    profile = resource if name == "vm.json" else resource["virtualMachineProfile"]
    return profile["osProfile"].get("customData")


def test_every_template_is_in_this_test():
    assert sorted(f for f in os.listdir(ARM) if f.endswith(".json")) == sorted(list(TEMPLATES) + list(OTHER_TEMPLATES))


@pytest.mark.parametrize("name", sorted(list(TEMPLATES) + list(OTHER_TEMPLATES)))
def test_every_parameter_is_declared_described_and_used(name):
    template = load(name)
    declared = set(template["parameters"])
    body = dict((k, v) for k, v in template.items() if k != "parameters")
    defaults = [p.get("defaultValue") for p in template["parameters"].values()]
    used = references(body, "parameters") | references(defaults, "parameters")
    assert used - declared == set(), "used but not declared"
    assert declared - used == set(), "declared but never used"
    for pname, spec in template["parameters"].items():
        assert spec.get("metadata", {}).get("description"), "%s has no description" % pname
        if "allowedValues" in spec and "defaultValue" in spec:
            assert spec["defaultValue"] in spec["allowedValues"], pname


@pytest.mark.parametrize("name", sorted(list(TEMPLATES) + list(OTHER_TEMPLATES)))
def test_every_variable_is_declared_and_used(name):
    template = load(name)
    declared = set(template.get("variables", {})) - {"copy"}
    declared |= set(loop["name"] for loop in template.get("variables", {}).get("copy", []))  # variable copy loops
    used = references(dict((k, v) for k, v in template.items()), "variables")
    assert used == declared


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_compute_resources_use_an_api_that_knows_the_scheduled_events_policy(name):
    template = load(name)
    for resource in template["resources"]:
        text = json.dumps(resource)
        if "scheduledEventsPolicy" in text or "scheduledEventsProfile" in text or resource["type"].startswith(
                "Microsoft.Compute/"):
            assert resource["apiVersion"] >= POLICY_API, (resource["type"], resource["apiVersion"])


def _paths_to(value, needle, path=()):
    """The paths (tuples of keys) of every string in value that mentions needle."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _paths_to(v, needle, path + (k,))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths_to(v, needle, path + (i,))]
    return [path] if isinstance(value, str) and re.search(needle, value, flags=re.IGNORECASE) else []


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_secrets_reach_only_the_protected_settings(name):
    """A secureString parameter, or a variable holding one, is used only under protectedSettings; a variable that
    is a whole extension may carry one, inside its own protectedSettings."""
    template = load(name)
    variables = template.get("variables", {})
    secure = [p for p, spec in template["parameters"].items() if spec["type"].lower() == "securestring"]
    assert sorted(secure) == ["smtpPassword", "webhookSecret", "webhookUrl"]
    needles = dict(("parameters\\('%s'\\)" % p, False) for p in secure)  # needle -> a safe extension object?
    for _round in range(len(variables)):  # variables that carry a secret, through other variables
        for vname, value in variables.items():
            paths = [p for n in list(needles) for p in _paths_to(value, n)]
            if paths and "variables\\('%s'\\)" % vname not in needles:
                needles["variables\\('%s'\\)" % vname] = all("protectedSettings" in p for p in paths) and \
                    isinstance(value, dict)
    body = {"resources": template["resources"], "outputs": template.get("outputs", {}), "variables": variables}
    places = [(n, p) for n, safe in needles.items() if not safe for p in _paths_to(body, n)]
    assert places, "the secrets go nowhere"
    for needle, path in places:
        carrier_itself = path[0] == "variables" and "variables\\('%s'\\)" % path[1] in needles
        assert "protectedSettings" in path or carrier_itself, (needle, path)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_custom_script_runs_the_bootstrap_of_the_tarball_with_the_settings_given(name, tmp_path):
    """The script carries the settings and the secrets as base64 lines the bootstrap reads from the file (never an
    environment variable or an argument); reading them takes the secrets out of the script."""
    vars_ = {"watcher_poll_interval": 2, "watcher_approval_rules": [{"name": "it's", "when": "EventType=='Freeze'"}]}
    url = "https://acct.blob.core.windows.net/c/imds-scheduled_events-0.3.0.tar.gz?sv=2024&sig=a%2Fb"
    deployment = deploy(name, bootstrapMethod="customScript", collectionUrl=url, watcherVariables=vars_,
                        ansiblePullUrl="https://git.example/site.git", webhookSecret="w'\"$(reboot)",
                        smtpPassword="p", webhookUrl="https://hooks.example.com/services/T0KEN")
    extension = bootstrap_extension(name, deployment)
    assert (extension["publisher"], extension["type"], extension["typeHandlerVersion"]) == (
        "Microsoft.Azure.Extensions", "CustomScript", "2.1")
    assert extension["settings"] == {}
    assert sorted(extension["protectedSettings"]) == ["fileUris", "script"]  # never commandToExecute: a command line
    assert extension["protectedSettings"]["fileUris"] == [url]
    script = base64.b64decode(extension["protectedSettings"]["script"]).decode()
    assert custom_data(name, deployment) is None
    assert "tar -xzf 'imds-scheduled_events-0.3.0.tar.gz' deploy/bootstrap.py" in script
    assert 'exec python3 deploy/bootstrap.py --collection "$PWD/imds-scheduled_events-0.3.0.tar.gz" --script "$0"' \
        in script
    assert "sig=" not in script and "export" not in script and "reboot" not in script
    script_file = tmp_path / "script.sh"
    script_file.write_text(script)
    script_file.chmod(0o500)
    subprocess.run(["sh", "-n", str(script_file)], check=True)

    secrets = bootstrap.Secrets()
    script_settings = bootstrap.read_script(str(script_file), secrets)
    args = bootstrap.parse_args(["--collection", "/var/lib/waagent/x.tar.gz", "--script", str(script_file)])
    settings = bootstrap.load_settings(args, secrets, script_settings)
    assert settings["vars"] == vars_
    assert settings["ansible_pull"]["url"] == "https://git.example/site.git"
    assert secrets.replace and secrets.merged({"webhook_secret": "old", "other": "kept?"}) == {
        "webhook_secret": "w'\"$(reboot)", "smtp_password": "p", "webhook_url": "https://hooks.example.com/services/T0KEN"}
    left = script_file.read_text()
    assert bootstrap.SCRIPT_SECRETS not in left and bootstrap.SCRIPT_SETTINGS in left
    assert left.startswith(script.split(bootstrap.SCRIPT_SETTINGS)[0]) and oct(script_file.stat().st_mode & 0o777) == "0o500"
    again = bootstrap.Secrets()
    assert bootstrap.read_script(str(script_file), again) == script_settings and not again.found and not again.replace


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_custom_data_carries_the_cloud_init_file_and_no_extension(name):
    with open(os.path.join(ROOT, "deploy", "cloud-init.yaml")) as handle:
        cloud_config = handle.read()
    deployment = deploy(name, customData=cloud_config)
    assert base64.b64decode(custom_data(name, deployment)).decode() == cloud_config
    assert bootstrap_extension(name, deployment) is None


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_deployment_runs_the_extension_again_unless_told_otherwise(name):
    """Azure runs an extension again only when its settings or forceUpdateTag change: the tag defaults to the
    deployment's time (utcNow(), which ARM allows only as a parameter's default), so applying the template again
    runs the bootstrap again; a fixed tag runs it only when the settings change."""
    spec = load(name)["parameters"]["forceUpdateTag"]
    assert (spec["type"], spec["defaultValue"]) == ("string", "[utcNow()]")
    when = datetime.datetime(2050, 4, 11, 22, 26, 58, tzinfo=datetime.timezone.utc)
    first = Deployment(load(name), {TEMPLATES[name]: "vm1", "bootstrapMethod": "customScript"}, now=when)
    later = Deployment(load(name), {TEMPLATES[name]: "vm1", "bootstrapMethod": "customScript"},
                       now=when + datetime.timedelta(seconds=1))
    assert bootstrap_extension(name, first)["forceUpdateTag"] == "20500411T222658Z"
    assert bootstrap_extension(name, later)["forceUpdateTag"] == "20500411T222659Z"
    assert bootstrap_extension(name, later)["protectedSettings"] == bootstrap_extension(name, first)["protectedSettings"]
    fixed = deploy(name, bootstrapMethod="customScript", forceUpdateTag="v1")
    assert bootstrap_extension(name, fixed)["forceUpdateTag"] == "v1"


def test_an_existing_vm_gets_only_the_extension():
    deployment = deploy("vm.json", createVm=False, bootstrapMethod="customScript")
    for kind in ("Network/virtualNetworks", "Network/networkInterfaces", "Compute/virtualMachines"):
        assert deployment.resources("Microsoft." + kind) == []
    assert bootstrap_extension("vm.json", deployment)["type"] == "CustomScript"


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_the_scheduled_events_policy_follows_the_parameters(name):
    deployment = deploy(name, autoApproveUserReboot=True, publishToEventGridAndResourceGraph=True)
    kind = "virtualMachines" if name == "vm.json" else "virtualMachineScaleSets"
    policy = deployment.resources("Microsoft.Compute/" + kind)[0]["properties"]["scheduledEventsPolicy"]
    assert policy == {
        "userInitiatedReboot": {"automaticallyApprove": True},
        "userInitiatedRedeploy": {"automaticallyApprove": False},
        "scheduledEventsAdditionalPublishingTargets": {
            "eventGridAndResourceGraph": {"enable": True, "scheduledEventsApiVersion": "2020-07-01"}},
    }


def test_the_scale_set_announces_terminations_with_the_timeout_given():
    deployment = deploy("vmss.json", terminateNotBeforeTimeout="PT12M")
    profile = deployment.resources("Microsoft.Compute/virtualMachineScaleSets")[0]["properties"]
    assert profile["virtualMachineProfile"]["scheduledEventsProfile"] == {
        "terminateNotificationProfile": {"enable": True, "notBeforeTimeout": "PT12M"}}
    with pytest.raises(TemplateError, match="is not one of"):
        deploy("vmss.json", terminateNotBeforeTimeout="PT20M").resources("Microsoft.Compute/virtualMachineScaleSets")
    uniform = deploy("vmss.json", orchestrationMode="Uniform").resources("Microsoft.Compute/virtualMachineScaleSets")
    assert uniform[0]["properties"]["virtualMachineProfile"]["networkProfile"]["networkApiVersion"] is None


def test_the_evaluator_refuses_what_it_does_not_know():
    template = {"parameters": {"a": {"type": "string", "defaultValue": "x"}}, "variables": {
        "quoted": "[format('it''s {0}', parameters('a'))]", "literal": "[[not an expression]",
        "unknown": "[dateTimeAdd(parameters('a'), 'PT1H')]", "now": "[utcNow()]"}}
    deployment = Deployment(template, {})
    assert deployment.variable("quoted") == "it's x"
    assert deployment.variable("literal") == "[not an expression]"
    with pytest.raises(TemplateError, match="does not know the function datetimeadd"):
        deployment.variable("unknown")
    with pytest.raises(TemplateError, match="utcNow.. is allowed only.*as a parameter's defaultValue"):
        deployment.variable("now")
    with pytest.raises(TemplateError, match="declares no parameter"):
        Deployment(template, {"b": 1})
