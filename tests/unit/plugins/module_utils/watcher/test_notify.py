# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Notifications against real servers on loopback: a webhook receiver (http.server) and an SMTP
server (aiosmtpd) with STARTTLS and AUTH. Secrets never appear in errors; failures never raise."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import config as c
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.notify import (
    Email, Notifier, Redactor, Syslog, Webhook, summary_line)
from ansible_collections.imds.scheduled_events.tests.unit.utils.loopback import refused_port, smtp_controller
from ansible_collections.imds.scheduled_events.tests.unit.utils.tls import self_signed

TRANSITION = {"vm": "myvm", "event_id": "4CAEA225-A741-474D-A72E-428C86FCD853", "event_type": "Reboot",
              "transition": "held", "state": "held", "detail": "held: puppet, systemd:ansible-pull.timer",
              "event": {"EventId": "4CAEA225-A741-474D-A72E-428C86FCD853", "EventType": "Reboot"}}


class Receiver(object):
    """A webhook endpoint on 127.0.0.1 that records what it gets and answers `status`."""

    def __init__(self, status=200):
        self.requests = []
        self.status = status
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802  pylint: disable=invalid-name
                length = int(self.headers.get("Content-Length", "0"))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": json.loads(self.rfile.read(length))})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # pylint: disable=arguments-differ
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/hook" % self.server.server_address[1]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def webhook_settings(url, **extra):
    settings = {"url": url, "headers": {"X-Team": "ops"}, "secret_header": None, "verify_tls": True, "ca_file": None,
                "use_proxy": False, "timeout": 60}
    settings.update(extra)
    return settings


def test_webhook_posts_json_with_the_secret_header_and_ignores_proxy_variables(receiver, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a proxy that is not there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    hook = Webhook(webhook_settings(receiver.url, secret_header="X-Webhook-Token"), secret="s3cret")
    Notifier([hook]).send(TRANSITION)
    request = receiver.requests[0]
    assert request["body"] == TRANSITION and request["path"] == "/hook"
    assert request["headers"]["X-Webhook-Token"] == "s3cret" and request["headers"]["X-Team"] == "ops"
    assert request["headers"]["Content-Type"] == "application/json"


def test_webhook_failures_are_counted_redacted_and_never_raise():
    with refused_port() as port:
        url = "http://user:pa55@127.0.0.1:%d/hook?token=t0ken" % port
        hook = Webhook(webhook_settings(url, secret_header="X-T"), secret="s3cret")
        notifier = Notifier([hook])
        failed = notifier.send(TRANSITION)
    assert failed and failed[0][0] == "webhook"
    assert "t0ken" not in failed[0][1] and "pa55" not in failed[0][1]
    assert notifier.failures == {"webhook": 1}


def test_the_url_from_the_secrets_file_is_used_and_never_shown_whatever_fails(receiver):
    url = receiver.url + "/T0KEN-in-the-path?token=QUERY-T0KEN"
    config = c.parse({"notify": {"webhook": {"headers": {"X-Team": "ops"}, "timeout": 60}, "syslog": False}},
                     secrets={"webhook_url": url})
    assert Notifier.from_config(config).send(TRANSITION) == []
    assert receiver.requests[0]["path"] == "/hook/T0KEN-in-the-path?token=QUERY-T0KEN"

    class Broken(object):
        def open(self, request, timeout):
            raise RuntimeError("library bug while posting to %s" % request.full_url)

    failed = Notifier.from_config(config, opener=Broken()).send(TRANSITION)
    assert failed and "library bug while posting to" in failed[0][1] and "T0KEN" not in failed[0][1]


def test_webhook_error_status_is_a_failure():
    server = Receiver(status=503)
    try:
        failed = Notifier([Webhook(webhook_settings(server.url))]).send(TRANSITION)
    finally:
        server.stop()
    assert "answered 503" in failed[0][1]


def test_redactor_replaces_longest_first():
    redact = Redactor(["abc", "abcdef", None, ""])
    assert redact("x abcdef abc y") == "x *** *** y"


@pytest.fixture
def smtp_server(tmp_path):
    import ssl
    from aiosmtpd import controller as controller_mod
    from aiosmtpd.smtp import AuthResult

    cert, key = self_signed(str(tmp_path), "smtp")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    class Handler(object):
        def __init__(self):
            self.messages = []
            self.logins = []
            self.port = None  # set when the server has bound its ephemeral port

        async def handle_DATA(self, server, session, envelope):  # noqa: N802  pylint: disable=invalid-name
            self.messages.append(envelope)
            return "250 OK"

    handler = Handler()

    def authenticator(server, session, envelope, mechanism, auth_data):  # pylint: disable=unused-argument
        handler.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"hunter2", handled=False)

    controller = smtp_controller(controller_mod, handler, tls_context=context, require_starttls=True,
                                 authenticator=authenticator, auth_required=True)
    controller.start()
    handler.ca_file = cert
    yield handler
    controller.stop()


def email_settings(server, **extra):
    settings = {"host": "127.0.0.1", "port": server.port, "starttls": True, "username": "watcher",
                "from": "watcher@myvm.example", "to": ["ops@example.net", "oncall@example.net"],
                "ca_file": server.ca_file, "timeout": 60}
    settings.update(extra)
    return settings


def test_email_over_starttls_with_auth(smtp_server):
    failed = Notifier([Email(email_settings(smtp_server), password="hunter2")]).send(TRANSITION)
    assert failed == []
    assert smtp_server.logins == [(b"watcher", b"hunter2")]
    envelope = smtp_server.messages[0]
    assert envelope.rcpt_tos == ["ops@example.net", "oncall@example.net"]
    text = envelope.content.decode("utf-8")
    assert "Subject: [imds-watcher] myvm Reboot 4CAEA225-A741-474D-A72E-428C86FCD853: held" in text
    assert '"transition": "held"' in text


def test_email_refuses_an_untrusted_certificate_and_a_wrong_password(smtp_server):
    notifier = Notifier([Email(email_settings(smtp_server, ca_file=None), password="hunter2")])
    failed = notifier.send(TRANSITION)
    assert failed and "CERTIFICATE_VERIFY_FAILED" in failed[0][1]
    notifier = Notifier([Email(email_settings(smtp_server), password="wrong-password")])
    failed = notifier.send(TRANSITION)
    assert failed and "wrong-password" not in failed[0][1] and "refused the login" in failed[0][1]
    assert smtp_server.messages == []


def test_syslog_line_and_from_config():
    lines = []
    config = c.parse({"notify": {"syslog": True}})
    notifier = Notifier.from_config(config, syslog_writer=lines.append)
    assert [ch.name for ch in notifier.channels] == ["syslog"]
    notifier.send(TRANSITION)
    assert lines == [summary_line(TRANSITION)]
    assert lines[0].startswith("myvm Reboot 4CAEA225-A741-474D-A72E-428C86FCD853: held (")


def test_one_failing_channel_does_not_stop_the_others():
    def broken(line):
        raise RuntimeError("syslog socket gone")

    lines = []
    notifier = Notifier([Syslog(broken), Syslog(lines.append)])
    failed = notifier.send(TRANSITION)
    assert failed == [("syslog", "syslog socket gone")] and len(lines) == 1


def test_from_config_builds_every_channel_with_its_secret():
    config = c.parse({"notify": {"webhook": {"secret_header": "X-T"},
                                 "email": {"host": "smtp.example.net", "username": "u", "from": "f@x", "to": ["t@x"]},
                                 "syslog": False}},
                     secrets={"webhook_secret": "s3cret", "smtp_password": "hunter2",
                              "webhook_url": "https://hooks.example.net/services/T0KEN-9f8e"})
    notifier = Notifier.from_config(config)
    assert [ch.name for ch in notifier.channels] == ["webhook", "email"]
    assert notifier.channels[0].url == "https://hooks.example.net/services/T0KEN-9f8e"
    assert notifier.redact("s3cret hunter2 /services/T0KEN-9f8e") == "*** *** ***"
    assert not notifier.channels[0].settings.get("use_proxy")  # proxies ignored: see the webhook test above
