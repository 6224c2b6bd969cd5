"""The environment in which suites and benchmarks run Ansible against this checkout.

The collection comes from .build/collections (a symlink to the checkout), the
network guard (tests/guard) is first on PYTHONPATH of every Python process
Ansible starts, and proxies are dropped: everything talks to loopback.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
COLLECTIONS = ROOT / ".build" / "collections"
GUARD = ROOT / "tests" / "guard"


def ensure_collection():
    """.build/collections/ansible_collections/imds/scheduled_events -> the checkout (what `make collection` makes)."""
    link = COLLECTIONS / "ansible_collections" / "imds" / "scheduled_events"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(ROOT)
    return COLLECTIONS


def ansible_program(name="ansible-playbook"):
    """The Ansible command beside this Python (under ansible-test, `python -m ansible` finds no entry points)."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else str(ROOT / ".venv" / "bin" / name)


def ansible_env(**extra):
    """A copy of os.environ for ansible-playbook and ansible; `extra` adds or overrides variables."""
    ensure_collection()
    env = dict((k, v) for k, v in os.environ.items() if not k.lower().endswith("_proxy"))
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(GUARD)]
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_DEPRECATION_WARNINGS="False", ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="False", PYTHONPATH=os.pathsep.join([str(GUARD)] + paths))
    # as under make: Ansible's own files (control sockets, temp dirs) stay in the checkout, not in ~/.ansible
    env.setdefault("ANSIBLE_HOME", str(ROOT / ".build" / "ansible-home"))
    env.setdefault("ANSIBLE_LOCAL_TEMP", env["ANSIBLE_HOME"] + "/tmp")
    env.setdefault("ANSIBLE_REMOTE_TEMP", env["ANSIBLE_HOME"] + "/tmp")
    env.setdefault("ANSIBLE_ASYNC_DIR", env["ANSIBLE_HOME"] + "/async")
    env.setdefault("ANSIBLE_SSH_CONTROL_PATH_DIR", env["ANSIBLE_HOME"] + "/cp")
    env.update(extra)
    return env
