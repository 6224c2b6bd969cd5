"""First boot on the images people deploy: the files of deploy/ install the watcher on a VM that nobody logs into,
from Debian's packages, and leave no secret anywhere but /etc/imds-scheduled-events/secrets.json (0600, root).

The machine is a root filesystem with the package set of Debian's cloud image for Azure (harness.rootfs.CLOUD_IMAGE),
of Debian 12 (bookworm) and 13 (trixie): no git, no ansible, no python3-venv; cloud-init and its python3-requests and
python3-yaml. On each, both first-boot paths of deploy/README.md, with the README's own values (tests/harness/doc_blocks.py
reads its marked blocks; tests/unit/deploy/test_readme.py checks the `az` commands against the templates):

- cloud-init: Debian's own cloud-init boots the machine seeded (NoCloud) with deploy/cloud-init.yaml, filled in as a
  user would (the collection's URL, an ansible-pull repository) and named as the README's new VM.
- Custom Script extension: the script deploy/arm/vm.json gives the extension, evaluated from the template with the
  README's existing-VM parameters and its watcher.parameters.json, runs as root the way the extension runs it: what
  the extension writes, where it writes it, then `/bin/bash -c <dir>/script.sh` in that directory with its output in
  <dir>/stdout and <dir>/stderr.

In place of what cannot be real here: the collection tarball is built from this checkout and served on loopback, and
so is a git repository for ansible-pull (the README's example URL); the watcher's endpoint is the simulator; the
secrets are fresh ones, the webhook's URL a loopback receiver; the test adds a hook and a rule whose text holds Jinja.
Each checks that the bootstrap installed ansible-core, git and python3-jmespath from the archive and nothing it was not
asked for (no python3-venv), that the README's output block shows its run, that ansible-pull clones over HTTP, runs
through imds-drift-guard and converges, that an injected event is held (the README's `imds-watcher status` shows it
with ansible-pull.timer held) and released, that the secrets are nowhere but in secrets.json (and cloud-init's own
copies of the custom data), that a second boot (cloud-init) or run (the extension) changes nothing and installs
nothing, and that the README's removal block leaves no watcher and no guard. Nothing is timed: every wait is a
bounded poll. The time from launch to "watcher active and timer guarded", the bootstrap's own time and the packages
it installed are printed (pytest -s), never asserted.

The package set. The debian-cloud-images project (salsa.debian.org/cloud-team/debian-cloud-images) builds the images
with FAI from its config_space: a minbase debootstrap (hooks/extrbase.BASE), then the packages of the image's classes,
installed without recommends (`PACKAGES install-norec`):
- SYSTEM_BOOT: sudo, libpam-systemd, systemd-resolved, libnss-myhostname, netplan.io, polkitd, unattended-upgrades,
  apparmor, zstd, and from priority important apt-utils, init, iptables, iputils-ping, less, nano, netbase, vim-tiny,
  whiptail; trixie adds libnss-resolve and linux-sysctl-defaults, bookworm removes libnss-resolve (debian-cloud list,
  2024-03);
- TIME_CHRONY (Azure's time class): chrony;
- CLOUD: openssh-server, ssh-import-id;
- AZURE: cloud-init, cloud-guest-utils, hyperv-daemons, waagent;
- EXTRAS: apt-listchanges, bash-completion, bind9-host, less, man-db, manpages, socat, pciutils, reportbug,
  traceroute, vim, psmisc, tcpdump, ca-certificates, curl, ethtool, uuid-runtime, screen, xz-utils.
Source: GitHub could not be reached; these lists were read from copies of the project's repository in a code index
(bookworm's SYSTEM_BOOT, CLOUD and EXTRAS from a 2024 fork, GoCarrot/debian-cloud-images config_space/bookworm/;
trixie's SYSTEM_BOOT from a 2025 clone, mozi1924/debian-cloud-images config_space/13/; AZURE from the older
config_space/package_config/AZURE), and each name was checked to exist in Debian's archive for both releases with
apt-cache (bookworm 12 with its updates, trixie 13, as the archive served them when this was written).
Left out: what only a booted kernel uses (linux-image-cloud-amd64, grub, the initramfs tools: cloud-initramfs-growroot
on bookworm, dracut later).
Not confirmed: that the azure image takes EXTRAS (the mapping of vendors to classes, in the project's image config,
was not in the copies; remembered for azure as for genericcloud); that AZURE's list is still those four packages for
bookworm and trixie (the copy read is older); whether CLOUD's ssh-import-id is in bookworm's azure image. The
genericcloud image differs by its time class (systemd-timesyncd) and by no Azure agent: for a first boot the same.
The harness's changes: resolv.conf says 127.0.0.1, sshd listens on loopback, the units that would reach for the
network or the kernel are masked (harness.rootfs.MASKED_UNITS, and the Azure agent, chrony, apparmor, the Hyper-V
daemons); apt's lists are empty, as the image's cleanup leaves them. apt's source is the release's suite only (the
image also has -updates, -security and -backports): a snapshot of it served on loopback, its InRelease (checked
against the image's keyring), Packages and Translation-en as Debian's mirror served them when the rootfs was built,
and the .debs of ansible-core, git, python3-jmespath, python3-requests and python3-venv with what they need that the
image lacks. cloud-init's platform config keeps that source (`apt: {preserve_sources_list: true}`; on Azure the
image's own config points cloud-init at Azure's Debian mirror).

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
cloud-config.txt, obj.pkl, scripts/runcmd; root-only, written again from the cached datasource at every boot), with
Debian 13's cloud-init the merged config in /run/cloud-init/combined-cloud-config.json (tmpfs, root-only, written at
every boot), and the datasource itself (here the NoCloud seed; on Azure the provisioning media and
/var/lib/waagent/ovf-env.xml): custom data is not a secret store, which deploy/README.md says. The bootstrap takes
the secrets out of everything it reads (the variables file cloud-init wrote included); cloud-init's own copies are
the only other places, each root-only.
"""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import yaml

from harness import doc_blocks
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

pytestmark = pytest.mark.debian_releases("bookworm", "trixie")  # Debian 11's ansible is too old: a venv from PyPI

README = "deploy/README.md"
ME = "tests/system/test_first_boot.py"
CLOUD_CONFIG = ROOT / "deploy" / "cloud-init.yaml"
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
# And, with a newer cloud-init (Debian 13's 25.1; not Debian 12's 22.4), the merged config on tmpfs, written at every
# boot.
CLOUD_INIT_RUN_COPY = "/run/cloud-init/combined-cloud-config.json"
TIMER = "ansible-pull.timer"
CLOUD_INIT_UNITS = ("cloud-final.service", "cloud-init-main.service")  # trixie's cloud-init runs all in the second
# What the bootstrap installs on the cloud image, besides what these need: ansible-core (the distribution's), git
# (ansible-pull clones with it), python3-jmespath (the watcher's; cloud-init brought python3-requests).
ASKED = ("ansible-core", "git", "python3-jmespath")
WAIT = 120  # seconds: the bound of every wait after boot
BOOT_TIMEOUT = 1200  # cloud-final runs the whole bootstrap before the system counts as booted
RUN_TIMEOUT = 1800

# The README's examples: the new VM that cloud-init installs, the existing VM the extension installs.
(NEW_VM_COMMAND,) = doc_blocks.az_deployments(doc_blocks.block(README, "tests/unit/deploy/test_readme.py",
                                                               "new VM with cloud-init").text)
(EXISTING_VM_COMMAND,) = doc_blocks.az_deployments(doc_blocks.block(README, ME, "existing VM").text)
CLOUD_INIT_VM = NEW_VM_COMMAND.values()["vmName"]
CUSTOM_SCRIPT_VM = EXISTING_VM_COMMAND.values()["vmName"]
SCENARIO = {
    "name": "first-boot",
    "description": "The README's new VM (cloud-init) and existing VM (the Custom Script extension); events injected.",
    "clock": "manual",
    "seed": 13,
    "vms": [{"name": CLOUD_INIT_VM}, {"name": CUSTOM_SCRIPT_VM}],
}
sim, control = simulator_fixtures(SCENARIO)

# The seed's own settings for running cloud-init in a container (the platform's part, as the image's
# /etc/cloud/cloud.cfg.d/ is on Azure): NoCloud only, hands off the network (it is the host's), a locale that exists,
# root's ssh key left alone for the harness (test-recipes.md), and apt's sources kept (the archive on loopback).
CLOUD_CFG = """\
datasource_list: [ NoCloud, None ]
network: {config: disabled}
locale: C.UTF-8
disable_root: false
apt: {preserve_sources_list: true}
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


def readme_block(name):
    return doc_blocks.block(README, ME, name).text


def wait_for(predicate, what, vm=None):
    return polling.wait_for(predicate, WAIT, what=what, diagnose=(lambda: diagnose(vm)) if vm else None)


def diagnose(vm):
    out = vm.ssh("journalctl -u imds-watcher -n 40 --no-pager; %s status; %s status; cloud-init status --long; "
                 "tail -n 60 /var/log/cloud-init-output.log" % (IMDS_WATCHER, IMDS_HOLD), check=False, timeout=60)
    return "\n--- on the VM ---\n%s%s" % (out.stdout[-12000:], out.stderr[-2000:])


HOOK_CONTENT = "#!/bin/sh\n# %s\necho \"pre $IMDS_EVENT_TYPE $IMDS_EVENT_ID\" >> %s\n" % (hostile.TEMPLATE, HOOK_LOG)
JINJA_RULE = "as written " + hostile.TEMPLATE


def with_test_vars(variables, endpoint):
    """The README's (or the shipped) variables, and what only this test adds: the simulator's endpoint, quick polls,
    a hook and a rule whose text holds Jinja (which must arrive as written), the webhook's timeout."""
    out = json.loads(json.dumps(variables))
    out.update(watcher_endpoint=endpoint, watcher_poll_interval=0.5, watcher_max_backoff=2.0,
               watcher_hooks=[{"name": "10-record", "phase": "pre", "content": HOOK_CONTENT}])
    out["watcher_approval_rules"] = out.get("watcher_approval_rules", []) + [
        {"name": JINJA_RULE, "when": "EventType=='Freeze' && DurationInSeconds < `10`"}]
    out["watcher_notify_webhook"] = dict(out.get("watcher_notify_webhook") or {"secret_header": "X-Webhook-Token"},
                                         timeout=30)
    return out


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


@pytest.fixture
def cloud_image(debian_release):
    """The cloud image's root filesystem of this leg's release (built once and cached), and its archive snapshot on
    loopback; the VM's apt sources name that."""
    try:
        rootfs = rootfs_mod.ensure_rootfs(debian_release.suite, flavour=rootfs_mod.CLOUD_IMAGE)
    except HarnessUnavailable as exc:
        unavailable(exc)  # a skip, or a failure with CI=true
    with FileServer(rootfs_mod.archive_path(rootfs)) as archive:
        yield {"rootfs": rootfs, "archive": archive, "suite": debian_release.suite,
               "files": {"/etc/apt/sources.list": rootfs_mod.archive_sources(archive.url(), debian_release.suite)}}


def fetched_debs(image):
    """{package: size} of the .debs the VM's apt fetched from the archive."""
    out = {}
    for path in image["archive"].requests:
        if path.endswith(".deb"):
            local = rootfs_mod.archive_path(image["rootfs"]) / urllib.parse.unquote(path).lstrip("/")
            out[local.name.split("_")[0]] = local.stat().st_size
    return out


def assert_watcher_up(vm):
    assert vm.ssh(["systemctl", "is-active", "imds-watcher.service"], check=False).stdout.strip() == "active"
    assert vm.ssh(["systemctl", "is-active", TIMER], check=False).stdout.strip() == "active"


def watcher_up(vm):
    try:
        assert_watcher_up(vm)
    except AssertionError:
        return False
    return True


def assert_installed_and_guarded(vm):
    """The watcher active and polling, ansible-pull's service run through the guard, the timer active and held by
    default (nothing in the variables asks for it)."""
    assert_watcher_up(vm)
    assert vm.ssh(["systemctl", "is-enabled", TIMER], check=False).stdout.strip() == "enabled"
    exec_start = vm.ssh(["systemctl", "show", "--property=ExecStart", "--", "ansible-pull.service"]).stdout
    assert "argv[]=/usr/local/sbin/imds-drift-guard -- " in exec_start and "ansible-pull --url" in exec_start, exec_start
    check = json.loads(vm.ssh([IMDS_WATCHER, "check-config", "--json"]).stdout)
    assert check["problems"] == [], check
    assert check["config"]["hold"]["guard"] is True and check["config"]["hold"]["systemd_units"] == [TIMER], check


def assert_installed_from_the_archive(vm, image, run):
    """What the bootstrap asked apt for and apt installed: the packages a first boot needs, from the archive, and
    nothing of a venv."""
    installed = run.get("installed")
    assert installed is not None and set(ASKED) <= set(installed), run
    assert run["venv"] is False and "python3-venv" not in installed, run
    assert set(fetched_debs(image)) == set(installed)
    for package in ASKED:
        status = vm.ssh(["dpkg-query", "--show", "--showformat=${db:Status-Status}", package]).stdout
        assert status == "installed", package
    venv = vm.ssh(["dpkg-query", "--show", "--showformat=${db:Status-Status}", "python3-venv"], check=False)
    assert venv.stdout != "installed"


def report_first_boot(way, image, seconds, vm):
    first = runs(vm)[0]
    sizes = fetched_debs(image)
    print("\nfirst boot, %s on Debian %s's cloud image: %.1f s until the watcher was active and ansible-pull guarded "
          "(the bootstrap itself %.1f s); apt installed %d packages, %.1f MB of .debs: %s"
          % (way, image["suite"], seconds, first["seconds"], len(first.get("installed") or []),
             sum(sizes.values()) / 1e6, " ".join(first.get("installed") or [])))


def assert_pull_runs_through_the_guard(vm):
    """ansible-pull clones the repository over HTTP and converges, started by its unit as the timer would."""
    vm.ssh(["mkdir", "-p", os.path.dirname(CONVERGED)])
    vm.ssh(["rm", "-f", CONVERGED])
    ran = vm.ssh(["systemctl", "start", "ansible-pull.service"], check=False, timeout=600)
    journal = vm.ssh(["journalctl", "-u", "ansible-pull.service", "-n", "40", "--no-pager"]).stdout
    assert ran.returncode == 0, ran.stderr + journal
    assert vm.ssh(["cat", CONVERGED]).stdout == "converged\n", journal


def assert_event_held_and_released(vm, ctl, vm_name):
    """A Freeze too long for the policy: held (timer stopped, the pre-hook ran, the README's status command shows
    it), cancelled, released."""
    event_id = str(uuid.uuid4()).upper()
    ctl.inject(id=event_id, type="Freeze", resources=[vm_name], notice=900, duration=30)

    def held():
        reasons = json.loads(vm.ssh([IMDS_HOLD, "status", "--json"]).stdout)["reasons"]
        stopped = vm.ssh(["systemctl", "is-active", TIMER], check=False).stdout.strip() == "inactive"
        return stopped and any(r["id"] == event_id for r in reasons)
    wait_for(held, "the watcher to hold drift correction for %s" % event_id, vm=vm)
    status = vm.ssh(readme_block("status")).stdout
    assert event_id in status and TIMER in status, status
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
    found.extend("%s (on tmpfs)" % path for path in grep.stdout.split() if path not in allowed)
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
    assert JINJA_RULE in [rule["name"] for rule in check["config"]["approval"]["rules"]]
    assert hostile.RENDERED not in json.dumps(check)


def assert_posted_with_the_secrets(webhook, secrets, token):
    """The watcher notified through the URL and with the header secret it read from the secrets file."""
    polling.wait_for(lambda: webhook.requests, WAIT, what="a notification on the webhook")
    request = webhook.requests[0]
    assert request["path"] == "/services/" + token
    assert request["headers"]["X-Webhook-Token"] == secrets["webhook_secret"]


def assert_output_block_shows_the_run(vm, name):
    """The README's block that shows a path's output, run on the VM: the bootstrap's last line is there."""
    shown = vm.ssh(readme_block(name), check=False)
    assert shown.returncode == 0 and "imds-se-bootstrap: done in " in shown.stdout, shown.stdout + shown.stderr


def assert_removed_by_the_readme(vm):
    """The README's removal block, run on the VM: no watcher, no guard around ansible-pull, no timer."""
    removed = vm.ssh(readme_block("remove"), check=False, timeout=RUN_TIMEOUT)
    assert removed.returncode == 0, (removed.stdout + removed.stderr)[-8000:]
    assert vm.ssh(["systemctl", "cat", "imds-watcher.service"], check=False).returncode != 0
    for path in (DROP_IN, IMDS_WATCHER, "/etc/systemd/system/ansible-pull.timer"):
        assert vm.ssh(["test", "-e", path], check=False).returncode != 0, path
    assert vm.ssh(["systemctl", "is-active", TIMER], check=False).stdout.strip() != "active"


def cloud_init_copies(vm):
    """cloud-init's copies of the custom data on this VM, each checked to be root's and unreadable by anyone else."""
    instance = vm.ssh(["readlink", "-f", "/var/lib/cloud/instance"]).stdout.strip()
    copies = ["%s/%s" % (instance, name) for name in CLOUD_INIT_COPIES] + [SEED_USER_DATA]
    if vm.ssh(["test", "-e", CLOUD_INIT_RUN_COPY], check=False).returncode == 0:
        copies.append(CLOUD_INIT_RUN_COPY)
    for line in vm.ssh(["stat", "-c", "%a %U %n"] + copies).stdout.splitlines():
        mode, owner, path = line.split(" ", 2)
        assert owner == "root" and int(mode, 8) & 0o077 == 0, line
    return copies


def runs(vm):
    return [json.loads(line) for line in vm.ssh(["cat", RUNS]).stdout.splitlines() if line.strip()]


# --- cloud-init ------------------------------------------------------------------------------------------------------


def cloud_config(served_files, endpoint, secrets):
    """deploy/cloud-init.yaml with its two files filled in as a user would (the collection's URL, the ansible-pull
    repository), the rest as shipped; the secrets in the variables file, as the operator gives them
    (watcher_webhook_secret, watcher_smtp_password, watcher_notify_webhook.url)."""
    text = CLOUD_CONFIG.read_text()
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    files = dict((f["path"], f) for f in config["write_files"])
    settings = json.loads(files[SETTINGS]["content"])
    settings["collection"] = served_files["url"]
    settings["ansible_pull"]["url"] = served_files["git"]
    files[SETTINGS]["content"] = json.dumps(settings, indent=2) + "\n"
    variables = with_test_vars(yaml.safe_load(files[VARS]["content"]), endpoint)
    variables.update(watcher_webhook_secret=secrets["webhook_secret"], watcher_smtp_password=secrets["smtp_password"])
    variables["watcher_notify_webhook"]["url"] = secrets["webhook_url"]
    files[VARS]["content"] = "---\n" + yaml.safe_dump(variables, sort_keys=False)
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


def listing(vm):
    return vm.ssh("ls -l --time-style=+%%s /etc/systemd/system/ansible-pull.service.d/ "
                  "/etc/systemd/system/ansible-pull.* %s/MANIFEST.json" % COLLECTION).stdout


def test_cloud_init_installs_the_watcher_at_first_boot_and_only_then(cloud_image, served, sim, control, webhook,
                                                                     secrets_for):
    secrets, token = secrets_for
    user_data = cloud_config(served, sim.endpoint(CLOUD_INIT_VM), secrets)
    seed = dict(cloud_image["files"], **{
        "/var/lib/cloud/seed/nocloud/meta-data": ("instance-id: %s\nlocal-hostname: %s\n"
                                                  % (uuid.uuid4(), CLOUD_INIT_VM), 0o600),
        SEED_USER_DATA: (user_data, 0o600),
        "/etc/cloud/cloud.cfg.d/90-container-test.cfg": CLOUD_CFG,
    })
    launched = time.monotonic()
    # A failed cloud-init is this test's to report, with its log (diagnose()), not the harness's at boot.
    vm = start_container(suite=cloud_image["suite"], rootfs=cloud_image["rootfs"], files=seed,
                         boot_timeout=BOOT_TIMEOUT, name="imds-se-cloud-init-%d" % os.getpid(),
                         allowed_failed_units=CLOUD_INIT_UNITS)
    try:
        polling.wait_for(lambda: watcher_up(vm), WAIT, what="the watcher and ansible-pull's timer active",
                         diagnose=lambda: diagnose(vm))
        report_first_boot("cloud-init", cloud_image, time.monotonic() - launched, vm)
        assert_pull_runs_through_the_guard(vm)
        assert_installed_and_guarded(vm)
        assert_installed_from_the_archive(vm, cloud_image, runs(vm)[0])

        status = vm.ssh(["cloud-init", "status", "--long"], check=False)
        assert status.returncode == 0 and "status: done" in status.stdout, status.stdout + status.stderr
        result = json.loads(vm.ssh(["cat", "/run/cloud-init/result.json"]).stdout)
        assert result["v1"]["errors"] == [], result
        schema = vm.ssh(["cloud-init", "schema", "--system"], check=False)
        assert schema.returncode == 0, schema.stdout + schema.stderr
        assert served["server"].requests.count("/" + served["tarball"].name) == 1
        assert_output_block_shows_the_run(vm, "cloud-init output")

        assert [r["watcher"] for r in runs(vm)] == ["active"]
        assert runs(vm)[0]["ansible_pull"] is True
        assert vm.ssh(["stat", "-c", "%a %U", SETTINGS, VARS]).stdout.split() == ["600", "root", "600", "root"]
        assert_secrets_only_in_the_secrets_file(vm, secrets, token, [user_data], allowed=cloud_init_copies(vm))
        assert_jinja_arrived_as_written(vm)
        assert_event_held_and_released(vm, control, CLOUD_INIT_VM)
        assert_posted_with_the_secrets(webhook, secrets, token)

        # A second boot: cloud-init runs nothing per instance again; nothing is installed twice.
        before = listing(vm)
        vm.reboot(timeout=BOOT_TIMEOUT)
        wait_for(lambda: guarded_and_ready(vm), "the watcher active after the second boot", vm=vm)
        status = vm.ssh(["cloud-init", "status", "--long"], check=False)
        assert status.returncode == 0 and "status: done" in status.stdout, status.stdout
        assert len(runs(vm)) == 1, "the bootstrap ran again at the second boot: %s" % runs(vm)
        assert served["server"].requests.count("/" + served["tarball"].name) == 1
        assert listing(vm) == before
        assert vm.ssh(["ls", "/usr/share/ansible/collections/ansible_collections/imds"]).stdout.split() == [
            "scheduled_events"]
        assert_event_held_and_released(vm, control, CLOUD_INIT_VM)
        assert_secrets_only_in_the_secrets_file(vm, secrets, token, [user_data], allowed=cloud_init_copies(vm))
        assert_removed_by_the_readme(vm)
    finally:
        vm.cleanup()


def guarded_and_ready(vm):
    try:
        assert_installed_and_guarded(vm)
    except AssertionError:
        return False
    return True


# --- the Custom Script extension -------------------------------------------------------------------------------------


def readme_deployment(served_files, endpoint, secrets):
    """The README's existing-VM command as the Azure CLI would pass it: its parameters file's and its own values,
    with loopback stand-ins for what cannot be reached here (the collection, the ansible-pull repository) and the
    test's secrets for the shell's $WEBHOOK_URL and $WEBHOOK_SECRET."""
    template = json.loads((ROOT / EXISTING_VM_COMMAND.template_file).read_text())
    assert EXISTING_VM_COMMAND.files() == ["watcher.parameters.json"]
    values = doc_blocks.parameters_file(README, "watcher.parameters.json")
    shell = {"$WEBHOOK_URL": secrets["webhook_url"], "$WEBHOOK_SECRET": secrets["webhook_secret"]}
    for name, raw in EXISTING_VM_COMMAND.values().items():
        values[name] = shell[raw] if doc_blocks.from_shell(raw) else doc_blocks.typed(raw, template["parameters"][name])
    assert values["ansiblePullUrl"].startswith("https://")  # the README's example: the test's repository instead
    values.update(ansiblePullUrl=served_files["git"], collectionUrl=served_files["url"],
                  smtpPassword=secrets["smtp_password"],
                  watcherVariables=with_test_vars(values["watcherVariables"], endpoint))
    return Deployment(template, values)


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
                 % (directory, seq, directory), check=False, timeout=RUN_TIMEOUT)
    return ran.returncode, vm.ssh(["cat", directory + "/stdout"]).stdout, vm.ssh(["cat", directory + "/stderr"]).stdout


def test_custom_script_extension_installs_the_watcher_on_an_existing_vm(cloud_image, served, sim, control, webhook,
                                                                        secrets_for):
    secrets, token = secrets_for
    deployment = readme_deployment(served, sim.endpoint(CUSTOM_SCRIPT_VM), secrets)
    assert deployment.resources("Microsoft.Compute/virtualMachines") == [], "createVm=false must not touch the VM"
    protected = extension_of(deployment)["protectedSettings"]
    script = base64.b64decode(protected["script"]).decode()

    vm = start_container(suite=cloud_image["suite"], rootfs=cloud_image["rootfs"], files=cloud_image["files"],
                         name="imds-se-custom-script-%d" % os.getpid())
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
        polling.wait_for(lambda: watcher_up(vm), WAIT, what="the watcher and ansible-pull's timer active",
                         diagnose=lambda: diagnose(vm))
        report_first_boot("the Custom Script extension", cloud_image, time.monotonic() - started, vm)
        assert_pull_runs_through_the_guard(vm)
        assert_installed_and_guarded(vm)
        assert_installed_from_the_archive(vm, cloud_image, runs(vm)[0])
        assert_output_block_shows_the_run(vm, "Custom Script output")
        assert_secrets_only_in_the_secrets_file(vm, secrets, token, [script])
        assert "--script" in script and vm.ssh(["stat", "-c", "%a", EXTENSION_DIR + "/script.sh"]).stdout.strip() == "500"
        assert_jinja_arrived_as_written(vm)
        assert_event_held_and_released(vm, control, CUSTOM_SCRIPT_VM)
        assert_posted_with_the_secrets(webhook, secrets, token)

        # The extension runs the script again when its settings or forceUpdateTag change: nothing changes, nothing
        # is installed.
        code, out, err = run_like_the_extension(vm)
        assert code == 0, (out + err)[-20000:]
        recap = [line for line in out.splitlines() if line.startswith("localhost") and "changed=" in line]
        assert recap and "changed=0" in recap[-1] and "failed=0" in recap[-1], out[-8000:]
        assert "is already installed" in out
        assert [(r["watcher"], r["installed"]) for r in runs(vm)][1:] == [("active", [])]
        print("the Custom Script extension again on Debian %s: the bootstrap %.1f s, nothing installed"
              % (cloud_image["suite"], runs(vm)[1]["seconds"]))
        assert_installed_and_guarded(vm)
        assert_secrets_only_in_the_secrets_file(vm, secrets, token, [script])
        assert_removed_by_the_readme(vm)
    finally:
        vm.cleanup()
