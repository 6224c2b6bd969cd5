"""Fault injection at the IMDS edge.

Faults model what a real client meets besides clean documents: slow first
calls while Scheduled Events is being enabled, error statuses, broken bodies,
connections dropped mid-way and incarnation resets. They are declared as
``FaultSpec`` (see ``model``) and applied per request in three stages:

1. *waits* (``warmup``, ``delay``) block the request, then it goes on;
2. *short-circuits* (``drop``, ``status``) answer instead of IMDS; the
   request is not processed (an approval in it is not applied);
3. *body faults* (``malformed``, ``truncated``, ``non_object``, ``huge``, ``fields``)
   replace the body of a request IMDS processed successfully (status 200);
   ``fields`` writes given values over every event's fields and the document's
   (hostile-input tests: any value in any field, of any JSON type).

``reset_incarnation`` is not per request: the world applies it once, at its
``from`` time.
"""

from __future__ import annotations

import json
import threading

from .reply import JSON, Reply, json_reply

WAITS = ("warmup", "delay")
SHORT_CIRCUITS = ("drop", "status")
BODY_FAULTS = ("malformed", "truncated", "non_object", "huge", "fields")


class FaultEngine:
    """Applies the active faults to a request; remembers per-VM warm-up windows."""

    def __init__(self, sleep, monotonic):
        self._sleep = sleep
        self._monotonic = monotonic
        self._warm_until = {}
        self._lock = threading.Lock()

    def reset(self):
        """Forget warm-up windows (a reset VM warms up again)."""
        with self._lock:
            self._warm_until.clear()

    def wait(self, vm, faults):
        """Block for ``warmup``/``delay`` faults; returns the kinds applied.

        ``warmup``: the first matching request of a VM opens a window of
        ``seconds``; every matching request inside it blocks until it closes,
        like Azure's first call that enables Scheduled Events.
        """
        applied = []
        for fault in faults:
            if fault.kind == "warmup":
                now = self._monotonic()
                with self._lock:
                    until = self._warm_until.setdefault((fault.id, vm), now + fault.seconds)
                if until > now:
                    self._sleep(until - now)
                    applied.append("warmup")
            elif fault.kind == "delay":
                self._sleep(fault.seconds)
                applied.append("delay")
        return applied

    @staticmethod
    def short_circuit(faults):
        """The reply of the first ``drop``/``status`` fault, or None."""
        for fault in faults:
            if fault.kind == "drop":
                return Reply(0, action="drop", content_type=None, fault="drop")
            if fault.kind == "status":
                reply = json_reply(fault.code, {"error": f"Simulated fault: HTTP {fault.code}"})
                reply.fault = "status"
                return reply
        return None

    @staticmethod
    def mangle(faults, reply):
        """Apply the first body fault to a successful reply."""
        if reply.status != 200:
            return reply
        for fault in faults:
            if fault.kind in BODY_FAULTS:
                return _BODY_FAULTS[fault.kind](reply, fault)
        return reply


def _malformed(reply, fault):
    del reply, fault
    return Reply(200, b'{"DocumentIncarnation": 1, "Events": [{"EventId": "', JSON, fault="malformed")


def _truncated(reply, fault):
    del fault
    return Reply(200, reply.body, reply.content_type, action="truncate", fault="truncated")


def _non_object(reply, fault):
    del reply, fault
    return Reply(200, b'["DocumentIncarnation", "Events"]', JSON, fault="non_object")


def _huge(reply, fault):
    """A syntactically valid body of exactly ``fault.size`` bytes (or the original if already larger)."""
    try:
        payload = json.loads(reply.body.decode("utf-8"))
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        base = json.dumps(dict(payload, Padding=""), separators=(",", ":")).encode("utf-8")
        pad = max(0, fault.size - len(base))
        body = base[:-2] + b"x" * pad + b'"}'
    else:
        body = reply.body + b" " * max(0, fault.size - len(reply.body))
    return Reply(200, body, reply.content_type, fault="huge")


def _fields(reply, fault):
    """The document with the fault's values written over the document's keys and every event's."""
    payload = json.loads(reply.body.decode("utf-8"))
    values = json.loads(fault.fields)
    if isinstance(payload, dict) and "Events" in payload:  # the scheduled-events document, not instance metadata
        payload.update(values.get("document", {}))
        for event in payload.get("Events") or ():
            event.update(values.get("event", {}))
    reply = json_reply(200, payload)
    reply.fault = "fields"
    return reply


def patch_rows(rows, faults):
    """Resource Graph rows with the values of the ``arm_fields`` faults written over each row and its properties."""
    for fault in faults:
        if fault.kind != "arm_fields":
            continue
        values = json.loads(fault.fields)
        for row in rows:
            row.update(values.get("row", {}))
            if isinstance(row.get("properties"), dict):
                row["properties"].update(values.get("properties", {}))
    return rows


_BODY_FAULTS = {"malformed": _malformed, "truncated": _truncated, "non_object": _non_object, "huge": _huge,
                "fields": _fields}
