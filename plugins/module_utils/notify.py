# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Deliver an alert: email over SMTP and a JSON webhook.

TLS certificates are verified unless the caller turns that off explicitly. Secrets
(the SMTP password, the webhook's secret header value) are never part of an error
message: every message leaving this file goes through `redact()`. Nothing here
imports ansible. The mail modules (email.policy, smtplib: 0.7 MB) are imported
when a mail is built, so a watcher without a mail channel never loads them.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request

SECURITY = ("none", "starttls", "tls")
MASK = "********"
MAX_ERROR_BODY = 300


class DeliveryError(Exception):
    """An alert could not be delivered; the message is safe to show (secrets removed)."""


def redact(text, secrets):
    text = str(text)
    for secret in secrets:
        if secret:
            text = text.replace(str(secret), MASK)
    return text


def tls_context(validate_certs=True, ca_path=None):
    if not validate_certs:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_path or None)


def build_email(sender, recipients, subject_line, body):
    import email.message  # pylint: disable=import-outside-toplevel
    import email.policy  # pylint: disable=import-outside-toplevel
    import email.utils  # pylint: disable=import-outside-toplevel
    # Long subjects stay on one line (RFC 5322 allows 998 characters), rather than folding into a leading space.
    message = email.message.EmailMessage(policy=email.policy.SMTP.clone(max_line_length=998))
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject_line
    message["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain="imds-scheduled-events")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


def send_email(settings, subject_line, body, smtp=None, smtp_ssl=None):
    """settings: host, port, security (none|starttls|tls), username, password, sender, to, timeout,
    validate_certs, ca_path. Returns the accepted recipients. smtp, smtp_ssl: smtplib's classes unless given."""
    import smtplib  # pylint: disable=import-outside-toplevel
    smtp = smtp or smtplib.SMTP
    smtp_ssl = smtp_ssl or smtplib.SMTP_SSL
    password = settings.get("password")
    secrets = [password]
    security = settings.get("security") or "none"
    if security not in SECURITY:
        raise DeliveryError("email security must be one of %s, not %r" % (", ".join(SECURITY), security))
    recipients = [r for r in settings.get("to") or [] if r]
    if not settings.get("host") or not recipients or not settings.get("sender"):
        raise DeliveryError("email needs host, sender and at least one recipient")
    if settings.get("username") and security == "none":
        raise DeliveryError("refusing to send the SMTP password over an unencrypted connection: "
                            "set security to starttls or tls")
    message = build_email(settings["sender"], recipients, subject_line, body)
    host = settings["host"]
    port = int(settings.get("port") or (465 if security == "tls" else 25))
    timeout = float(settings.get("timeout") or 30)
    context = None
    if security != "none":
        context = tls_context(settings.get("validate_certs", True), settings.get("ca_path"))
    where = "SMTP server %s:%d" % (host, port)
    try:
        if security == "tls":
            connection = smtp_ssl(host, port, timeout=timeout, context=context)
        else:
            connection = smtp(host, port, timeout=timeout)
        try:
            connection.ehlo_or_helo_if_needed()
            if security == "starttls":
                if not connection.has_extn("starttls"):
                    raise DeliveryError("%s does not offer STARTTLS" % where)
                connection.starttls(context=context)
                connection.ehlo()
            if settings.get("username"):
                connection.login(settings["username"], password or "")
            refused = connection.send_message(message)
        finally:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()
    except DeliveryError:
        raise
    except ssl.SSLError as exc:
        raise DeliveryError(redact("TLS with %s failed: %s" % (where, exc), secrets))
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(redact("%s refused the login of %s: %s %s"
                                   % (where, settings.get("username"), exc.smtp_code, _smtp_text(exc)), secrets))
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(redact("%s refused every recipient: %s" % (where, ", ".join(exc.recipients)), secrets))
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(redact("%s answered %s %s" % (where, exc.smtp_code, _smtp_text(exc)), secrets))
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(redact("cannot send email through %s: %s" % (where, exc), secrets))
    return [r for r in recipients if r not in (refused or {})]


def _smtp_text(exc):
    text = exc.smtp_error
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text)[:MAX_ERROR_BODY]


def post_webhook(settings, payload, opener=None):
    """settings: url, secret_header, secret, headers, validate_certs, ca_path, timeout, use_proxy.
    Returns the HTTP status (2xx)."""
    secret = settings.get("secret")
    secrets = [secret]
    url = settings.get("url")
    if not url or not str(url).lower().startswith(("https://", "http://")):
        raise DeliveryError("the webhook URL must start with https:// or http://")
    problem = webhook_url_problem(url)
    if problem:
        raise DeliveryError(problem)
    secrets.extend(url_secrets(url))
    body = json.dumps(payload, sort_keys=True).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "imds.scheduled_events fleet_report"}
    headers.update(dict((str(k), str(v)) for k, v in (settings.get("headers") or {}).items()))
    if secret:
        headers[settings.get("secret_header") or "X-Webhook-Secret"] = str(secret)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    if opener is None:
        handlers = [_NoRedirect(), urllib.request.HTTPSHandler(context=tls_context(settings.get("validate_certs", True),
                                                                                   settings.get("ca_path")))]
        if not settings.get("use_proxy", True):
            handlers.append(urllib.request.ProxyHandler({}))
        opener = urllib.request.build_opener(*handlers)
    where = "webhook %s" % safe_url(url)
    try:
        with opener.open(request, timeout=float(settings.get("timeout") or 30)) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        excerpt = exc.read(MAX_ERROR_BODY).decode("utf-8", "replace") if exc.fp else ""
        raise DeliveryError(redact("%s answered %s: %s" % (where, exc.code, " ".join(excerpt.split())), secrets))
    except urllib.error.URLError as exc:
        raise DeliveryError(redact("cannot reach %s: %s" % (where, exc.reason), secrets))
    except (OSError, socket.timeout, ssl.SSLError) as exc:
        raise DeliveryError(redact("cannot reach %s: %s" % (where, exc), secrets))
    if not 200 <= status < 300:
        raise DeliveryError("%s answered %s" % (where, status))
    return status


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the secret header to wherever it points: refuse it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, "redirect to elsewhere refused", headers, fp)


def webhook_url_problem(url):
    """Why `url` cannot be a webhook URL, or None. Credentials in it would be sent in clear to a proxy and
    land in logs; the secret header is the supported way."""
    try:
        parts = urllib.parse.urlsplit(str(url))
        hostname, dummy = parts.hostname, parts.port  # .port raises ValueError on a bad port
    except ValueError as exc:
        return "the webhook URL %s cannot be parsed: %s" % (safe_url(url), exc)
    if parts.username is not None or parts.password is not None:
        return "the webhook URL %s carries user:password@; put the credential in the secret header instead" \
            % safe_url(url)
    if not hostname:
        return "the webhook URL %s has no host" % safe_url(url)
    return None


def url_secrets(url):
    """The parts of a webhook URL that may be a token (chat webhooks carry theirs in the path or query), longest
    first: redacted from every message, even when the server echoes them back."""
    try:
        parts = urllib.parse.urlsplit(str(url))
    except ValueError:
        return [str(url)]
    found = [str(url)]
    if len(parts.path) > 1:
        found.append(parts.path)
        found.extend(piece for piece in parts.path.split("/") if len(piece) >= 8)
    if parts.query:
        found.append(parts.query)
        found.extend(value for dummy, value in urllib.parse.parse_qsl(parts.query) if len(value) >= 8)
    return sorted(set(found), key=len, reverse=True)


def safe_url(url):
    """Scheme, host and port only: chat webhooks carry their token in the path."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = "%s:%d" % (host, parts.port)
    except ValueError:
        return "(unparseable URL)"
    return "%s://%s/..." % (parts.scheme, host)
