# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""imds-watcher run | status | check-config, and the launcher the role installs."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import cli as cli_mod
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.cli import EXIT_CONFIG, main
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import TRUST, UID

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", ".."))
REBOOT_ID = "4CAEA225-A741-474D-A72E-428C86FCD853"
REBOOT = {"id": REBOOT_ID, "type": "Reboot", "resources": ["myvm"], "at": 2, "notice": 900, "started_for": 600}


def cli(*argv, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    kwargs.setdefault("trust", TRUST)
    kwargs.setdefault("hold_options", {"owner_uid": UID})
    code = main(list(argv), stdout=out, stderr=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


def run_lifecycle(rig, ticks):
    daemon = rig.daemon()
    for dummy in range(ticks):
        rig.tick(daemon)
    return daemon


def test_status_while_an_event_is_held_and_after(rig_factory):
    rig = rig_factory([dict(REBOOT, cancel_at=20)])
    path = rig.write_config()
    run_lifecycle(rig, 5)
    code, out, err = cli("--config", path, "--secrets", "", "status")
    assert code == 0, err
    assert "Pending events: 1" in out and REBOOT_ID in out and "ready since" in out and "held; pre-hooks ok" in out
    assert "Drift correction is held" in out and "imds-watcher" in out and "command:marker" in out
    assert "detected" in out and "Last 1 event(s) in the journal" in out
    run_lifecycle(rig, 25)
    code, out, err = cli("--config", path, "status", "--json", "--last", "3")
    status = json.loads(out)
    assert code == 0 and status["pending"] == [] and status["holds"]["held"] is False
    recent = status["recent"][0]
    assert recent["event_id"] == REBOOT_ID and recent["outcome"] == "cancelled" and recent["state"] == "released"
    assert [s["transition"] for s in recent["timeline"]][-1] == "released"
    code, out, err = cli("--config", path, "status")
    assert "No pending events." in out and "Nothing is held" in out


def test_status_reports_unreadable_files(rig_factory):
    rig = rig_factory([])
    path = rig.write_config()
    (rig.tmp / "state" / "watcher-state.json").write_text("{torn")
    code, out, err = cli("--config", path, "status")
    assert code == 1 and "is unusable" in err and "No pending events." in out
    assert (rig.tmp / "state" / "watcher-state.json").exists()  # status changes nothing


def test_status_with_a_group_writable_config_still_shows_what_is_held(rig_factory, monkeypatch):
    rig = rig_factory([dict(REBOOT, cancel_at=20)])
    path = rig.write_config()
    run_lifecycle(rig, 5)
    os.chmod(path, 0o664)
    # a file others may write must not choose what root reads: status falls back to the default files
    monkeypatch.setattr(cli_mod.config_mod, "DEFAULT_STATE_DIR", str(rig.tmp / "state"))
    monkeypatch.setattr(cli_mod.config_mod, "DEFAULT_HOLD_STATE_FILE", str(rig.tmp / "holds" / "holds.json"))
    code, out, err = cli("--config", path, "--secrets", "", "status")
    assert code == EXIT_CONFIG
    sentence = ("the config file %s is refused because it may be written by group or others (mode 0664 found, 0644 "
                "wanted: only its owner may write it). Fix: chmod go-w %s" % (path, path))
    assert err == "imds-watcher: %s\n" % sentence
    lines = out.splitlines()
    assert lines[0].startswith("!!! THE CONFIG IS REFUSED") and lines[1] == "  " + sentence
    assert "from the default files" in out and str(rig.tmp / "holds" / "holds.json") in lines[3]
    assert "Pending events: 1" in out and REBOOT_ID in out
    assert "Drift correction is held" in out and "command:marker" in out and "Last 1 event(s) in the journal" in out
    code, out, err = cli("--config", path, "--secrets", "", "status", "--json")
    status = json.loads(out)
    assert code == EXIT_CONFIG and status["config_refused"]["problem"] == sentence
    assert status["holds"]["held"] is True and status["pending"][0]["id"] == REBOOT_ID


def test_status_with_an_invalid_but_trusted_config_reads_the_files_it_names(rig_factory):
    rig = rig_factory([dict(REBOOT, cancel_at=20)])
    path = rig.write_config()
    run_lifecycle(rig, 5)
    path = rig.write_config(poll_intervall=3)  # a typo: refused, but root's own file still says where things are
    code, out, err = cli("--config", path, "--secrets", "", "status")
    assert code == EXIT_CONFIG and "poll_intervall" in err
    assert out.startswith("!!! THE CONFIG IS REFUSED") and "from the files it names" in out
    assert "Pending events: 1" in out and "Drift correction is held" in out and "command:marker" in out


def test_check_config(rig_factory):
    rig = rig_factory([])
    path = rig.write_config(approval={"rules": [{"name": "freeze", "when": "EventType=='Freeze'"}]})
    rig.hook("pre", "10-drain")
    code, out, err = cli("--config", path, "check-config")
    assert code == 0, err
    assert "approval rules: freeze (EventType=='Freeze')" in out and "hold targets: command:marker" in out
    assert "hooks: pre 1, post 0" in out
    code, out, err = cli("--config", path, "check-config", "--json")
    assert json.loads(out)["config"]["approval"]["rules"][0]["name"] == "freeze"
    os.chmod(str(rig.tmp / "hooks" / "pre" / "10-drain"), 0o777)
    code, out, err = cli("--config", path, "check-config")
    assert code == 1 and "refused:" in out
    path = rig.write_config(approval={"rules": [{"name": "typo", "when": "EventTyp=='Freeze'"}]})
    code, out, err = cli("--config", path, "check-config")
    assert code == EXIT_CONFIG and "approval.rules: rule typo: EventTyp is not a key of an event" in err


def test_check_config_and_status_never_show_the_webhook_url_and_warn_while_it_is_in_the_config(rig_factory):
    rig = rig_factory([])
    url = "https://hooks.example.net/services/T0KEN-PATH?sig=QUERY-T0KEN"
    secrets = rig.tmp / "etc" / "secrets.json"
    secrets.write_text(json.dumps({"webhook_url": url}))
    os.chmod(str(secrets), 0o600)
    path = rig.write_config(notify={"webhook": {}})
    for argv in (("check-config",), ("check-config", "--json"), ("status",), ("status", "--json")):
        code, out, err = cli("--config", path, "--secrets", str(secrets), *argv)
        assert code == 0 and err == "", (argv, err)
        assert "T0KEN" not in out + err and "/services" not in out + err, argv
    assert json.loads(cli("--config", path, "--secrets", str(secrets), "check-config", "--json")[1])["config"][
        "notify"]["webhook"]["url"] == "https://hooks.example.net/..."
    os.unlink(str(secrets))
    path = rig.write_config(notify={"webhook": {"url": url}})  # where older roles put it: still works
    for argv in (("check-config",), ("check-config", "--json"), ("status",)):
        code, out, err = cli("--config", path, "--secrets", str(secrets), *argv)
        assert code == 0 and "T0KEN" not in out + err, argv
        assert "warning: %s: notify.webhook.url: the config file may be read by every user" % path in err, argv
        assert "move the URL to %s (0600) as webhook_url" % secrets in err


def test_usage_errors():
    assert cli()[0] == 2
    assert cli("explode")[0] == 2
    code, dummy, err = cli("--config", "/nonexistent/watcher.json", "status")
    assert code == EXIT_CONFIG and "does not exist" in err


def test_run_until_asked_to_stop(rig_factory, monkeypatch):
    rig = rig_factory([REBOOT])
    path = rig.write_config()
    options = rig.daemon_options()
    options["sleep"] = rig.advance
    del options["logger"]  # run() logs to the stderr it was given

    class Daemon(cli_mod.Daemon):
        """Asks itself to stop after six polls, as SIGTERM would, without touching this process's handlers."""

        def tick(self):
            delay = super(Daemon, self).tick()
            if self.metrics.get("polls_total") >= 6:
                self.request_stop()
            return delay

        def run(self, install_signals=True):
            return super(Daemon, self).run(install_signals=False)

    monkeypatch.setattr(cli_mod, "Daemon", Daemon)
    code, dummy, err = cli("--config", path, "run", daemon_options=options)
    assert code == 0, err
    assert rig.marks() == ["hold %s" % REBOOT_ID]  # held, and still held after the stop
    assert "event Reboot %s: held" % REBOOT_ID in err and "watcher: stopped" in err


def test_run_tells_systemd_it_is_ready_once_the_config_is_loaded(rig_factory, monkeypatch):
    """The unit is Type=notify: `systemctl start` waits for READY=1, so a daemon that exits before (a refused config,
    exit 78) fails the start instead of looking started."""
    rig = rig_factory([REBOOT])
    path = rig.write_config()
    options = rig.daemon_options()
    options["sleep"] = rig.advance
    del options["logger"]
    directory = tempfile.mkdtemp(prefix="notify-")  # short: a unix socket path has at most 107 bytes
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.path.join(directory, "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(directory, "notify"))
        stopped = []

        class Daemon(cli_mod.Daemon):
            def tick(self):
                self.request_stop()
                stopped.append(True)
                return super(Daemon, self).tick()

            def run(self, install_signals=True):
                return super(Daemon, self).run(install_signals=False)

        monkeypatch.setattr(cli_mod, "Daemon", Daemon)
        os.chmod(path, 0o664)
        assert cli("--config", path, "run", daemon_options=options)[0] == EXIT_CONFIG
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # refused: never said it was ready
            sock.recv(4096)
        os.chmod(path, 0o644)
        code, dummy, err = cli("--config", path, "run", daemon_options=options)
        assert code == 0, err
        assert sock.recv(4096).decode().splitlines()[0] == "READY=1"
        assert sock.recv(4096) == b"STOPPING=1" and stopped
        sock.close()
    finally:
        shutil.rmtree(directory)


def test_the_launcher_runs_the_installed_library(tmp_path, rig_factory):
    """The role copies plugins/module_utils (minus ansible_support.py) to <libdir>/imds_scheduled_events."""
    libdir = tmp_path / "lib"
    package = libdir / "imds_scheduled_events"
    shutil.copytree(os.path.join(ROOT, "plugins", "module_utils"), str(package),
                    ignore=shutil.ignore_patterns("ansible_support.py", "__pycache__"))
    rig = rig_factory([])
    path = rig.write_config()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IMDS_SE_LIBDIR": str(libdir),
           "IMDS_SE_PYTHON": sys.executable, "PYTHONPATH": "/nonexistent"}
    proc = subprocess.run([os.path.join(ROOT, "roles", "watcher", "files", "bin", "imds-watcher"), "--config", path,
                           "--secrets", "", "check-config"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    if UID == 0:
        assert proc.returncode == 0, proc.stderr
        assert "is valid" in proc.stdout
    else:  # the launcher trusts only root's files
        assert proc.returncode == EXIT_CONFIG and "owned by uid" in proc.stderr
    proc = subprocess.run([os.path.join(ROOT, "roles", "watcher", "files", "bin", "imds-watcher"), "--help"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "check-config" in proc.stdout


def test_the_daemons_log_lines_carry_event_data_escaped():
    """`imds-watcher run` logs to journald through stderr: a newline in an event field would start a forged line."""
    record = logging.LogRecord("imds-watcher", logging.INFO, __file__, 1, "event %s: %s",
                               ("Reboot\nERROR forged", "\x1b[2J\u202e\udcff"), None)
    assert cli_mod.PrintableMessages().filter(record)
    assert record.getMessage() == "event Reboot\\nERROR forged: \\x1b[2J\\u202e\\udcff"
