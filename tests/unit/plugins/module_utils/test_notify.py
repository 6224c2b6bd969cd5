# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Alert delivery over real loopback sockets: an aiosmtpd server (plain, STARTTLS with login,
SMTPS) and an http.server webhook (HTTP and HTTPS), with a throw-away certificate authority,
so that certificate checks, logins and secret handling are exercised for real."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import notify
from ansible_collections.imds.scheduled_events.plugins.module_utils.notify import DeliveryError
from ansible_collections.imds.scheduled_events.tests.unit.utils.loopback import WebhookReceiver, refused_port, start_mailbox

PASSWORD = "s3cr3t-Pa55word"
SECRET = "whsec-0123456789abcdef"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1, as PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel
    from cryptography.x509.oid import NameOID  # pylint: disable=import-outside-toplevel

    directory = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return dict((k, str(v)) for k, v in paths.items())


def server_context(pki):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki["cert"], pki["key"])
    return context


# --- SMTP ----------------------------------------------------------------------------------


def authenticator(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult, LoginPassword  # pylint: disable=import-outside-toplevel
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"reports" and auth_data.password == \
        PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server(pki):
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    started = []

    def start(mode="plain"):
        options = {}
        if mode == "starttls":
            options = dict(tls_context=server_context(pki), require_starttls=True, authenticator=authenticator,
                           auth_require_tls=True)
        elif mode == "tls":
            options = dict(ssl_context=server_context(pki), authenticator=authenticator, auth_require_tls=False)
        box, controller = start_mailbox(controller_mod, server_hostname="127.0.0.1", **options)
        if mode == "tls":
            # The controller's readiness probe speaks plain SMTP; probe over TLS instead.
            controller._trigger_server = lambda: _probe_tls(box.port)  # pylint: disable=protected-access
        controller.start()
        started.append(controller)
        return box

    yield start
    for controller in started:
        controller.stop()


def _probe_tls(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw) as sock:
            sock.recv(1024)


def settings(port, **extra):
    base = dict(host="127.0.0.1", port=port, security="none", sender="fleet@example.test",
                to=["oncall@example.test"], timeout=60)
    base.update(extra)
    return base


def test_plain_email(smtp_server):
    box = smtp_server()
    accepted = notify.send_email(settings(box.port), "[fleet] 1 new event", "Reboot on vm1\n")
    assert accepted == ["oncall@example.test"] and len(box.messages) == 1
    data = box.messages[0]["data"]
    assert "Subject: [fleet] 1 new event" in data and "Reboot on vm1" in data and "Auto-Submitted: auto-generated" in data
    assert box.messages[0]["from"] == "fleet@example.test" and not box.messages[0]["tls"]


def test_long_subject_stays_on_one_line(smtp_server):
    box = smtp_server()
    subject = "[A fleet with a long name] 7 new events; 5 new holds; 2 hosts newly unreachable; 1 event started"
    notify.send_email(settings(box.port), subject, "body")
    assert "\r\nSubject: %s\r\n" % subject in box.messages[0]["data"].replace("\n", "\r\n").replace("\r\r", "\r")


def test_starttls_with_login_verified_by_our_ca(smtp_server, pki):
    box = smtp_server("starttls")
    notify.send_email(settings(box.port, security="starttls", username="reports", password=PASSWORD,
                               ca_path=pki["ca"]), "subject", "body")
    assert len(box.messages) == 1 and box.messages[0]["tls"] and box.messages[0]["authenticated"]


def test_starttls_refuses_an_unknown_certificate(smtp_server):
    box = smtp_server("starttls")
    with pytest.raises(DeliveryError, match="TLS with SMTP server 127.0.0.1:%d failed" % box.port):
        notify.send_email(settings(box.port, security="starttls"), "subject", "body")
    assert box.messages == []


def test_starttls_without_verification_when_told(smtp_server):
    box = smtp_server("starttls")
    notify.send_email(settings(box.port, security="starttls", validate_certs=False), "subject", "body")
    assert len(box.messages) == 1


def test_wrong_password_is_reported_without_the_password(smtp_server, pki):
    box = smtp_server("starttls")
    wrong = "not-" + PASSWORD
    with pytest.raises(DeliveryError) as info:
        notify.send_email(settings(box.port, security="starttls", username="reports", password=wrong,
                                   ca_path=pki["ca"]), "subject", "body")
    assert "refused the login of reports: 535" in str(info.value) and wrong not in str(info.value)


def test_smtps(smtp_server, pki):
    box = smtp_server("tls")
    notify.send_email(settings(box.port, security="tls", username="reports", password=PASSWORD, ca_path=pki["ca"]),
                      "subject", "body")
    assert len(box.messages) == 1 and box.messages[0]["authenticated"], "logged in over TLS from the start"


def test_server_without_starttls_fails_when_it_is_required(smtp_server):
    box = smtp_server("plain")
    with pytest.raises(DeliveryError, match="does not offer STARTTLS"):
        notify.send_email(settings(box.port, security="starttls"), "subject", "body")


def test_login_over_plain_text_is_refused_before_connecting():
    with pytest.raises(DeliveryError, match="unencrypted"):
        notify.send_email(settings(1, username="reports", password=PASSWORD), "subject", "body")


@pytest.mark.parametrize("bad, message", [
    ({"to": []}, "at least one recipient"),
    ({"host": ""}, "needs host"),
    ({"security": "ssl"}, "must be one of"),
])
def test_bad_email_settings(bad, message):
    with pytest.raises(DeliveryError, match=message):
        notify.send_email(settings(1, **bad), "subject", "body")


def test_connection_refused():
    with refused_port() as port:
        with pytest.raises(DeliveryError, match="cannot send email through SMTP server 127.0.0.1:%d" % port):
            notify.send_email(settings(port), "subject", "body")


def test_errors_never_carry_the_password():
    class Leaky(object):
        def __init__(self, *args, **kwargs):
            raise OSError("server said: bad password %s" % PASSWORD)

    with pytest.raises(DeliveryError) as info:
        notify.send_email(settings(25, security="tls", username="u", password=PASSWORD), "s", "b", smtp_ssl=Leaky)
    assert PASSWORD not in str(info.value) and notify.MASK in str(info.value)


# --- webhook -------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    started = []

    def start(**kwargs):
        started.append(WebhookReceiver(**kwargs))
        return started[-1]

    yield start
    for item in started:
        item.stop()


def hook(url, **extra):
    base = dict(url=url, secret=SECRET, secret_header="X-Fleet-Secret", timeout=60, use_proxy=False)
    base.update(extra)
    return base


def test_webhook_posts_json_with_the_secret_header(receiver):
    srv = receiver()
    status = notify.post_webhook(hook(srv.url + "/services/T0/B0/token", headers={"X-Team": "ops"}),
                                 {"text": "hello", "counts": {"new_events": 1}})
    assert status == 204 and len(srv.requests) == 1
    request = srv.requests[0]
    headers = dict((k.lower(), v) for k, v in request["headers"].items())
    assert request["path"] == "/services/T0/B0/token" and headers["content-type"] == "application/json"
    assert headers["x-fleet-secret"] == SECRET and headers["x-team"] == "ops"
    assert json.loads(request["body"]) == {"text": "hello", "counts": {"new_events": 1}}


def test_webhook_error_keeps_the_token_and_secret_out_of_the_message(receiver):
    srv = receiver(status=500, body=("oops, got %s" % SECRET).encode())
    with pytest.raises(DeliveryError) as info:
        notify.post_webhook(hook(srv.url + "/services/T0/B0/token"), {"text": "x"})
    message = str(info.value)
    assert "answered 500: oops, got %s" % notify.MASK in message
    assert SECRET not in message and "token" not in message and srv.url in message


def test_webhook_token_in_the_path_or_query_is_redacted_even_when_echoed_back(receiver):
    token, key = "T0AAAA/B0BBBB/xoxb1234567890", "k3y-0f-the-hook"
    srv = receiver(status=403, body=("bad token %s for /services/%s?code=%s" % (token, token, key)).encode())
    with pytest.raises(DeliveryError) as info:
        notify.post_webhook(hook("%s/services/%s?code=%s" % (srv.url, token, key)), {"text": "x"})
    message = str(info.value)
    assert "answered 403: bad token" in message
    for piece in (token, "xoxb1234567890", key, "code=" + key):
        assert piece not in message, message


@pytest.mark.parametrize("url, problem", [
    ("https://bot:pa55word@127.0.0.1:1/x", "carries user:password@; put the credential in the secret header"),
    ("https://bot@127.0.0.1:1/x", "carries user:password@"),
    ("https://127.0.0.1:99999/x", "cannot be parsed"),
    ("https:///x", "has no host"),
])
def test_webhook_url_with_credentials_or_broken_is_refused_without_showing_them(url, problem):
    with pytest.raises(DeliveryError, match=problem) as info:
        notify.post_webhook(hook(url), {})
    assert "pa55word" not in str(info.value)


def test_webhook_redirect_is_refused(receiver):
    target = receiver()
    srv = receiver(status=307, location=target.url + "/elsewhere")
    with pytest.raises(DeliveryError, match="answered 307"):
        notify.post_webhook(hook(srv.url), {"text": "x"})
    assert target.requests == [], "the secret never followed the redirect"


def test_webhook_https_verified_with_our_ca(receiver, pki):
    srv = receiver(context=server_context(pki))
    assert notify.post_webhook(hook(srv.url, ca_path=pki["ca"]), {"text": "x"}) == 204
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        notify.post_webhook(hook(srv.url), {"text": "x"})
    assert notify.post_webhook(hook(srv.url, validate_certs=False), {"text": "x"}) == 204
    assert len(srv.requests) == 2


def test_webhook_unreachable():
    with pytest.raises(DeliveryError, match="cannot reach webhook http://127.0.0.1:%d/..." % 1):
        notify.post_webhook(hook("http://127.0.0.1:1/x"), {"text": "x"})


@pytest.mark.parametrize("url", ["", "ftp://example.test/", "file:///etc/passwd"])
def test_webhook_url_must_be_http(url):
    with pytest.raises(DeliveryError, match="must start with"):
        notify.post_webhook(hook(url), {})


def test_redact():
    assert notify.redact("a %s b %s" % (SECRET, PASSWORD), [SECRET, PASSWORD, None, ""]) == "a ******** b ********"


def test_the_mail_modules_are_loaded_only_when_a_mail_is_built():
    """The watcher's footprint (docs/performance.md): a watcher without a mail channel never loads them."""
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    top = notify.__file__
    while os.path.basename(top) != "ansible_collections":
        top = os.path.dirname(top)
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import daemon\n"
            "from ansible_collections.imds.scheduled_events.plugins.module_utils import notify\n"
            "loaded = lambda: [m for m in ('smtplib', 'email.policy') if m in sys.modules]\n"
            "print(loaded()); notify.build_email('a@example.org', ['b@example.org'], 's', 'b'); print(loaded())\n"
            % os.path.dirname(top))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", "['email.policy']"]
