# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Notifications, once per transition: a webhook, an email and a syslog line.

A failing channel is logged and counted and never stops the machine: the hold
and the release matter more than the message about them. Secrets (the webhook's
secret header, the SMTP password) and URL credentials are redacted from every
error and log line. The webhook ignores HTTP_PROXY and friends unless the config
says use_proxy, and verifies TLS unless it says otherwise.
"""

from __future__ import annotations

import email.message
import email.utils
import json
import smtplib
import ssl
import traceback

try:
    from urllib.parse import urlsplit, urlunsplit
except ImportError:  # pragma: no cover - Python 2 is not supported
    urlsplit = urlunsplit = None

try:
    import requests
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:
    requests = None
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

try:
    import syslog
except ImportError:  # pragma: no cover - not on Linux
    syslog = None

USER_AGENT = "imds-watcher"
REDACTED = "***"
MAX_ERROR = 300


class NotifyError(Exception):
    pass


class Redactor(object):
    """Replaces every secret value in a text; the longest first, so no secret leaks in part."""

    def __init__(self, secrets=()):
        self.secrets = sorted(set(s for s in secrets if s), key=len, reverse=True)

    def __call__(self, text):
        text = str(text)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


def safe_url(url):
    """The URL as logs may show it: no user, password, query or fragment (tokens live there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = "%s:%d" % (host, parts.port)
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def summary_line(transition):
    """One line for syslog and the mail's subject."""
    return "%s %s %s: %s (%s)" % (transition.get("vm"), transition.get("event_type") or "event",
                                  transition.get("event_id"), transition.get("transition"),
                                  " ".join(str(transition.get("detail") or "").split())[:300])


class Webhook(object):
    name = "webhook"

    def __init__(self, settings, secret=None, session=None):
        if not HAS_REQUESTS:
            raise NotifyError("the webhook needs the Python library 'requests'")
        self.settings = settings
        self._secret = secret
        self.session = session or requests.Session()
        self.session.trust_env = bool(settings.get("use_proxy"))

    def secrets(self):
        parts = urlsplit(self.settings["url"])
        found = [self._secret, parts.password, parts.query]
        found.extend(v for k, v in self.settings.get("headers", {}).items() if k.lower() == "authorization")
        return [s for s in found if s]

    def send(self, transition):
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
        headers.update(self.settings.get("headers") or {})
        if self.settings.get("secret_header") and self._secret:
            headers[self.settings["secret_header"]] = self._secret
        verify = False
        if self.settings.get("verify_tls", True):
            verify = self.settings.get("ca_file") or True
        options = {} if self.settings.get("use_proxy") else {"proxies": {"http": None, "https": None}}
        try:
            response = self.session.post(self.settings["url"], data=json.dumps(transition, sort_keys=True),
                                         headers=headers, timeout=self.settings.get("timeout", 10), verify=verify,
                                         allow_redirects=False, **options)
        except requests.exceptions.RequestException as exc:
            raise NotifyError("POST %s failed: %s" % (safe_url(self.settings["url"]), type(exc).__name__ + ": " + str(exc)))
        try:
            if not 200 <= response.status_code < 300:
                raise NotifyError("POST %s answered %d %s" % (safe_url(self.settings["url"]), response.status_code,
                                                              response.reason or ""))
        finally:
            response.close()


class Email(object):
    name = "email"

    def __init__(self, settings, password=None, smtp=smtplib.SMTP):
        self.settings = settings
        self._password = password
        self.smtp = smtp

    def secrets(self):
        return [self._password] if self._password else []

    def message(self, transition):
        msg = email.message.EmailMessage()
        msg["Subject"] = "[imds-watcher] " + summary_line(transition)[:200]
        msg["From"] = self.settings["from"]
        msg["To"] = ", ".join(self.settings["to"])
        msg["Date"] = email.utils.formatdate(localtime=False)
        msg["Message-ID"] = email.utils.make_msgid("imds-watcher")
        body = [summary_line(transition), "", json.dumps(transition, indent=2, sort_keys=True)]
        msg.set_content("\n".join(body))
        return msg

    def send(self, transition):
        settings = self.settings
        try:
            with self.smtp(settings["host"], settings["port"], timeout=settings.get("timeout", 30)) as client:
                client.ehlo()
                if settings.get("starttls", True):
                    context = ssl.create_default_context(cafile=settings.get("ca_file"))
                    client.starttls(context=context)
                    client.ehlo()
                if settings.get("username"):
                    client.login(settings["username"], self._password or "")
                client.send_message(self.message(transition))
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise NotifyError("mail through %s:%s failed: %s: %s" % (settings["host"], settings["port"],
                                                                     type(exc).__name__, exc))


class Syslog(object):
    """One line per transition to syslog, which is the journal on systemd machines."""

    name = "syslog"

    def __init__(self, writer=None):
        self.writer = writer or _syslog_writer

    @staticmethod
    def secrets():
        return []

    def send(self, transition):
        self.writer(summary_line(transition))


def _syslog_writer(line):
    if syslog is None:
        raise NotifyError("syslog is not available here")
    syslog.openlog("imds-watcher", syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(syslog.LOG_NOTICE, line)


class Notifier(object):
    """Every configured channel; send() never raises, it returns the failures (already redacted)."""

    def __init__(self, channels=(), logger=None):
        self.channels = list(channels)
        self.logger = logger
        self.failures = {}
        secrets = []
        for channel in self.channels:
            secrets.extend(channel.secrets())
        self.redact = Redactor(secrets)

    @classmethod
    def from_config(cls, config, logger=None, session=None, smtp=smtplib.SMTP, syslog_writer=None):
        settings = config["notify"]
        channels = []
        if settings.get("webhook"):
            channels.append(Webhook(settings["webhook"], config.secret("webhook_secret"), session=session))
        if settings.get("email"):
            channels.append(Email(settings["email"], config.secret("smtp_password"), smtp=smtp))
        if settings.get("syslog"):
            channels.append(Syslog(syslog_writer))
        return cls(channels, logger)

    def send(self, transition):
        failed = []
        for channel in self.channels:
            try:
                channel.send(transition)
            except Exception as exc:  # pylint: disable=broad-except
                # A notification must never stop the machine, whatever the library raised.
                message = self.redact(str(exc))[:MAX_ERROR]
                self.failures[channel.name] = self.failures.get(channel.name, 0) + 1
                failed.append((channel.name, message))
                if self.logger is not None:
                    self.logger.warning("notify: %s failed for %s %s: %s", channel.name, transition.get("event_id"),
                                        transition.get("transition"), message)
        return failed
