"""deploy/bootstrap.py: what it accepts, what it refuses before changing anything, and what it writes."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

import bootstrap
from bootstrap import BootstrapError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def settings(argv=(), secrets=None, script_settings=None):
    return bootstrap.load_settings(bootstrap.parse_args(list(argv)), secrets or bootstrap.Secrets(), script_settings)


def test_the_minimum_ansible_is_the_one_the_collection_claims():
    with open(os.path.join(ROOT, "meta", "runtime.yml")) as handle:
        requires = yaml.safe_load(handle)["requires_ansible"]
    assert re.fullmatch(r">=(\d+)\.(\d+)\.0", requires), requires
    assert tuple(int(p) for p in requires[2:].split(".")[:2]) == bootstrap.MIN_ANSIBLE


def test_defaults_install_from_galaxy_with_no_pull():
    got = settings()
    assert got == {"collection": "imds.scheduled_events", "vars": {}, "vars_files": [], "ansible": "auto",
                   "ansible_pull": None}


def test_script_then_file_then_command_line(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"collection": "/from/file.tar.gz", "ansible_pull": {"url": "https://git/file.git"}}))
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("watcher_poll_interval: 2\n")
    script = {"collection": "/from/script.tar.gz", "vars": {"watcher_poll_interval": 3},
              "ansible_pull": {"url": "https://git/script.git", "interval": "1h"}}
    got = settings(["--settings", str(path), "--pull-playbook", "site.yml", "--vars", str(vars_file)],
                   script_settings=script)
    assert got["collection"] == "/from/file.tar.gz"
    assert got["vars"] == {"watcher_poll_interval": 3}
    assert got["vars_files"] == [str(vars_file)]
    assert got["ansible_pull"] == {"url": "https://git/file.git", "playbook": "site.yml", "branch": "", "interval": "1h"}
    assert settings(["--settings", str(path), "--collection", "imds.scheduled_events:0.2.0"])["collection"] == \
        "imds.scheduled_events:0.2.0"


def test_an_empty_pull_url_means_no_ansible_pull(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"ansible_pull": {"url": "", "playbook": "local.yml"}}))
    assert settings(["--settings", str(path)])["ansible_pull"] is None


@pytest.mark.parametrize("content, message", [
    ({"colection": "x"}, r"unknown setting\(s\) colection"),
    ({"vars": ["watcher_poll_interval"]}, "vars must be an object"),
    ({"vars": {"watcher_webhook_secret": 1234}}, "watcher_webhook_secret in .* must be a string"),
    ({"vars": {"watcher_notify_webhook": {"url": "hooks.example.com/x"}}}, "must be an http:// or https:// URL"),
    ({"ansible": "pip"}, "ansible must be auto, distribution or venv"),
    ({"vars_files": ["/nonexistent/vars.yml"]}, "does not exist"),
    ({"ansible_pull": {"url": "https://git/x.git; rm -rf /"}}, "only letters, digits"),
    ({"ansible_pull": {"url": "https://git/x.git", "playbook": "--extra-vars=@/etc/shadow"}}, "must not start with -"),
    ({"ansible_pull": {"url": "https://git/x.git", "interval": "soon"}}, "not a systemd time span"),
    ({"ansible_pull": {"url": "https://git/x.git", "cron": "* * * * *"}}, r"unknown setting\(s\) cron"),
    (["not", "an", "object"], "must be a JSON object"),
])
def test_bad_settings_are_refused_with_what_to_fix(tmp_path, content, message):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(content))
    with pytest.raises(BootstrapError) as caught:
        bootstrap.collect_variables(settings(["--settings", str(path)]), bootstrap.Secrets())
    assert re.search(message, str(caught.value)), str(caught.value)


def test_settings_that_are_not_json_are_refused(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("collection: x\n")
    with pytest.raises(BootstrapError, match="is not JSON"):
        settings(["--settings", str(path)])


@pytest.mark.parametrize("name", bootstrap.OLD_ENVIRONMENT)
def test_settings_and_secrets_in_the_environment_are_refused_with_where_they_go(name):
    with pytest.raises(BootstrapError) as caught:
        bootstrap.refuse_old_environment({name: "e30=", "HOME": "/root"})
    assert str(caught.value).startswith(name + ": settings and secrets are no longer read from the environment")
    assert "--settings FILE" in str(caught.value) and "--vars FILE, moved to /etc/imds-scheduled-events/secrets.json" \
        in str(caught.value)
    bootstrap.refuse_old_environment({"HOME": "/root"})


@pytest.mark.parametrize("line, version", [
    ("ansible-playbook [core 2.14.18]", (2, 14, 18)),
    ("ansible-playbook [core 2.21.0rc1]", (2, 21, 0)),
    ("ansible-playbook 2.10.17", (2, 10, 17)),
    ("2.19", (2, 19, 0)),
    ("no version here", None),
])
def test_version_of_ansible_playbook_first_line(line, version):
    assert bootstrap.version_tuple(line) == version


def test_pull_units_run_the_playbook_with_the_collection_and_no_shell():
    pull = bootstrap.check_pull({"url": "https://git.example/site.git", "branch": "release-1", "interval": "2h"})
    units = bootstrap.pull_units("/usr/bin", pull)
    service, timer = units["ansible-pull.service"], units["ansible-pull.timer"]
    exec_start = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == ["ExecStart=/usr/bin/ansible-pull --url https://git.example/site.git --full --directory "
                          "/var/lib/ansible-pull/checkout --checkout release-1 -e "
                          "ansible_python_interpreter=/usr/bin/python3 local.yml"]
    assert "Environment=ANSIBLE_COLLECTIONS_PATH=/usr/share/ansible/collections" in service
    assert "Type=oneshot" in service
    assert "OnUnitInactiveSec=2h" in timer and "WantedBy=timers.target" in timer


def test_write_file_is_atomic_root_only_and_reports_change(tmp_path):
    path = str(tmp_path / "vars.json")
    assert bootstrap.write_file(path, "{}\n", 0o600) is True
    assert bootstrap.write_file(path, "{}\n", 0o600) is False
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    os.chmod(path, 0o644)
    assert bootstrap.write_file(path, "{}\n", 0o600) is True
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert sorted(os.listdir(str(tmp_path))) == ["vars.json"]


def test_storage_tokens_are_never_printed():
    assert bootstrap.redact("https://acct.blob.core.windows.net/c/x.tar.gz?sv=2024&sig=SECRET") == \
        "https://acct.blob.core.windows.net/c/x.tar.gz?..."
    assert bootstrap.redact("https://galaxy/x.tar.gz") == "https://galaxy/x.tar.gz"


def test_tarball_version_refuses_what_is_not_this_collection(tmp_path):
    import io
    import tarfile
    path = tmp_path / "other.tar.gz"
    manifest = json.dumps({"collection_info": {"namespace": "community", "name": "general", "version": "1.0.0"}})
    with tarfile.open(str(path), "w:gz") as tar:
        info = tarfile.TarInfo("MANIFEST.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest.encode()))
    with pytest.raises(BootstrapError, match="holds the collection community.general"):
        bootstrap.tarball_version(str(path))
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(BootstrapError, match="is not a collection tarball"):
        bootstrap.tarball_version(str(tmp_path / "junk.tar.gz"))


def test_the_distribution_ansible_is_used_when_new_enough_else_a_venv(monkeypatch):
    calls = []
    installed = {"/usr/bin": (2, 10, 17)}
    monkeypatch.setattr(bootstrap, "ansible_version",
                        lambda d: (installed[d], "ansible %s" % (installed[d],)) if d in installed else None)
    monkeypatch.setattr(bootstrap.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(bootstrap, "apt_candidate", lambda package: None)
    monkeypatch.setattr(bootstrap, "run", lambda argv, **kw: calls.append(argv))

    def make_venv():
        installed[os.path.join(bootstrap.VENV, "bin")] = (2, 15, 13)
        return os.path.join(bootstrap.VENV, "bin")
    monkeypatch.setattr(bootstrap, "make_venv", make_venv)
    assert bootstrap.ensure_ansible("auto") == os.path.join(bootstrap.VENV, "bin")  # Debian 11: 2.10, none packaged
    assert calls == [["apt-get", "update"]]
    with pytest.raises(BootstrapError, match="packages no ansible-core 2.14 or later"):
        bootstrap.ensure_ansible("distribution")
    installed["/usr/bin"] = (2, 14, 18)
    del installed[os.path.join(bootstrap.VENV, "bin")]
    calls[:] = []
    assert bootstrap.ensure_ansible("auto") == "/usr/bin"  # Debian 12: already there, nothing installed
    assert calls == []
