# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""event_grid: Azure scheduled events delivered by Event Grid to a webhook, as rulebook events.

A receiver for an Event Grid subscription on the system topic Microsoft.ResourceNotifications.MaintenanceResources.
The reading of a delivery (handshake, schemas, rows) is module_utils/event_grid.py; the step from one status to
the next is module_utils/lifecycle.py's StatusTracker, the same words the imds source uses. Here: HTTP, the
secret, and duplicates (Event Grid delivers at least once, with the same id).
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
short_description: Azure scheduled events from an Event Grid webhook subscription, as rulebook events
description:
  - An HTTP(S) receiver for an Event Grid subscription to the system topic type
    Microsoft.ResourceNotifications.MaintenanceResources (scheduled events of every VM, scale set and availability
    set that opted in with C(scheduledEventsPolicy)).
  - Answers the subscription validation handshake (Event Grid schema) and the CloudEvents OPTIONS handshake, accepts
    both schemas, in batches, and drops a delivery whose Event Grid id it has already handled.
  - Emits the events of the imds source with C(source) C(event_grid) - C(appeared), C(updated), C(approved),
    C(started), and C(gone) with C(outcome) C(completed) or C(cancelled) (Azure's Completed and Canceled).
    C(scheduled_event) has the keys of M(imds.scheduled_events.control_plane_event_info)'s events (C(owner),
    C(row_id), C(finished) ...). A late or repeated status (Started after Completed) emits nothing.
  - A scheduled event that cannot be read emits C(change=unreadable) with C(problem); other event types are logged
    and acknowledged.
  - Every request must carry the token - in the subscription URL's query (C(?code=<token>), which also reaches the
    validation handshake) or in an C(Authorization: Bearer <token>) delivery header. Others get 401.
options:
  host:
    description: Address to listen on.
    type: str
    default: 0.0.0.0
  port:
    description: TCP port; 0 picks a free one (logged).
    type: int
    default: 5000
  path:
    description: URL path of the subscription's endpoint.
    type: str
    default: /
  token:
    description: The shared secret every request must present. Required unless O(insecure_no_token=true).
    type: str
  token_param:
    description: Query parameter that carries the token.
    type: str
    default: code
  insecure_no_token:
    description: Accept requests without a token (only behind a proxy that authenticates).
    type: bool
    default: false
  certfile:
    description: PEM certificate (chain) for HTTPS; Event Grid only delivers to https endpoints.
    type: str
  keyfile:
    description: PEM private key of O(certfile).
    type: str
  vms:
    description: VM names to judge C(affects_this_vm) and C(shared) against, like control_plane_event_info.
    type: list
    elements: str
  event_types:
    description: Only these event types; all when not given.
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Page when a Redeploy is scheduled for a production VM
  hosts: localhost
  sources:
    - imds.scheduled_events.event_grid:
        port: 8443
        certfile: /etc/eda/tls.crt
        keyfile: /etc/eda/tls.key
        token: "{{ event_grid_token }}"
  rules:
    - name: Page
      condition: >-
        event.change == "appeared" and event.scheduled_event.EventType == "Redeploy"
        and event.scheduled_event.owner.resource_group == "prod"
      action:
        run_playbook:
          name: page.yml
"""

import asyncio
import logging
import os
import ssl
import sys
import time

from aiohttp import web

try:
    import ansible_collections.imds.scheduled_events.plugins.module_utils  # noqa: F401  pylint: disable=unused-import
except ImportError:  # ansible-rulebook runs this file by path: put the collection tree it lies in on sys.path
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 7)))

from ansible_collections.imds.scheduled_events.plugins.module_utils.event_grid import (  # noqa: E402
    CLOUDEVENTS_ALLOWED_HEADER, CLOUDEVENTS_ORIGIN_HEADER, MAX_BODY_BYTES, OTHER, UNREADABLE,
    DeliveryError, RecentIds, parse_delivery, presented_token, token_matches)
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import (  # noqa: E402
    KNOWN_EVENT_TYPES, EventFilter, NamedVms)
from ansible_collections.imds.scheduled_events.plugins.module_utils.lifecycle import StatusTracker  # noqa: E402
from ansible_collections.imds.scheduled_events.plugins.module_utils.sources import (  # noqa: E402
    Argument, ArgumentError, check_args, rulebook_event, unreadable_event)

SOURCE = "imds.scheduled_events.event_grid"
ARGS = {
    "host": Argument("str", "0.0.0.0"),
    "port": Argument("int", 5000, minimum=0, maximum=65535),
    "path": Argument("str", "/"),
    "token": Argument("secret"),
    "token_param": Argument("str", "code"),
    "insecure_no_token": Argument("bool", False),
    "certfile": Argument("path"),
    "keyfile": Argument("path"),
    "vms": Argument("list"),
    "event_types": Argument("list", choices=KNOWN_EVENT_TYPES),
}

logger = logging.getLogger(__name__)


class Receiver(object):
    """The request handling, apart from the server, so tests post to it through aiohttp's test client."""

    def __init__(self, args, queue, clock=time.time):
        self.args = check_args(SOURCE, args, ARGS)
        if not self.args["token"] and not self.args["insecure_no_token"]:
            raise ArgumentError("%s: set token (every request must present it), or insecure_no_token: true if a "
                                "proxy in front authenticates" % SOURCE)
        if bool(self.args["certfile"]) != bool(self.args["keyfile"]):
            raise ArgumentError("%s: certfile and keyfile go together" % SOURCE)
        if not self.args["path"].startswith("/"):
            raise ArgumentError("%s: path must start with /" % SOURCE)
        self.queue = queue
        self.clock = clock
        self.vms = NamedVms(self.args["vms"]) if self.args["vms"] else None
        self.selection = EventFilter(types=self.args["event_types"])
        self.tracker = StatusTracker()
        self.recent = RecentIds()
        self.other_types = set()
        self.counts = {"deliveries": 0, "events": 0, "duplicates": 0, "refused": 0, "unreadable": 0, "other": 0}

    def app(self):
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", self.args["path"], self.handle)
        return app

    def ssl_context(self):
        if not self.args["certfile"]:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.args["certfile"], self.args["keyfile"])
        except (OSError, ssl.SSLError) as exc:
            raise ArgumentError("%s: cannot load certfile/keyfile: %s" % (SOURCE, exc))
        return context

    async def handle(self, request):
        if not self.args["insecure_no_token"]:
            presented = presented_token(request.headers, request.query, self.args["token_param"])
            if not token_matches(self.args["token"], presented):
                self.counts["refused"] += 1
                logger.warning("%s: refused a %s from %s: %s token", SOURCE, request.method, request.remote,
                               "wrong" if presented else "no")
                return web.json_response({"error": "a valid token is required"}, status=401)
        if request.method == "OPTIONS":
            return self._cloudevents_handshake(request)
        if request.method != "POST":
            return web.json_response({"error": "POST Event Grid deliveries here"}, status=405,
                                     headers={"Allow": "POST, OPTIONS"})
        try:
            body = await request.read()
            delivery = parse_delivery(body, request.headers.get("Content-Type", ""))
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "the body is larger than %d bytes" % MAX_BODY_BYTES}, status=413)
        except DeliveryError as exc:
            logger.warning("%s: refused a delivery from %s: %s", SOURCE, request.remote, exc)
            return web.json_response({"error": str(exc)}, status=exc.status)
        if delivery.validation_code is not None:
            logger.info("%s: answered Event Grid's subscription validation", SOURCE)
            return web.json_response({"validationResponse": delivery.validation_code})
        self.counts["deliveries"] += 1
        for event in self.events_of(delivery):
            await self.queue.put(event)
        return web.Response(status=200)

    def _cloudevents_handshake(self, request):
        origin = request.headers.get(CLOUDEVENTS_ORIGIN_HEADER)
        if not origin:
            return web.json_response({"error": "OPTIONS is the CloudEvents handshake: %s is missing"
                                      % CLOUDEVENTS_ORIGIN_HEADER}, status=400)
        logger.info("%s: answered the CloudEvents handshake of %s", SOURCE, origin)
        return web.Response(status=200, headers={CLOUDEVENTS_ALLOWED_HEADER: origin, "WebHook-Allowed-Rate": "*",
                                                 "Allow": "POST, OPTIONS"})

    def events_of(self, delivery):
        """The rulebook events of one delivery, duplicates and stale reports left out."""
        now = self.clock()
        out = []
        for item in delivery.items:
            if item.kind == OTHER:
                self.counts["other"] += 1
                if item.event_type not in self.other_types:
                    self.other_types.add(item.event_type)
                    logger.warning("%s: ignoring events of type %r (only scheduled events are handled)", SOURCE,
                                   item.event_type)
                continue
            if item.delivery_id is not None and self.recent.seen(item.delivery_id):
                self.counts["duplicates"] += 1
                logger.debug("%s: duplicate delivery %s dropped", SOURCE, item.delivery_id)
                continue
            if item.kind == UNREADABLE:
                self.counts["unreadable"] += 1
                logger.warning("%s: unreadable scheduled event %s: %s", SOURCE, item.delivery_id, item.problem)
                out.append(unreadable_event("event_grid", item.problem, delivery_id=item.delivery_id,
                                            event_type=item.event_type))
                continue
            self.counts["events"] += 1
            found = item.found
            if not self.selection.matches(found.event):
                continue
            described = found.describe(self.vms, None)
            described["source"] = "event_grid"
            key = "%s/%s" % (found.owner.key, found.event.event_id.lower())
            for change in self.tracker.observe(now, key, found.event, described):
                out.append(rulebook_event(change, "event_grid", delivery_id=item.delivery_id))
        return out


async def main(queue, args):
    """ansible-rulebook's entry point: serve until the rulebook ends."""
    receiver = Receiver(args, queue)
    context = receiver.ssl_context()
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, receiver.args["host"], receiver.args["port"], ssl_context=context)
    await site.start()
    for address in runner.addresses:  # the port chosen when port is 0
        logger.info("%s: listening on %s://%s:%s%s", SOURCE, "https" if context else "http", address[0], address[1],
                    receiver.args["path"])
    try:
        await asyncio.Future()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    # python event_grid.py: print what a loopback receiver gets (token "dev").
    import json

    class _PrintQueue(object):
        async def put(self, event):
            print(json.dumps(event, sort_keys=True), flush=True)

    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(_PrintQueue(), {"host": "127.0.0.1", "token": "dev"}))
