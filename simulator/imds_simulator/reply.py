"""The answer a service gives to one HTTP request, before it touches a socket."""

from __future__ import annotations

import dataclasses
import json
import typing as t

JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


@dataclasses.dataclass
class Reply:
    """Status, body and how to deliver them.

    ``action`` is None for a normal answer, ``"drop"`` to close the
    connection without answering and ``"truncate"`` to announce the full
    Content-Length but send only the first half of the body.
    ``fault`` names the fault kinds that shaped the reply (for the request log).
    ``headers`` are extra response headers (the control-plane face's quota and Retry-After).
    """

    status: int
    body: bytes = b""
    content_type: t.Optional[str] = JSON
    action: t.Optional[str] = None
    fault: t.Optional[str] = None
    headers: t.Dict[str, str] = dataclasses.field(default_factory=dict)

    def json(self):
        """The body decoded as JSON (tests and the control client use it)."""
        return json.loads(self.body.decode("utf-8"))


def json_reply(status, payload):
    """A JSON reply with compact separators, like IMDS."""
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode("utf-8"), JSON)


def text_reply(status, text):
    """A text/plain reply."""
    return Reply(status, text.encode("utf-8"), TEXT)
