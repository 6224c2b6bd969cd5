"""Apply a role of this checkout to a test container with the host's ansible-playbook, as a controller would."""

import json
import subprocess
import time
from pathlib import Path

from harness.ansible_env import ansible_env, ansible_program

ROOT = Path(__file__).resolve().parent.parent.parent
APPLY_WATCHER = ROOT / "tests" / "system" / "watcher" / "apply-role.yml"


class RoleRun(object):
    """One ansible-playbook run: its exit status, the host's `changed` count in the recap, and the output."""

    def __init__(self, returncode, changed, output, seconds):
        self.returncode = returncode
        self.changed = changed
        self.output = output
        self.seconds = seconds


def apply_role(vm, tmp_path, role_vars, host="myvm", playbook=APPLY_WATCHER, timeout=900):
    """The role (playbook) applied to the container `vm`, known to Ansible as `host`, with `role_vars` as extra
    vars; never raises for a failed run (the caller asserts on RoleRun)."""
    inventory = tmp_path / ("inventory-%d.json" % time.monotonic_ns())
    inventory.write_text(json.dumps({"all": {"hosts": {host: vm.ansible_inventory_vars()}}}))
    extra = tmp_path / ("vars-%d.json" % time.monotonic_ns())
    extra.write_text(json.dumps(role_vars))
    started = time.monotonic()
    proc = subprocess.run([ansible_program(), "-i", str(inventory), str(playbook), "-e", "@%s" % extra],
                          env=ansible_env(ANSIBLE_PIPELINING="True"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout, check=False)
    recap = [line for line in proc.stdout.splitlines() if line.startswith(host) and "changed=" in line]
    changed = int(recap[-1].split("changed=")[1].split()[0]) if recap else None
    return RoleRun(proc.returncode, changed, proc.stdout, time.monotonic() - started)
