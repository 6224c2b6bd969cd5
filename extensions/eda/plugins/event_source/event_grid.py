# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""event_grid: Azure scheduled events delivered by Event Grid to a webhook, as rulebook events.

A receiver for an Event Grid subscription on the system topic Microsoft.ResourceNotifications.MaintenanceResources.
The reading of a delivery (handshake, schemas, rows) is module_utils/event_grid.py; what a Microsoft Entra token
must be, module_utils/entra.py; the step from one status to the next is module_utils/lifecycle.py's StatusTracker,
the same words the imds source uses. Here: HTTP, who may deliver (the shared secret, Entra tokens and the fetch of
the tenant's keys, the limit on failed attempts), and duplicates (Event Grid delivers at least once, with the same
id).
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
  - >-
    Every request must be authenticated, the validation handshake included - by the shared O(token) (in the
    subscription URL's query, C(?code=<token>), or an C(Authorization: Bearer <token>) delivery header), or by a
    Microsoft Entra ID access token (C(Authorization: Bearer <JWT>), what an Event Grid subscription with Microsoft
    Entra authentication sends) when O(entra_tenant_id) and O(entra_audience) are set. With both configured,
    either is accepted. Others get 401 and a log line that says why, never the token.
  - A token is accepted when it is signed with RS256 by a key of the tenant's key set (chosen by its C(kid); the
    key set comes from the tenant's OpenID configuration, is kept a day, fetched again when a token names an
    unknown C(kid), but never more than once a minute), its C(iss) is one of O(entra_issuers), its C(aud) one of
    O(entra_audience), its C(exp) and C(nbf) hold within O(entra_leeway) seconds, and its C(roles) hold
    O(entra_role). While the keys cannot be fetched (and none are known), a token gets 503 with C(Retry-After)
    (Event Grid retries it; it does not retry a 401).
  - A peer (IPv4 address, IPv6 /64) that failed to authenticate O(auth_failures_per_minute) times within a minute
    gets 429 with C(Retry-After) for its further failures; an authenticated request is never refused so.
  - A body larger than O(max_body_bytes) (declared or chunked) or with more than O(max_events) events gets 413.
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
    description:
      - The shared secret a request may present. Required unless O(entra_tenant_id) or O(insecure_no_token=true).
    type: str
  token_param:
    description: Query parameter that carries the token.
    type: str
    default: code
  insecure_no_token:
    description: Accept requests without any authentication (only behind a proxy that authenticates).
    type: bool
    default: false
  entra_tenant_id:
    description:
      - The Microsoft Entra tenant (directory) id, a GUID - the subscription's C(--azure-active-directory-tenant-id).
        Setting it (with O(entra_audience)) accepts Entra access tokens.
    type: str
  entra_audience:
    description:
      - The webhook app's application (client) ID and/or application ID URI - the subscription's
        C(--azure-active-directory-application-id-or-uri); a token's C(aud) must be one of them.
    type: list
    elements: str
  entra_issuers:
    description:
      - The accepted C(iss). Default the tenant's v1 and v2 issuers, C(https://sts.windows.net/<tenant>/) and
        C(https://login.microsoftonline.com/<tenant>/v2.0) (set it for a sovereign cloud).
    type: list
    elements: str
  entra_role:
    description: The app role a token's C(roles) must hold.
    type: str
    default: AzureEventGridSecureWebhookSubscriber
  entra_openid_configuration_url:
    description:
      - Where the tenant's OpenID configuration is, whose C(jwks_uri) lists the signing keys. https only (http on
        loopback). Default C(https://login.microsoftonline.com/<tenant>/v2.0/.well-known/openid-configuration).
    type: str
  entra_jwks_url:
    description: The signing keys' URL itself (then the OpenID configuration is not read). https only (http on loopback).
    type: str
  entra_leeway:
    description: Seconds of clock skew allowed on a token's C(exp) and C(nbf) (0 to 300).
    type: int
    default: 60
  auth_failures_per_minute:
    description: Failed authentications a peer may have within a minute before its failures are answered 429.
    type: int
    default: 20
  max_body_bytes:
    description: Largest request body accepted (1 KB to 64 MB).
    type: int
    default: 4194304
  max_events:
    description: Most events accepted in one delivery (1 to 5000, Event Grid's largest batch).
    type: int
    default: 5000
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
requirements:
  - aiohttp (ansible-rulebook brings it)
  - PyJWT and cryptography, for O(entra_tenant_id)
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

- name: The same, for a subscription with Microsoft Entra authentication
  hosts: localhost
  sources:
    - imds.scheduled_events.event_grid:
        port: 8443
        certfile: /etc/eda/tls.crt
        keyfile: /etc/eda/tls.key
        entra_tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
        entra_audience: [api://eda-webhook, 11111111-2222-3333-4444-555555555555]
  rules:
    - name: Page
      condition: event.change == "appeared" and event.scheduled_event.EventType == "Redeploy"
      action:
        run_playbook:
          name: page.yml
"""

import asyncio
import logging
import math
import os
import ssl
import sys
import time
import urllib.parse

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

try:
    import ansible_collections.imds.scheduled_events.plugins.module_utils  # noqa: F401  pylint: disable=unused-import
except ImportError:  # ansible-rulebook runs this file by path: put the collection tree it lies in on sys.path
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 7)))

from ansible_collections.imds.scheduled_events.plugins.module_utils import entra  # noqa: E402
from ansible_collections.imds.scheduled_events.plugins.module_utils.event_grid import (  # noqa: E402
    CLOUDEVENTS_ALLOWED_HEADER, CLOUDEVENTS_ORIGIN_HEADER, MAX_BODY_BYTES, MAX_EVENTS, OTHER, UNREADABLE,
    DeliveryError, FailedAuthentications, RecentIds, parse_delivery, peer_key, presented_tokens, token_matches)
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import (  # noqa: E402
    KNOWN_EVENT_TYPES, EventFilter, NamedVms)
from ansible_collections.imds.scheduled_events.plugins.module_utils.lifecycle import StatusTracker  # noqa: E402
from ansible_collections.imds.scheduled_events.plugins.module_utils.sources import (  # noqa: E402
    Argument, ArgumentError, check_args, loggable, rulebook_event, unreadable_event)

SOURCE = "imds.scheduled_events.event_grid"
ARGS = {
    "host": Argument("str", "0.0.0.0"),
    "port": Argument("int", 5000, minimum=0, maximum=65535),
    "path": Argument("str", "/"),
    "token": Argument("secret"),
    "token_param": Argument("str", "code"),
    "insecure_no_token": Argument("bool", False),
    "entra_tenant_id": Argument("str"),
    "entra_audience": Argument("list"),
    "entra_issuers": Argument("list"),
    "entra_role": Argument("str", entra.EVENT_GRID_ROLE),
    "entra_openid_configuration_url": Argument("str"),
    "entra_jwks_url": Argument("str"),
    "entra_leeway": Argument("int", entra.DEFAULT_LEEWAY, minimum=0, maximum=entra.MAX_LEEWAY),
    "auth_failures_per_minute": Argument("int", 20, minimum=1, maximum=1000000),
    "max_body_bytes": Argument("int", MAX_BODY_BYTES, minimum=1024, maximum=64 * 1024 * 1024),
    "max_events": Argument("int", MAX_EVENTS, minimum=1, maximum=MAX_EVENTS),
    "certfile": Argument("path"),
    "keyfile": Argument("path"),
    "vms": Argument("list"),
    "event_types": Argument("list", choices=KNOWN_EVENT_TYPES),
}
ENTRA_ARGS = sorted(name for name in ARGS if name.startswith("entra_"))
MAX_ORIGIN_CHARS = 255
MAX_OTHER_TYPES = 100  # event types said once at warning level; beyond, at debug level

logger = logging.getLogger(__name__)


class Refused(Exception):
    """A request that does not pass authentication: `reason` for the log, `status` for the answer."""

    def __init__(self, reason, status=401, retry_after=None):
        super(Refused, self).__init__(reason)
        self.status = status
        self.retry_after = retry_after


class Receiver(object):  # pylint: disable=too-many-instance-attributes
    """The request handling, apart from the server, so tests post to it through aiohttp's test client. `clock`
    (seconds since the epoch) judges tokens' exp and nbf; `monotonic` paces the key fetches and the failure
    counts."""

    def __init__(self, args, queue, clock=time.time, monotonic=time.monotonic):
        self.args = check_args(SOURCE, args, ARGS)
        self.policy = self._entra_policy(args or {})
        if self.args["insecure_no_token"] and (self.args["token"] or self.policy):
            raise ArgumentError("%s: insecure_no_token accepts every request: it goes with neither token nor "
                                "entra_tenant_id" % SOURCE)
        if not self.args["token"] and not self.policy and not self.args["insecure_no_token"]:
            raise ArgumentError("%s: set token (the shared secret a request presents) and/or entra_tenant_id with "
                                "entra_audience (Microsoft Entra tokens), or insecure_no_token: true if a proxy in "
                                "front authenticates" % SOURCE)
        if bool(self.args["certfile"]) != bool(self.args["keyfile"]):
            raise ArgumentError("%s: certfile and keyfile go together" % SOURCE)
        if not self.args["path"].startswith("/"):
            raise ArgumentError("%s: path must start with /" % SOURCE)
        self.queue = queue
        self.clock = clock
        self.monotonic = monotonic
        self.vms = NamedVms(self.args["vms"]) if self.args["vms"] else None
        self.selection = EventFilter(types=self.args["event_types"])
        self.tracker = StatusTracker()
        self.recent = RecentIds()
        self.failures = FailedAuthentications(self.args["auth_failures_per_minute"])
        self.keys = entra.KeySet()
        self._fetching = None  # an asyncio.Lock, made in the server's loop
        self.other_types = set()
        self.counts = {"deliveries": 0, "events": 0, "duplicates": 0, "refused": 0, "limited": 0, "unreadable": 0,
                       "other": 0, "key_fetches": 0}

    def _entra_policy(self, given):
        """The Entra policy when entra_tenant_id is set (ArgumentError for an incomplete or impossible one)."""
        named = [name for name in ENTRA_ARGS if given.get(name) is not None]
        if not named:
            return None
        args = self.args
        if not args["entra_tenant_id"] or not args["entra_audience"]:
            raise ArgumentError("%s: %s: Microsoft Entra tokens need both entra_tenant_id and entra_audience"
                                % (SOURCE, ", ".join(named)))
        if not entra.TENANT_ID.fullmatch(args["entra_tenant_id"]):
            raise ArgumentError("%s: argument entra_tenant_id must be the tenant's id (a GUID), not %s"
                                % (SOURCE, loggable(args["entra_tenant_id"])))
        if args["entra_openid_configuration_url"] and args["entra_jwks_url"]:
            raise ArgumentError("%s: set entra_openid_configuration_url or entra_jwks_url, not both" % SOURCE)
        for name in ("entra_openid_configuration_url", "entra_jwks_url"):
            problem = args[name] and entra.key_url_problem(args[name])
            if problem:
                raise ArgumentError("%s: argument %s %s" % (SOURCE, name, problem))
        if not entra.HAS_JWT:
            raise ArgumentError("%s: Microsoft Entra tokens need the Python packages PyJWT and cryptography in "
                                "ansible-rulebook's environment (pip install PyJWT cryptography)" % SOURCE)
        return entra.Policy(args["entra_tenant_id"], args["entra_audience"], issuers=args["entra_issuers"],
                            role=args["entra_role"], leeway=args["entra_leeway"])

    def app(self):
        app = web.Application(client_max_size=self.args["max_body_bytes"])
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
        peer = peer_key(request.remote)
        try:
            await self.authenticate(request)
        except Refused as refused:
            return self._refusal(request, peer, refused)
        if request.method == "OPTIONS":
            return self._cloudevents_handshake(request)
        if request.method != "POST":
            return web.json_response({"error": "POST Event Grid deliveries here"}, status=405,
                                     headers={"Allow": "POST, OPTIONS"})
        limit = self.args["max_body_bytes"]
        try:
            body = await request.read()
            delivery = parse_delivery(body, request.headers.get("Content-Type", ""), max_bytes=limit,
                                      max_events=self.args["max_events"])
        except web.HTTPRequestEntityTooLarge:
            logger.warning("%s: refused a delivery from %s: the body is larger than %d bytes", SOURCE, peer, limit)
            return web.json_response({"error": "the body is larger than %d bytes" % limit}, status=413)
        except DeliveryError as exc:
            logger.warning("%s: refused a delivery from %s: %s", SOURCE, peer, exc)
            return web.json_response({"error": str(exc)}, status=exc.status)
        if delivery.validation_code is not None:
            logger.info("%s: answered Event Grid's subscription validation", SOURCE)
            return web.json_response({"validationResponse": delivery.validation_code})
        self.counts["deliveries"] += 1
        for event in self.events_of(delivery):
            await self.queue.put(event)
        return web.Response(status=200)

    # -- who may deliver ---------------------------------------------------------------------------------------------

    async def authenticate(self, request):
        """Return when the request presents the shared token or an acceptable Entra token; else raise Refused."""
        if self.args["insecure_no_token"]:
            return
        bearer, code = presented_tokens(request.headers, request.query, self.args["token_param"])
        if self.args["token"] and (token_matches(self.args["token"], code) or
                                   token_matches(self.args["token"], bearer)):
            return
        if self.policy is not None and bearer is not None:
            try:
                await self._check_entra_token(bearer)
            except entra.TokenRefused as exc:
                raise Refused("%s: %s" % ("not the token, nor an acceptable Entra token" if self.args["token"] else
                                          "Entra token refused", exc), exc.status, exc.retry_after)
            return
        if bearer is None and code is None:
            raise Refused("no token")
        raise Refused("wrong token" if self.args["token"] else "no Microsoft Entra token (Authorization: Bearer)")

    async def _check_entra_token(self, token):
        kid = entra.key_id(token)
        fetched_now = False
        if self.keys.wants_fetch(kid, self.monotonic()):
            fetched_now = await self.fetch_keys(kid)
        key = self.keys.get(kid)
        if key is None:
            if fetched_now or self.keys.fresh():
                raise entra.TokenRefused("unknown key id %s (not in the tenant's keys, fetched %s)" % (
                    loggable(kid), "just now" if fetched_now else "less than a minute ago"))
            wait = max(1, int(math.ceil(self.keys.wait(self.monotonic()))))
            raise entra.TokenRefused("unknown key id %s, and the tenant's keys could not be fetched: try again in "
                                     "%d s" % (loggable(kid), wait), status=503, retry_after=wait)
        entra.verify(token, key, self.policy, self.clock())

    async def fetch_keys(self, kid=None):
        """Fetch the tenant's keys when they are wanted and allowed (one fetch at a time; a request that waited
        for another's fetch does not fetch again). True when they were fetched successfully meanwhile."""
        before = self.keys.fetched
        if self._fetching is None:
            self._fetching = asyncio.Lock()
        async with self._fetching:
            now = self.monotonic()
            if self.keys.fetched != before:
                return True  # by the request this one waited for
            if not self.keys.wants_fetch(kid, now) or self.keys.wait(now) > 0:
                return False
            self.keys.attempt(now)
            self.counts["key_fetches"] += 1
            try:
                url = self.args["entra_jwks_url"]
                if not url:
                    url = entra.jwks_uri_of(await fetch_bounded(
                        self.args["entra_openid_configuration_url"] or
                        entra.openid_configuration_url(self.policy.tenant_id)))
                keys, skipped = entra.parse_jwks(await fetch_bounded(url))
            except entra.KeysUnavailable as exc:
                logger.error("%s: cannot get the tenant's signing keys (next try in %d s at the earliest): %s",
                             SOURCE, entra.KEYS_MIN_INTERVAL, exc)
                return False
            self.keys.update(keys, self.monotonic())
            logger.info("%s: %d signing key(s) of tenant %s from %s%s", SOURCE, len(keys), self.policy.tenant_id,
                        url, " (%d other entries left out)" % skipped if skipped else "")
            return True

    def _refusal(self, request, peer, refused):
        self.counts["refused"] += 1
        wait, announce = self.failures.failed(peer, self.monotonic())
        if wait > 0:
            self.counts["limited"] += 1
            logger.log(logging.WARNING if announce else logging.DEBUG,
                       "%s: refused a %s from %s with 429: more than %d failed authentications within a minute "
                       "(this one: %s); the next ones from there are logged at debug level for a minute", SOURCE,
                       request.method, peer, self.failures.limit, refused)
            return web.json_response({"error": "too many failed authentications"}, status=429,
                                     headers={"Retry-After": str(int(math.ceil(wait)))})
        logger.warning("%s: refused a %s from %s: %s", SOURCE, request.method, peer, refused)
        headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else None
        error = "a valid token is required" if refused.status == 401 else "try again later"
        return web.json_response({"error": error}, status=refused.status, headers=headers)

    # -- what was delivered ------------------------------------------------------------------------------------------

    def _cloudevents_handshake(self, request):
        origin = request.headers.get(CLOUDEVENTS_ORIGIN_HEADER)
        if not origin:
            return web.json_response({"error": "OPTIONS is the CloudEvents handshake: %s is missing"
                                      % CLOUDEVENTS_ORIGIN_HEADER}, status=400)
        if len(origin) > MAX_ORIGIN_CHARS or not all(" " < c < "\x7f" for c in origin):
            return web.json_response({"error": "%s is not a host name" % CLOUDEVENTS_ORIGIN_HEADER}, status=400)
        logger.info("%s: answered the CloudEvents handshake of %s", SOURCE, loggable(origin))
        return web.Response(status=200, headers={CLOUDEVENTS_ALLOWED_HEADER: origin, "WebHook-Allowed-Rate": "*",
                                                 "Allow": "POST, OPTIONS"})

    def events_of(self, delivery):
        """The rulebook events of one delivery, duplicates and stale reports left out."""
        now = self.clock()
        out = []
        for item in delivery.items:
            if item.kind == OTHER:
                self.counts["other"] += 1
                shown = loggable(item.event_type)  # whatever JSON the sender put there
                level = logging.DEBUG
                if shown not in self.other_types and len(self.other_types) < MAX_OTHER_TYPES:
                    self.other_types.add(shown)
                    level = logging.WARNING
                logger.log(level, "%s: ignoring events of type %s (only scheduled events are handled)", SOURCE, shown)
                continue
            if item.delivery_id is not None and self.recent.seen(item.delivery_id):
                self.counts["duplicates"] += 1
                logger.debug("%s: duplicate delivery %s dropped", SOURCE, loggable(item.delivery_id))
                continue
            if item.kind == UNREADABLE:
                self.counts["unreadable"] += 1
                logger.warning("%s: unreadable scheduled event %s: %s", SOURCE, loggable(item.delivery_id),
                               loggable(item.problem, 300))
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


async def fetch_bounded(url):
    """GET a JSON document of the key endpoints: FETCH_TIMEOUT seconds, MAX_JWKS_BYTES, no redirect; through the
    environment's proxy settings except on loopback. KeysUnavailable says why not."""
    loopback = entra.is_loopback(urllib.parse.urlsplit(url).hostname)
    timeout = aiohttp.ClientTimeout(total=entra.FETCH_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout, trust_env=not loopback) as session:
            async with session.get(url, allow_redirects=False, headers={"Accept": "application/json"}) as response:
                if response.status != 200:
                    raise entra.KeysUnavailable("%s answered HTTP %d" % (url, response.status))
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body.extend(chunk)
                    if len(body) > entra.MAX_JWKS_BYTES:
                        raise entra.KeysUnavailable("%s sent more than %d bytes" % (url, entra.MAX_JWKS_BYTES))
                return bytes(body)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise entra.KeysUnavailable("cannot fetch %s: %s" % (url, type(exc).__name__ if not str(exc) else exc))


class _WithheldDetails(logging.Filter):  # pylint: disable=too-few-public-methods
    """aiohttp's server logs a request it cannot parse as an error, with the offending bytes (a header, a token, a
    body): keep the line and the kind of error, as a warning (the sender's fault), and withhold the rest."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "%s: %s (%d; its details are not logged: they may hold the request's bytes)" % (
                record.getMessage(), type(exc).__name__, exc.code)
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


HTTP_LOGGER = logging.getLogger(__name__ + ".http")
HTTP_LOGGER.addFilter(_WithheldDetails())


async def serve(receiver, host, port, ssl_context=None):
    """Start the receiver's server (no access log: a URL may carry the token; aiohttp's own messages through
    HTTP_LOGGER); returns the runner."""
    runner = web.AppRunner(receiver.app(), access_log=None, logger=HTTP_LOGGER)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    return runner


async def main(queue, args):
    """ansible-rulebook's entry point: serve until the rulebook ends."""
    receiver = Receiver(args, queue)
    context = receiver.ssl_context()
    runner = await serve(receiver, receiver.args["host"], receiver.args["port"], context)
    for address in runner.addresses:  # the port chosen when port is 0
        logger.info("%s: listening on %s://%s:%s%s", SOURCE, "https" if context else "http", address[0], address[1],
                    receiver.args["path"])
    if receiver.policy is not None:
        await receiver.fetch_keys()  # the first fetch now, so a wrong URL shows at start (a failure is retried later)
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
