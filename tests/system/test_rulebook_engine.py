# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The real Event-Driven Ansible engine works end to end on this machine (tests/harness/rulebook.py).

A throw-away collection under tmp_path, smoketest.engine, has one event source: it emits a single event and then
waits forever, as a real source does. A rulebook sends that event to run_playbook, whose playbook writes the event's
payload to a file on localhost. The test checks the file (a failed playbook leaves the engine's exit code at 0, so
only the side effect tells), then that SIGINT ends the engine with 130. On the way it checks what the rulebook
harness promises the plugin authors: the network guard is loaded in the engine's own interpreter and in the playbook
it starts, the playbook runs the eda venv's ansible-playbook, rulebook variables (--vars) reach the source's
arguments and the action, and a source imports its collection's module_utils with the documented sys.path recipe.

ansible-rulebook 1.3.2 and Java from .build/venvs/eda and Debian's openjdk-17-jre-headless (installed as root when
missing); without them the test skips loudly, and CI=true fails a skip. No container: it runs in the shared leg.
"""

from __future__ import annotations

import json
import secrets

from harness.ansible_env import ROOT
from harness.rulebook import EDA_VENV, Rulebook

SOURCE = '''\
"""One event, then wait like a real source does (a source that returns ends the rulebook)."""
import asyncio
import os
import socket
import sys

try:
    import ansible_collections.smoketest.engine.plugins.module_utils  # noqa: F401
except ImportError:  # ansible-rulebook runs this file with runpy: the collection root is not on sys.path
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 7)))
from ansible_collections.smoketest.engine.plugins.module_utils.payload import describe


async def main(queue, args):
    await queue.put({"smoke": describe(args["token"], getattr(socket, "_imds_guard_installed", False))})
    await asyncio.Event().wait()
'''

MODULE_UTILS = '''\
def describe(token, guarded):
    return {"token": token, "engine_guarded": guarded, "from": "module_utils"}
'''

RULEBOOK = '''\
---
- name: Smoke test of the engine
  hosts: all
  sources:
    - smoketest.engine.once:
        token: "{{ token }}"
  rules:
    - name: Write the event down
      condition: event.smoke.token == vars.token
      action:
        run_playbook:
          name: playbooks/write_event.yml
          extra_vars:
            out: "{{ out }}"
'''

PLAYBOOK = '''\
---
- name: Write the event that triggered this run
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Event, interpreter and PYTHONPATH as this playbook saw them
      ansible.builtin.copy:
        dest: "{{ out }}"
        mode: "0600"
        content: "{{ {'event': ansible_eda.event.smoke, 'rule': ansible_eda.rule,
                     'python': ansible_playbook_python,
                     'pythonpath': lookup('ansible.builtin.env', 'PYTHONPATH')} | to_json }}"
'''

INVENTORY = '''\
all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: "{{ ansible_playbook_python }}"
'''


def make_collection(root):
    """root/ansible_collections/smoketest/engine with the source and its module_utils; returns root."""
    coll = root / "ansible_collections" / "smoketest" / "engine"
    for path, text in {
        "galaxy.yml": "namespace: smoketest\nname: engine\nversion: 1.0.0\nreadme: README.md\nauthors: [tests]\n",
        "README.md": "throw-away collection of tests/system/test_rulebook_engine.py\n",
        "meta/runtime.yml": "---\nrequires_ansible: '>=2.19.0'\n",
        "plugins/module_utils/payload.py": MODULE_UTILS,
        "extensions/eda/plugins/event_source/once.py": SOURCE,
    }.items():
        (coll / path).parent.mkdir(parents=True, exist_ok=True)
        (coll / path).write_text(text, encoding="utf-8")
    return root


def test_event_runs_a_playbook_with_its_payload(tmp_path):
    collections = make_collection(tmp_path / "collections")
    (tmp_path / "playbooks").mkdir()  # run_playbook copies the playbook's whole directory: keep it small
    (tmp_path / "playbooks" / "write_event.yml").write_text(PLAYBOOK, encoding="utf-8")
    (tmp_path / "rulebook.yml").write_text(RULEBOOK, encoding="utf-8")
    (tmp_path / "inventory.yml").write_text(INVENTORY, encoding="utf-8")
    out = tmp_path / "event.json"
    token = secrets.token_hex(8)

    with Rulebook(tmp_path / "rulebook.yml", tmp_path / "inventory.yml", tmp_path, collections=[collections],
                  extra_vars={"token": token, "out": str(out)}) as engine:
        written = engine.wait_for_file(out, json.loads, what="the triggered playbook to write %s" % out)
        assert written["event"] == {"token": token, "engine_guarded": True, "from": "module_utils"}, engine.describe()
        assert written["rule"] == "Write the event down"
        assert written["python"] == str(EDA_VENV / "bin" / "python"), "ansible-playbook is not the eda venv's"
        assert written["pythonpath"].split(":")[0] == str(ROOT / "tests" / "guard"), written["pythonpath"]
        # the playbook's run is over once the engine reports its status; then the engine is idle, waiting for events
        engine.wait_for_log("PLAY RECAP", what="the playbook's recap")
        assert engine.running, engine.describe()
        code = engine.stop()

    log = engine.log()
    assert code == 130, "SIGINT should end ansible-rulebook with 130, not %s%s" % (code, engine.describe())
    assert "failed=0" in log, engine.describe()
    assert " ERROR " not in log and "Traceback" not in log, engine.describe()
