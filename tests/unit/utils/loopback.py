"""Receivers on 127.0.0.1 for what the collection sends: a webhook endpoint and an SMTP mailbox.

Shared by the unit tests of the sender (module_utils/notify.py), of fleet_publish and by the fleet
system suite, so each checks the real wire format against one receiver. The SMTP side needs aiosmtpd;
callers `pytest.importorskip("aiosmtpd.controller")` first, so a missing package is a loud skip.
"""

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port():
    """A port that was free a moment ago. Racy under pytest-xdist (another worker may bind it before the caller
    does): prefer binding port 0 and reading the port back, or `refused_port()` for "nothing listens here"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def refused_port():
    """A loopback port where connections are refused, for as long as the block runs: the socket is bound (so no
    other test or xdist worker can take the port meanwhile) but never listens, so a connect gets a reset."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class WebhookReceiver(object):
    """Answers every POST with `status` (changeable between requests) and `body`, which may be a callable of the
    request's headers (to echo a secret back). Each request is kept as path, headers, raw body, and the body as
    JSON when it is JSON."""

    def __init__(self, status=204, body=b"", location=None, context=None, path=""):
        self.requests = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802  pylint: disable=invalid-name
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    decoded = json.loads(data)
                except ValueError:
                    decoded = None
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": data,
                                          "json": decoded})
                answer = body(self.headers) if callable(body) else body
                self.send_response(receiver.status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda request, address: None  # a refused TLS handshake is the point of a test
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if context is not None else "http"
        self.url = "%s://127.0.0.1:%d%s" % (scheme, self.server.server_address[1], path)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Mailbox(object):
    """An aiosmtpd handler keeping every message: sender, recipients, text, and how the session went."""

    def __init__(self):
        self.messages = []
        self.port = None

    @property
    def texts(self):
        return [message["data"] for message in self.messages]

    async def handle_DATA(self, server, session, envelope):  # noqa: N802  (aiosmtpd's name)  pylint: disable=invalid-name
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "data": envelope.content.decode("utf-8", "replace"), "tls": session.ssl is not None,
                              "authenticated": session.authenticated})
        return "250 OK"


def smtp_controller(controller_mod, handler, **options):
    """An aiosmtpd Controller for `handler` on 127.0.0.1 that binds port 0 when started and reads back the port the
    kernel chose (controller.port, and handler.port when the handler has one). A port picked beforehand could be
    taken by another xdist worker before the server binds it. The readiness wait is generous (60 s) because
    aiosmtpd's default, 5 s, can pass on a loaded machine."""

    class EphemeralController(controller_mod.Controller):
        def _create_server(self):
            pending = super()._create_server()

            async def bound():
                server = await pending
                self.port = server.sockets[0].getsockname()[1]
                if hasattr(handler, "port"):
                    handler.port = self.port
                return server

            return bound()

    options.setdefault("ready_timeout", 60.0)
    return EphemeralController(handler, hostname="127.0.0.1", port=0, **options)


def start_mailbox(controller_mod, **options):
    """An SMTP server on an ephemeral loopback port; returns (mailbox, controller). mailbox.port is known once
    controller.start() returned. Stop it with controller.stop()."""
    box = Mailbox()
    controller = smtp_controller(controller_mod, box, **options)
    return box, controller
