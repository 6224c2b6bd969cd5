"""deploy/cloud-init.yaml: a #cloud-config that only fetches the collection and hands over to deploy/bootstrap.py,
whose settings it carries in a form the bootstrap accepts."""

from __future__ import annotations

import json
import os
import re

import yaml

import bootstrap

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CLOUD_CONFIG = os.path.join(ROOT, "deploy", "cloud-init.yaml")
# Words of the bootstrap's work: they belong in deploy/bootstrap.py only (one script, referenced elsewhere).
BOOTSTRAP_WORDS = ("ansible-galaxy", "ansible-playbook", "apt-get", "pip install", "-m venv", "systemctl")


def load():
    with open(CLOUD_CONFIG) as handle:
        text = handle.read()
    return text, yaml.safe_load(text)


def test_it_is_a_cloud_config_with_root_only_files():
    text, config = load()
    assert text.startswith("#cloud-config\n")
    assert sorted(config) == ["runcmd", "write_files"]
    for entry in config["write_files"]:
        assert entry["owner"] == "root:root" and entry["permissions"] == "0600", entry
        assert entry["path"].startswith("/etc/imds-scheduled-events/bootstrap/")


def test_its_settings_and_variables_are_what_the_bootstrap_accepts(tmp_path):
    dummy, config = load()
    files = dict((f["path"], f["content"]) for f in config["write_files"])
    settings_path = tmp_path / "settings.json"
    settings_path.write_text(files["/etc/imds-scheduled-events/bootstrap/settings.json"])
    vars_path = tmp_path / "vars.yml"
    vars_path.write_text(files["/etc/imds-scheduled-events/bootstrap/vars.yml"])
    settings = bootstrap.load_settings(bootstrap.parse_args(["--settings", str(settings_path), "--vars",
                                                             str(vars_path)]), {})
    assert settings["collection"].endswith("/imds-scheduled_events-%s.tar.gz" % galaxy_version())
    assert settings["ansible_pull"] is None  # shipped without a repository
    assert isinstance(yaml.safe_load(vars_path.read_text()), dict)
    assert not set(yaml.safe_load(vars_path.read_text())) & set(bootstrap.SECRET_VARS)


def galaxy_version():
    with open(os.path.join(ROOT, "galaxy.yml")) as handle:
        return yaml.safe_load(handle)["version"]


def test_the_templates_and_the_cloud_config_name_the_released_collection():
    version = galaxy_version()
    for name in ("vm.json", "vmss.json"):
        with open(os.path.join(ROOT, "deploy", "arm", name)) as handle:
            default = json.load(handle)["parameters"]["collectionUrl"]["defaultValue"]
        assert default.endswith("/imds-scheduled_events-%s.tar.gz" % version), name


def test_runcmd_hands_over_to_the_bootstrap_and_does_no_work_of_its_own():
    dummy, config = load()
    assert len(config["runcmd"]) == 1
    argv = config["runcmd"][0]
    assert argv[:2] == ["sh", "-c"]
    script = argv[2]
    assert "deploy/bootstrap.py" in script and "exec python3" in script
    for word in BOOTSTRAP_WORDS:
        assert word not in script, word


def test_no_copy_of_the_bootstrap_elsewhere():
    """Templates, cloud-config and docs reference the bootstrap; none repeats its work."""
    for name in ("vm.json", "vmss.json"):
        with open(os.path.join(ROOT, "deploy", "arm", name)) as handle:
            text = handle.read()
        for word in BOOTSTRAP_WORDS:
            assert word not in text, (name, word)
    for doc in ("docs/role-watcher.md", "deploy/README.md", "README.md"):
        with open(os.path.join(ROOT, doc)) as handle:
            text = handle.read()
        assert not re.search(r"^#cloud-config", text, flags=re.MULTILINE), doc
        assert '"CustomScript"' not in text and "commandToExecute" not in text, doc


def test_one_default_in_every_path():
    """cloud-init's vars.yml and both templates' watcherVariables are the same variables, and none of them holds
    anything: what is held by default is the bootstrap's to decide (the ansible-pull timer it sets up), the same
    whichever way it runs."""
    dummy, config = load()
    files = dict((f["path"], f["content"]) for f in config["write_files"])
    variables = yaml.safe_load(files["/etc/imds-scheduled-events/bootstrap/vars.yml"])
    for name in ("vm.json", "vmss.json"):
        with open(os.path.join(ROOT, "deploy", "arm", name)) as handle:
            assert json.load(handle)["parameters"]["watcherVariables"]["defaultValue"] == variables, name
    assert not [name for name in variables if name.startswith("watcher_hold_")]
