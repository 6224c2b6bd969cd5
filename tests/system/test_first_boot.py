"""First boot on real parts: the files of deploy/ install the watcher on a VM that nobody logs into.

- cloud-init: Debian 12's own cloud-init boots a container seeded (NoCloud) with deploy/cloud-init.yaml, filled in
  as a user would (the collection's URL, the watcher's variables, an ansible-pull repository). After the first boot
  cloud-init reports success, imds-watcher is active, ansible-pull's timer runs its service through the guard, and
  an injected event is held and released; a second boot runs nothing again and duplicates nothing.
- Custom Script extension: the script deploy/arm/vm.json gives the extension (evaluated from the template, not
  retyped here) runs as root in a fresh Debian 13 container, the way the extension runs it: in a directory holding
  the files of fileUris. Same result; the secrets reach the watcher's secrets file and nothing else; a second run
  changes nothing.

Both fetch the collection tarball built from this checkout, and ansible-pull its repository, over loopback HTTP.
Nothing is timed: every wait is a bounded poll. The time from launch to "watcher active and timer guarded" is
printed (pytest -s), never asserted.
"""

import base64
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from harness import polling
from harness import rootfs as rootfs_mod
from harness.arm_template import Deployment
from harness.collection import FileServer, build_tarball
from harness.hostenv import HarnessUnavailable
from harness.pytest_container import start_container, unavailable
from harness.pytest_sim import simulator_fixtures

ROOT = Path(__file__).resolve().parent.parent.parent
CLOUD_CONFIG = ROOT / "deploy" / "cloud-init.yaml"
VM_TEMPLATE = ROOT / "deploy" / "arm" / "vm.json"
SETTINGS = "/etc/imds-scheduled-events/bootstrap/settings.json"
VARS = "/etc/imds-scheduled-events/bootstrap/vars.yml"
RUNS = "/var/lib/imds-scheduled-events/bootstrap/runs.log"
COLLECTION = "/usr/share/ansible/collections/ansible_collections/imds/scheduled_events"
SECRETS = "/etc/imds-scheduled-events/secrets.json"
DROP_IN = "/etc/systemd/system/ansible-pull.service.d/imds-drift-guard.conf"
HOOK_LOG = "/var/lib/imds-scheduled-events/first-boot-hook.log"
CONVERGED = "/var/lib/first-boot-test/converged"
IMDS_WATCHER = "/usr/local/sbin/imds-watcher"
IMDS_HOLD = "/usr/local/sbin/imds-hold"
EXTENSION_DIR = "/var/lib/waagent/custom-script/download/0"  # where the Linux Custom Script extension v2 works
TIMER = "ansible-pull.timer"
WAIT = 120  # seconds: the bound of every wait after boot
BOOT_TIMEOUT = 1200  # cloud-final runs the whole bootstrap before the system counts as booted

CLOUD_INIT_VM = "first-boot-cloud-init"
CUSTOM_SCRIPT_VM = "first-boot-custom-script"
SCENARIO = {
    "name": "first-boot",
    "description": "One VM installed by cloud-init, one by the Custom Script extension; events injected by the tests.",
    "clock": "manual",
    "seed": 13,
    "vms": [{"name": CLOUD_INIT_VM}, {"name": CUSTOM_SCRIPT_VM}],
}
sim, control = simulator_fixtures(SCENARIO)

# The seed's own settings for running cloud-init in a container: NoCloud only, hands off the network (it is the
# host's), a locale that exists, and root's ssh key left alone for the harness (test-recipes.md).
CLOUD_CFG = """\
datasource_list: [ NoCloud, None ]
network: {config: disabled}
locale: C.UTF-8
disable_root: false
"""

PULL_PLAYBOOK = """\
---
- name: The site configuration ansible-pull applies in the first-boot test
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Mark that a run converged
      ansible.builtin.copy:
        content: "converged\\n"
        dest: /var/lib/first-boot-test/converged
        mode: "0644"
"""


def wait_for(predicate, what, vm=None):
    return polling.wait_for(predicate, WAIT, what=what, diagnose=(lambda: diagnose(vm)) if vm else None)


def diagnose(vm):
    out = vm.ssh("journalctl -u imds-watcher -n 40 --no-pager; %s status; %s status; tail -n 60 "
                 "/var/log/cloud-init-output.log" % (IMDS_WATCHER, IMDS_HOLD), check=False, timeout=60)
    return "\n--- on the VM ---\n%s%s" % (out.stdout[-12000:], out.stderr[-2000:])


def watcher_vars(endpoint):
    """What an operator fills in: the IMDS endpoint (the simulator here), a policy, a hook, the timer to hold."""
    return {
        "watcher_endpoint": endpoint,
        "watcher_poll_interval": 0.5,
        "watcher_max_backoff": 2.0,
        "watcher_hold_systemd_units": [TIMER],
        "watcher_approval_rules": [{"name": "short-freeze", "when": "EventType=='Freeze' && DurationInSeconds < `10`"}],
        "watcher_hooks": [{"name": "10-record", "phase": "pre", "content":
                           "#!/bin/sh\necho \"pre $IMDS_EVENT_TYPE $IMDS_EVENT_ID\" >> %s\n" % HOOK_LOG}],
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The collection tarball and a git repository for ansible-pull, on loopback HTTP (git's dumb protocol)."""
    root = tmp_path_factory.mktemp("served")
    tarball = build_tarball(root)
    work = tmp_path_factory.mktemp("site")
    (work / "local.yml").write_text(PULL_PLAYBOOK)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=main"]
    for argv in (git + ["init", "-q", str(work)], git + ["-C", str(work), "add", "local.yml"],
                 git + ["-C", str(work), "commit", "-q", "-m", "site configuration"],
                 git + ["clone", "-q", "--bare", str(work), str(root / "site.git")],
                 git + ["-C", str(root / "site.git"), "update-server-info"]):
        subprocess.run(argv, check=True, timeout=60)
    with FileServer(root) as server:
        yield {"server": server, "tarball": tarball, "url": server.url(tarball.name), "git": server.url("site.git")}


def cloud_config(served_files, endpoint):
    """deploy/cloud-init.yaml with its two files filled in, the rest as shipped."""
    text = CLOUD_CONFIG.read_text()
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    files = dict((f["path"], f) for f in config["write_files"])
    settings = json.loads(files[SETTINGS]["content"])
    settings["collection"] = served_files["url"]
    settings["ansible_pull"]["url"] = served_files["git"]
    files[SETTINGS]["content"] = json.dumps(settings, indent=2) + "\n"
    files[VARS]["content"] = "---\n" + yaml.safe_dump(watcher_vars(endpoint), sort_keys=False)
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


def assert_installed_and_guarded(vm):
    """The watcher active and polling, ansible-pull's service run through the guard, the timer active."""
    assert vm.ssh(["systemctl", "is-active", "imds-watcher.service"], check=False).stdout.strip() == "active"
    assert vm.ssh(["systemctl", "is-active", TIMER], check=False).stdout.strip() == "active"
    assert vm.ssh(["systemctl", "is-enabled", TIMER], check=False).stdout.strip() == "enabled"
    exec_start = vm.ssh(["systemctl", "show", "--property=ExecStart", "--", "ansible-pull.service"]).stdout
    assert "argv[]=/usr/local/sbin/imds-drift-guard -- " in exec_start and "ansible-pull --url" in exec_start, exec_start
    check = json.loads(vm.ssh([IMDS_WATCHER, "check-config", "--json"]).stdout)
    assert check["problems"] == [], check
    assert check["config"]["hold"]["guard"] is True and check["config"]["hold"]["systemd_units"] == [TIMER], check


def guarded_and_ready(vm):
    try:
        assert_installed_and_guarded(vm)
    except AssertionError:
        return False
    return True


def assert_pull_runs_through_the_guard(vm):
    """ansible-pull clones the repository over HTTP and converges, started by its unit as the timer would."""
    vm.ssh(["mkdir", "-p", os.path.dirname(CONVERGED)])
    vm.ssh(["rm", "-f", CONVERGED])
    ran = vm.ssh(["systemctl", "start", "ansible-pull.service"], check=False, timeout=600)
    journal = vm.ssh(["journalctl", "-u", "ansible-pull.service", "-n", "40", "--no-pager"]).stdout
    assert ran.returncode == 0, ran.stderr + journal
    assert vm.ssh(["cat", CONVERGED]).stdout == "converged\n", journal


def assert_event_held_and_released(vm, ctl, vm_name):
    """A Freeze too long for the policy: held (timer stopped, the pre-hook ran), cancelled, released."""
    event_id = str(uuid.uuid4()).upper()
    ctl.inject(id=event_id, type="Freeze", resources=[vm_name], notice=900, duration=30)

    def held():
        reasons = json.loads(vm.ssh([IMDS_HOLD, "status", "--json"]).stdout)["reasons"]
        stopped = vm.ssh(["systemctl", "is-active", TIMER], check=False).stdout.strip() == "inactive"
        return stopped and any(r["id"] == event_id for r in reasons)
    wait_for(held, "the watcher to hold drift correction for %s" % event_id, vm=vm)
    wait_for(lambda: ("pre Freeze %s" % event_id) in vm.ssh("cat %s 2>/dev/null || true" % HOOK_LOG).stdout,
             "the pre-hook to run for %s" % event_id, vm=vm)
    assert ctl.approvals(event_id) == [], "a 30 s Freeze is not in the policy: never approved"
    ctl.cancel(event_id)

    def released():
        status = json.loads(vm.ssh([IMDS_HOLD, "status", "--json"]).stdout)
        active = vm.ssh(["systemctl", "is-active", TIMER], check=False).stdout.strip() == "active"
        return active and not status["reasons"]
    wait_for(released, "the watcher to release after %s was cancelled" % event_id, vm=vm)


def runs(vm):
    return [json.loads(line) for line in vm.ssh(["cat", RUNS]).stdout.splitlines() if line.strip()]


# --- cloud-init ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud_init_rootfs():
    """Debian 12 with its own cloud-init, built once and cached like every harness rootfs."""
    try:
        return rootfs_mod.ensure_rootfs("bookworm", packages=rootfs_mod.cloud_image_packages("bookworm"))
    except HarnessUnavailable as exc:
        return unavailable(exc)  # a skip, or a failure with CI=true


def test_cloud_init_installs_the_watcher_at_first_boot_and_only_then(cloud_init_rootfs, served, sim, control):
    seed = {
        "/var/lib/cloud/seed/nocloud/meta-data": ("instance-id: %s\nlocal-hostname: %s\n"
                                                  % (uuid.uuid4(), CLOUD_INIT_VM), 0o600),
        "/var/lib/cloud/seed/nocloud/user-data": (cloud_config(served, sim.endpoint(CLOUD_INIT_VM)), 0o600),
        "/etc/cloud/cloud.cfg.d/90-container-test.cfg": CLOUD_CFG,
    }
    launched = time.monotonic()
    vm = start_container(suite="bookworm", rootfs=cloud_init_rootfs, files=seed, boot_timeout=BOOT_TIMEOUT,
                         name="imds-se-cloud-init-%d" % os.getpid())
    try:
        polling.wait_for(lambda: guarded_and_ready(vm), WAIT, what="the watcher active and the timer guarded",
                         diagnose=lambda: diagnose(vm))
        print("cloud-init: watcher active and ansible-pull guarded %.1f s after the container was launched (bootstrap "
              "itself %.1f s)" % (time.monotonic() - launched, runs(vm)[0]["seconds"]))

        status = vm.ssh(["cloud-init", "status", "--long"], check=False)
        assert status.returncode == 0 and "status: done" in status.stdout, status.stdout + status.stderr
        result = json.loads(vm.ssh(["cat", "/run/cloud-init/result.json"]).stdout)
        assert result["v1"]["errors"] == [], result
        schema = vm.ssh(["cloud-init", "schema", "--system"], check=False)
        assert schema.returncode == 0, schema.stdout + schema.stderr
        assert served["server"].requests.count("/" + served["tarball"].name) == 1

        assert [r["watcher"] for r in runs(vm)] == ["active"]
        assert runs(vm)[0]["ansible_pull"] is True
        assert vm.ssh(["stat", "-c", "%a %U", SETTINGS, VARS]).stdout.split() == ["600", "root", "600", "root"]
        assert_pull_runs_through_the_guard(vm)
        assert_event_held_and_released(vm, control, CLOUD_INIT_VM)

        # A second boot: cloud-init runs nothing per instance again; nothing is installed twice.
        before = vm.ssh("ls -l --time-style=+%%s /etc/systemd/system/ansible-pull.service.d/ "
                        "/etc/systemd/system/ansible-pull.* %s/MANIFEST.json" % COLLECTION).stdout
        vm.reboot(timeout=BOOT_TIMEOUT)
        wait_for(lambda: guarded_and_ready(vm), "the watcher active after the second boot", vm=vm)
        status = vm.ssh(["cloud-init", "status", "--long"], check=False)
        assert status.returncode == 0 and "status: done" in status.stdout, status.stdout
        assert len(runs(vm)) == 1, "the bootstrap ran again at the second boot: %s" % runs(vm)
        assert served["server"].requests.count("/" + served["tarball"].name) == 1
        after = vm.ssh("ls -l --time-style=+%%s /etc/systemd/system/ansible-pull.service.d/ "
                       "/etc/systemd/system/ansible-pull.* %s/MANIFEST.json" % COLLECTION).stdout
        assert after == before
        assert vm.ssh(["ls", "/usr/share/ansible/collections/ansible_collections/imds"]).stdout.split() == [
            "scheduled_events"]
        assert_event_held_and_released(vm, control, CLOUD_INIT_VM)
    finally:
        vm.cleanup()


# --- the Custom Script extension -------------------------------------------------------------------------------------


def extension_of(deployment):
    extensions = deployment.resources("Microsoft.Compute/virtualMachines/extensions")
    assert len(extensions) == 1, extensions
    properties = extensions[0]["properties"]
    assert (properties["publisher"], properties["type"]) == ("Microsoft.Azure.Extensions", "CustomScript")
    return properties


def test_custom_script_extension_installs_the_watcher_on_an_existing_vm(served, sim, control):
    webhook_secret = "wh-%s" % uuid.uuid4().hex
    smtp_password = "smtp-%s" % uuid.uuid4().hex
    deployment = Deployment(json.loads(VM_TEMPLATE.read_text()), {
        "vmName": CUSTOM_SCRIPT_VM, "createVm": False, "bootstrapMethod": "customScript",
        "collectionUrl": served["url"], "watcherVariables": watcher_vars(sim.endpoint(CUSTOM_SCRIPT_VM)),
        "ansiblePullUrl": served["git"], "webhookSecret": webhook_secret, "smtpPassword": smtp_password,
    })
    assert deployment.resources("Microsoft.Compute/virtualMachines") == [], "createVm=false must not touch the VM"
    protected = extension_of(deployment)["protectedSettings"]
    script = base64.b64decode(protected["script"]).decode()

    vm = start_container(suite="trixie", name="imds-se-custom-script-%d" % os.getpid())
    try:
        # What the extension does before the script: every file of fileUris into its working directory, named by
        # the URL's last path segment.
        vm.ssh(["mkdir", "-p", EXTENSION_DIR])
        for uri in protected["fileUris"]:
            name = uri.split("?")[0].rsplit("/", 1)[-1]
            assert uri == served["url"]
            vm.put_file("%s/%s" % (EXTENSION_DIR, name), served["tarball"].read_bytes())
        vm.put_file(EXTENSION_DIR + "/script.sh", script.encode(), mode=0o700)

        started = time.monotonic()
        first = vm.ssh("cd %s && /bin/sh script.sh" % EXTENSION_DIR, check=False, timeout=1800)
        output = first.stdout + first.stderr
        assert first.returncode == 0, output[-20000:]
        print("Custom Script: the script ran %.1f s; watcher active and ansible-pull guarded"
              % (time.monotonic() - started))
        assert_installed_and_guarded(vm)

        secrets = json.loads(vm.ssh(["cat", SECRETS]).stdout)
        assert webhook_secret in json.dumps(secrets) and smtp_password in json.dumps(secrets)
        assert vm.ssh(["stat", "-c", "%a %U", SECRETS]).stdout.split() == ["600", "root"]
        for secret in (webhook_secret, smtp_password):
            assert secret not in output, "a secret was printed"
            found = vm.ssh(["grep", "-rl", "--", secret, "/etc", "/var/lib/imds-scheduled-events", "/var/log",
                            "/usr/share/ansible", "/root", "/tmp"], check=False).stdout.split()
            assert found == [SECRETS], "the secret is in more files than the watcher's secrets file: %s" % found
            journal = vm.ssh("journalctl --no-pager -o cat | grep -c -- %s || true" % secret).stdout.strip()
            assert journal == "0", "the secret reached the journal"

        assert_pull_runs_through_the_guard(vm)
        assert_event_held_and_released(vm, control, CUSTOM_SCRIPT_VM)

        # The extension runs the script again when its settings are applied again: nothing changes.
        again = vm.ssh("cd %s && /bin/sh script.sh" % EXTENSION_DIR, check=False, timeout=1800)
        assert again.returncode == 0, again.stdout[-20000:] + again.stderr
        recap = [line for line in again.stdout.splitlines() if line.startswith("localhost") and "changed=" in line]
        assert recap and "changed=0" in recap[-1] and "failed=0" in recap[-1], again.stdout[-8000:]
        assert "is already installed" in again.stdout
        assert [r["watcher"] for r in runs(vm)] == ["active", "active"]
        assert_installed_and_guarded(vm)
    finally:
        vm.cleanup()
