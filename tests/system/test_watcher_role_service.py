"""The watcher role and its service as an operator sees them, on a booted Debian container per release
(debian11, debian12, debian13), with the role applied from the host's controller:

- the first install starts the daemon once (not started, then restarted at once by the handler), and a later
  change of its files still restarts it;
- a (re)start after which the daemon does not run fails the play, with the unit's last log lines, instead of
  reporting success while the unit fails a moment later;
- watcher_state=absent removes every path the role created (the metrics directory it made under /var/lib/prometheus
  included) and nothing that was there before (an operator's drop-in directory of ansible-pull.service);
- the webhook's URL goes to the secrets file (0600), never to watcher.json; a watcher.json an older role wrote with
  the URL in it keeps working (with a warning) until the role moves it; with watcher_manage_secrets false the role
  leaves a secrets file made elsewhere as it is, and refuses a secret variable by its name.

The daemon is pointed at a closed port on loopback: it needs no IMDS to start, and nothing leaves the machine.
Nothing is timed: each check follows a command that has completed (ansible-playbook, systemctl).
"""

import json
import os
from pathlib import Path

from harness import roles
from harness.ansible_env import ansible_env

ROOT = Path(__file__).resolve().parent.parent.parent
FILES = ROOT / "tests" / "system" / "watcher"
SERVICE = "imds-watcher.service"
CONFIG_FILE = "/etc/imds-scheduled-events/watcher.json"
SECRETS_FILE = "/etc/imds-scheduled-events/secrets.json"
STARTS = "/var/lib/role-service-test/starts"
# Every start of the unit (a restart included) runs this first, outside the sandbox, and counts itself.
COUNT_STARTS = "[Service]\nExecStartPre=+/bin/sh -c 'echo start >> %s'\n" % STARTS
ROLE_VARS = {
    "watcher_endpoint": "http://127.0.0.1:9",  # loopback, closed: the daemon starts and retries, nothing leaves
    "watcher_vm_name": "myvm",
    "watcher_unit_restart_sec": 1,
}
# Paths the comparison ignores: the kernel's and systemd's, logs and caches, Ansible's own temp files.
SNAPSHOT_PRUNE = ["/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/log", "/var/cache", "/var/lib/systemd",
                  "/var/lib/apt", "/var/lib/dpkg", "/root/.ansible"]


def apply_role(vm, tmp_path, expect_ok=True, **role_vars):
    """The role with ROLE_VARS and `role_vars`; returns (exit status, changed count or None, output)."""
    run = roles.apply_role(vm, tmp_path, dict(ROLE_VARS, **role_vars), playbook=FILES / "apply-role.yml")
    if expect_ok:
        assert run.returncode == 0, run.output[-20000:]
    return run.returncode, run.changed, run.output


def unit(vm):
    out = vm.ssh(["systemctl", "show", "--property=ActiveState,SubState,ExecMainStatus", "--", SERVICE]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def starts(vm):
    return len(vm.ssh("cat %s 2>/dev/null || true" % STARTS).stdout.split())


def count_starts(vm):
    vm.ssh(["mkdir", "-p", os.path.dirname(STARTS), "/etc/systemd/system/%s.d" % SERVICE])
    vm.put_file("/etc/systemd/system/%s.d/count-starts.conf" % SERVICE, COUNT_STARTS.encode())


def snapshot(vm):
    """Every path on the VM but the pruned ones and Ansible's remote temp directory (with the parents Ansible makes
    for it: the harness keeps it under the checkout's path)."""
    prune = " -o ".join("-path %s" % p for p in SNAPSHOT_PRUNE)
    out = vm.ssh("find / -xdev \\( %s \\) -prune -o -print" % prune, timeout=300).stdout
    remote_tmp = os.path.normpath(ansible_env()["ANSIBLE_REMOTE_TEMP"])
    ansible_own = set()
    path = remote_tmp
    while path != "/":
        ansible_own.add(path)
        path = os.path.dirname(path)
    return set(p for p in out.splitlines() if p not in ansible_own and not p.startswith(remote_tmp + "/"))


def test_first_install_starts_the_daemon_once(systemd_container_factory, tmp_path):
    vm = systemd_container_factory(name="imds-se-once-%d" % os.getpid())
    count_starts(vm)
    code, changed, dummy = apply_role(vm, tmp_path)
    assert changed > 0
    assert unit(vm)["ActiveState"] == "active"
    assert starts(vm) == 1, "the first install started the daemon more than once"

    code, changed, dummy = apply_role(vm, tmp_path)
    assert changed == 0 and starts(vm) == 1, "a run that changes nothing restarts nothing"

    code, changed, dummy = apply_role(vm, tmp_path, watcher_log_level="DEBUG")
    assert changed > 0 and starts(vm) == 2, "a new config restarts the daemon once"
    assert unit(vm)["ActiveState"] == "active"


def test_a_daemon_that_does_not_start_fails_the_play_with_its_log(systemd_container_factory, tmp_path):
    vm = systemd_container_factory(name="imds-se-nostart-%d" % os.getpid())
    apply_role(vm, tmp_path)
    assert unit(vm)["ActiveState"] == "active"

    # The launcher cannot exec the Python it is given: the daemon exits before it is ready.
    broken = ["Environment=IMDS_SE_PYTHON=/nonexistent/python3"]
    code, dummy, out = apply_role(vm, tmp_path, expect_ok=False, watcher_unit_extra_options=broken)
    assert code != 0, out[-20000:]
    assert "imds-watcher.service is not running after it was restarted" in out, out[-20000:]
    assert "/nonexistent/python3" in out, "the message shows the unit's log lines:\n" + out[-20000:]
    assert unit(vm)["ActiveState"] != "active"

    # A first install that cannot start fails the same way, through the start.
    vm.ssh(["systemctl", "stop", SERVICE])
    code, dummy, out = apply_role(vm, tmp_path, expect_ok=False, watcher_unit_extra_options=broken)
    assert code != 0 and "imds-watcher.service is not running after it was started" in out, out[-20000:]

    apply_role(vm, tmp_path)  # fixed: the play passes and the daemon runs
    assert unit(vm)["ActiveState"] == "active"


def test_absent_removes_what_the_role_created_and_nothing_else(systemd_container_factory, tmp_path):
    vm = systemd_container_factory(name="imds-se-absent-%d" % os.getpid())
    # The operator's ansible-pull, with a drop-in directory of their own: the role's drop-in goes in beside it.
    for name in ("ansible-pull.service", "ansible-pull.timer"):
        vm.put_file("/etc/systemd/system/" + name, (FILES / "vm" / name).read_bytes())
    vm.ssh(["mkdir", "-p", "/etc/systemd/system/ansible-pull.service.d"])
    vm.put_file("/etc/systemd/system/ansible-pull.service.d/operator.conf", b"[Service]\nEnvironment=MINE=1\n")
    vm.ssh(["systemctl", "daemon-reload"])
    assert vm.ssh(["test", "-e", "/var/lib/prometheus"], check=False).returncode != 0, "the image has no prometheus"
    before = snapshot(vm)

    apply_role(vm, tmp_path, watcher_ansible_pull_guard="systemd")
    assert vm.ssh(["test", "-d", "/var/lib/prometheus/node-exporter"], check=False).returncode == 0
    assert unit(vm)["ActiveState"] == "active"

    code, changed, dummy = apply_role(vm, tmp_path, watcher_state="absent", watcher_ansible_pull_guard="systemd")
    assert changed > 0
    after = snapshot(vm)
    assert sorted(after - before) == [], "left behind by the role"
    assert sorted(before - after) == [], "removed, though the role did not make it"
    assert vm.get_file("/etc/systemd/system/ansible-pull.service.d/operator.conf") == b"[Service]\nEnvironment=MINE=1\n"

    code, changed, dummy = apply_role(vm, tmp_path, watcher_state="absent", watcher_ansible_pull_guard="systemd")
    assert changed == 0 and snapshot(vm) == before


def test_the_webhook_url_and_secrets_go_to_the_secrets_file_only(systemd_container_factory, tmp_path):
    vm = systemd_container_factory(name="imds-se-secrets-%d" % os.getpid())
    token = "T0KEN-%s" % os.urandom(8).hex()
    url = "https://hooks.example.com/services/%s?sig=%s" % (token, token)
    secret = "wh-%s" % os.urandom(8).hex()
    webhook = {"url": url, "secret_header": "X-Webhook-Token"}
    code, changed, out = apply_role(vm, tmp_path, watcher_notify_webhook=webhook, watcher_webhook_secret=secret)
    assert token not in out and secret not in out
    assert json.loads(vm.ssh(["cat", SECRETS_FILE]).stdout) == {"webhook_url": url, "webhook_secret": secret}
    assert vm.ssh(["stat", "-c", "%a %U", SECRETS_FILE]).stdout.split() == ["600", "root"]
    assert json.loads(vm.ssh(["cat", CONFIG_FILE]).stdout)["notify"]["webhook"] == {"secret_header": "X-Webhook-Token"}
    check = vm.ssh(["/usr/local/sbin/imds-watcher", "check-config", "--json"])
    assert token not in check.stdout + check.stderr and "warning" not in check.stderr
    assert json.loads(check.stdout)["config"]["notify"]["webhook"]["url"] == "https://hooks.example.com/..."

    # What an older role wrote: the URL in watcher.json. The daemon still runs with it and says how to move it...
    older = json.loads(vm.ssh(["cat", CONFIG_FILE]).stdout)
    older["notify"]["webhook"]["url"] = url
    vm.put_file(CONFIG_FILE, json.dumps(older).encode())
    vm.put_file(SECRETS_FILE, json.dumps({"webhook_secret": secret}).encode(), mode=0o600)
    vm.ssh(["systemctl", "restart", SERVICE])
    assert unit(vm)["ActiveState"] == "active"
    check = vm.ssh(["/usr/local/sbin/imds-watcher", "check-config"])
    assert "warning: %s: notify.webhook.url" % CONFIG_FILE in check.stderr and token not in check.stderr
    assert "move the URL to %s (0600) as webhook_url" % SECRETS_FILE in check.stderr
    # ...and the role moves it.
    code, changed, out = apply_role(vm, tmp_path, watcher_notify_webhook=webhook, watcher_webhook_secret=secret)
    assert changed > 0 and token not in out
    assert "url" not in json.loads(vm.ssh(["cat", CONFIG_FILE]).stdout)["notify"]["webhook"]
    assert json.loads(vm.ssh(["cat", SECRETS_FILE]).stdout) == {"webhook_url": url, "webhook_secret": secret}

    # Managed elsewhere (deploy/bootstrap.py, by hand): the role leaves the file as it is.
    rotated = {"webhook_url": url + "-rotated", "webhook_secret": secret + "-rotated"}
    vm.put_file(SECRETS_FILE, json.dumps(rotated).encode(), mode=0o600)
    elsewhere = {"url": None, "secret_header": "X-Webhook-Token"}
    code, changed, out = apply_role(vm, tmp_path, watcher_manage_secrets=False, watcher_notify_webhook=elsewhere)
    assert json.loads(vm.ssh(["cat", SECRETS_FILE]).stdout) == rotated
    assert "url" not in json.loads(vm.ssh(["cat", CONFIG_FILE]).stdout)["notify"]["webhook"]
    code, changed, out = apply_role(vm, tmp_path, expect_ok=False, watcher_manage_secrets=False,
                                    watcher_notify_webhook=elsewhere, watcher_webhook_secret=secret)
    assert code != 0 and "but watcher_webhook_secret is set" in out and secret not in out, out[-8000:]
    assert json.loads(vm.ssh(["cat", SECRETS_FILE]).stdout) == rotated
