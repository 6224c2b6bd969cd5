# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Least privilege, as the daemon really runs: as root, with the default trust (files owned by root).

Why: the watcher runs as root and executes hooks and hold commands named in its config, so a config
or hook that anyone but root can change is a privilege escalation; its secrets must never reach a log,
the journal or the state; its webhook must not talk to an unverified TLS peer; and IMDS traffic must
never leave the VM through a proxy. test_config.py and test_hooks.py cover the checks with a pretend
owner uid; these tests chown files to another uid for real and go through the CLI and the daemon.
"""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import re
import ssl
import threading

import pytest
import yaml

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import cli
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import config as config_mod
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.daemon import Daemon
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.notify import Notifier
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils import test_notify
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.conftest import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root, as the daemon runs")

pki = test_notify.pki  # the CA and server certificate fixture, shared
server_context = test_notify.server_context
OTHER_UID = 4242
FREEZE_ID = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
FREEZE = {"id": FREEZE_ID, "type": "Freeze", "resources": ["myvm"], "at": 1, "notice": 60, "started_for": 3,
          "duration": 5}
RULES = {"rules": [{"name": "short-freeze", "when": "EventType=='Freeze' && DurationInSeconds < `10`"}]}
SECRETS = {"webhook_secret": "whsecret-7f3a9c", "smtp_password": "smtppw-2b8e1d"}
URL_SECRETS = ("qtoken-99bb", "qsig-55aa")


class Records(logging.Handler):
    """Every record of every logger, formatted as the daemon's handler would."""

    def __init__(self):
        super(Records, self).__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append("%s %s" % (record.levelname, record.getMessage()))


@pytest.fixture
def records():
    handler = Records()
    root = logging.getLogger()
    loggers = [root] + [logging.getLogger(n) for n in ("imds-watcher", "imds-watcher-test")]
    levels = [(lg, lg.level) for lg in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in levels:
        logger.removeHandler(handler)
        logger.setLevel(level)


def write(path, data, mode=0o644):
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    os.chmod(str(path), mode)
    return str(path)


# --- config and secrets files ---------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ("config owned by another uid", "is owned by uid %d, not uid 0" % OTHER_UID),
    ("config group-writable", "may be written by group or others"),
    ("config world-writable", "may be written by group or others"),
    ("directory owned by another uid", "the directory of the config file"),
    ("directory world-writable", "the directory of the config file"),
    ("secrets readable by others", "may be read by group or others"),
    ("secrets owned by another uid", "is owned by uid %d, not uid 0" % OTHER_UID),
])
@pytest.mark.parametrize("action", ["run", "check-config"])
def test_untrusted_config_is_refused_with_one_clear_line_and_exit_78(tmp_path, change, message, action):
    etc = tmp_path / "etc"
    etc.mkdir()
    os.chmod(str(etc), 0o755)
    settings = {"vm_name": "myvm", "state_dir": str(tmp_path / "state"), "endpoint": "http://127.0.0.1:9"}
    path = write(etc / "watcher.json", settings)
    secrets = write(etc / "secrets.json", {"webhook_secret": SECRETS["webhook_secret"]}, 0o600)
    target = {"config": path, "directory": str(etc), "secrets": secrets}[change.split()[0]]
    if "another uid" in change:
        os.chown(target, OTHER_UID, -1)
    elif "group-writable" in change:
        os.chmod(target, 0o664)
    elif "world-writable" in change:
        os.chmod(target, 0o777 if os.path.isdir(target) else 0o646)
    else:
        os.chmod(target, 0o644)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cli.main(["--config", path, "--secrets", secrets, action], stdout=stdout, stderr=stderr)  # default trust
    assert code == cli.EXIT_CONFIG
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1 and message in lines[0] and target in lines[0], lines
    assert SECRETS["webhook_secret"] not in stderr.getvalue() + stdout.getvalue()
    assert not (tmp_path / "state").exists(), "nothing ran"


# --- hooks ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("change", ["hook owned by another uid", "hook group-writable", "hook world-writable",
                                    "directory owned by another uid", "directory world-writable"])
def test_an_untrusted_hook_is_refused_logged_and_blocks_approval(rig_factory, records, change):
    rig = rig_factory([FREEZE])
    rig.hook("pre", "10-drain")
    hook = str(rig.tmp / "hooks" / "pre" / "10-drain")
    target = hook if change.startswith("hook") else os.path.dirname(hook)
    if "another uid" in change:
        os.chown(target, OTHER_UID, -1)
    else:
        os.chmod(target, (0o775 if "group" in change else 0o757) if target == hook else 0o777)
    options = rig.daemon_options()
    daemon = Daemon(rig.config(approval=RULES), trust=None, **options)  # the default: root only
    daemon.start()
    for dummy in range(4):
        rig.tick(daemon)
    assert rig.hooks_ran() == [], "the refused hook never ran"
    assert daemon.machine.record(FREEZE_ID)["state"] == "blocked"
    assert rig.sim.world.approvals == []
    refused = [line for line in records.lines if line.startswith(("ERROR", "WARNING")) and "refused" in line]
    assert refused and any(target in line for line in refused), records.lines


# --- secrets never logged -------------------------------------------------------------------------

class EchoHandler(http.server.BaseHTTPRequestHandler):
    """A webhook that fails and echoes back everything it was sent, secret header included."""

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        echo = ("refused: %s %s %s" % (self.path, dict(self.headers), self.rfile.read(length).decode())).encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(echo)))
        self.end_headers()
        self.wfile.write(echo)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_webhook_and_smtp_secrets_never_reach_a_log_the_journal_or_the_state(rig_factory, records, echo_server):
    rig = rig_factory([FREEZE])
    etc = rig.tmp / "etc"
    settings = rig.settings(approval=RULES, log_level="DEBUG", notify={
        "syslog": True,
        "webhook": {"url": "http://%s/services/T0?token=%s&sig=%s" % (echo_server, URL_SECRETS[0], URL_SECRETS[1]),
                    "secret_header": "X-Secret", "verify_tls": True, "timeout": 60},
        "email": {"host": "127.0.0.1", "port": 9, "username": "watcher", "starttls": True, "from": "w@example.org",
                  "to": ["ops@example.org"], "timeout": 5}})
    path = write(etc / "watcher.json", settings)
    secrets = write(etc / "secrets.json", SECRETS, 0o600)
    config = config_mod.load(path, secrets)  # the default trust: root
    options = rig.daemon_options()
    options.pop("notifier")
    syslog_lines = []
    daemon = Daemon(config, notifier=Notifier.from_config(config, logger=rig.logger, syslog_writer=syslog_lines.append),
                    **options)
    daemon.start()
    for dummy in range(12):
        rig.tick(daemon)
    assert daemon.notifier.failures.get("webhook", 0) >= 3 and daemon.notifier.failures.get("email", 0) >= 3
    assert rig.marks()[-1].startswith("release")
    everything = "\n".join(records.lines + syslog_lines + [repr(config), repr(config.secrets)])
    for name in ("state", "metrics", "holds"):
        for entry in os.listdir(str(rig.tmp / name)):
            with open(str(rig.tmp / name / entry), "rb") as handle:
                everything += "\n" + handle.read().decode("utf-8", "replace")
    assert "answered 500" in everything and "notify: webhook failed" in everything  # the echo was logged...
    for secret in list(SECRETS.values()) + list(URL_SECRETS):
        assert secret not in everything, "%s leaked" % secret  # ...without a secret in it


# --- TLS ------------------------------------------------------------------------------------------

def test_webhook_tls_is_verified_by_default(rig_factory, records, pki):  # noqa: F811  pylint: disable=redefined-outer-name
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_context(pki).wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "https://127.0.0.1:%d/hook" % server.server_address[1]
    try:
        rig = rig_factory([FREEZE])
        for webhook, delivered in (({"url": url}, False), ({"url": url, "ca_file": pki["ca"]}, True)):
            config = rig.config(notify={"syslog": False, "webhook": webhook})
            notifier = Notifier.from_config(config, logger=rig.logger)
            before = len(received)
            failed = notifier.send({"event_id": FREEZE_ID, "transition": "held", "event": {}})
            assert (failed == []) is delivered and (len(received) > before) is delivered
            if not delivered:
                assert re.search("CERTIFICATE_VERIFY_FAILED|certificate verify failed", failed[0][1]), failed
                assert any("notify: webhook failed" in line and "certificate" in line for line in records.lines)
    finally:
        server.shutdown()
        server.server_close()
    assert ssl.OPENSSL_VERSION  # the verification above was OpenSSL's, through the stdlib


# --- IMDS never through a proxy -------------------------------------------------------------------

def test_the_daemon_never_sends_imds_traffic_through_a_proxy(rig_factory, monkeypatch):
    dead = "http://127.0.0.1:9"  # nothing listens there: a request through it would fail
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    rig = rig_factory([FREEZE])
    daemon = Daemon(rig.config(approval=RULES, vm_name=None), trust=None, **rig.daemon_options())
    daemon.start()
    for dummy in range(4):
        rig.tick(daemon)
    assert daemon.failures == 0 and daemon.metrics.get("imds_errors_total") == 0
    paths = [entry["path"].split("?")[0] for entry in rig.sim.request_log.query(None, None, None)]
    assert paths[0] == "/metadata/instance/compute/name" and "/metadata/scheduledevents" in paths
    assert rig.sim.world.approvals and rig.marks() == ["hold %s" % FREEZE_ID]


# --- the role -------------------------------------------------------------------------------------

def _tasks(items):
    for item in items or []:
        yield item
        for key in ("block", "rescue", "always"):
            yield from _tasks(item.get(key))


def test_every_role_task_that_touches_a_secret_has_no_log():
    pattern = re.compile(r"_watcher_secrets\b(?!_file)|watcher_webhook_secret|watcher_smtp_password"
                         r"|watcher_notify_webhook\b")
    directory = os.path.join(ROOT, "roles", "watcher", "tasks")
    touching = []
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name)) as handle:
            for task in _tasks(yaml.safe_load(handle)):
                args = dict((k, v) for k, v in task.items() if k not in ("name", "when", "block", "rescue", "always"))
                if pattern.search(json.dumps(args)):
                    touching.append((name, task.get("name")))
                    assert task.get("no_log") is True, "%s: %r handles a secret without no_log" % (name, task.get("name"))
    assert touching, "the role writes its secrets somewhere; this test must see where"
