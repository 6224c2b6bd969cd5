"""The docs' commands that need a VM, run as printed (tests/harness/doc_commands.py extracts and classifies every
command of the docs; the integration target doc_commands runs the `here` ones on each matrix leg, and
test_pull_packaged_ansible.py the `pull` ones):

- `fleet`: on the controller, with the ansible-playbook of every matrix ansible-core (the Makefile's CORES: .venv for
  MAIN_CORE, .build/venvs/core-X for the others), against a booted Debian 12 container that is the inventory's one
  VM, `web-1` in the groups the docs name (web, azure_vms). The VM runs the services the commands drain (nginx,
  myapp: stand-in units, since the real nginx would listen on the host's network the containers share). Before each
  command, one Scheduled Freeze of web-1 is pending; the test plays Azure: once the command has approved it (the
  simulator starts it), the event is over (the clock moves past it). The command ran as printed when it exits 0, its
  recap has no failed or unreachable host, it approved that event, and the services run again.
- `vm`: in a root shell on the same container once the watcher role has installed imds-hold there (its service
  stopped, so that only the commands hold), each block from a VM where nothing is held, with the units and the
  command the blocks name (ansible-pull.timer, chef-client.timer, /usr/local/bin/lb-member: stand-ins).

Nothing is timed: each command is synchronous, and the test's only wait (for the approval) is a bounded poll.
"""

import json
import os
import re
import shlex
import threading
import uuid
from pathlib import Path

import pytest

from harness import doc_commands, roles
from harness.ansible_env import ansible_env
from harness.pytest_container import start_container
from harness.pytest_sim import simulator_fixtures

ROOT = Path(__file__).resolve().parent.parent.parent
VM = "web-1"
SCENARIO = {
    "name": "doc-commands",
    "description": "The VM of the docs' inventory; the test injects an event before each command.",
    "clock": "manual",
    "seed": 11,
    "vms": [{"name": VM, "availability_set": "web-as"}],
}
# A service of the site: running until the docs' commands stop it, and again once they start it.
SERVICE = """[Unit]
Description=Stand-in for the site's %N, which the docs' commands drain and restore
[Service]
ExecStart=/bin/sleep infinity
[Install]
WantedBy=multi-user.target
"""
TIMER_SERVICE = "[Unit]\nDescription=Stand-in for %N\n[Service]\nType=oneshot\nExecStart=/bin/true\n"
TIMER = "[Unit]\nDescription=Stand-in for %N\n[Timer]\nOnBootSec=1h\nOnUnitActiveSec=1h\n[Install]\nWantedBy=timers.target\n"
LB_MEMBER = "#!/bin/sh\n# Stand-in for the site's load-balancer client: records what it was asked.\necho \"$@\" >> /var/lib/lb-member\n"
SERVICES = ("nginx", "myapp")
TIMERS = ("ansible-pull", "chef-client")


def matrix_cores():
    """{ansible-core release: its venv's bin directory} for the Makefile's CORES (the one source of the matrix)."""
    makefile = (ROOT / "Makefile").read_text()

    def value(name):
        return re.search(r"^%s\s*:=\s*(.*)$" % name, makefile, re.M).group(1).split()

    main = value("MAIN_CORE")[0]
    return dict((core, ROOT / (".venv" if core == main else ".build/venvs/core-%s" % core) / "bin")
                for core in value("CORES"))


sim, control = simulator_fixtures(SCENARIO)


@pytest.fixture(scope="module")
def vm():
    box = start_container(suite="bookworm", name="imds-se-doccmd-%d" % os.getpid())
    try:
        for name in SERVICES:
            box.put_file("/etc/systemd/system/%s.service" % name, SERVICE)
        for name in TIMERS:
            box.put_file("/etc/systemd/system/%s.service" % name, TIMER_SERVICE)
            box.put_file("/etc/systemd/system/%s.timer" % name, TIMER)
        box.put_file("/usr/local/bin/lb-member", LB_MEMBER, mode=0o755)
        box.ssh(["systemctl", "daemon-reload"])
        box.ssh(["systemctl", "enable", "--now"] + ["%s.service" % n for n in SERVICES] + ["%s.timer" % n for n in TIMERS])
        yield box
    finally:
        box.cleanup()


def commands(where):
    found = doc_commands.extract(str(ROOT))
    wrong = doc_commands.problems(found)
    assert not wrong, "the docs' markers are wrong:\n" + "\n".join(wrong)
    return [command for command in found if command.where == where]


def inventory(vm, sim):  # pylint: disable=redefined-outer-name
    """The docs' `inventory`: web-1, the container, in the groups the commands name, with its IMDS endpoint and the
    host variable rolling approvals group by."""
    host = dict(vm.ansible_inventory_vars(), imds_endpoint=sim.endpoint(VM), availability_set="web-as")
    return {"web": {"hosts": {VM: host}}, "azure_vms": {"children": {"web": {}}}}


class PlayAzure(threading.Thread):
    """While a command runs: once it has approved the event (the simulator starts an approved event at once), the
    maintenance is over, as Azure would say by removing the event: the clock moves past its Started time."""

    def __init__(self, control, event_id):  # pylint: disable=redefined-outer-name
        super().__init__(name="play-azure", daemon=True)
        self.control, self.event_id = control, event_id
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.2):
            if self.control.event(self.event_id)["status"] == "Started":
                self.control.advance(60)
                return


def active(vm, names):  # pylint: disable=redefined-outer-name
    out = vm.ssh(["systemctl", "is-active"] + ["%s.service" % n for n in names], check=False).stdout.split()
    return dict(zip(names, out))


@pytest.mark.parametrize("core", sorted(matrix_cores()))
def test_fleet_commands_run_as_printed(core, vm, sim, control, tmp_path):  # pylint: disable=redefined-outer-name
    found = commands("fleet")
    assert found, "no fleet command found: the extractor or the markers are broken"
    bin_dir = matrix_cores()[core]
    assert (bin_dir / "ansible-playbook").exists(), "no ansible-playbook for ansible-core %s: make venvs" % core
    cwd = doc_commands.scratch_checkout(str(ROOT), str(tmp_path / "checkout"))
    Path(cwd, "inventory").write_text(json.dumps(inventory(vm, sim)))
    home = tmp_path / "home"
    home.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    env = ansible_env(HOME=str(home), PATH=os.pathsep.join([str(bin_dir), os.environ["PATH"]]))
    env.pop("TMPDIR", None)
    ansible = doc_commands.ansible_version(env)
    assert ansible.startswith("ansible-core %s." % core), ansible
    failures = []
    # the ssh key stays visible (under /var/tmp/imds-se-containers); /tmp and /srv are private, and every process a
    # command leaves (ssh's control masters) ends with the sandbox
    with doc_commands.Sandbox(network=False, var_tmp=False,
                              keep=env["PATH"].split(os.pathsep) + [str(tmp_path)]) as sandbox:
        for command in found:
            event_id = str(uuid.uuid4()).upper()
            control.inject(id=event_id, type="Freeze", resources=[VM], notice=900, started_for=5, duration=5)
            azure = PlayAzure(control, event_id)
            azure.start()
            try:
                code, output = doc_commands.run_script(sandbox.popen, command, command.script, cwd, env, str(logs))
            finally:
                azure.done.set()
                azure.join(timeout=30)
            why = doc_commands.verdict(command, code, output)
            if not why and [a["vm"] for a in control.approvals(event_id)] != [VM]:
                why = "it did not approve the pending event of %s: approvals %s" % (VM, control.approvals(event_id))
            if not why and set(active(vm, SERVICES).values()) != {"active"}:
                why = "the services do not run again afterwards: %s" % active(vm, SERVICES)
            if why:
                failures.append(str(doc_commands.Failure(command, why, output, ansible)))
            if control.event(event_id)["status"] != "gone":
                control.advance(3600)  # the next command starts from a document without this one
            vm.ssh(["systemctl", "start"] + ["%s.service" % n for n in SERVICES])
    assert not failures, "\n\n".join(failures)


def test_vm_commands_run_as_printed(vm, sim, tmp_path):  # pylint: disable=redefined-outer-name
    found = commands("vm")
    assert found, "no vm command found: the extractor or the markers are broken"
    role_vars = {"watcher_endpoint": sim.endpoint(VM), "watcher_vm_name": VM, "watcher_service_state": "stopped",
                 "watcher_service_enabled": False}
    run = roles.apply_role(vm, tmp_path, role_vars, host=VM)
    assert run.returncode == 0, run.output[-20000:]
    failures = []
    for command in found:
        vm.ssh(["imds-hold", "release", "--all"])  # each block starts on a VM where nothing is held
        proc = vm.ssh(shlex.join(doc_commands.bash_argv(command.script)), check=False, timeout=doc_commands.BOUND)
        output = proc.stdout + proc.stderr
        why = doc_commands.verdict(command, proc.returncode, output)
        if why:
            failures.append(str(doc_commands.Failure(command, why, output, "on Debian 12")))
    assert not failures, "\n\n".join(failures)
