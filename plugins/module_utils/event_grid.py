# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What an Event Grid webhook receives, read into the collection's one model.

Azure publishes scheduled events on the system topic Microsoft.ResourceNotifications.MaintenanceResources. Each
event's `data.resourceInfo` is a Resource Graph row (id, name, type, location, properties with IMDS's keys), so it
goes through control_plane.ControlPlaneEvent.from_row like a row read from Resource Graph. Around that, Event Grid
has its own rules, all handled here without any HTTP: a subscription is validated by a handshake first (a
SubscriptionValidationEvent, or an OPTIONS request for CloudEvents), events come in JSON arrays, and one event may
be delivered twice with the same `id`. The shared-secret check and the count of failed authentications per peer
are here too; Microsoft Entra tokens are entra.py's.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
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


def parse_delivery(body, content_type="", max_bytes=MAX_BODY_BYTES, max_events=MAX_EVENTS):
    """Read one POST body (bytes). Raises DeliveryError when it is not JSON or not Event Grid's shape at all, or
    larger than `max_bytes` or `max_events` (413); events that are not scheduled events, or scheduled events that
    cannot be read, are items of their kind."""
    if len(body) > max_bytes:
        raise DeliveryError("the body has %d bytes, more than %d" % (len(body), max_bytes), status=413)
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
    if len(data) > max_events:
        raise DeliveryError("the body has %d events, more than %d" % (len(data), max_events), status=413)
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


def presented_tokens(headers, query, param="code"):
    """The secrets a request carries: (the `Authorization: Bearer <token>` header's, the `code` query parameter's
    of the subscription's URL - the form that also reaches the validation handshake), each None when absent."""
    auth = headers.get("Authorization") or ""
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
    code = query.get(param)
    return bearer or None, code if isinstance(code, str) and code else None


def token_matches(expected, presented):
    """Constant-time comparison, so the secret cannot be guessed from response times (a header's undecodable
    bytes arrive as lone surrogates: compared, never an error)."""
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode("utf-8", "surrogatepass"), presented.encode("utf-8", "surrogatepass"))


def peer_key(address):
    """Whom failed authentications are counted against: the IPv4 address, or the IPv6 /64 (one host has many)."""
    try:
        parsed = ipaddress.ip_address(address or "")
    except ValueError:
        return str(address)
    if parsed.version == 6:
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network("%s/64" % parsed, strict=False))
    return str(parsed)


class FailedAuthentications(object):
    """Failed authentications per peer within `window` seconds. Once a peer has had `limit` of them, its next
    failures are answered 429 with the seconds to wait (a success is never counted nor refused). The oldest peers
    are forgotten beyond `max_peers`, so a sender of many addresses cannot grow it without end."""

    def __init__(self, limit, window=60.0, max_peers=10000):
        self.limit = int(limit)
        self.window = float(window)
        self.max_peers = int(max_peers)
        self._peers = collections.OrderedDict()  # peer -> [times of its last `limit` failures, when last announced]

    def _recent(self, peer, now):
        entry = self._peers.get(peer)
        if entry is not None:
            while entry[0] and entry[0][0] <= now - self.window:
                entry[0].popleft()
        return entry

    def limited(self, peer, now):
        """Whether the peer is over the limit (then its failures are 429)."""
        entry = self._recent(peer, now)
        return entry is not None and len(entry[0]) >= self.limit

    def failed(self, peer, now):
        """Count one failure. Returns (seconds the peer should wait, or 0 when it is not over the limit; whether
        to say so at warning level: once a window per peer)."""
        entry = self._recent(peer, now)
        if entry is None:
            entry = self._peers[peer] = [collections.deque(maxlen=self.limit), None]
        times = entry[0]
        over = len(times) >= self.limit
        times.append(now)
        self._peers.move_to_end(peer)
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        if not over:
            return 0.0, False
        announce = entry[1] is None or now - entry[1] >= self.window
        if announce:
            entry[1] = now
        return max(0.001, times[0] + self.window - now), announce

    def __len__(self):
        return len(self._peers)


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
