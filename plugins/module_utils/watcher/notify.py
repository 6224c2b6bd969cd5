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

import json

try:
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported
    urlsplit = None

try:
    import syslog
except ImportError:  # pragma: no cover - not on Linux
    syslog = None

from .. import notify as transport
from ..hold.common import printable

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


def summary_line(transition):
    """One line for syslog and the mail's subject: every value printable() (no line break, control character or
    bidi override of an event's fields reaches them raw), the detail's runs of spaces as one."""
    return "%s %s %s: %s (%s)" % tuple(printable(v) for v in (
        transition.get("vm") or "(this VM, name unknown)", transition.get("event_type") or "event",
        transition.get("event_id"), transition.get("transition"),
        " ".join(str(transition.get("detail") or "").split())[:300]))


class Webhook(object):
    """The transition as JSON, POSTed by the collection's one webhook sender (module_utils/notify.py).
    `url` comes from the secrets file (a chat webhook's URL is its token); settings["url"] is an older config's."""

    name = "webhook"

    def __init__(self, settings, secret=None, opener=None, url=None):
        self.settings = settings
        self.url = url or settings.get("url")
        self._secret = secret
        self._opener = opener

    def secrets(self):
        found = [self._secret, urlsplit(self.url).password] + transport.url_secrets(self.url)
        found.extend(v for k, v in self.settings.get("headers", {}).items() if k.lower() == "authorization")
        return [s for s in found if s]

    def send(self, transition):
        settings = self.settings
        headers = {"User-Agent": USER_AGENT}
        headers.update(settings.get("headers") or {})
        try:
            transport.post_webhook({
                "url": self.url, "headers": headers, "secret": self._secret,
                "secret_header": settings.get("secret_header"), "validate_certs": settings.get("verify_tls", True),
                "ca_path": settings.get("ca_file"), "timeout": settings.get("timeout", 10),
                "use_proxy": bool(settings.get("use_proxy"))}, transition, opener=self._opener)
        except transport.DeliveryError as exc:
            raise NotifyError(str(exc))


class Email(object):
    """One mail per transition, sent by the collection's one SMTP sender (module_utils/notify.py)."""

    name = "email"

    def __init__(self, settings, password=None, smtp=None):
        self.settings = settings
        self._password = password
        self.smtp = smtp

    def secrets(self):
        return [self._password] if self._password else []

    def send(self, transition):
        settings = self.settings
        delivery = {
            "host": settings["host"], "port": settings.get("port", 25), "sender": settings["from"],
            "to": settings["to"], "username": settings.get("username"), "password": self._password,
            "security": "starttls" if settings.get("starttls", True) else "none",
            "ca_path": settings.get("ca_file"), "timeout": settings.get("timeout", 30)}
        body = "\n".join([summary_line(transition), "", json.dumps(transition, indent=2, sort_keys=True)])
        options = {"smtp": self.smtp} if self.smtp is not None else {}
        try:
            transport.send_email(delivery, "[imds-watcher] " + summary_line(transition)[:200], body, **options)
        except transport.DeliveryError as exc:
            raise NotifyError(str(exc))


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
    def from_config(cls, config, logger=None, opener=None, smtp=None, syslog_writer=None):
        settings = config["notify"]
        channels = []
        if settings.get("webhook"):
            channels.append(Webhook(settings["webhook"], config.secret("webhook_secret"), opener=opener,
                                    url=config.webhook_url()))
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
