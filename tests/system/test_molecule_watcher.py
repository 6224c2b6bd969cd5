"""The watcher role's molecule scenario (extensions/molecule/watcher/), run as part of the system suites.

`molecule test -s watcher` from the collection root: create boots a harness container and starts the simulator on
loopback, converge applies imds.scheduled_events.watcher from this checkout, idempotence applies it again and
expects no change, verify drives one Freeze through the running service, destroy tears everything down. A
non-zero exit fails this test with the end of molecule's output.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.hostenv import HarnessUnavailable, ci_strict, ensure_host_ready

ROOT = Path(__file__).resolve().parent.parent.parent
COLLECTIONS = ROOT / ".build" / "collections"
TIMEOUT = 1800


def _tool(name):
    here = Path(sys.executable).parent / name
    return here if here.exists() else ROOT / ".venv" / "bin" / name


def test_molecule_watcher_scenario():
    try:
        ensure_host_ready()
    except HarnessUnavailable as exc:
        if ci_strict():
            pytest.fail("%s\n(CI=true: the real-systemd tests must run, not skip)" % exc, pytrace=False)
        pytest.skip(str(exc))
    if not (COLLECTIONS / "ansible_collections" / "imds" / "scheduled_events").exists():
        subprocess.run(["make", "-C", str(ROOT), "collection"], check=True, capture_output=True, timeout=60)
    env = dict(os.environ)
    env.update(
        PATH="%s%s%s" % (_tool("molecule").parent, os.pathsep, env.get("PATH", "")),
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "guard")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]),
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        NO_COLOR="1", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0",
    )
    started = time.monotonic()
    proc = subprocess.run([str(_tool("molecule")), "test", "-s", "watcher"], cwd=str(ROOT), env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=TIMEOUT, check=False)
    elapsed = time.monotonic() - started
    print("molecule test -s watcher: exit %d after %.0f s" % (proc.returncode, elapsed))
    assert proc.returncode == 0, "molecule test -s watcher exited %d; the end of its output:\n%s" % (
        proc.returncode, "\n".join(proc.stdout.splitlines()[-150:]))
