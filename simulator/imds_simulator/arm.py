"""The control-plane face: Azure Resource Manager, Resource Graph and a managed-identity token endpoint.

One loopback listener answers, as a function from a request to a Reply, what a client outside the VMs
sends to ``https://management.azure.com`` about scheduled events:

* ``GET /msi/token`` (App Service managed-identity style, what ``azure-identity``'s
  ManagedIdentityCredential calls when ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set);
* ``POST /providers/Microsoft.ResourceGraph/resources`` (the reduced KQL of ``kql``, with paging);
* ``GET``/``PATCH``/``PUT`` of a VM, scale set or availability set (its ``scheduledEventsPolicy``);
* ``POST .../providers/Microsoft.Maintenance/scheduledevents/{id}/acknowledge`` and the list form.

Every call but the token endpoint needs ``Authorization: Bearer <a token the endpoint issued>``. The
world is the IMDS face's: an acknowledgement here is an approval there, and the reverse.

Tokens are shaped like Entra ID's (a JWT whose claims name the tenant, the audience and the managed identity)
but unsigned: the simulator knows the tokens it issued, and clients never verify an access token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
import threading
import time
import urllib.parse
import uuid

from . import kql
from .faults import patch_rows
from .listener import BaseHandler
from .reply import json_reply
from .traffic import RequestLog
from .world import RESOURCE_KINDS, ControlPlaneError, NotFound

TOKEN_PATH = "/msi/token"
IDENTITY_API_VERSION = "2019-08-01"
TOKEN_LIFETIME = 24 * 3600
RESOURCE_GRAPH_VERSIONS = ("2021-03-01", "2024-04-01")
ACKNOWLEDGE_VERSIONS = ("2023-10-01-preview", "2025-10-01-preview")
ACKNOWLEDGE_LIST_VERSIONS = ("2025-10-01-preview",)
POLICY_MIN_VERSION = "2025-04-01"
FEATURE = "Microsoft.Compute/SendScheduledEventsPolicy"
MAX_TOP = 1000
# The managed identity whose tokens the endpoint issues (a user-assigned one's ids would be the same shape).
CLIENT_ID = "00000000-0000-4000-8000-00000000a11d"
OBJECT_ID = "00000000-0000-4000-8000-00000000a0b1"
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_KINDS = {kind.lower(): kind for kind in RESOURCE_KINDS}
_RESOURCE = (r"/subscriptions/(?P<subscription>[^/]+)/resourcegroups/(?P<resource_group>[^/]+)"
             r"/providers/microsoft\.compute/(?P<kind>virtualmachines|virtualmachinescalesets|availabilitysets)"
             r"/(?P<name>[^/]+)")
_EVENTS = _RESOURCE + r"/providers/microsoft\.maintenance/scheduledevents"


def arm_error(status, code, message, details=None, headers=None):
    """ARM's error body: ``{"error": {"code", "message"[, "details"]}}``."""
    error = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    reply = json_reply(status, {"error": error})
    reply.headers.update(headers or {})
    return reply


def _resets_after(seconds):
    """hh:mm:ss, rounded up: a client that waits what it says is never early."""
    seconds = math.ceil(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ArmService:
    """Answers control-plane requests from the world.

    ``identity_header`` is the secret a token request must carry; ``wall`` (real time: clients compare
    ``expires_on`` with their own clock) dates the tokens; ``monotonic`` runs the quota window.
    """

    def __init__(self, world, identity_header, *, wall=time.time, monotonic=time.monotonic, request_log_size=10000):
        self.world = world
        self.identity_header = identity_header
        self._wall = wall
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._tokens = {}
        self._window_start = None
        self._window_count = 0
        self.request_log = RequestLog(request_log_size)
        self._routes = [
            (("GET",), TOKEN_PATH, self.token),
            (("POST",), r"/providers/microsoft\.resourcegraph/resources", self.resource_graph),
            (("POST",), _EVENTS + r"/(?P<event_id>[^/]+)/acknowledge", self.acknowledge),
            (("POST",), _EVENTS, self.acknowledge_list),
            (("GET", "PATCH", "PUT"), _RESOURCE, self.resource),
        ]

    def reset(self):
        """Forget the quota window and the request log (tokens stay valid, as a client may have cached one)."""
        with self._lock:
            self._window_start, self._window_count = None, 0
        self.request_log.clear()

    @property
    def tokens_issued(self):
        """How many access tokens the endpoint handed out."""
        return len(self._tokens)

    def revoke_tokens(self):
        """Revoke every token issued so far (now, on the tokens' clock); returns the new token epoch."""
        return self.world.revoke_tokens(int(self._wall()))

    # -- the request -----------------------------------------------------------

    def handle(self, method, target, headers, body=b""):
        """Answer one request (``headers`` keyed by lower-case name) and log it."""
        arrived, sim_arrived = self._wall(), self.world.now()
        reply = self._process(method, target, headers, body)
        self.request_log.add(wall_time=arrived, sim_time=sim_arrived, vm="arm", method=method, path=target,
                             status=reply.status, fault=reply.fault)
        return reply

    def _process(self, method, target, headers, body):
        parts = urllib.parse.urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = {key.lower(): value for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)}
        for methods, pattern, func in self._routes:
            match = re.fullmatch(pattern, path, re.IGNORECASE)
            if match is None:
                continue
            if method not in methods:
                return arm_error(405, "MethodNotAllowed",
                                 f"The requested resource does not support http method '{method}'.")
            faults = self.world.active_faults(None, path, method)
            faulted = self._fault(faults)
            if faulted is not None:
                return faulted
            if func != self.token:
                refused = self._authenticate(headers)
                if refused is not None:
                    return refused
            quota, extra = {}, {}
            if func == self.resource_graph:
                refused, quota = self._spend_quota()
                if refused is not None:
                    return refused
                extra = {"faults": faults}
            reply = func(method=method, query=query, body=body, headers=headers, **match.groupdict(), **extra)
            reply.headers.update(quota)
            reply.headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
            return reply
        return arm_error(404, "NotFound", f"The simulator's control plane has no endpoint {parts.path}.")

    @staticmethod
    def _fault(faults):
        for fault in faults:
            if fault.kind == "throttle":
                wait = fault.retry_after
                return arm_error(
                    429, "RateLimiting",
                    "Client application has been throttled and should not attempt to repeat the request until an amount "
                    "of time has elapsed. (simulated fault)",
                    headers={"Retry-After": str(wait), "x-ms-user-quota-remaining": "0",
                             "x-ms-user-quota-resets-after": _resets_after(wait)})
            if fault.kind == "arm_status":
                reply = arm_error(fault.code, "InternalServerError" if fault.code == 500 else "ServiceUnavailable",
                                  f"Simulated fault: HTTP {fault.code}")
                reply.fault = "arm_status"
                return reply
        return None

    def _spend_quota(self):
        """Count one Resource Graph query against the per-user quota (``control_plane.resource_graph_quota``: so many
        queries per window of the monotonic clock, a window opening with the first query after the last one closed).
        Returns (the 429 when the quota is spent and enforced, else None; the quota headers of the answer)."""
        control = self.world.scenario.control_plane
        now = self._monotonic()
        with self._lock:
            if self._window_start is None or now >= self._window_start + control.quota_window:
                self._window_start, self._window_count = now, 0
            resets_after = self._window_start + control.quota_window - now
            refused = control.quota_enforced and self._window_count >= control.quota_requests
            if not refused:
                self._window_count += 1
            remaining = max(0, control.quota_requests - self._window_count)
        headers = {"x-ms-user-quota-remaining": str(remaining), "x-ms-user-quota-resets-after": _resets_after(resets_after)}
        if not refused:
            return None, headers
        headers["Retry-After"] = str(math.ceil(resets_after))
        reply = arm_error(429, "RateLimiting", "Client application has been throttled and should not attempt to repeat "
                          "the request until an amount of time has elapsed.", headers=headers)
        reply.fault = "quota"
        return reply, headers

    # -- authentication ----------------------------------------------------------

    def token(self, method, query, body, headers):
        """GET /msi/token: an access token for a caller that knows the identity header."""
        del method, body
        if query.get("api-version") != IDENTITY_API_VERSION:
            return json_reply(400, {"statusCode": 400, "message": f"api-version must be {IDENTITY_API_VERSION}"})
        resource = query.get("resource")
        if not resource:
            return json_reply(400, {"statusCode": 400, "message": "The 'resource' query parameter is required"})
        given = headers.get("x-identity-header")
        if given is None:
            return json_reply(400, {"statusCode": 400, "message": "The X-IDENTITY-HEADER request header is missing"})
        if not secrets.compare_digest(given, self.identity_header):
            return json_reply(401, {"statusCode": 401, "message": "The X-IDENTITY-HEADER value is not valid"})
        issued_at = int(self._wall())
        expires_on = issued_at + TOKEN_LIFETIME
        access_token = self._mint(resource, issued_at, expires_on)
        with self._lock:
            self._tokens[access_token] = (expires_on, self.world.token_epoch, resource)
        return json_reply(200, {"access_token": access_token, "expires_on": str(expires_on), "resource": resource,
                                "token_type": "Bearer", "client_id": CLIENT_ID})

    def _mint(self, resource, issued_at, expires_on):
        """An unsigned JWT with the claims of a managed identity's token from Entra ID."""
        tenant = self.world.scenario.control_plane.tenant_id
        claims = {"aud": resource, "iss": f"https://sts.windows.net/{tenant}/", "iat": issued_at, "nbf": issued_at,
                  "exp": expires_on, "tid": tenant, "oid": OBJECT_ID, "sub": OBJECT_ID, "appid": CLIENT_ID,
                  "idtyp": "app", "uti": secrets.token_urlsafe(16)}
        return ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode("utf-8"))
                        for part in ({"typ": "JWT", "alg": "none"}, claims)) + "."

    def _authenticate(self, headers):
        value = headers.get("authorization", "")
        scheme, _space, token = value.partition(" ")
        if not value:
            return arm_error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        if scheme.lower() != "bearer" or not token.strip():
            return arm_error(401, "AuthenticationFailed",
                             "Authentication failed. The 'Authorization' header is not of the form 'Bearer <token>'.")
        with self._lock:
            issued = self._tokens.get(token.strip())
        if issued is None:
            return arm_error(401, "AuthenticationFailed", "Authentication failed. The access token is not valid.")
        expires_on, epoch, _resource = issued
        revoked = self.world.revoked_at.get(epoch)
        if revoked is not None:
            # Continuous access evaluation: a revoked token earns a claims challenge (Microsoft's "Claims challenges,
            # claims requests and client capabilities"); the token asked for must not predate the revocation.
            claims = {"access_token": {"nbf": {"essential": True, "value": str(revoked)}}}
            tenant = self.world.scenario.control_plane.tenant_id
            challenge = (f'Bearer authorization_uri="https://login.microsoftonline.com/{tenant}/oauth2/authorize", '
                         f'error="insufficient_claims", claims="{_b64url(json.dumps(claims).encode("utf-8"), pad=True)}"')
            return arm_error(401, "InvalidAuthenticationToken", "The access token has been revoked.",
                             headers={"WWW-Authenticate": challenge})
        if epoch != self.world.token_epoch or expires_on <= self._wall():
            return arm_error(401, "AuthenticationFailed", "Authentication failed. The access token has expired.")
        return None

    # -- Resource Graph ----------------------------------------------------------

    def resource_graph(self, method, query, body, headers, faults=()):
        """POST /providers/Microsoft.ResourceGraph/resources: one page of the reduced KQL's result (over the rows as
        the ``arm_fields`` faults among ``faults`` rewrote them)."""
        del method, headers
        version = query.get("api-version")
        if version not in RESOURCE_GRAPH_VERSIONS:
            return _bad_version(version, RESOURCE_GRAPH_VERSIONS)
        data, problem = _json_object(body)
        if problem:
            return arm_error(400, "InvalidRequestContent", problem)
        text = data.get("query")
        if not isinstance(text, str):
            return _graph_error("InvalidRequestContent", "The request must carry the query as a string in 'query'.")
        subscriptions = data.get("subscriptions")
        groups = data.get("managementGroups")
        for key, value in (("subscriptions", subscriptions), ("managementGroups", groups)):
            if value is not None and (not isinstance(value, list) or not all(isinstance(item, str) for item in value)):
                return _graph_error("InvalidRequestContent", f"'{key}' must be a list of strings.")
        options = data.get("options") or {}
        if not isinstance(options, dict):
            return _graph_error("InvalidRequestContent", "'options' must be an object.")
        top, skip, token, problem = _paging_options(options)
        if problem:
            return _graph_error(*problem)
        control = self.world.scenario.control_plane
        for group in groups or ():
            if group.lower() != control.management_group.lower():
                return arm_error(403, "AuthorizationFailed",
                                 f"The client does not have authorization to perform action "
                                 f"'Microsoft.ResourceGraph/resources/read' over scope "
                                 f"'/providers/Microsoft.Management/managementGroups/{group}' or the scope is invalid.")
        try:
            parsed = kql.parse(text)
        except kql.KqlError as exc:
            detail = {"code": "InvalidQuery", "message": exc.message}
            if exc.token is not None:
                detail["token"] = exc.token
            if exc.position is not None:
                detail["characterPositionInQuery"] = exc.position
            return _graph_error(None, None, [detail])
        scope = sorted(sub.lower() for sub in subscriptions) if subscriptions is not None else None
        fingerprint = hashlib.sha256(json.dumps([text, scope, sorted(g.lower() for g in groups or ())])
                                     .encode("utf-8")).hexdigest()[:16]
        if token is not None:
            skip = _read_skip_token(token, fingerprint)
            if skip is None:
                return _graph_error("InvalidSkipToken", "The $skipToken is not valid for this query and these scopes: "
                                                        "send it back with the same query, subscriptions and "
                                                        "management groups.")
        rows = patch_rows(self.world.control_plane_rows(), faults)
        if scope is not None:
            wanted = set(scope)
            rows = [row for row in rows if str(row["subscriptionId"]).lower() in wanted]
        result = parsed.run(rows)
        page = result[skip:skip + top]
        more = skip + len(page) < len(result)
        payload = {"totalRecords": len(result), "count": len(page), "data": [parsed.shape(row) for row in page],
                   "facets": [], "resultTruncated": "true" if more and not parsed.keeps_id else "false"}
        if more and parsed.keeps_id:
            payload["$skipToken"] = _make_skip_token(skip + len(page), fingerprint)
        return json_reply(200, payload)

    # -- VMs, scale sets and availability sets ----------------------------------------

    def _find(self, subscription, resource_group, kind, name):
        kind = _KINDS[kind.lower()]
        try:
            return self.world.resource(kind, name, subscription, resource_group), None
        except NotFound:
            return None, arm_error(404, "ResourceNotFound",
                                   f"The Resource 'Microsoft.Compute/{kind}/{name}' under resource group "
                                   f"'{resource_group}' was not found. For more details please go to "
                                   "https://aka.ms/ARMResourceNotFoundFix")

    def resource(self, method, query, body, headers, subscription, resource_group, kind, name):
        """GET, PATCH or PUT of a VM, scale set or availability set: its scheduledEventsPolicy."""
        del headers
        version = query.get("api-version")
        if not version:
            return arm_error(400, "MissingApiVersionParameter",
                             "The api-version query parameter (?api-version=) is required for all requests.")
        if not _VERSION.match(version):
            return arm_error(400, "InvalidApiVersionParameter", f"The api-version '{version}' is invalid.")
        data = None
        if method != "GET":
            data, problem = _json_object(body)
            if problem:
                return arm_error(400, "InvalidRequestContent", problem)
        found, missing = self._find(subscription, resource_group, kind, name)
        if missing is not None:
            return missing
        if data is not None:
            refused = self._patch(found, data, version)
            if refused is not None:
                return refused
        return json_reply(200, self._resource_view(found, version))

    def _patch(self, found, data, version):
        properties = data.get("properties")
        if properties is None:
            return None
        if not isinstance(properties, dict):
            return arm_error(400, "InvalidRequestContent", "'properties' must be an object.")
        if "scheduledEventsPolicy" not in properties:
            return None
        if version[:10] < POLICY_MIN_VERSION:
            position = len(json.dumps({"properties": {"scheduledEventsPolicy": 0}}).split("0")[0])
            return arm_error(400, "InvalidRequestContent",
                             "The request content was invalid and could not be deserialized: 'Could not find member "
                             "'scheduledEventsPolicy' on object of type 'Properties'. Path "
                             f"'properties.scheduledEventsPolicy', line 1, position {position}.'.")
        if not self.world.features_registered:
            return arm_error(400, "SubscriptionNotRegisteredForFeature",
                             f"The subscription '{found.subscription}' is not registered for the feature {FEATURE}. "
                             "Register it with 'az feature register --namespace Microsoft.Compute --name "
                             "SendScheduledEventsPolicy' and try again.")
        policy = properties["scheduledEventsPolicy"]
        problem = _policy_problem(policy)
        if problem:
            return arm_error(400, "InvalidParameter", problem)
        self.world.set_policy(found, policy)
        return None

    @staticmethod
    def _resource_view(found, version):
        properties = {}
        if found.policy and version[:10] >= POLICY_MIN_VERSION:
            properties["scheduledEventsPolicy"] = found.policy
        return {"id": found.id, "name": found.name, "type": f"Microsoft.Compute/{found.kind}",
                "location": found.location, "properties": properties}

    # -- acknowledge ------------------------------------------------------------

    def acknowledge(self, method, query, body, headers, subscription, resource_group, kind, name, event_id):
        """POST .../scheduledevents/{id}/acknowledge: approve one event from outside the VMs."""
        del method, body, headers
        version = query.get("api-version")
        if version not in ACKNOWLEDGE_VERSIONS:
            return _bad_version(version, ACKNOWLEDGE_VERSIONS)
        found, missing = self._find(subscription, resource_group, kind, name)
        if missing is not None:
            return missing
        try:
            self.world.acknowledge(found, [event_id], version, "single")
        except ControlPlaneError as exc:
            return arm_error(404 if exc.code == "NotFound" else 409, exc.code, exc.message)
        return json_reply(200, {"value": "Successfully Approved"})

    def acknowledge_list(self, method, query, body, headers, subscription, resource_group, kind, name):
        """POST .../scheduledevents with ``{"value": [ids]}``: approve several events of one resource."""
        del method, headers
        version = query.get("api-version")
        if version not in ACKNOWLEDGE_LIST_VERSIONS:
            return _bad_version(version, ACKNOWLEDGE_LIST_VERSIONS)
        data, problem = _json_object(body)
        ids = data.get("value") if data is not None else None
        if problem is None and (set(data) != {"value"} or not isinstance(ids, list) or not ids
                                or not all(isinstance(item, str) and item for item in ids)):
            problem = 'The request body must be {"value": ["<scheduled event id>", ...]} with at least one id.'
        if problem:
            return arm_error(400, "InvalidRequestContent", problem, details=[])
        found, missing = self._find(subscription, resource_group, kind, name)
        if missing is not None:
            return missing
        try:
            self.world.acknowledge(found, ids, version, "list")
        except ControlPlaneError as exc:
            return arm_error(404 if exc.code == "NotFound" else 409, exc.code, exc.message, details=exc.details)
        return json_reply(200, {"value": "Successfully Approved"})


def _b64url(raw, pad=False):
    text = base64.urlsafe_b64encode(raw).decode("ascii")
    return text if pad else text.rstrip("=")


def _bad_version(version, supported):
    shown = "(none)" if version is None else version
    return arm_error(400, "InvalidApiVersionParameter",
                     f"The api-version '{shown}' is invalid. The supported versions are '{','.join(supported)}'.")


def _graph_error(code, message, details=None):
    """Resource Graph's 400: ``BadRequest`` with the particular problem in ``details``."""
    return arm_error(400, "BadRequest", "Please provide below info when asking for support: the simulator rejected "
                                        "the request; see details.",
                     details=details if details is not None else [{"code": code, "message": message}])


def _json_object(body):
    if not body.strip():
        return None, "The request content was invalid and could not be deserialized: the body is empty."
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"The request content was invalid and could not be deserialized: {exc}."
    if not isinstance(data, dict):
        return None, "The request content was invalid and could not be deserialized: expected a JSON object."
    return data, None


def _paging_options(options):
    """($top, $skip, $skipToken, problem) from QueryRequestOptions."""
    top = options.get("$top", MAX_TOP)
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        return None, None, None, ("InvalidTop", f"$top must be an integer from 1 to {MAX_TOP}.")
    skip = options.get("$skip", 0)
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        return None, None, None, ("InvalidSkip", "$skip must be a non-negative integer.")
    token = options.get("$skipToken")
    if token is not None and not isinstance(token, str):
        return None, None, None, ("InvalidSkipToken", "$skipToken must be a string.")
    result_format = options.get("resultFormat", "objectArray")
    if result_format != "objectArray":
        return None, None, None, ("UnsupportedResultFormat",
                                  f"resultFormat {result_format!r} is not supported by the simulator: use 'objectArray'.")
    return top, skip, token, None


def _make_skip_token(offset, fingerprint):
    raw = json.dumps({"o": offset, "q": fingerprint}, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _read_skip_token(token, fingerprint):
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8"))
        offset = data["o"]
        if data["q"] != fingerprint or not isinstance(offset, int) or offset < 0:
            return None
        return offset
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None


def _policy_problem(policy):
    """Why a scheduledEventsPolicy cannot be stored, or None."""
    if policy is None:
        return None
    if not isinstance(policy, dict):
        return "properties.scheduledEventsPolicy must be an object."
    targets = policy.get("scheduledEventsAdditionalPublishingTargets")
    if targets is None:
        return None
    if not isinstance(targets, dict):
        return "scheduledEventsAdditionalPublishingTargets must be an object."
    publishing = targets.get("eventGridAndResourceGraph")
    if publishing is None:
        return None
    if not isinstance(publishing, dict):
        return "eventGridAndResourceGraph must be an object."
    if "enable" in publishing and not isinstance(publishing["enable"], bool):
        return "eventGridAndResourceGraph.enable must be true or false."
    version = publishing.get("scheduledEventsApiVersion")
    if version is not None and version != "2020-07-01":
        return f"scheduledEventsApiVersion {version!r} is not supported (expected '2020-07-01')."
    return None


class ArmHandler(BaseHandler):
    """Handler for the control-plane listener."""

    def answer(self, body):
        return self.server.service.handle(self.command, self.path, self.header_map(), body)
