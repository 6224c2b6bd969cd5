"""The ansible-pull path on the VM's own Ansible: the Ansible that Debian 11, 12 and 13 package (Ansible 2.10,
ansible-core 2.14 and 2.19), inside those containers, with the collection installed there by that Ansible's
ansible-galaxy from a tarball built from this checkout.

- tests/system/pull/site.yml (the README's pattern: the events lookup in `when:`, event_info, event_approve,
  drift_pause) runs with ansible-pull from a git repository on the VM against the IMDS simulator on the host's
  loopback: with no event it converges; with a Scheduled event it skips the converge, holds a systemd timer and
  approves the event; once the event is gone it converges again and releases the hold. A run warns that the
  collection does not support its Ansible version exactly when meta/runtime.yml's requires_ansible leaves it out.
- The watcher role applied by the VM's own ansible-playbook to the VM itself (-c local), on Debian 12 (2.14) and
  13 (2.19): it converges, is idempotent, the service it starts polls the simulator, and watcher_state=absent
  removes it. Not on Debian 11, whose Ansible 2.10 the collection does not claim.
- The docs' `pull` commands (tests/harness/doc_commands.py: `ansible-pull -U <repo> playbooks/pull_site.yml`), run
  as printed on Debian 12 (2.14) and 13 (2.19) by the VM's own ansible-pull, with <repo> a git repository of the
  installed collection's files and IMDS_ENDPOINT (the variable the lookup documents) naming the VM's simulator
  endpoint, while an event is pending: the run skips itself and succeeds.
- The playbooks the EDA rulebooks run, on Debian 12 (2.14) and 13 (2.19), by the VM's own ansible-playbook as
  ansible-rulebook runs them (`-e @env/extravars`) with events whose every field is hostile
  (tests/harness/eda_extravars.py, from the installed collection: the integration target eda_playbooks runs the same
  on the matrix cores): nothing runs or is rendered, the values arrive intact, hosts are selected by exact name.

Nothing is timed: each ansible-pull run is synchronous, and the only wait is a bounded poll for the watcher's polls.
"""

import json
import os
import re
import shlex
import uuid
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from harness import doc_commands, polling
from harness import rootfs as rootfs_mod
from harness.collection import build_tarball
from harness.pytest_container import start_container
from harness.pytest_sim import simulator_fixtures

ROOT = Path(__file__).resolve().parent.parent.parent
FILES = ROOT / "tests" / "system" / "pull"
DRIFT_FILES = ROOT / "tests" / "system" / "drift_hold" / "vm"

PULL_RELEASES = tuple(rootfs_mod.RELEASES)
# Releases whose packaged ansible-core the collection claims (README "Tested with"): requires_ansible must cover them.
CLAIMED = ("bookworm", "trixie")

REPO = "/srv/pull-config"
CONVERGED = "/var/lib/pull-test/converged"
HOLDS = "/var/lib/imds-scheduled-events/holds.json"
TIMER = "drift-agent.timer"
INSTALLED = "/root/.ansible/collections/ansible_collections/imds/scheduled_events"
UNSUPPORTED = "does not support Ansible version"
WAIT = 90  # seconds: the bound of every wait


def vm_names(release):
    """The simulator VMs of a leg: the one ansible-pull runs on, and the one the watcher role watches."""
    return "pull-%s" % release.test_id, "role-%s" % release.test_id


def eda_vm_name(release):
    """The simulator VM whose event the EDA playbooks approve."""
    return "eda-%s" % release.test_id


def doc_vm_name(release):
    """The simulator VM of the docs' pull commands."""
    return "doc-%s" % release.test_id


SCENARIO = {
    "name": "pull-packaged-ansible",
    "description": "One VM per leg for ansible-pull and one for the watcher role; events are injected by the tests.",
    "clock": "manual",
    "seed": 7,
    "vms": [{"name": name} for suite in PULL_RELEASES
            for name in vm_names(rootfs_mod.release(suite)) + (eda_vm_name(rootfs_mod.release(suite)),
                                                               doc_vm_name(rootfs_mod.release(suite)))],
}


def wait_for(predicate, timeout=WAIT, what="the condition"):
    return polling.wait_for(predicate, timeout, what=what)


@pytest.fixture(scope="session")
def collection_tarball(tmp_path_factory):
    """This checkout as a collection tarball, built on the host with ansible-galaxy (once per worker)."""
    return build_tarball(tmp_path_factory.mktemp("collection"))


sim, control = simulator_fixtures(SCENARIO)


@pytest.fixture(scope="module")
def vm(debian_release, collection_tarball):
    """A container of this leg's release with the collection installed by its own ansible-galaxy, the pull repository
    in git, and a timer for drift_pause to hold."""
    box = start_container(suite=debian_release.suite, name="imds-se-pull-%s-%d" % (debian_release.test_id, os.getpid()))
    try:
        tarball = "/root/" + collection_tarball.name
        box.put_file(tarball, collection_tarball.read_bytes())
        installed = box.ssh(["ansible-galaxy", "collection", "install", tarball], timeout=300, check=False)
        assert installed.returncode == 0, installed.stdout + installed.stderr
        box.ssh(["test", "-f", INSTALLED + "/MANIFEST.json"])
        for name in ("site.yml", "converge.yml"):
            box.put_file("%s/%s" % (REPO, name), (FILES / name).read_bytes())
        box.ssh("cd %s && git init -q && git add . && git -c user.name=test -c user.email=test@localhost "
                "commit -q -m 'site configuration'" % REPO)
        for name in ("drift-agent.service", "drift-agent.timer"):
            box.put_file("/usr/local/lib/systemd/system/" + name, (DRIFT_FILES / name).read_bytes())
        box.ssh(["mkdir", "-p", CONVERGED])
        box.ssh(["systemctl", "daemon-reload"])
        box.ssh(["systemctl", "enable", "--now", TIMER])
        yield box
    finally:
        box.cleanup()


def packaged_ansible_version(vm):
    """The version of the VM's own Ansible: "ansible-pull [core 2.14.18]" or, for 2.10, "ansible-pull 2.10.17"."""
    first = vm.ssh(["ansible-pull", "--version"], timeout=120).stdout.splitlines()[0]
    return re.search(r"(\d+\.\d+\.\d+)", first).group(1)


def covered(version):
    """Whether meta/runtime.yml's requires_ansible includes this Ansible version."""
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    return SpecifierSet(runtime["requires_ansible"]).contains(version, prereleases=True)


def check_run(proc, version):
    """A run succeeded, without the unsupported-version warning where requires_ansible covers the version. Where it
    does not, the warning is checked by test_the_packaged_ansible_is_the_releases_own on ansible-playbook's own
    stderr: ansible-pull copies its playbook's stdout and stderr into one stream chunk by chunk, so a line of the
    play can land inside the warning."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-20000:]
    if covered(version):
        assert UNSUPPORTED not in output, output[-20000:]
    return output


def ansible_pull(vm, endpoint):
    """One ansible-pull run on the VM, as its timer would start it; returns its output, failing on a failed run."""
    argv = ["ansible-pull", "--url", "file://" + REPO, "--directory", "/var/lib/ansible-pull/checkout",
            "-e", "imds_endpoint=" + endpoint, "site.yml"]
    proc = vm.ssh("ANSIBLE_NOCOLOR=1 %s" % shlex.join(argv), timeout=600, check=False)
    return check_run(proc, packaged_ansible_version(vm))


def converges(vm):
    return len(vm.ssh(["ls", "-1", CONVERGED]).stdout.split())


def timer_state(vm):
    out = vm.ssh(["systemctl", "show", "--property=ActiveState,UnitFileState", "--", TIMER]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def held_reasons(vm):
    """(reason id, event id, holder, target) for everything the hold record says is held."""
    found = vm.ssh(["cat", HOLDS], check=False)
    targets = json.loads(found.stdout).get("targets", {}) if found.returncode == 0 else {}
    return sorted((r["id"], r.get("event_id"), r.get("holder"), key) for key, target in targets.items()
                  for r in target.get("reasons", []))


def test_the_packaged_ansible_is_the_releases_own(vm, debian_release):
    version = packaged_ansible_version(vm)
    expected = {"bullseye": "2.10.", "bookworm": "2.14.", "trixie": "2.19."}[debian_release.suite]
    assert version.startswith(expected), version
    if debian_release.suite in CLAIMED:
        assert covered(version), "meta/runtime.yml's requires_ansible must cover Debian's packaged ansible-core " + version
    coverage = "covered" if covered(version) else "not covered"
    print("%s: Ansible %s, %s by requires_ansible" % (debian_release.test_id, version, coverage))
    # The VM's ansible-playbook loading the collection warns exactly when requires_ansible leaves its version out.
    loaded = vm.ssh(["ansible-playbook", "--syntax-check", "-i", "localhost,", REPO + "/site.yml"], timeout=300,
                    check=False)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    warned = "%s %s" % (UNSUPPORTED, version) in " ".join(loaded.stderr.split())
    assert warned is not covered(version), loaded.stderr[-8000:]


def test_pull_converges_holds_approves_and_releases(vm, sim, control, debian_release):
    pull_vm, dummy = vm_names(debian_release)
    endpoint = sim.endpoint(pull_vm)
    running = {"ActiveState": "active", "UnitFileState": "enabled"}

    before = converges(vm)
    ansible_pull(vm, endpoint)
    assert converges(vm) == before + 1, "no event: the run converges"
    assert held_reasons(vm) == [] and timer_state(vm) == running

    event_id = str(uuid.uuid4()).upper()
    control.inject(id=event_id, type="Freeze", resources=[pull_vm], notice=900, started_for=5, duration=5)
    out = ansible_pull(vm, endpoint)
    assert converges(vm) == before + 1, "a Scheduled event: the converge is skipped\n" + out[-6000:]
    assert held_reasons(vm) == [("azure-maintenance", event_id, "ansible-pull", "systemd:" + TIMER)], out[-6000:]
    assert timer_state(vm)["ActiveState"] == "inactive", "drift_pause holds the timer"
    assert [(a["vm"], a["result"]) for a in control.approvals(event_id)] == [(pull_vm, "started")], out[-6000:]
    assert control.event(event_id)["status"] == "Started"

    control.advance(60)  # the 5-second Freeze is over: it leaves the document
    assert control.event(event_id)["status"] == "gone"
    ansible_pull(vm, endpoint)
    assert converges(vm) == before + 2, "the event is gone: the run converges again"
    assert held_reasons(vm) == [] and timer_state(vm) == running, "the hold is released as it was"


HOOK = "#!/bin/sh\n# {{ .Values.name }} {% if x %}{{ y }}{% endif %} {# not a comment #} $(true)\nexit 0\n"
# Appended to the role's vars file as YAML: the values a user marks as data with !unsafe (a hook in Go-template or
# Jinja syntax is legitimate) must arrive as written, on 2.14 (each loop item was rendered again) as on 2.19.
HOSTILE_ROLE_VARS = ", ".join([
    '"watcher_hooks": [{"name": "templated", "phase": "pre", "content": !unsafe %s}]' % json.dumps(HOOK),
    '"watcher_hold_commands": [{"name": "echo", "hold": ["/bin/echo", !unsafe "{{ .Values }} {% raw %}{{ x }}{% '
    'endraw %}"], "release": ["/bin/true"]}]',
    '"watcher_unit_read_write_paths": ["-/srv/100%data"]',
    '"watcher_ansible_pull_guard": "cron"',
    '"watcher_ansible_pull_command": "/usr/bin/ansible-pull --url file:///srv/none --date=+%s local.yml"',
])


@pytest.mark.debian_releases(*CLAIMED)
def test_the_watcher_role_applied_locally_by_the_packaged_ansible(vm, sim, control, debian_release):
    dummy, role_vm = vm_names(debian_release)
    role_vars = {"watcher_endpoint": sim.endpoint(role_vm), "watcher_poll_interval": 0.5,
                 "watcher_hold_systemd_units": [TIMER], "watcher_hold_puppet": True}
    vm.put_file("/root/apply-role.yml", (FILES / "apply-role.yml").read_bytes())

    def apply_role(expect_ok=True, **extra):
        # YAML, for the settings that are data (!unsafe): JSON is YAML, the hostile settings follow
        vm.put_file("/root/role-vars.yml", json.dumps(dict(role_vars, **extra))[:-1] + ", " + HOSTILE_ROLE_VARS + "}")
        proc = vm.ssh("ANSIBLE_NOCOLOR=1 ansible-playbook -c local -i localhost, -e @/root/role-vars.yml "
                      "/root/apply-role.yml", timeout=900, check=False)
        if not expect_ok:
            return proc
        check_run(proc, packaged_ansible_version(vm))
        recap = [line for line in proc.stdout.splitlines() if line.startswith("localhost") and "changed=" in line]
        return int(recap[-1].split("changed=")[1].split()[0])

    refused = apply_role(expect_ok=False, watcher_unit_extra_options=["Environment=A=1\nExecStartPre=/bin/false"])
    assert refused.returncode != 0 and "would add a line" in refused.stdout, refused.stdout[-6000:]
    assert vm.ssh(["test", "-e", "/etc/systemd/system/imds-watcher.service"], check=False).returncode != 0, \
        "refused before anything is written"
    assert apply_role() > 0
    # the settings that are data arrive as written: a hook in Go-template and Jinja syntax, a hold command's
    # argument, a ReadWritePaths= path and the ansible-pull command with a % (escaped for systemd and cron)
    assert vm.ssh(["cat", "/etc/imds-scheduled-events/hooks/pre/templated"]).stdout == HOOK
    config = json.loads(vm.ssh(["cat", "/etc/imds-scheduled-events/watcher.json"]).stdout)
    assert config["hold"]["commands"][0]["hold"] == ["/bin/echo", "{{ .Values }} {% raw %}{{ x }}{% endraw %}"]
    unit = vm.ssh(["systemctl", "show", "--property=ReadWritePaths", "--value", "imds-watcher.service"]).stdout
    assert "/srv/100%data" in unit, unit
    assert "--date=+%s" in vm.ssh(["cat", "/etc/cron.d/ansible-pull"]).stdout.replace("\\%", "%")
    assert apply_role() == 0, "applying the role again changes nothing"
    assert vm.ssh(["systemctl", "is-active", "imds-watcher.service"], check=False).stdout.strip() == "active"
    check = json.loads(vm.ssh(["/usr/local/sbin/imds-watcher", "check-config", "--json"]).stdout)
    assert check["problems"] == [] and check["config"]["endpoint"] == sim.endpoint(role_vm)

    def polls():
        return len([r for r in control.requests(vm=role_vm)
                    if r["method"] == "GET" and "scheduledevents" in r["path"] and r["status"] == 200])
    seen = polls()
    wait_for(lambda: polls() >= seen + 2, what="the watcher the role started to poll the simulator")

    assert apply_role(watcher_state="absent") > 0
    assert vm.ssh(["systemctl", "show", "--property=LoadState", "--value", "imds-watcher.service"]).stdout.strip() \
        == "not-found"


@pytest.mark.debian_releases(*CLAIMED)
def test_the_eda_playbooks_keep_hostile_events_data(vm, sim, control, debian_release):
    eda_vm = eda_vm_name(debian_release)
    event_id = str(uuid.uuid4()).upper()
    control.inject(id=event_id, type="Reboot", resources=[eda_vm], notice=900)  # what drain_and_approve approves
    proc = vm.ssh(["python3", INSTALLED + "/tests/harness/eda_extravars.py", "--collection", INSTALLED,
                   "--imds-endpoint", sim.endpoint(eda_vm), "--imds-control", sim.control_url, "--pending", event_id,
                   "--workdir", "/root/eda-extravars"], timeout=1800, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-20000:]
    assert [a["vm"] for a in control.approvals(event_id)] == [eda_vm]


@pytest.mark.debian_releases(*CLAIMED)
def test_the_docs_pull_commands_run_as_printed(vm, sim, control, debian_release):
    found = doc_commands.extract(str(ROOT))
    wrong = doc_commands.problems(found)
    assert not wrong, "the docs' markers are wrong:\n" + "\n".join(wrong)
    found = [command for command in found if command.where == "pull"]
    assert found, "no pull command found: the extractor or the markers are broken"
    repo = "/srv/doc-commands-repo"
    vm.ssh("rm -rf {0} && cp -r {1} {0} && cd {0} && git init -q && git add . && git -c user.name=test "
           "-c user.email=test@localhost commit -q -m 'the collection'".format(repo, INSTALLED))
    doc_vm = doc_vm_name(debian_release)
    version = packaged_ansible_version(vm)
    failures = []
    for command in found:
        event_id = str(uuid.uuid4()).upper()
        control.inject(id=event_id, type="Reboot", resources=[doc_vm], notice=900)
        script = doc_commands.substitute(command.script, {"repo": "file://" + repo})
        proc = vm.ssh("IMDS_ENDPOINT=%s ANSIBLE_NOCOLOR=1 %s" % (shlex.quote(sim.endpoint(doc_vm)),
                                                                 shlex.join(doc_commands.bash_argv(script))),
                      timeout=doc_commands.BOUND, check=False)
        output = proc.stdout + proc.stderr
        why = doc_commands.verdict(command, proc.returncode, output)
        if not why and "skipping this run" not in output:
            why = "it did not see the pending event %s" % event_id
        if why:
            failures.append(str(doc_commands.Failure(command, why, output, "Debian's ansible-core " + version)))
        control.cancel(event_id)
    assert not failures, "\n\n".join(failures)


@pytest.mark.debian_releases(*CLAIMED)
def test_fleet_values_stay_data_on_the_packaged_ansible(vm):
    """The integration target fleet_report_hostile (one local host per hostile value through the fleet_report role's
    publish and a rolling-approval plan kept with set_fact) run by the VM's own Ansible from the installed collection:
    on Debian 12's 2.14, where a kept plan or report was rendered again when read, as on Debian 13's 2.19."""
    target = INSTALLED + "/tests/integration/targets/fleet_report_hostile"
    proc = vm.ssh("cd %s && ANSIBLE_NOCOLOR=1 OUTPUT_DIR=/root/fleet-hostile ANSIBLE_COLLECTIONS_PATH=/root/.ansible/"
                  "collections bash runme.sh" % target, timeout=900, check=False)
    output = proc.stdout + proc.stderr
    problems = [line[:2000] for line in output.splitlines() if re.search("fatal:|ERROR|Error|Traceback|assert", line)]
    assert proc.returncode == 0 and "fleet_report_hostile: " in output, "\n".join(problems) + output[-3000:]
