"""deploy/README.md's walkthrough, read from the page itself (tests/harness/doc_blocks.py): `az` cannot run here, so
each command is checked against what it drives. Its parameters exist in the template, have the template's types and
allowed values, the required ones are given, its parameters file is the page's block, and the template evaluates with
them to what the command is for. tests/system/test_first_boot.py deploys the existing-VM command's values and boots
deploy/cloud-init.yaml, the file the new-VM command passes."""

from __future__ import annotations

import base64
import json
import re

import pytest
import yaml

import bootstrap
from harness.arm_template import Deployment
from harness import doc_commands
from harness.doc_blocks import ROOT, az_deployments, block, blocks, from_shell, parameters_file, shell_commands, typed

README = "deploy/README.md"
ME = "tests/unit/deploy/test_readme.py"
FIRST_BOOT = "tests/system/test_first_boot.py"
# What the shell gives a `$VAR` or `$(...)` here, where it matters what kind of value it is.
SHELL_STANDINS = {"webhookUrl": "https://hooks.example.com/services/T0KEN"}
SHELL_FILE = re.compile(r"^\$\(cat (?P<path>[^~/)\s][^)\s]*)\)$")  # a file of the checkout


def mine(name):
    return block(README, ME, name)


def deployments():
    return [(b, command) for b in blocks(README) for command in az_deployments(b.text)]


def template_of(command):
    return json.loads((ROOT / command.template_file).read_text())


def evaluated(command):
    """The command's deployment as ARM evaluates it: the parameters file, then name=value words (typed as the CLI
    types them); a `$(cat FILE)` of the checkout is that file's text, another value from the shell a stand-in."""
    template = template_of(command)
    declared = template["parameters"]
    values = {}
    for path in command.files():
        values.update(parameters_file(README, path))
    for name, raw in command.values().items():
        assert name in declared, "%s passes %s, which %s does not declare" % (command.argv[:4], name, command.template_file)
        found = SHELL_FILE.match(raw)
        if found:
            values[name] = (ROOT / found.group("path")).read_text()
        else:
            values[name] = SHELL_STANDINS.get(name, "from the shell") if from_shell(raw) else typed(raw, declared[name])
    for name, value in values.items():
        assert name in declared, name
        kind = declared[name]["type"].lower()
        assert isinstance(value, {"object": dict, "bool": bool, "int": int}.get(kind, str)), (name, value)
    missing = [name for name, spec in declared.items() if "defaultValue" not in spec and name not in values]
    assert missing == [], "required parameters not given: %s" % missing
    return Deployment(template, values), values


def extension_of(deployment):
    found = deployment.resources("Microsoft.Compute/virtualMachines/extensions")
    if found:
        return found[0]["properties"]
    for scale_set in deployment.resources("Microsoft.Compute/virtualMachineScaleSets"):
        extensions = scale_set["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"]
        return extensions[0]["properties"] if extensions else None
    return None


def script_settings(extension, tmp_path):
    """The settings and secrets the extension's script carries, read by the bootstrap as on the VM."""
    path = tmp_path / "script.sh"
    path.write_text(base64.b64decode(extension["protectedSettings"]["script"]).decode())
    secrets = bootstrap.Secrets()
    settings = bootstrap.read_script(str(path), secrets)
    return bootstrap.load_settings(bootstrap.parse_args(["--script", str(path)]), secrets, settings), secrets


def test_every_marked_block_is_claimed_by_a_test_that_names_it():
    found = blocks(README)
    assert len(found) >= 10
    for item in found:
        assert (ROOT / item.test).is_file(), item
        assert '"%s"' % item.name in (ROOT / item.test).read_text(), "%s does not use %r" % (item.test, item)


def test_the_commands_work_on_one_resource_group():
    groups = set()
    for item in blocks(README):
        for argv in shell_commands(item.text) if item.lang == "sh" else []:
            if argv[0] == "az" and "--resource-group" in argv:
                groups.add(argv[argv.index("--resource-group") + 1])
    created = [argv for argv in shell_commands(mine("new VM with cloud-init").text) if argv[:3] == ["az", "group", "create"]]
    assert groups == {created[0][created[0].index("--name") + 1]}


@pytest.mark.parametrize("item, command", deployments(), ids=[b.name for b, c in deployments()])
def test_each_deployment_passes_what_its_template_declares(item, command):  # pylint: disable=unused-argument
    deployment, dummy = evaluated(command)
    assert deployment.resources("Microsoft.Compute/virtualMachines") or extension_of(deployment) or \
        deployment.resources("Microsoft.Compute/virtualMachineScaleSets")


def test_the_new_vm_with_cloud_init_gets_the_shipped_cloud_config():
    (command,) = az_deployments(mine("new VM with cloud-init").text)
    assert command.values()["customData"] == "$(cat deploy/cloud-init.yaml)"
    deployment, dummy = evaluated(command)
    (vm,) = deployment.resources("Microsoft.Compute/virtualMachines")
    assert base64.b64decode(vm["properties"]["osProfile"]["customData"]).decode() == \
        (ROOT / "deploy" / "cloud-init.yaml").read_text()
    assert extension_of(deployment) is None


@pytest.mark.parametrize("name", ["new VM with the Custom Script extension", "existing VM", "scale set"])
def test_the_custom_script_deployments_set_up_ansible_pull_and_pass_their_secrets(name, tmp_path):
    (command,) = az_deployments(block(README, ME if name != "existing VM" else FIRST_BOOT,
                                      name).text)
    deployment, values = evaluated(command)
    settings, secrets = script_settings(extension_of(deployment), tmp_path)
    assert settings["ansible_pull"]["url"] == values["ansiblePullUrl"]
    assert settings["vars"] == parameters_file(README, "watcher.parameters.json")["watcherVariables"]
    assert sorted(k for k, v in secrets.found.items() if v) == ["webhook_secret", "webhook_url"]
    assert bootstrap.role_variables(settings, settings["vars"])["watcher_hold_systemd_units"] == ["ansible-pull.timer"]
    if name == "existing VM":
        assert values["createVm"] is False and deployment.resources("Microsoft.Compute/virtualMachines") == []
    if name == "scale set":
        (scale_set,) = deployment.resources("Microsoft.Compute/virtualMachineScaleSets")
        assert scale_set["properties"]["virtualMachineProfile"]["scheduledEventsProfile"][
            "terminateNotificationProfile"] == {"enable": True, "notBeforeTimeout": "PT10M"}


def test_the_files_come_from_the_release_the_templates_and_cloud_config_name():
    url = [w for argv in shell_commands(mine("get the files").text) for w in argv if w.startswith("https://")]
    config = yaml.safe_load((ROOT / "deploy" / "cloud-init.yaml").read_text())
    settings = json.loads([f for f in config["write_files"] if f["path"].endswith("/settings.json")][0]["content"])
    for name in ("vm.json", "vmss.json"):
        default = json.loads((ROOT / "deploy" / "arm" / name).read_text())["parameters"]["collectionUrl"]["defaultValue"]
        assert url == [default] == [settings["collection"]], name


def test_updating_and_removing_name_what_the_deployments_made():
    (update,) = shell_commands(mine("update the instances").text)
    (scale_set,) = az_deployments(mine("scale set").text)
    assert update[:3] == ["az", "vmss", "update-instances"]
    assert update[update.index("--name") + 1] == scale_set.values()["scaleSetName"]
    (delete,) = shell_commands(mine("remove the extension").text)
    (existing,) = az_deployments(block(README, FIRST_BOOT, "existing VM").text)
    assert delete[:4] == ["az", "vm", "extension", "delete"]
    assert delete[delete.index("--vm-name") + 1] == existing.values()["vmName"]
    deployment, dummy = evaluated(existing)
    (extension,) = deployment.resources("Microsoft.Compute/virtualMachines/extensions")
    assert extension["name"] == "%s/%s" % (existing.values()["vmName"], delete[delete.index("--name") + 1])


def test_a_value_of_the_wrong_type_is_caught():
    spec = {"type": "bool"}
    assert typed("false", spec) is False
    for raw, wrong in (("no", spec), ("3x", {"type": "int"}), ("$FLAG", spec), ("PT20M", {"type": "string", "allowedValues": ["PT5M"]})):
        with pytest.raises(ValueError):
            typed(raw, wrong)


def test_a_marker_that_lost_its_block_is_an_error(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('<!-- tested: vm, t.py runs it as "one" -->\n```sh\necho one\n```\n\n'
                    '<!-- tested: vm, t.py runs it as "two" -->\nSome words between.\n```sh\necho two\n```\n')
    with pytest.raises(ValueError, match="marker is not right above its fenced block"):
        blocks(str(page))
    page.write_text('<!-- tested: firstboot, t.py runs it as "one" -->\n```sh\necho one\n```\n\n'
                    '<!-- tested: t.py reads it as "two" -->\n```json\n{}\n```\n')
    one, two = blocks(str(page))
    assert (one.test, one.name, one.lang, one.text, one.line, one.where) == ("t.py", "one", "sh", "echo one\n", 3,
                                                                             "firstboot")
    assert (two.test, two.name, two.lang, two.text, two.where) == ("t.py", "two", "json", "{}\n", None)


def test_the_firstboot_commands_of_the_docs_are_the_blocks_the_first_boot_test_runs():
    """doc_commands leaves the `firstboot` commands to tests/system/test_first_boot.py: each is one it names."""
    firstboot = [(c.path, c.line) for c in doc_commands.extract(str(ROOT)) if c.where == "firstboot"]
    claimed = [(README, b.line) for b in blocks(README) if b.test == FIRST_BOOT and b.where == "firstboot"]
    assert firstboot and sorted(firstboot) == sorted(claimed)
