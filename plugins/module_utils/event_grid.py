# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What an Event Grid webhook receives, read into the collection's one model.

Azure publishes scheduled events on the system topic Microsoft.ResourceNotifications.MaintenanceResources. Each
event's `data.resourceInfo` is a Resource Graph row (id, name, type, location, properties with IMDS's keys), so it
goes through control_plane.ControlPlaneEvent.from_row like a row read from Resource Graph. Around that, Event Grid
has its own rules, all handled here without any HTTP: a subscription is validated by a handshake first (a
SubscriptionValidationEvent, or an OPTIONS request for CloudEvents), events come in JSON arrays, and one event may
be delivered twice with the same `id`.
"""

from __future__ import annotations

import collections
import hmac
import json

from .control_plane import ControlPlaneEvent

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
# The documentation names both; compared case-insensitively.
SCHEDULED_EVENT_TYPES = ("microsoft.resourcenotifications.maintenanceresources.scheduledeventemitted",
                         "microsoft.maintenance/scheduledevents/write")
CLOUDEVENTS_ORIGIN_HEADER = "WebHook-Request-Origin"
CLOUDEVENTS_ALLOWED_HEADER = "WebHook-Allowed-Origin"
MAX_BODY_BYTES = 4 * 1024 * 1024  # Event Grid's batches stay under 1 MB; anything far larger is not Event Grid
MAX_EVENTS = 5000                 # Event Grid's largest max_events_per_batch
MAX_JSON_DEPTH = 64

SCHEDULED_EVENT = "scheduled_event"
OTHER = "other"            # an event type this receiver does not handle (counted, logged once per type)
UNREADABLE = "unreadable"  # a scheduled event that cannot be read: reported, never dropped silently


class DeliveryError(ValueError):
    """The request is not an Event Grid delivery at all; the HTTP answer is `status` (400 or 413)."""

    def __init__(self, message, status=400):
        super(DeliveryError, self).__init__(message)
        self.status = status


class Item(object):
    """One event of a delivery."""

    __slots__ = ("kind", "delivery_id", "event_type", "found", "problem", "raw")

    def __init__(self, kind, delivery_id, event_type, found=None, problem=None, raw=None):
        self.kind = kind
        self.delivery_id = delivery_id
        self.event_type = event_type
        self.found = found
        self.problem = problem
        self.raw = raw

    def __repr__(self):
        return "Item(%s %s %s)" % (self.kind, self.delivery_id, self.event_type)


class Delivery(object):
    """One POST: a validation handshake (`validation_code`), or the events it carries."""

    def __init__(self, items, validation_code=None, schema="EventGridSchema"):
        self.items = items
        self.validation_code = validation_code
        self.schema = schema


def parse_delivery(body, content_type=""):
    """Read one POST body (bytes). Raises DeliveryError when it is not JSON or not Event Grid's shape at all;
    events that are not scheduled events, or scheduled events that cannot be read, are items of their kind."""
    if len(body) > MAX_BODY_BYTES:
        raise DeliveryError("the body has %d bytes, more than %d" % (len(body), MAX_BODY_BYTES), status=413)
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DeliveryError("the body is not JSON: %s" % exc)
    if _depth(data) > MAX_JSON_DEPTH:
        raise DeliveryError("the body is nested deeper than %d levels" % MAX_JSON_DEPTH)
    cloud = "cloudevents" in (content_type or "").lower()
    if isinstance(data, dict):
        data = [data]  # a single CloudEvent (application/cloudevents+json), or a lenient sender
    if not isinstance(data, list):
        raise DeliveryError("the body is a JSON %s, not an array of events" % type(data).__name__)
    if len(data) > MAX_EVENTS:
        raise DeliveryError("the body has %d events, more than %d" % (len(data), MAX_EVENTS), status=413)
    items = []
    for raw in data:
        if not isinstance(raw, dict):
            items.append(Item(UNREADABLE, None, None, problem="an event is a JSON %s, not an object"
                              % type(raw).__name__, raw=raw))
            continue
        cloud = cloud or "specversion" in raw
        event_type = raw.get("type") if "specversion" in raw else raw.get("eventType")
        delivery_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        payload = raw.get("data")
        if event_type == VALIDATION_EVENT:
            code = payload.get("validationCode") if isinstance(payload, dict) else None
            if not isinstance(code, str) or not code:
                raise DeliveryError("a SubscriptionValidationEvent without data.validationCode")
            return Delivery([], validation_code=code)
        if not isinstance(event_type, str) or event_type.lower() not in SCHEDULED_EVENT_TYPES:
            items.append(Item(OTHER, delivery_id, event_type, raw=raw))
            continue
        try:
            found = _scheduled_event(raw, payload)
        except ValueError as exc:
            items.append(Item(UNREADABLE, delivery_id, event_type, problem=str(exc), raw=raw))
            continue
        if delivery_id is None:
            items.append(Item(UNREADABLE, None, event_type, problem="the event has no id", raw=raw))
            continue
        items.append(Item(SCHEDULED_EVENT, delivery_id, event_type, found=found, raw=raw))
    return Delivery(items, schema="CloudEventSchemaV1_0" if cloud else "EventGridSchema")


def _scheduled_event(raw, payload):
    if not isinstance(payload, dict) or not isinstance(payload.get("resourceInfo"), dict):
        raise ValueError("it has no data.resourceInfo object")
    row = dict(payload["resourceInfo"])
    if not row.get("id") and isinstance(raw.get("subject"), str):
        row["id"] = raw["subject"]  # the subject is the row id
    return ControlPlaneEvent.from_row(row)


def _depth(value, level=1):
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()] or [level])
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value] or [level])
    return level


def presented_token(headers, query, param="code"):
    """The secret a request carries: `Authorization: Bearer <token>`, or the `code` query parameter of the
    subscription's URL (the form that also reaches the validation handshake)."""
    auth = headers.get("Authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    value = query.get(param)
    return value if isinstance(value, str) else None


def token_matches(expected, presented):
    """Constant-time comparison, so the secret cannot be guessed from response times."""
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), presented.encode("utf-8"))


class RecentIds(object):
    """The Event Grid ids already handled, the oldest forgotten beyond `limit`: a duplicate delivery is
    acknowledged and dropped (Event Grid redelivers with the same id, usually within minutes)."""

    def __init__(self, limit=10000):
        self.limit = int(limit)
        self._ids = collections.OrderedDict()

    def seen(self, delivery_id):
        """True if already handled; otherwise remembers it."""
        if delivery_id in self._ids:
            self._ids.move_to_end(delivery_id)
            return True
        self._ids[delivery_id] = True
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return False

    def __len__(self):
        return len(self._ids)
