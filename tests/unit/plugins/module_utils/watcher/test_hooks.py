# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Hooks run for real: order, contract (stdin JSON and IMDS_* variables), data stays data,
timeouts kill the whole process group, untrusted files and directories are refused."""

from __future__ import annotations

import json
import os
import time

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.config import Trust
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.hooks import HookRunner, hook_environment

TRUST = Trust(owner_uid=os.getuid())
EVENT = {"EventId": "4CAEA225-A741-474D-A72E-428C86FCD853", "EventType": "Reboot", "EventStatus": "Scheduled",
         "Resources": ["myvm", "myvm-peer"], "not_before": "2025-06-15T15:15:00Z", "EventSource": "User",
         "scope": "shared", "Description": "restart"}

RECORDER = """#!/bin/sh
printf '%%s %%s %%s %%s\\n' "$(basename "$0")" "$IMDS_HOOK_PHASE" "$IMDS_EVENT_TYPE" "${IMDS_EVENT_OUTCOME:-none}" >> %s
"""


def hook(directory, name, body=None, mode=0o755):
    """A hook file; by default one that records its name, phase, type and outcome in <hooks_dir>/../ran."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(str(directory), 0o755)
    path = directory / name
    root = directory
    while root.name != "hooks":
        root = root.parent
    path.write_text(body if body is not None else RECORDER % (root.parent / "ran"))
    os.chmod(str(path), mode)
    return str(path)


@pytest.fixture
def hooks_dir(tmp_path):
    path = tmp_path / "hooks"
    path.mkdir()
    os.chmod(str(path), 0o755)
    return path


def ran(hooks_dir):
    path = hooks_dir.parent / "ran"
    return path.read_text().splitlines() if path.exists() else []


def test_lexical_order_with_type_specific_hooks_merged_in(hooks_dir):
    hook(hooks_dir / "pre", "20-drain")
    hook(hooks_dir / "pre", "10-notify")
    hook(hooks_dir / "pre" / "Reboot", "15-stop-db")
    hook(hooks_dir / "pre" / "Freeze", "12-freeze-only")
    hook(hooks_dir / "pre", "30-disabled", mode=0o644)
    hook(hooks_dir / "pre", "40-editor-backup~")
    hook(hooks_dir / "pre", ".hidden")
    hook(hooks_dir / "post", "10-check")
    outcome = HookRunner(str(hooks_dir), trust=TRUST).run("pre", EVENT, "myvm")
    assert outcome.ok and outcome.describe() == "3 pre-event hook(s) passed"
    assert ran(hooks_dir) == ["10-notify pre Reboot none", "15-stop-db pre Reboot none", "20-drain pre Reboot none"]
    outcome = HookRunner(str(hooks_dir), trust=TRUST).run("post", EVENT, "myvm", outcome="cancelled")
    assert ran(hooks_dir)[-1] == "10-check post Reboot cancelled"


def test_no_hooks_directory_means_no_hooks(tmp_path):
    outcome = HookRunner(str(tmp_path / "none"), trust=TRUST).run("pre", EVENT, "myvm")
    assert outcome.ok and outcome.runs == [] and outcome.describe() == "no pre-event hooks"


def test_the_contract_stdin_json_and_environment(hooks_dir, tmp_path):
    dump = tmp_path / "dump"
    hook(hooks_dir / "post", "10-dump", "#!/bin/sh\ncat > %s.json\nenv > %s.env\n" % (dump, dump))
    HookRunner(str(hooks_dir), trust=TRUST).run("post", EVENT, "myvm", outcome="completed")
    payload = json.loads((tmp_path / "dump.json").read_text())
    assert payload == {"phase": "post", "outcome": "completed", "vm": "myvm", "event": EVENT}
    env = dict(line.split("=", 1) for line in (tmp_path / "dump.env").read_text().splitlines() if "=" in line)
    assert env["IMDS_EVENT_ID"] == EVENT["EventId"] and env["IMDS_EVENT_TYPE"] == "Reboot"
    assert env["IMDS_EVENT_STATUS"] == "Scheduled" and env["IMDS_EVENT_NOT_BEFORE"] == "2025-06-15T15:15:00Z"
    assert env["IMDS_EVENT_RESOURCES"] == "myvm myvm-peer" and env["IMDS_HOOK_PHASE"] == "post"
    assert env["IMDS_EVENT_OUTCOME"] == "completed" and env["IMDS_VM_NAME"] == "myvm"
    assert env["IMDS_EVENT_SCOPE"] == "shared"
    assert env["PATH"].startswith("/usr/local/sbin") and "PYTHONPATH" not in env


def test_event_fields_arrive_as_data(hooks_dir, tmp_path):
    canary = tmp_path / "pwned"
    nasty = "$(touch %s); `touch %s` ' \" ; | & > < \\ *\nsecond line \x00 nul \ud800 \x1b[31m" % (canary, canary)
    event = dict(EVENT, EventType="Reboot$(id)", Description=nasty, Resources=["myvm; touch %s" % canary, "a\nb"])
    dump = tmp_path / "dump"
    hook(hooks_dir / "pre", "10-dump", "#!/bin/sh\ncat > %s.json\nprintf '%%s' \"$IMDS_EVENT_RESOURCES\" > %s.res\n"
         "printf '%%s' \"$IMDS_EVENT_TYPE\" > %s.type\n" % (dump, dump, dump))
    outcome = HookRunner(str(hooks_dir), trust=TRUST).run("pre", event, "myvm")
    assert outcome.ok
    assert not canary.exists()
    assert json.loads((tmp_path / "dump.json").read_text())["event"]["Description"] == nasty
    assert (tmp_path / "dump.res").read_text() == "myvm; touch %s a\nb" % canary
    assert (tmp_path / "dump.type").read_text() == "Reboot$(id)"
    env = hook_environment("pre", event, "myvm")
    assert "\x00" not in env["IMDS_EVENT_RESOURCES"]


def test_a_type_directory_is_only_used_for_a_plain_type_name(hooks_dir):
    hook(hooks_dir / "pre", "10-all")
    runner = HookRunner(str(hooks_dir), trust=TRUST)
    assert [name for name, dummy, dummy2 in runner.discover("pre", "../../etc")] == ["10-all"]
    with pytest.raises(ValueError):
        runner.discover("during")


def test_failures_are_reported_and_every_hook_still_runs(hooks_dir):
    hook(hooks_dir / "pre", "10-fail", "#!/bin/sh\necho 'cannot drain: pool busy' >&2\nexit 3\n")
    hook(hooks_dir / "pre", "20-ok")
    outcome = HookRunner(str(hooks_dir), trust=TRUST).run("pre", EVENT, "myvm")
    assert not outcome.ok and outcome.describe() == "10-fail exited 3"
    assert [r.ok for r in outcome.runs] == [False, True]
    assert outcome.as_dict()["runs"][0]["output"] == "cannot drain: pool busy\n"


def test_a_timeout_kills_the_hook_and_everything_it_started(hooks_dir, tmp_path):
    pidfile = tmp_path / "child.pid"
    hook(hooks_dir / "pre", "10-hang", "#!/bin/sh\nsleep 300 &\necho $! > %s\nwait\n" % pidfile)
    started = time.monotonic()
    outcome = HookRunner(str(hooks_dir), timeout=0.5, trust=TRUST).run("pre", EVENT, "myvm")
    # did not wait for the 300 s child (the margin is for a loaded machine, not a speed requirement)
    assert time.monotonic() - started < 120
    assert not outcome.ok and outcome.runs[0].timed_out and "timed out" in outcome.describe()
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 60  # the kill is sent; a loaded machine may take a while to reap the child
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_output_is_bounded(hooks_dir):
    hook(hooks_dir / "pre", "10-chatty", "#!/bin/sh\necho FIRST\nyes line | head -c 200000\necho\necho LAST\n")
    outcome = HookRunner(str(hooks_dir), trust=TRUST, max_output=1024).run("pre", EVENT, "myvm")
    output = outcome.runs[0].output
    assert outcome.ok and len(output) < 1200 and output.startswith("FIRST") and output.endswith("LAST\n")
    assert "bytes left out" in output


def test_untrusted_hooks_and_directories_are_refused(hooks_dir):
    hook(hooks_dir / "pre", "10-writable", mode=0o775)
    hook(hooks_dir / "pre", "20-fine")
    outcome = HookRunner(str(hooks_dir), trust=TRUST).run("pre", EVENT, "myvm")
    assert not outcome.ok and "10-writable refused: the hook" in outcome.describe()
    assert "may be written by group or others" in outcome.describe()
    assert ran(hooks_dir) == ["20-fine pre Reboot none"]  # the refused one never ran

    os.chmod(str(hooks_dir / "pre" / "10-writable"), 0o755)
    os.chmod(str(hooks_dir / "pre"), 0o777)
    try:
        outcome = HookRunner(str(hooks_dir), trust=TRUST).run("pre", EVENT, "myvm")
    finally:
        os.chmod(str(hooks_dir / "pre"), 0o755)
    assert not outcome.ok and len(outcome.runs) == 1 and "the hooks directory" in outcome.runs[0].refused
    outcome = HookRunner(str(hooks_dir), trust=Trust(owner_uid=4242)).run("pre", EVENT, "myvm")
    assert not outcome.ok and "owned by uid" in outcome.runs[0].refused


def test_a_hook_that_cannot_start(hooks_dir):
    hook(hooks_dir / "pre", "10-no-interpreter", "#!/nonexistent/interpreter\n")
    outcome = HookRunner(str(hooks_dir), trust=TRUST).run("pre", EVENT, "myvm")
    assert not outcome.ok and outcome.runs[0].rc == 127
