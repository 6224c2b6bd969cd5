"""deploy/bootstrap.py: what it accepts, what it refuses before changing anything, and what it writes."""

from __future__ import annotations

import json
import os
import re
import subprocess

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


class Machine(object):
    """A machine as the bootstrap's planning sees it, through the commands it runs (each recorded, none run): which
    tools are on PATH, the ansible-core versions installed and packaged, the packages installed, what apt-get
    --simulate answers."""

    def __init__(self, monkeypatch, tools=("apt-get",), installed=None, candidate="2.14.18-0+deb12u2",
                 packages=("python3-requests",), ensurepip=True, simulate=None):
        self.tools = set(tools)
        self.installed = dict(installed or {})
        self.candidate = candidate
        self.packages = set(packages)
        self.ensurepip = ensurepip
        self.simulate = simulate
        self.calls = []
        monkeypatch.setattr(bootstrap.shutil, "which", lambda name: "/usr/bin/" + name if name in self.tools else None)
        monkeypatch.setattr(bootstrap, "ansible_version",
                            lambda d: (self.installed[d], "ansible %s" % (self.installed[d],)) if d in self.installed
                            else None)
        monkeypatch.setattr(bootstrap, "run", self.run)

    def run(self, argv, env=None, check=True, capture=False, timeout=3600):  # pylint: disable=unused-argument
        self.calls.append(list(argv))
        out, code = "", 0
        if argv[:2] == ["apt-cache", "policy"]:
            out = "%s:\n  Installed: (none)\n  Candidate: %s\n" % (argv[-1], self.candidate or "(none)")
        elif argv[0] == "dpkg-query":
            code, out = (0, "installed") if argv[-1] in self.packages else (1, "")
        elif argv[-1] == "import ensurepip, venv":
            code = 0 if self.ensurepip else 1
        elif argv[:2] == ["apt-get", "install"] and "--simulate" in argv:
            code, out = self.simulate or (0, "".join("Inst %s (1.0 Debian:12/stable [all])\n" % p
                                                     for p in argv[argv.index("--simulate") + 1:]))
        if check and code:
            raise BootstrapError("%s failed" % argv[0])
        return subprocess.CompletedProcess(argv, code, stdout=out)

    def apt(self):
        return [c[:2] + [a for a in c[2:] if not a.startswith(("-", "DPkg::", "Acquire::"))] for c in self.calls
                if c[0] == "apt-get"]


PULL = {"url": "https://git.example.com/config.git", "playbook": "local.yml", "branch": "", "interval": "30min"}


def plan_for(pull=None, mode="auto", variables=None):
    return bootstrap.plan_install({"ansible": mode, "ansible_pull": pull}, variables or {})


def test_a_debian_cloud_image_gets_ansible_core_git_and_the_watchers_packages_checked_first(monkeypatch):
    """Debian 12's cloud image: no ansible, no git, python3-requests (cloud-init's) but no python3-jmespath, no apt
    lists. The lists are fetched, the install simulated; nothing is installed yet."""
    machine = Machine(monkeypatch)
    plan = plan_for(PULL)
    assert [name for name, why in plan.packages] == ["ansible-core", "git", "python3-jmespath"]
    assert dict(plan.packages)["git"] == "ansible-pull clones its repository with it"
    assert plan.bin_dir == "/usr/bin" and not plan.venv
    assert machine.apt() == [["apt-get", "update"],
                             ["apt-get", "install", "ansible-core", "git", "python3-jmespath"]]
    assert ["apt-get", "install", "-q", "-o", "DPkg::Lock::Timeout=600", "-o", "Acquire::Retries=3", "-y",
            "--no-install-recommends", "--simulate", "ansible-core", "git", "python3-jmespath"] in machine.calls
    assert plan.installs == ["ansible-core", "git", "python3-jmespath"]
    machine.calls[:] = []
    machine.installed["/usr/bin"] = (2, 14, 18)
    assert bootstrap.carry_out(plan) == "/usr/bin"
    assert machine.apt() == [["apt-get", "install", "ansible-core", "git", "python3-jmespath"]]


def test_git_only_for_ansible_pull_and_nothing_at_all_when_everything_is_there(monkeypatch):
    machine = Machine(monkeypatch, packages=("python3-requests", "python3-jmespath"))
    assert [name for name, why in plan_for().packages] == ["ansible-core"]
    machine = Machine(monkeypatch, tools=("apt-get", "git"), installed={"/usr/bin": (2, 19, 4)},
                      packages=("python3-requests", "python3-jmespath"))
    plan = plan_for(PULL)
    assert plan.packages == [] and plan.bin_dir == "/usr/bin"
    assert machine.apt() == []  # no apt-get update either: a machine with all it needs is not touched


def test_a_distribution_whose_ansible_is_too_old_gets_a_venv_and_python3_venv_only_then(monkeypatch):
    """Debian 11: ansible 2.10 installed and packaged. A venv from PyPI; python3-venv when ensurepip is missing."""
    machine = Machine(monkeypatch, installed={"/usr/bin": (2, 10, 17)}, candidate="2.10.8+merged+base+2.10.17+dfsg-0",
                      ensurepip=False, packages=("python3-requests", "python3-jmespath"))
    plan = plan_for()
    assert plan.venv and plan.bin_dir == os.path.join(bootstrap.VENV, "bin")
    assert [name for name, why in plan.packages] == ["python3-venv"]
    assert machine.apt() == [["apt-get", "update"], ["apt-get", "install", "python3-venv"]]
    machine = Machine(monkeypatch, installed={"/usr/bin": (2, 10, 17)}, candidate="2.10.8",
                      packages=("python3-requests", "python3-jmespath"))
    assert plan_for().packages == []
    with pytest.raises(BootstrapError, match=r"packages no ansible-core 2.14 or later \(candidate: 2.10.8\)"):
        plan_for(mode="distribution")


def test_what_apt_cannot_install_is_refused_before_anything_changes_with_the_package_named(monkeypatch):
    said = ("Reading package lists...\nBuilding dependency tree...\nE: Unable to locate package git\n")
    machine = Machine(monkeypatch, simulate=(100, said))
    with pytest.raises(BootstrapError) as caught:
        plan_for(PULL)
    message = str(caught.value)
    assert message.startswith("cannot install ansible-core (the distribution's 2.14.18 applies the watcher role), "
                              "git (ansible-pull clones its repository with it), "
                              "python3-jmespath (the watcher's own, watcher_packages): apt-get install --simulate "
                              "refused it (exit 100), and nothing was changed:\n")
    assert message.endswith("\nE: Unable to locate package git")
    assert not [c for c in machine.calls if c[:2] == ["apt-get", "install"] and "--simulate" not in c]


def test_without_apt_the_missing_packages_are_named_and_nothing_is_run(monkeypatch):
    machine = Machine(monkeypatch, tools=(), installed={"/usr/bin": (2, 16, 3)})
    with pytest.raises(BootstrapError) as caught:
        plan_for(PULL)
    assert str(caught.value) == ("this machine needs git (ansible-pull clones its repository with it), and the "
                                 "bootstrap installs packages with apt only (Debian, Ubuntu): there is no apt-get here. "
                                 "Install them, then run it again; nothing was changed")
    assert machine.calls == []
    assert plan_for().packages == []  # the watcher's packages are the role's business there


def test_the_watchers_packages_follow_its_variables(monkeypatch):
    Machine(monkeypatch, installed={"/usr/bin": (2, 14, 18)}, packages=())
    assert [n for n, w in plan_for(variables={"watcher_install_packages": False}).packages] == []
    assert [n for n, w in plan_for(variables={"watcher_packages": ["python3-requests"]}).packages] == ["python3-requests"]
    with pytest.raises(BootstrapError, match="watcher_packages must be a list of package names"):
        plan_for(variables={"watcher_packages": ["git; reboot"]})


def test_the_watchers_packages_are_the_roles_default():
    with open(os.path.join(ROOT, "roles", "watcher", "defaults", "main.yml")) as handle:
        assert yaml.safe_load(handle)["watcher_packages"] == list(bootstrap.ROLE_PACKAGES)


# --- what is held ------------------------------------------------------------------------------------------------


def test_the_ansible_pull_timer_is_held_whenever_the_bootstrap_sets_it_up_and_nothing_else_by_default():
    with_pull = {"ansible_pull": PULL}
    assert bootstrap.role_variables(with_pull, {})["watcher_hold_systemd_units"] == ["ansible-pull.timer"]
    assert bootstrap.role_variables(with_pull, {"watcher_hold_systemd_units": ["puppet-run.timer"]})[
        "watcher_hold_systemd_units"] == ["ansible-pull.timer", "puppet-run.timer"]
    assert bootstrap.role_variables(with_pull, {"watcher_hold_systemd_units": ["x.timer", "ansible-pull.timer"]})[
        "watcher_hold_systemd_units"] == ["x.timer", "ansible-pull.timer"]
    assert "watcher_hold_systemd_units" not in bootstrap.role_variables({"ansible_pull": None}, {})


def test_holding_the_ansible_pull_timer_without_ansible_pull_is_refused_with_the_fix(monkeypatch, capsys):
    machine = Machine(monkeypatch)
    with pytest.raises(BootstrapError) as caught:
        bootstrap.check_held_units({"ansible_pull": None}, {"watcher_hold_systemd_units": ["ansible-pull.timer"]})
    assert "no ansible_pull url is set (ansiblePullUrl in the ARM templates)" in str(caught.value)
    assert machine.calls == [["systemctl", "list-unit-files", "--no-legend", "--", "ansible-pull.timer"]]
    machine.calls[:] = []
    bootstrap.check_held_units({"ansible_pull": PULL}, {"watcher_hold_systemd_units": ["ansible-pull.timer",
                                                                                       "ansible-pull.service"]})
    assert machine.calls == []  # the bootstrap makes both
    bootstrap.check_held_units({"ansible_pull": None}, {"watcher_hold_systemd_units": ["puppet-run.timer"]})
    assert "warning: watcher_hold_systemd_units names puppet-run.timer, which is not on this machine" in \
        capsys.readouterr().out
    # A VM with its own ansible-pull timer (set up before the bootstrap) may hold it.
    monkeypatch.setattr(machine, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 0, stdout="ansible-pull.timer enabled enabled\n"))
    monkeypatch.setattr(bootstrap, "run", machine.run)
    bootstrap.check_held_units({"ansible_pull": None}, {"watcher_hold_systemd_units": ["ansible-pull.timer"]})
