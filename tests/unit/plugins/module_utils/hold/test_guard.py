# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""imds-drift-guard: skip while held, exec otherwise, refuse to guess; and its launcher on the on-VM layout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold import guard
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.backends import GuardBackend, SystemdBackend
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import Reason
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.store import HoldStore

UID = os.getuid()
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 5))
LAUNCHER = os.path.join(ROOT, "roles", "watcher", "files", "bin", "imds-drift-guard")
OPS = Reason("CHG-1", "kernel patching", holder="alice (imds-hold)")
EVENT = Reason("E-1", "Reboot at 10:00", event_id="E-1", holder="imds-watcher")


class Log(object):
    def __init__(self):
        self.lines = []

    def __call__(self, message, error=False):
        self.lines.append((message, error))


class Exec(object):
    """Stands in for os.execvp: records the job, checks the lock fd survives exec, returns its 'exit status'."""

    def __init__(self, status=0, error=None):
        self.status = status
        self.error = error
        self.calls = []
        self.inheritable = []

    def __call__(self, program, argv):
        if self.error:
            raise self.error
        self.calls.append((program, list(argv)))
        for fd in range(3, 256):
            try:
                if os.get_inheritable(fd):
                    self.inheritable.append(os.readlink("/proc/self/fd/%d" % fd))
            except OSError:
                pass
        return self.status


def run_guard(state_file, command, execvp=None, log=None, options=()):
    log = log or Log()
    execvp = execvp or Exec()
    status = guard.main(list(options) + ["--state-file", state_file, "--"] + list(command), owner_uid=UID,
                        execvp=execvp, log=log)
    return status, execvp, log


def test_not_held_execs_the_job_with_the_run_lock_inherited(state_file):
    status, execvp, log = run_guard(state_file, ["ansible-pull", "-U", "https://git.example/x.git", "local.yml"],
                                    execvp=Exec(status=4))
    assert status == 4, "the job's exit status is passed through"
    assert execvp.calls == [("ansible-pull", ["ansible-pull", "-U", "https://git.example/x.git", "local.yml"])]
    assert state_file + ".guard-lock" in execvp.inheritable
    assert log.lines == []


def test_held_skips_the_job_and_says_who_and_why(manager, state_file):
    manager.hold(OPS, [GuardBackend.target()])
    manager.hold(EVENT, [GuardBackend.target()])
    status, execvp, log = run_guard(state_file, ["ansible-pull", "-U", "x"])
    assert status == 0 and execvp.calls == []
    (message, error), = log.lines
    assert not error
    assert "drift correction is held, so not running ansible-pull -U x" in message
    assert "alice (imds-hold) since 2025-06-15T15:06:40Z: kernel patching [reason CHG-1]" in message
    assert "imds-watcher since" in message and "[reason E-1, event E-1]" in message
    assert "imds-hold release --reason-id CHG-1 or E-1" in message
    manager.release("CHG-1")
    assert run_guard(state_file, ["true"])[1].calls == []
    manager.release("E-1")
    assert run_guard(state_file, ["true"])[1].calls == [("true", ["true"])]


def test_other_holds_do_not_stop_guarded_jobs(manager, system, state_file):
    system.ansible_pull()
    manager.hold(OPS, [SystemdBackend.target("ansible-pull.timer")])
    assert run_guard(state_file, ["true"])[1].calls == [("true", ["true"])]


def test_a_hold_in_progress_counts_as_held(manager, state_file):
    fd = manager.store.open_guard_run_lock()  # a guarded job in flight: the hold records its intent, then waits
    try:
        assert manager.hold(OPS, [GuardBackend.target(wait_timeout=1)]).failed
    finally:
        os.close(fd)
    assert manager.status()["targets"][0]["phase"] == "holding"
    status, execvp, dummy = run_guard(state_file, ["true"])
    assert status == 0 and execvp.calls == []


@pytest.mark.parametrize("content", ["{", '{"format": "imds-scheduled-events/holds", "version": 99, "targets": {}}'])
def test_unreadable_record_means_do_not_run(state_file, content):
    with open(state_file, "w", encoding="utf-8") as handle:
        handle.write(content)
    status, execvp, log = run_guard(state_file, ["ansible-pull"])
    assert status == guard.EXIT_UNSURE == 75 and execvp.calls == []
    assert log.lines[0][1] is True and "cannot tell whether drift correction is held, so not running" in log.lines[0][0]
    assert [n for n in os.listdir(os.path.dirname(state_file)) if "corrupt" in n] == [], "the guard only reads"


def test_untrusted_directory_means_do_not_run(state_dir, state_file):
    os.chmod(str(state_dir), 0o777)
    status, execvp, log = run_guard(state_file, ["ansible-pull"])
    assert status == 75 and execvp.calls == [] and "group or others may write it" in log.lines[0][0]


def test_no_state_directory_runs_the_job(tmp_path):
    status, execvp, dummy = run_guard(str(tmp_path / "nowhere" / "holds.json"), ["true"])
    assert status == 0 and execvp.calls == [("true", ["true"])]


@pytest.mark.parametrize("error, status", [(FileNotFoundError(2, "No such file or directory"), 127),
                                           (PermissionError(13, "Permission denied"), 126)])
def test_job_that_cannot_start(state_file, error, status):
    result, dummy, log = run_guard(state_file, ["/no/such/job"], execvp=Exec(error=error))
    assert result == status and "cannot run /no/such/job" in log.lines[0][0] and log.lines[0][1]


@pytest.mark.parametrize("argv, message", [
    ([], "the job goes after '--'"),
    (["ansible-pull"], "the job goes after '--'"),
    (["--"], "no job after '--'"),
    (["--verbose", "--", "x"], "unknown option '--verbose'"),
])
def test_usage_errors(argv, message, capsys):
    assert guard.main(argv, owner_uid=UID, execvp=Exec(), log=Log()) == 2
    err = capsys.readouterr().err
    assert message in err and guard.USAGE in err


def test_options(state_file):
    assert guard.parse(["--state-file=/x/y.json", "-q", "--", "job", "--state-file", "z"]) == (
        "/x/y.json", True, ["job", "--state-file", "z"])


def test_logger_writes_stderr_unless_quiet(capsys):
    guard.Logger(use_syslog=False)("hello")
    guard.Logger(quiet=True, use_syslog=False)("hidden")
    assert capsys.readouterr().err == "imds-drift-guard: hello\n"


# --- the launcher, on the layout the watcher role installs ------------------------


@pytest.fixture
def vm_layout(tmp_path):
    """/usr/lib/imds-scheduled-events/imds_scheduled_events = plugins/module_utils minus ansible_support.py"""
    libdir = tmp_path / "usr-lib-imds-scheduled-events"
    package = libdir / "imds_scheduled_events"
    shutil.copytree(os.path.join(ROOT, "plugins", "module_utils"), str(package),
                    ignore=shutil.ignore_patterns("__pycache__", "ansible_support.py"))
    return str(libdir)


def launch(vm_layout, state_file, job, **kwargs):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IMDS_SE_LIBDIR": vm_layout,
           "IMDS_SE_PYTHON": sys.executable}
    return subprocess.Popen([LAUNCHER, "--state-file", state_file, "--"] + job, env=env, universal_newlines=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_launcher_runs_the_job_and_holds_the_run_lock_while_it_runs(vm_layout, state_file, fake_time):
    job = [sys.executable, "-c", "import sys; print('started', flush=True); sys.stdin.read(); sys.exit(7)"]
    proc = launch(vm_layout, state_file, job, stdin=subprocess.PIPE)
    try:
        if UID != 0:  # the launcher trusts root-owned state only
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 75 and "owned by uid" in err
            return
        assert proc.stdout.readline() == "started\n"
        store = HoldStore(state_file, owner_uid=UID, monotonic=fake_time.monotonic, sleep=fake_time.sleep)
        assert store.guard_runs_in_flight(), "the job inherited the shared lock"
        proc.stdin.close()
        assert proc.wait(timeout=60) == 7
        assert not store.guard_runs_in_flight()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_launcher_skips_while_held(vm_layout, state_file, make_manager):
    make_manager().hold(OPS, [GuardBackend.target()])
    proc = launch(vm_layout, state_file, ["/bin/sh", "-c", "echo ran"])
    out, err = proc.communicate(timeout=60)
    if UID != 0:  # the launcher trusts root-owned state only
        assert proc.returncode == 75 and "owned by uid" in err
        return
    assert proc.returncode == 0 and out == ""
    assert "drift correction is held, so not running /bin/sh -c 'echo ran'" in err and "kernel patching" in err
