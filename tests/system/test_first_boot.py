"""First boot on real parts: the files of deploy/ install the watcher on a VM that nobody logs into, and leave no
secret anywhere but /etc/imds-scheduled-events/secrets.json (0600, root).

- cloud-init: Debian 12's own cloud-init (ansible-core 2.14 from Debian) boots a container seeded (NoCloud) with
  deploy/cloud-init.yaml, filled in as a user would (the collection's URL, the watcher's variables with its secrets,
  an ansible-pull repository). After the first boot cloud-init reports success, imds-watcher is active, ansible-pull's
  timer runs its service through the guard, and an injected event is held and released; a second boot runs nothing
  again and duplicates nothing.
- Custom Script extension: the script deploy/arm/vm.json gives the extension (evaluated from the template, not
  retyped here) runs as root in a fresh Debian 13 container (ansible-core 2.19 from Debian) the way the extension runs
  it: what the extension writes, where it writes it, then `/bin/bash -c <dir>/script.sh` in that directory with its
  output in <dir>/stdout and <dir>/stderr. Same result; a second run changes nothing.

After the first boot, each test looks for the secrets (the webhook secret, the SMTP password, the webhook's URL and
the token in its path), each as itself and as base64 at every alignment (and the base64 of the document that carried
them): in every file of the VM's root (the container's merged tree, /proc, /sys and /dev left out, from the host),
in every file on its tmpfs mounts (/run, /tmp, /dev/shm), in the environment and command line of every process, and
in the journal. They are only in secrets.json, and cloud-init's own copies of the custom data (below). The watcher
posts to the URL from secrets.json with the secret header, and a hook's content and a rule's name holding Jinja
arrive as written.

What the Linux Custom Script extension (Microsoft.Azure.Extensions.CustomScript 2.1) and the Azure Linux agent write,
from Microsoft's documentation and the extension's source (github.com/Azure/custom-script-extension-linux):
- /var/lib/waagent/Microsoft.Azure.Extensions.CustomScript-<version>/config/<seq>.settings: the agent's copy of the
  settings; protectedSettings stay encrypted (PKCS#7, to the VM's certificate /var/lib/waagent/<thumbprint>.crt,
  whose key <thumbprint>.prv is root-only) and are decrypted only in the handler's memory. The extension empties every
  .settings file once enable has run. Not ours to touch; holds no secret in clear.
- .../HandlerEnvironment.json, .../status/<seq>.status: paths, and the status the agent reports to Azure, which holds
  the last 4 KiB of the script's stdout and stderr: nothing the bootstrap prints may hold a secret (nothing does).
- /var/lib/waagent/custom-script/download/<seq>/ (0700): the files of fileUris (the collection tarball), `script.sh`
  (0500, the protected `script` decoded: it carries the settings and the secrets as base64 lines, and the bootstrap
  removes the secrets line before it starts anything), `stdout` and `stderr` (0600, the script's output).
  commandToExecute is not used: it would put everything on bash's command line, which every user may read.
- /var/lib/waagent/custom-script/mrseq: the last sequence number run. /var/log/azure/custom-script/handler.log: the
  extension's own log (events, no settings). /var/log/waagent.log and /var/lib/waagent/history/: the agent's log
  and goal states, protectedSettings redacted.
What cloud-init (and Azure, for custom data) keeps: the user data in /var/lib/cloud/instance/ (user-data.txt,
cloud-config.txt, obj.pkl, scripts/runcmd; root-only, written again from the cached datasource at every boot) and the
datasource itself (here the NoCloud seed; on Azure the provisioning media and /var/lib/waagent/ovf-env.xml): custom
data is not a secret store, which deploy/README.md says. The bootstrap takes the secrets out of everything it reads
(the variables file cloud-init wrote included); cloud-init's own copies are the only other places, each root-only.

Both fetch the collection tarball built from this checkout, and ansible-pull its repository, over loopback HTTP.
Nothing is timed: every wait is a bounded poll. The time from launch to "watcher active and timer guarded" is
printed (pytest -s), never asserted.
"""

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from harness import polling
from harness import rootfs as rootfs_mod
from harness import secret_scan
from harness.arm_template import Deployment
from harness.collection import FileServer, build_tarball
from harness.hostenv import HarnessUnavailable
from harness.pytest_container import start_container, unavailable
from harness.pytest_sim import simulator_fixtures

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "unit" / "utils"))
import hostile  # noqa: E402  pylint: disable=wrong-import-position,import-error
import loopback  # noqa: E402  pylint: disable=wrong-import-position,import-error
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
EXTENSION_DATA = "/var/lib/waagent/custom-script"  # the Linux Custom Script extension v2's data directory
EXTENSION_DIR = EXTENSION_DATA + "/download/0"  # where it works for sequence number 0
HOOK = "/etc/imds-scheduled-events/hooks/pre/10-record"
SEED_USER_DATA = "/var/lib/cloud/seed/nocloud/user-data"
# cloud-init's copies of the custom data in /var/lib/cloud/instance/, written again at every boot from obj.pkl (its
# cached datasource), besides the datasource itself (here the seed; on Azure the provisioning media and
# /var/lib/waagent/ovf-env.xml): custom data is not a secret store (deploy/README.md). Root-only, checked here.
CLOUD_INIT_COPIES = ("user-data.txt", "user-data.txt.i", "cloud-config.txt", "obj.pkl")
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
    """What an operator fills in: the IMDS endpoint (the simulator here), a policy, a hook, the timer to hold, the
    webhook's header. A rule's name and the hook's content hold Jinja, which must arrive as written."""
    return {
        "watcher_endpoint": endpoint,
        "watcher_poll_interval": 0.5,
        "watcher_max_backoff": 2.0,
        "watcher_hold_systemd_units": [TIMER],
        "watcher_approval_rules": [{"name": "short-freeze " + hostile.TEMPLATE,
                                    "when": "EventType=='Freeze' && DurationInSeconds < `10`"}],
        "watcher_hooks": [{"name": "10-record", "phase": "pre", "content": HOOK_CONTENT}],
        "watcher_notify_webhook": {"secret_header": "X-Webhook-Token", "timeout": 30},
    }


HOOK_CONTENT = "#!/bin/sh\n# %s\necho \"pre $IMDS_EVENT_TYPE $IMDS_EVENT_ID\" >> %s\n" % (hostile.TEMPLATE, HOOK_LOG)


@pytest.fixture
def secrets_for(webhook):
    """Fresh secrets for one VM: the webhook's URL (its path is the token, as with Slack and Teams) on the receiver."""
    token = "T0KEN-%s" % uuid.uuid4().hex
    values = {"webhook_secret": "wh-%s" % uuid.uuid4().hex, "smtp_password": "smtp-%s" % uuid.uuid4().hex,
              "webhook_url": "%s/services/%s" % (webhook.url, token)}
    return values, token


@pytest.fixture
def webhook():
    receiver = loopback.WebhookReceiver()
    yield receiver
    receiver.stop()


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


def cloud_config(served_files, endpoint, secrets):
    """deploy/cloud-init.yaml with its two files filled in, the rest as shipped: the secrets in the variables file,
    as the operator gives them (watcher_webhook_secret, watcher_smtp_password, watcher_notify_webhook.url)."""
    text = CLOUD_CONFIG.read_text()
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    files = dict((f["path"], f) for f in config["write_files"])
    settings = json.loads(files[SETTINGS]["content"])
    settings["collection"] = served_files["url"]
    settings["ansible_pull"]["url"] = served_files["git"]
    files[SETTINGS]["content"] = json.dumps(settings, indent=2) + "\n"
    variables = watcher_vars(endpoint)
    variables.update(watcher_webhook_secret=secrets["webhook_secret"], watcher_smtp_password=secrets["smtp_password"])
    variables["watcher_notify_webhook"]["url"] = secrets["webhook_url"]
    files[VARS]["content"] = "---\n" + yaml.safe_dump(variables, sort_keys=False)
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


PROCESS_SCAN = """
import os, sys
needles = [line for line in sys.stdin.read().splitlines() if line]
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit() and p != str(os.getpid())):
    for what in ("environ", "cmdline"):
        try:
            with open("/proc/%s/%s" % (pid, what), "rb") as handle:
                data = handle.read().decode("utf-8", "replace")
            with open("/proc/%s/comm" % pid) as handle:
                comm = handle.read().strip()
        except OSError:
            continue
        if any(needle in data for needle in needles):
            print("process %s (%s): its %s" % (pid, comm, what))
"""


def leaks(vm, found_by, allowed=()):
    """Where a secret is on the VM but in the secrets file (and `allowed`): the files of its root, those on its tmpfs
    mounts (not in the merged tree), every process's environment and command line, and the journal (which compresses
    its large fields: journalctl reads them back)."""
    patterns = "".join(needle + "\n" for needle in found_by)
    found = []
    for path, labels in sorted(secret_scan.files_holding(str(vm.merged), found_by, exclude=("proc", "sys", "dev")).items()):
        inside = "/" + os.path.relpath(path, str(vm.merged))
        if inside != SECRETS and inside not in allowed:
            found.append("%s: %s" % (inside, ", ".join(labels)))
    mounts = sorted(set(m for m in vm.ssh(["findmnt", "-rn", "-t", "tmpfs", "-o", "TARGET"]).stdout.split()
                        if not m.startswith(("/proc/", "/sys/"))))
    grep = vm.ssh(secret_scan.grep_argv(mounts), input=patterns, check=False, timeout=600)
    assert grep.returncode in (0, 1), grep.stderr
    found.extend("%s (on tmpfs)" % path for path in grep.stdout.split())
    found.extend(vm.ssh(["python3", "-c", PROCESS_SCAN], input=patterns).stdout.splitlines())
    journal = vm.ssh(["journalctl", "--no-pager", "-o", "export"], text=False, timeout=600).stdout
    found.extend("the journal: %s" % label for needle, label in found_by.items() if needle.encode() in journal)
    return found


def assert_secrets_only_in_the_secrets_file(vm, secrets, token, documents=(), allowed=()):
    assert json.loads(vm.ssh(["cat", SECRETS]).stdout) == secrets
    assert vm.ssh(["stat", "-c", "%a %U %G", SECRETS]).stdout.split() == ["600", "root", "root"]
    found_by = secret_scan.needles(dict(secrets, webhook_url_token=token), documents)
    found = leaks(vm, found_by, allowed)
    assert found == [], "a secret outside %s:\n%s" % (SECRETS, "\n".join(found))
    config = vm.ssh(["cat", "/etc/imds-scheduled-events/watcher.json"]).stdout
    assert "url" not in json.loads(config)["notify"]["webhook"], config


def assert_jinja_arrived_as_written(vm):
    assert vm.ssh(["cat", HOOK]).stdout == HOOK_CONTENT
    check = json.loads(vm.ssh([IMDS_WATCHER, "check-config", "--json"]).stdout)
    assert check["config"]["approval"]["rules"][0]["name"] == "short-freeze " + hostile.TEMPLATE
    assert hostile.RENDERED not in json.dumps(check)


def assert_posted_with_the_secrets(webhook, secrets, token):
    """The watcher notified through the URL and with the header secret it read from the secrets file."""
    polling.wait_for(lambda: webhook.requests, WAIT, what="a notification on the webhook")
    request = webhook.requests[0]
    assert request["path"] == "/services/" + token
    assert request["headers"]["X-Webhook-Token"] == secrets["webhook_secret"]


def cloud_init_copies(vm):
    """cloud-init's copies of the custom data on this VM, each checked to be root's and unreadable by anyone else."""
    instance = vm.ssh(["readlink", "-f", "/var/lib/cloud/instance"]).stdout.strip()
    copies = ["%s/%s" % (instance, name) for name in CLOUD_INIT_COPIES] + [SEED_USER_DATA]
    for line in vm.ssh(["stat", "-c", "%a %U %n"] + copies).stdout.splitlines():
        mode, owner, path = line.split(" ", 2)
        assert owner == "root" and int(mode, 8) & 0o077 == 0, line
    return copies


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


def test_cloud_init_installs_the_watcher_at_first_boot_and_only_then(cloud_init_rootfs, served, sim, control, webhook,
                                                                     secrets_for):
    secrets, token = secrets_for
    user_data = cloud_config(served, sim.endpoint(CLOUD_INIT_VM), secrets)
    seed = {
        "/var/lib/cloud/seed/nocloud/meta-data": ("instance-id: %s\nlocal-hostname: %s\n"
                                                  % (uuid.uuid4(), CLOUD_INIT_VM), 0o600),
        SEED_USER_DATA: (user_data, 0o600),
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
        assert_secrets_only_in_the_secrets_file(vm, secrets, token, [user_data], allowed=cloud_init_copies(vm))
        assert_jinja_arrived_as_written(vm)
        assert_pull_runs_through_the_guard(vm)
        assert_event_held_and_released(vm, control, CLOUD_INIT_VM)
        assert_posted_with_the_secrets(webhook, secrets, token)

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
        assert_secrets_only_in_the_secrets_file(vm, secrets, token, [user_data], allowed=cloud_init_copies(vm))
    finally:
        vm.cleanup()


# --- the Custom Script extension -------------------------------------------------------------------------------------


def extension_of(deployment):
    extensions = deployment.resources("Microsoft.Compute/virtualMachines/extensions")
    assert len(extensions) == 1, extensions
    properties = extensions[0]["properties"]
    assert (properties["publisher"], properties["type"]) == ("Microsoft.Azure.Extensions", "CustomScript")
    return properties


def run_like_the_extension(vm, seq=0):
    """What the extension does to run the script: bash -c <its path>, in its directory, with its sequence number in
    the environment and the output in stdout and stderr there (0600). Returns (exit code, stdout, stderr)."""
    directory = "%s/download/%d" % (EXTENSION_DATA, seq)
    ran = vm.ssh("cd %s && umask 077 && ConfigSequenceNumber=%d /bin/bash -c %s/script.sh >stdout 2>stderr"
                 % (directory, seq, directory), check=False, timeout=1800)
    return ran.returncode, vm.ssh(["cat", directory + "/stdout"]).stdout, vm.ssh(["cat", directory + "/stderr"]).stdout


def test_custom_script_extension_installs_the_watcher_on_an_existing_vm(served, sim, control, webhook, secrets_for):
    secrets, token = secrets_for
    deployment = Deployment(json.loads(VM_TEMPLATE.read_text()), {
        "vmName": CUSTOM_SCRIPT_VM, "createVm": False, "bootstrapMethod": "customScript",
        "collectionUrl": served["url"], "watcherVariables": watcher_vars(sim.endpoint(CUSTOM_SCRIPT_VM)),
        "ansiblePullUrl": served["git"], "webhookSecret": secrets["webhook_secret"],
        "smtpPassword": secrets["smtp_password"], "webhookUrl": secrets["webhook_url"],
    })
    assert deployment.resources("Microsoft.Compute/virtualMachines") == [], "createVm=false must not touch the VM"
    protected = extension_of(deployment)["protectedSettings"]
    script = base64.b64decode(protected["script"]).decode()

    vm = start_container(suite="trixie", name="imds-se-custom-script-%d" % os.getpid())
    try:
        # What the extension does before the script: its data directory, every file of fileUris in the working
        # directory (0700), named by the URL's last path segment (0500), the script decoded there (0500), mrseq.
        vm.ssh(["install", "-d", "-m", "0700", EXTENSION_DATA, EXTENSION_DATA + "/download", EXTENSION_DIR])
        for uri in protected["fileUris"]:
            name = uri.split("?")[0].rsplit("/", 1)[-1]
            assert uri == served["url"]
            vm.put_file("%s/%s" % (EXTENSION_DIR, name), served["tarball"].read_bytes(), mode=0o500)
        vm.put_file(EXTENSION_DIR + "/script.sh", script.encode(), mode=0o500)
        vm.put_file(EXTENSION_DATA + "/mrseq", "0", mode=0o600)

        started = time.monotonic()
        code, out, err = run_like_the_extension(vm)
        assert code == 0, (out + err)[-20000:]
        print("Custom Script: the script ran %.1f s; watcher active and ansible-pull guarded"
              % (time.monotonic() - started))
        assert_installed_and_guarded(vm)
        assert_secrets_only_in_the_secrets_file(vm, secrets, token, [script])
        assert "--script" in script and vm.ssh(["stat", "-c", "%a", EXTENSION_DIR + "/script.sh"]).stdout.strip() == "500"
        assert_jinja_arrived_as_written(vm)
        assert_pull_runs_through_the_guard(vm)
        assert_event_held_and_released(vm, control, CUSTOM_SCRIPT_VM)
        assert_posted_with_the_secrets(webhook, secrets, token)

        # The extension runs the script again when its settings are applied again: nothing changes.
        code, out, err = run_like_the_extension(vm)
        assert code == 0, (out + err)[-20000:]
        recap = [line for line in out.splitlines() if line.startswith("localhost") and "changed=" in line]
        assert recap and "changed=0" in recap[-1] and "failed=0" in recap[-1], out[-8000:]
        assert "is already installed" in out
        assert [r["watcher"] for r in runs(vm)] == ["active", "active"]
        assert_installed_and_guarded(vm)
        assert_secrets_only_in_the_secrets_file(vm, secrets, token, [script])
    finally:
        vm.cleanup()
