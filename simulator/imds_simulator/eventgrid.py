"""The Event Grid face: the control plane's scheduled-event changes pushed to webhook subscribers on loopback.

Azure publishes every change of a scheduled event's control-plane status (the rows Resource Graph shows) to the
Event Grid system topic type Microsoft.ResourceNotifications.MaintenanceResources. Here the world keeps those
changes while anyone subscribes (World.take_changes). A Publisher takes them, on a ticker thread (which also
moves a scaled clock's world along when nobody asks it anything) and at once on ``flush``, makes one Event Grid
event of each change and queues it for every subscription. Each subscription has a worker thread of its own:
it POSTs batches with the aeg-* headers, retries and dead-letters, in the order of the changes. The validation
handshake happens when subscribing. A subscription with Microsoft Entra authentication sends Event Grid's bearer
token (entra.py) with every request. No lock of the world is held while HTTP is spoken, only the standard library
speaks it, and only loopback endpoints are accepted (scenario.parse_event_grid_subscription).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import http.client
import itertools
import json
import ssl
import threading
import time
import urllib.parse
import uuid

from .entra import Authority
from .world import Conflict, NotFound

EVENT_TYPE = "Microsoft.ResourceNotifications.MaintenanceResources.ScheduledEventEmitted"
VALIDATION_EVENT_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"
RESOURCE_TYPE = "microsoft.maintenance/scheduledEvents"
DATA_VERSION = "3.0"
VALIDATION_DATA_VERSION = "2"
METADATA_VERSION = "1"
CLOUD_EVENTS_VERSION = "1.0"
CLOUD_EVENTS = "CloudEventSchemaV1_0"
ORIGIN = "eventgrid.azure.net"
JSON_TYPE = "application/json; charset=utf-8"
CLOUD_EVENTS_BATCH = "application/cloudevents-batch+json; charset=utf-8"
# Answers Azure does not retry for a webhook (404 as for namespace topics): the batch is dead-lettered at once.
NOT_RETRIED = (400, 401, 403, 404, 413)
EXCERPT = 200
MAX_ANSWER = 64 * 1024


def event_time(moment):
    """ISO-8601 UTC with seven fractional digits, as Event Grid writes its times."""
    moment = moment.astimezone(datetime.timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0Z"


class Subscription:
    """One webhook subscription: its spec, provisioning state, queue of batches and worker thread."""

    def __init__(self, spec, name, created, generation):
        self.spec = spec
        self.id = name
        self.created = created
        self.generation = generation
        self.parts = urllib.parse.urlsplit(spec.endpoint)
        self.context = None
        if self.parts.scheme == "https":
            self.context = ssl.create_default_context()
            if spec.insecure_skip_verify:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
        self.state = "Creating"
        self.failure = None
        self.queue = collections.deque()
        self.in_flight = False
        self.batches_delivered = 0
        self.events_delivered = 0
        self.events_dead_lettered = 0
        self.stop = threading.Event()
        self.thread = None

    @property
    def idle(self):
        """Nothing left to deliver (a Creating or Failed subscription never has anything)."""
        return self.state != "Succeeded" or (not self.queue and not self.in_flight)

    def as_dict(self):
        """JSON view for the control API."""
        spec = self.spec
        return {"id": self.id, "endpoint": spec.endpoint, "schema": spec.schema,
                "max_events_per_batch": spec.max_events_per_batch, "headers": dict(spec.headers),
                "validate": spec.validate, "duplicate_every": spec.duplicate_every, "max_attempts": spec.max_attempts,
                "retry_delays": list(spec.retry_delays), "insecure_skip_verify": spec.insecure_skip_verify,
                "timeout": spec.timeout, "entra": dataclasses.asdict(spec.entra) if spec.entra else None,
                "provisioningState": self.state, "failure": self.failure,
                "created_wall_time": self.created, "pending_events": sum(len(batch) for batch in list(self.queue)),
                "delivered_events": self.events_delivered, "dead_lettered_events": self.events_dead_lettered}


class Publisher:  # pylint: disable=too-many-instance-attributes
    """Event Grid for the world's control-plane changes: subscriptions, deliveries, the delivery log.

    ``authority`` signs the bearer tokens of subscriptions with Microsoft Entra authentication (entra.py).
    ``wait(seconds, stop_event)`` waits out a retry delay (default: ``stop_event.wait``, so a deleted subscription
    stops at once; tests inject a sleep that returns at once). ``poll`` is how often, in real seconds, the ticker
    takes the world's changes. The delivery log keeps the last ``log_size`` attempts.
    """

    def __init__(self, world, wall=time.time, wait=None, poll=0.1, log_size=10000, authority=None):
        self.world = world
        self.authority = authority or Authority()
        self._wall = wall
        self._wait = wait or (lambda seconds, stop: stop.wait(seconds))
        self._poll = poll
        self._cond = threading.Condition()
        self._subs = {}
        self._names = itertools.count(1)
        self._log_seq = itertools.count(1)
        self._generation = 0
        self.deliveries = collections.deque(maxlen=log_size)
        self._stopping = threading.Event()
        self._ticker = None

    # -- lifecycle -------------------------------------------------------------

    def start(self):
        """Start the ticker: it takes the world's changes every ``poll`` seconds while anyone subscribes."""
        if self._ticker is None:
            self._stopping.clear()
            self._ticker = threading.Thread(target=self._tick, name="event-grid-ticker", daemon=True)
            self._ticker.start()

    def stop(self):
        """Stop the ticker and end every subscription (the delivery log stays readable)."""
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.join(10)
            self._ticker = None
        with self._cond:
            subs = list(self._subs.values())
            for sub in subs:
                sub.stop.set()
            self._subs.clear()
            self.world.record_changes = False
            self._cond.notify_all()
        for sub in subs:
            if sub.thread is not None:
                sub.thread.join(1)

    def reset(self):
        """Forget every subscription and the delivery log (an attempt under way is not logged)."""
        with self._cond:
            for sub in self._subs.values():
                sub.stop.set()
            self._subs.clear()
            self.deliveries.clear()
            self._generation += 1
            self.world.record_changes = False
            self._cond.notify_all()

    def _tick(self):
        while not self._stopping.wait(self._poll):
            with self._cond:
                listening = any(sub.state == "Succeeded" for sub in self._subs.values())
            if listening:
                self.collect()

    # -- subscriptions ---------------------------------------------------------

    def subscribe(self, spec):
        """Create a subscription: the handshake (unless ``validate`` is off), then the changes that come later.
        EntraUnavailable when it asks for Entra tokens and PyJWT or cryptography is missing."""
        if spec.entra is not None:
            self.authority.kids()  # the key exists (and the libraries do) before anything is sent
        with self._cond:
            taken = set(self._subs)
            name = spec.name
            while name is None or (spec.name is None and name.lower() in taken):
                name = f"imds-sim-{next(self._names)}"
            if name.lower() in taken:
                raise Conflict(f"an Event Grid subscription named {name} exists already")
            sub = Subscription(spec, name, self._wall(), self._generation)
            self._subs[name.lower()] = sub
        failure = self._handshake(sub) if spec.validate else None
        if failure is not None:
            with self._cond:
                sub.state, sub.failure = "Failed", failure
                self._cond.notify_all()
            return sub

        def activate(changes):
            self._distribute(changes)  # what was due before this subscription: for the others only
            with self._cond:
                if self._subs.get(sub.id.lower()) is sub:
                    sub.state = "Succeeded"
                    self.world.record_changes = True

        self.world.take_changes(activate)
        if sub.state == "Succeeded":
            sub.thread = threading.Thread(target=self._run, args=(sub,), name=f"event-grid-{sub.id}", daemon=True)
            sub.thread.start()
        return sub

    def subscriptions(self):
        """Every subscription, oldest first."""
        with self._cond:
            return list(self._subs.values())

    def unsubscribe(self, sub_id):
        """Delete a subscription: nothing more is delivered to it (an attempt under way still ends)."""
        with self._cond:
            sub = self._subs.pop(sub_id.lower(), None)
            if sub is None:
                raise NotFound(f"no Event Grid subscription {sub_id}")
            sub.stop.set()
            self._cond.notify_all()
        self.collect()  # the world stops keeping changes when nobody is left
        return sub

    # -- changes -----------------------------------------------------------------

    def collect(self):
        """Apply what is due in the world and queue its changes for every subscription."""
        self.world.take_changes(self._distribute)

    def _distribute(self, changes):
        """Under the world's lock: one Event Grid event per change, batched per subscription, in order."""
        with self._cond:
            active = [sub for sub in self._subs.values() if sub.state == "Succeeded"]
            self.world.record_changes = bool(active)
            if not changes or not active:
                return
            events = [dict(change, id=str(uuid.uuid4())) for change in changes]  # one id, whoever receives it
            for sub in active:
                size = sub.spec.max_events_per_batch
                for start in range(0, len(events), size):
                    sub.queue.append(events[start:start + size])
            self._cond.notify_all()

    def flush(self, timeout=60.0):
        """Deliver (or dead-letter) every change that is due, for every subscription; False if ``timeout`` ran out."""
        self.collect()
        with self._cond:
            return self._cond.wait_for(lambda: all(sub.idle for sub in self._subs.values()), timeout)

    def pending(self):
        """Events queued or in flight, per subscription id."""
        with self._cond:
            return {sub.id: sum(len(batch) for batch in sub.queue) for sub in self._subs.values() if not sub.idle}

    def delivery_log(self, subscription=None):
        """Every attempt, oldest first (of one subscription when given)."""
        with self._cond:
            return [entry for entry in self.deliveries
                    if subscription is None or entry["subscription"].lower() == subscription.lower()]

    # -- delivery ----------------------------------------------------------------

    def _run(self, sub):
        while True:
            with self._cond:
                self._cond.wait_for(lambda: sub.queue or sub.stop.is_set())
                if sub.stop.is_set():
                    return
                batch = sub.queue[0]
                sub.in_flight = True
            try:
                self._deliver(sub, batch)
            finally:
                with self._cond:
                    if sub.queue and sub.queue[0] is batch:
                        sub.queue.popleft()
                    sub.in_flight = False
                    self._cond.notify_all()

    def _deliver(self, sub, batch):
        """POST one batch until it is accepted, refused for good, or out of attempts."""
        spec = sub.spec
        body = json.dumps([self.render(sub, event) for event in batch], separators=(",", ":")).encode("utf-8")
        for attempt in range(spec.max_attempts):
            if attempt:
                self._wait(spec.retry_delays[min(attempt, len(spec.retry_delays)) - 1], sub.stop)
            if sub.stop.is_set():
                return
            status, error, answer, _headers = self._send(sub, "POST", body, self._headers(sub, "Notification", attempt))
            reason = None
            if status is not None and 200 <= status < 300:
                result = "delivered"
            elif status in NOT_RETRIED:
                result, reason = "dead_lettered", f"HTTP {status} is not retried"
            elif attempt + 1 >= spec.max_attempts:
                result, reason = "dead_lettered", f"{spec.max_attempts} attempt(s) failed"
            else:
                result = "retrying"
            self._log(sub, "notification", "POST", batch, attempt, status, error, answer, result, reason=reason)
            if result == "delivered":
                with self._cond:
                    sub.batches_delivered += 1
                    sub.events_delivered += len(batch)
                    again = spec.duplicate_every and sub.batches_delivered % spec.duplicate_every == 0
                if again and not sub.stop.is_set():
                    # At-least-once: the same body (same ids) once more, as after an acknowledgement Azure missed.
                    status, error, answer, _headers = self._send(sub, "POST", body,
                                                                 self._headers(sub, "Notification", attempt + 1))
                    self._log(sub, "notification", "POST", batch, attempt + 1, status, error, answer,
                              "delivered" if status is not None and 200 <= status < 300 else "failed", duplicate=True)
                return
            if result == "dead_lettered":
                with self._cond:
                    sub.events_dead_lettered += len(batch)
                return

    def render(self, sub, event):
        """One queued change as the subscription's schema wants it."""
        row = event["row"]
        when = event_time(event["time"])
        topic = "/subscriptions/" + row["subscriptionId"]
        data = {
            "resourceInfo": {"id": row["id"], "name": row["name"], "type": RESOURCE_TYPE, "location": row["location"],
                             "properties": dict(row["properties"], ScheduledEventApiVersion=event["api_version"])},
            "operationalInfo": {"resourceEventTime": when},
            "apiVersion": event["api_version"],
        }
        if sub.spec.schema == CLOUD_EVENTS:
            return {"specversion": CLOUD_EVENTS_VERSION, "id": event["id"], "source": topic, "subject": row["id"],
                    "type": EVENT_TYPE, "time": when, "data": data}
        return {"id": event["id"], "topic": topic, "subject": row["id"], "eventType": EVENT_TYPE, "eventTime": when,
                "data": data, "dataVersion": DATA_VERSION, "metadataVersion": METADATA_VERSION}

    def _headers(self, sub, kind, count, data_version=DATA_VERSION):
        cloud = sub.spec.schema == CLOUD_EVENTS
        headers = {"Content-Type": CLOUD_EVENTS_BATCH if cloud else JSON_TYPE, "aeg-event-type": kind,
                   "aeg-subscription-name": sub.id.upper(), "aeg-delivery-count": str(count),
                   "aeg-metadata-version": CLOUD_EVENTS_VERSION if cloud else METADATA_VERSION}
        if not cloud:
            headers["aeg-data-version"] = data_version
        headers.update(sub.spec.headers)
        headers.update(self._authorization(sub))
        return headers

    def _authorization(self, sub):
        """Microsoft Entra authentication: Event Grid's bearer token for the webhook's app, on every request."""
        entra = sub.spec.entra
        if entra is None:
            return {}
        tenant = entra.tenant_id or self.world.scenario.control_plane.tenant_id
        token = self.authority.token(tenant, entra.application_id_or_uri, entra.token_version)
        return {"Authorization": "Bearer " + token}

    def _handshake(self, sub):
        """None when the endpoint showed it wants the events, else why not."""
        spec = sub.spec
        if spec.schema == CLOUD_EVENTS:
            # CloudEvents 1.0 abuse protection: OPTIONS, and the endpoint names the origin it allows.
            headers = {"WebHook-Request-Origin": ORIGIN}
            headers.update(spec.headers)
            headers.update(self._authorization(sub))
            status, error, answer, got = self._send(sub, "OPTIONS", None, headers)
            allowed = got.get("webhook-allowed-origin")
            ok = status == 200 and allowed is not None and allowed.strip() in (ORIGIN, "*")
            self._log(sub, "validation", "OPTIONS", [], 0, status, error, answer,
                      "validated" if ok else "validation_failed")
            if ok:
                return None
            return error or (f"the OPTIONS handshake was answered {status} with WebHook-Allowed-Origin {allowed!r}; "
                             f"expected 200 with {ORIGIN!r} or '*'")
        code = str(uuid.uuid4())
        now = event_time(self.world.clock.to_datetime(self.world.clock.now()))
        event = {"id": str(uuid.uuid4()), "topic": "/subscriptions/" + self.world.scenario.settings.subscription_id,
                 "subject": "", "data": {"validationCode": code,
                                         "validationUrl": f"https://eventgrid.imds-simulator.invalid/eventsubscriptions/"
                                                          f"{sub.id}/validate?id={code}&apiVersion=2022-06-15"},
                 "eventType": VALIDATION_EVENT_TYPE, "eventTime": now, "metadataVersion": METADATA_VERSION,
                 "dataVersion": VALIDATION_DATA_VERSION}
        body = json.dumps([event], separators=(",", ":")).encode("utf-8")
        status, error, answer, _got = self._send(
            sub, "POST", body, self._headers(sub, "SubscriptionValidation", 0, VALIDATION_DATA_VERSION))
        try:
            echoed = json.loads(answer.decode("utf-8")) if answer else None
        except (UnicodeDecodeError, ValueError):
            echoed = None
        ok = status == 200 and isinstance(echoed, dict) and echoed.get("validationResponse") == code
        self._log(sub, "validation", "POST", [{"id": event["id"], "type": VALIDATION_EVENT_TYPE}], 0, status, error,
                  answer, "validated" if ok else "validation_failed")
        if ok:
            return None
        return error or (f"the validation event was answered {status} without "
                         '{"validationResponse": "<the validationCode>"}')

    def _send(self, sub, method, body, headers):
        """One request: (status or None, connection error or None, the answer's first bytes, its headers)."""
        parts = sub.parts
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if sub.context is not None:
            connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=sub.spec.timeout,
                                                     context=sub.context)
        else:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=sub.spec.timeout)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read(MAX_ANSWER)
            return response.status, None, answer, {name.lower(): value for name, value in response.getheaders()}
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}", b"", {}
        finally:
            connection.close()

    def _log(self, sub, kind, method, events, count, status, error, answer, result, duplicate=False, reason=None):
        now = self._wall()
        entry = {
            "seq": next(self._log_seq),
            "subscription": sub.id,
            "kind": kind,
            "method": method,
            "event_ids": [event["id"] for event in events],
            "event_types": [event.get("type", EVENT_TYPE) for event in events],
            "statuses": [event["status"] for event in events if "status" in event],
            "delivery_count": count,
            "status": status,
            "error": error,
            "wall_time": now,
            "time": event_time(datetime.datetime.fromtimestamp(now, datetime.timezone.utc)),
            "sim_time": self.world.clock.now(),
            "excerpt": answer[:EXCERPT].decode("utf-8", "replace"),
            "duplicate": duplicate,
            "result": result,
            "dead_lettered": result == "dead_lettered",
            "dead_letter_reason": reason,
        }
        with self._cond:
            if sub.generation == self._generation:
                self.deliveries.append(entry)
