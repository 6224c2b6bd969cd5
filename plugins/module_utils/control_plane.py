# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Scheduled events from Azure's control plane (preview): Resource Graph, acknowledge, and the opt-in policy.

A Resource Graph row's `properties` are IMDS's keys, so every row becomes an events.Event and the rules that
apply to an IMDS event (filters, approval, the report) apply to it unchanged; this file only adds what the row
says besides: the resource that owns the event (a VM, a scale set or an availability set), and the statuses
Completed and Canceled that IMDS never shows.

Everything talks to Azure Resource Manager with a bearer token from azure-identity. Like the rest of
module_utils it imports nothing from ansible; modules pass their options in.
"""

from __future__ import annotations

import base64
import json
import re
import time
import traceback

from .events import CONTROL_PLANE_STATUSES, DocumentError, Event, is_event_id

try:
    import requests
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported by the modules
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

DEFAULT_ENDPOINT = "https://management.azure.com"
RESOURCE_GRAPH_API = "2024-04-01"
ACKNOWLEDGE_APIS = ("2025-10-01-preview", "2023-10-01-preview")
LIST_ACKNOWLEDGE_APIS = ("2025-10-01-preview",)  # the api-versions that have the list form
COMPUTE_POLICY_API = "2025-04-01"  # the first Compute api-version that knows scheduledEventsPolicy
AUTH_SOURCES = ("auto", "msi", "env", "cli", "credentials")
PAGE_SIZE = 1000  # Resource Graph's largest page
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 4
MAX_RETRY_AFTER = 120.0
GRAPH_PATH = "/providers/Microsoft.ResourceGraph/resources"
FEATURE = "Microsoft.Compute/SendScheduledEventsPolicy"
ROW_TYPE = "microsoft.maintenance/scheduledevents"

# The owner of an event, as the row id names it; ARM ids are case-insensitive.
OWNER_KINDS = {"virtualmachines": "virtualMachines", "virtualmachinescalesets": "virtualMachineScaleSets",
               "availabilitysets": "availabilitySets"}
KIND_ALIASES = {"vm": "virtualMachines", "virtual_machine": "virtualMachines", "scale_set": "virtualMachineScaleSets",
                "vmss": "virtualMachineScaleSets", "availability_set": "availabilitySets"}
KIND_ALIASES.update((k, v) for k, v in OWNER_KINDS.items())
KIND_ALIASES.update((v, v) for v in OWNER_KINDS.values())
_ROW_ID = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourcegroups/(?P<resource_group>[^/]+)/providers/microsoft\.compute/"
    r"(?P<kind>virtualmachines|virtualmachinescalesets|availabilitysets)/(?P<name>[^/]+)"
    r"/providers/microsoft\.maintenance/scheduledevents/(?P<event_id>[^/]+)$", re.IGNORECASE)
_RESOURCE_ID = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourcegroups/(?P<resource_group>[^/]+)/providers/microsoft\.compute/"
    r"(?P<kind>virtualmachines|virtualmachinescalesets|availabilitysets)/(?P<name>[^/]+)/?$", re.IGNORECASE)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._()-]{1,90}$")
# What an ARM path segment from outside (a row's id, a resource id an operator gives) may not hold: what would end
# the path or change it (/ ? # % and the backslash), spaces, control characters and lone surrogates; and no segment
# ends with a dot ("..", ".").
_PATH_SEGMENT = re.compile("^[^/?#%\\\\\\s\x00-\x1f\x7f\ud800-\udfff]+(?<!\\.)$")
# Characters a KQL string literal cannot carry: C0 controls (but \t \n \r, which it escapes), DEL, lone surrogates.
_KQL_UNWRITABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_KQL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r"}


class ControlPlaneError(Exception):
    """A request Azure refused or that never got an answer; `code` is ARM's error code when there is one. `method`
    and `path` say which request, `identity` who sent it (never a token), for explain()."""

    def __init__(self, message, status=None, code=None, details=None, method=None, path=None, identity=None):
        super(ControlPlaneError, self).__init__(message)
        self.status = status
        self.code = code
        self.details = details or []
        self.method = method
        self.path = path
        self.identity = identity


# --- credentials ------------------------------------------------------------------------------------------------


def credential(auth_source="auto", client_id=None, secret=None, tenant=None):
    """An azure-identity credential, chosen the way Azure's Ansible collections let users choose.

    auto: DefaultAzureCredential (environment, workload identity, managed identity, Azure CLI ...);
    msi: the managed identity of the machine running the module (client_id picks a user-assigned one);
    env: AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET (or a certificate) from the environment;
    cli: the `az login` of the user running the module; credentials: client_id, secret and tenant given.
    """
    try:
        from azure import identity  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ControlPlaneError("the Python package azure-identity is required on the host running the module "
                                "(pip install azure-identity)")
    if auth_source not in AUTH_SOURCES:
        raise ControlPlaneError("auth_source must be one of %s, not %r" % (", ".join(AUTH_SOURCES), auth_source))
    if auth_source == "credentials" or (auth_source == "auto" and secret):
        missing = [n for n, v in (("client_id", client_id), ("secret", secret), ("tenant", tenant)) if not v]
        if missing:
            raise ControlPlaneError("auth_source=credentials needs client_id, secret and tenant (missing: %s)"
                                    % ", ".join(missing))
        return identity.ClientSecretCredential(tenant_id=tenant, client_id=client_id, client_secret=secret)
    if auth_source == "msi":
        return identity.ManagedIdentityCredential(client_id=client_id) if client_id else \
            identity.ManagedIdentityCredential()
    if auth_source == "env":
        return identity.EnvironmentCredential()
    if auth_source == "cli":
        return identity.AzureCliCredential()
    kwargs = {"exclude_interactive_browser_credential": True}
    if client_id:
        kwargs["managed_identity_client_id"] = client_id
    return identity.DefaultAzureCredential(**kwargs)


def signed_in_client(auth_source="auto", client_id=None, secret=None, tenant=None, **options):
    """An ArmClient with the credential() these options choose, which signs in afresh (a new credential, so a new
    token cache) when Azure refuses a token without saying what claims it wants; `options` are ArmClient's."""
    def renew():
        return credential(auth_source, client_id, secret, tenant)

    said = ["auth_source=%s" % auth_source] + ["%s=%s" % (k, v) for k, v in (("client_id", client_id),
                                                                             ("tenant", tenant)) if v]
    return ArmClient(renew(), renew=renew, identity=", ".join(said), **options)


# --- the ARM client -----------------------------------------------------------------------------------------------


class ArmClient(object):
    """Azure Resource Manager over HTTPS with a bearer token: JSON in and out, ARM's error bodies turned into
    ControlPlaneError, 429 answered by waiting Retry-After (bounded), 5xx and connection errors retried, Resource
    Graph queries paced by the quota its answers announce (GraphQuota).

    A 401 gets one fresh token, never the cached one that was refused: with the claims of the answer's challenge
    (continuous access evaluation: azure-identity then bypasses its cache), else from a new credential (`renew`,
    which starts with an empty cache). `identity` says how the client signed in, for error messages."""

    def __init__(self, cred, endpoint=DEFAULT_ENDPOINT, timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES,
                 session=None, sleep=time.sleep, clock=time.time, renew=None, identity=None):
        if not HAS_REQUESTS:
            raise ControlPlaneError("the Python package requests is required")
        endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        if not re.match(r"^https?://[^/\s]+$", endpoint):
            raise ControlPlaneError("management_endpoint must be a URL like %s, not %r" % (DEFAULT_ENDPOINT, endpoint))
        self.endpoint = endpoint
        self.scope = endpoint + "/.default"
        self.credential = cred
        self.renew = renew
        self.identity = identity
        self.timeout = timeout
        self.retries = retries
        self.session = session or requests.Session()
        self.sleep = sleep
        self.clock = clock
        self.quota = GraphQuota()
        self._token = None
        self.requests_sent = 0

    def _bearer(self):
        if self._token is None or self._token.expires_on - 300 <= self.clock():
            self._token = self._get_token()
        return self._token.token

    def _get_token(self, claims=None):
        try:
            if claims:
                return self.credential.get_token(self.scope, claims=claims)
            return self.credential.get_token(self.scope)
        except Exception as exc:  # azure-identity raises its own types, and says what it tried
            raise ControlPlaneError("cannot get a %stoken for %s (%s): %s" % (
                "fresh " if claims else "", self.scope, self.identity or "azure-identity", _one_line(exc)))

    def _fresh_token(self, response):
        """After a 401: a token other than the refused one, or None when the credential has no other to give."""
        refused = self._token
        claims = claims_challenge(response.headers.get("WWW-Authenticate"))
        if claims is None and self.renew is not None:
            try:
                self.credential = self.renew()
            except ControlPlaneError as exc:
                raise ControlPlaneError("cannot sign in again after a 401: %s" % exc)
        self._token = self._get_token(claims)
        return None if refused is not None and self._token.token == refused.token else self._token

    def describe_identity(self):
        """Who the requests were sent as: how the client signed in, and the identity the token names when it can
        be read (a JWT's appid or azp, oid, tid and aud claims). Never the token."""
        said = [self.identity] if self.identity else []
        claims = token_claims(self._token.token) if self._token is not None else {}
        for keys, label in ((("appid", "azp"), "client id"), (("oid",), "object id"), (("tid",), "tenant"),
                            (("aud",), "audience")):
            value = next((claims[k] for k in keys if isinstance(claims.get(k), str)), None)
            if value:
                said.append("%s %s" % (label, value))
        return ", ".join(said) or "unknown"

    def request(self, method, path, api_version, body=None):
        """The parsed JSON answer of one ARM call (retried as above)."""
        url = "%s%s" % (self.endpoint, path)
        graph = path.lower().startswith(GRAPH_PATH.lower())
        attempt = 0
        renewed = None
        while True:
            attempt += 1
            if graph:
                self._pace()
            headers = {"Authorization": "Bearer " + self._bearer(), "Accept": "application/json"}
            try:
                self.requests_sent += 1
                response = self.session.request(method, url, params={"api-version": api_version}, json=body,
                                                headers=headers, timeout=self.timeout)
            except requests.RequestException as exc:
                if attempt > self.retries:
                    raise ControlPlaneError("%s %s: no answer after %d attempts: %s"
                                            % (method, path, attempt, _one_line(exc)), method=method, path=path)
                self.sleep(min(2 ** attempt, 30))
                continue
            status = response.status_code
            if graph:
                self.quota.observe(response.headers, self.clock(), status == 429)
            if status == 401 and renewed is None:
                renewed = self._fresh_token(response) is not None
                if renewed:
                    continue
            if status == 429 or status >= 500:
                if attempt > self.retries:
                    raise self._error(method, path, response, renewed)
                wait = _retry_after(response, attempt)
                self.sleep(wait)
                self.quota.waited_out(wait)
                continue
            if status >= 400:
                raise self._error(method, path, response, renewed)
            if not response.content:
                return {}
            try:
                return response.json()
            except ValueError:
                raise ControlPlaneError("%s %s answered %d with a body that is not JSON" % (method, path, status),
                                        status=status, method=method, path=path)

    def _pace(self):
        wait = self.quota.delay(self.clock())
        if wait > 0:
            self.sleep(wait)
            self.quota.waited_out(wait)

    def _error(self, method, path, response, renewed):
        exc = _error(method, path, response)
        exc.identity = self.describe_identity()
        if response.status_code == 401 and renewed is not None:
            exc.args = ("%s (%s)" % (str(exc).rstrip("."), "refused again with a fresh token" if renewed else
                                     "the credential gave the refused token again"),)
        return exc


class GraphQuota(object):
    """Resource Graph's per-user quota, as its answers announce it (Microsoft's "Guidance for throttled requests in
    Azure Resource Graph"): `x-ms-user-quota-remaining` queries until `x-ms-user-quota-resets-after` (hh:mm:ss).
    The next query waits its share of the time left, (time left) / (remaining + 1): the quota is spread over the
    window, and once it is spent the next query waits for the reset. `waited` adds up the seconds waited (pacing
    and 429s), `throttled` counts the 429s; as_dict() is what the modules return."""

    def __init__(self):
        self.remaining = None
        self.resets_after = None
        self.answered_at = None
        self.waited = 0.0
        self.throttled = 0
        self.queries = 0

    def observe(self, headers, now, throttled=False):
        self.queries += 1
        self.throttled += 1 if throttled else 0
        remaining = headers.get("x-ms-user-quota-remaining")
        resets_after = parse_duration(headers.get("x-ms-user-quota-resets-after"))
        if remaining is None or not str(remaining).strip().isdigit() or resets_after is None:
            return
        self.remaining, self.resets_after, self.answered_at = int(remaining), resets_after, now

    def delay(self, now):
        """Seconds to wait before the next query (at most MAX_RETRY_AFTER)."""
        if self.remaining is None:
            return 0.0
        due = self.answered_at + min(self.resets_after, MAX_RETRY_AFTER) / (self.remaining + 1)
        return min(max(0.0, due - now), MAX_RETRY_AFTER)  # bounded even if the clock went back

    def waited_out(self, seconds):
        """A wait for the quota (or a 429's Retry-After) is over: what the last answer said is spent."""
        self.waited += seconds
        self.remaining = None

    def as_dict(self):
        return {"remaining": self.remaining, "resets_after": self.resets_after, "waited": round(self.waited, 3),
                "throttled": self.throttled, "queries": self.queries}


def parse_duration(text):
    """Seconds in a hh:mm:ss (optionally fractional) duration, or None."""
    match = re.match(r"^\s*(\d+):([0-5]?\d):([0-5]?\d(?:\.\d+)?)\s*$", str(text or ""))
    if not match:
        return None
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))


def claims_challenge(header):
    """The claims a 401's `WWW-Authenticate: Bearer ... error="insufficient_claims", claims="<base64>"` asks for
    (decoded JSON text, as azure-identity's get_token(claims=) takes it), or None."""
    text = str(header or "")
    if not re.search(r'\berror="insufficient_claims"', text):
        return None
    match = re.search(r'\bclaims="([A-Za-z0-9+/_=-]+)"', text)
    if not match:
        return None
    encoded = match.group(1)
    try:
        claims = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
        json.loads(claims)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims


def token_claims(token):
    """The claims of an access token that is a JWT, unverified (for messages only), else {}."""
    parts = str(token or "").split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _retry_after(response, attempt):
    """Retry-After, else the quota's reset (a 429 of Resource Graph), else exponential backoff; bounded."""
    value = response.headers.get("Retry-After")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = parse_duration(response.headers.get("x-ms-user-quota-resets-after"))
        if seconds is None or response.status_code != 429:
            seconds = min(2 ** attempt, 30)
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def _one_line(exc):
    return " ".join(str(exc).split())[:500]


def _error(method, path, response):
    code = message = None
    details = []
    try:
        body = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code, message = err.get("code"), err.get("message")
            details = [d for d in err.get("details") or [] if isinstance(d, dict)]
    except ValueError:
        pass
    text = "%s %s: %d %s" % (method, path.split("?")[0], response.status_code, code or response.reason or "")
    if message:
        text += ": " + _one_line(message)
    for detail in details[:5]:
        text += "; %s%s: %s" % ("%s " % detail["target"] if detail.get("target") else "", detail.get("code"),
                                _one_line(detail.get("message", "")))
    return ControlPlaneError(text, status=response.status_code, code=code, details=details, method=method,
                             path=path.split("?")[0])


# --- owners and rows ----------------------------------------------------------------------------------------------


class Owner(object):
    """The resource an event belongs to on the control plane: a VM, a scale set or an availability set."""

    __slots__ = ("subscription", "resource_group", "kind", "name")

    def __init__(self, subscription, resource_group, kind, name):
        self.subscription = subscription
        self.resource_group = resource_group
        self.kind = kind
        self.name = name

    @classmethod
    def from_resource_id(cls, resource_id):
        match = _RESOURCE_ID.match(resource_id or "")
        if not match:
            raise ValueError("%r is not the id of a VM, scale set or availability set (/subscriptions/<id>/"
                             "resourceGroups/<rg>/providers/Microsoft.Compute/<virtualMachines|"
                             "virtualMachineScaleSets|availabilitySets>/<name>)" % (resource_id,))
        _check_segments(match, ("subscription", "resource_group", "name"))
        return cls(match.group("subscription"), match.group("resource_group"),
                   OWNER_KINDS[match.group("kind").lower()], match.group("name"))

    @classmethod
    def from_spec(cls, kind, name, resource_group, subscription):
        canonical = KIND_ALIASES.get(str(kind))
        if canonical is None:
            raise ValueError("kind %r: use vm, scale_set or availability_set" % (kind,))
        for what, value in (("name", name), ("resource_group", resource_group), ("subscription", subscription)):
            if not value or not _SAFE_NAME.match(str(value)) or str(value).endswith("."):
                raise ValueError("%s %r is not a valid Azure name" % (what, value))
        return cls(str(subscription), str(resource_group), canonical, str(name))

    @property
    def id(self):
        return "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/%s/%s" % (
            self.subscription, self.resource_group, self.kind, self.name)

    @property
    def key(self):
        return self.id.lower()

    def as_dict(self):
        return {"id": self.id, "kind": self.kind, "name": self.name, "resource_group": self.resource_group,
                "subscription": self.subscription}


def _check_segments(match, groups):
    """Raises ValueError when a part of an ARM id would change the path it is put in (see _PATH_SEGMENT)."""
    for group in groups:
        if not _PATH_SEGMENT.match(match.group(group)):
            raise ValueError("%s %r in %r cannot be part of an ARM path" % (group, match.group(group), match.string))


class ControlPlaneEvent(object):
    """One Resource Graph row: the event (the one domain model) and the owner its id names."""

    __slots__ = ("event", "owner", "row")

    def __init__(self, event, owner, row):
        self.event = event
        self.owner = owner
        self.row = row

    @classmethod
    def from_row(cls, row):
        """Raises ValueError saying what is wrong with a row that cannot be read."""
        if not isinstance(row, dict):
            raise ValueError("a row is a JSON %s, not an object" % type(row).__name__)
        match = _ROW_ID.match(str(row.get("id") or ""))
        if not match:
            raise ValueError("its id %r is not a scheduled event of a VM, scale set or availability set"
                             % (row.get("id"),))
        _check_segments(match, ("subscription", "resource_group", "name", "event_id"))
        properties = row.get("properties")
        if not isinstance(properties, dict):
            raise ValueError("it has no properties object")
        try:
            event = Event.from_json(properties, known_statuses=CONTROL_PLANE_STATUSES)
        except DocumentError as exc:
            raise ValueError(str(exc))
        if event.event_id.lower() != match.group("event_id").lower():
            raise ValueError("its id names event %s but its properties say %s" % (match.group("event_id"),
                                                                                  event.event_id))
        # the id is the ARM path acknowledging goes to: the resourceGroup column only gives its casing
        group = match.group("resource_group")
        if str(row.get("resourceGroup") or "").lower() == group.lower():
            group = row["resourceGroup"]
        owner = Owner(match.group("subscription"), group, OWNER_KINDS[match.group("kind").lower()], match.group("name"))
        return cls(event, owner, row)

    def owned_by_other_vm(self, vms):
        """Whether the row files the event under a VM that `vms` (NamedVms) does not name, whatever its Resources
        say: acknowledging it would act on that VM."""
        return self.owner.kind == OWNER_KINDS["virtualmachines"] and not vms.is_named(self.owner.name)

    def describe(self, vms=None, now=None):
        """event_info's keys for the event, plus where the control plane saw it."""
        out = self.event.describe(vms, now)
        out["finished"] = self.event.is_finished
        out["owner"] = self.owner.as_dict()
        out["row_id"] = self.row.get("id")
        out["location"] = self.row.get("location")
        out["source"] = "resource_graph"
        return out


# --- Resource Graph -----------------------------------------------------------------------------------------------


def kql_string(value, what="value"):
    """`value` as a KQL string literal: the one way any value reaches a Kusto query (Resource Graph, workbooks,
    alert rules), so that a quote, a backslash, a `|` or a newline in it stays inside the string. Double-quoted with
    Kusto's escapes (\\ \" \t \n \r); any other character, non-ASCII too, stands for itself. Raises ValueError
    (naming `what`) for a value no literal can carry: not a string, or holding NUL, another control character or a
    lone surrogate."""
    if not isinstance(value, str):
        raise ValueError("%s %r is a %s, not a string" % (what, value, type(value).__name__))
    bad = _KQL_UNWRITABLE.search(value)
    if bad:
        raise ValueError("%s %r holds the character U+%04X, which a KQL string cannot carry"
                         % (what, value, ord(bad.group())))
    return '"%s"' % "".join(_KQL_ESCAPES.get(c, c) for c in value)


def kql_list(values, what="value"):
    """A parenthesised list of KQL string literals, for `in` and `in~`."""
    return "(%s)" % ", ".join(kql_string(value, what) for value in values)


def build_query(event_ids=None, types=None, statuses=None, sources=None, resource_groups=None):
    """The KQL sent to Resource Graph (docs/control-plane.md shows it): filters run in Azure, so a large fleet
    sends back only what was asked for. Every value is a string literal (kql_string), never pasted raw."""
    lines = ["maintenanceresources", "| where type == %s" % kql_string(ROW_TYPE)]
    if event_ids:
        bad = [i for i in event_ids if not is_event_id(i)]
        if bad:
            raise ValueError("not an EventId (a GUID is expected): %s" % ", ".join(repr(b) for b in bad))
        lines.append("| where name in~ %s" % kql_list(event_ids, "event id"))
    for field, values, what in (("properties.EventType", types, "event type"),
                                ("properties.EventStatus", statuses, "status"),
                                ("properties.EventSource", sources, "source"),
                                ("resourceGroup", resource_groups, "resource group")):
        if values:
            column = field if "." not in field else "tostring(%s)" % field
            lines.append("| where %s in~ %s" % (column, kql_list(values, what)))
    lines.append("| project id, name, type, subscriptionId, resourceGroup, location, properties")
    lines.append("| order by id asc")
    return "\n".join(lines)


class QueryResult(object):
    def __init__(self, events, problems, total_records, pages):
        self.events = events
        self.problems = problems
        self.total_records = total_records
        self.pages = pages


def query_events(client, query, subscriptions=None, management_groups=None, page_size=PAGE_SIZE,
                 api_version=RESOURCE_GRAPH_API):
    """Every page of the query's rows, read into events; a row that cannot be read is a problem, never dropped."""
    if not subscriptions and not management_groups:
        raise ControlPlaneError("name the subscriptions or management groups to read")
    body = {"query": query, "options": {"$top": page_size, "resultFormat": "objectArray"}}
    if subscriptions:
        body["subscriptions"] = list(subscriptions)
    if management_groups:
        body["managementGroups"] = list(management_groups)
    events, problems, seen = [], [], set()
    total, pages = None, 0
    while True:
        answer = client.request("POST", "/providers/Microsoft.ResourceGraph/resources", api_version, body)
        pages += 1
        if total is None:
            total = answer.get("totalRecords")
        rows = answer.get("data")
        if not isinstance(rows, list):
            raise ControlPlaneError("Resource Graph answered without a data array (resultFormat objectArray)")
        for row in rows:
            try:
                found = ControlPlaneEvent.from_row(row)
            except ValueError as exc:
                problems.append({"id": row.get("id") if isinstance(row, dict) else None, "problem": str(exc)})
                continue
            key = (found.owner.key, found.event.event_id.lower())
            if key in seen:  # a row updated between two pages can show up twice
                continue
            seen.add(key)
            events.append(found)
        token = answer.get("$skipToken")
        if not token:
            break
        body["options"] = dict(body["options"], **{"$skipToken": token})
    return QueryResult(events, problems, total, pages)


# --- acknowledge ----------------------------------------------------------------------------------------------


def acknowledge(client, owner, event_ids, api_version=ACKNOWLEDGE_APIS[0]):
    """Approve events of one owner: the list form where the api-version has it, else one call per event."""
    base = "%s/providers/Microsoft.Maintenance/scheduledevents" % owner.id
    if api_version in LIST_ACKNOWLEDGE_APIS:
        client.request("POST", base, api_version, {"value": list(event_ids)})
        return 1
    for event_id in event_ids:
        client.request("POST", "%s/%s/acknowledge" % (base, event_id), api_version)
    return len(event_ids)


# --- the opt-in policy --------------------------------------------------------------------------------------------


def publishing_of(resource):
    """(publishing enabled, the policy object) of a GET of a VM, scale set or availability set."""
    policy = ((resource or {}).get("properties") or {}).get("scheduledEventsPolicy") or {}
    targets = policy.get("scheduledEventsAdditionalPublishingTargets") or {}
    setting = targets.get("eventGridAndResourceGraph") or {}
    return bool(setting.get("enable")), policy


def policy_patch(enable, scheduled_events_api_version="2020-07-01", reboot=None, redeploy=None):
    policy = {"scheduledEventsAdditionalPublishingTargets": {"eventGridAndResourceGraph": {
        "enable": bool(enable), "scheduledEventsApiVersion": scheduled_events_api_version}}}
    if reboot is not None:
        policy["userInitiatedReboot"] = {"automaticallyApprove": bool(reboot)}
    if redeploy is not None:
        policy["userInitiatedRedeploy"] = {"automaticallyApprove": bool(redeploy)}
    return {"properties": {"scheduledEventsPolicy": policy}}


def policy_differs(current, wanted):
    """Whether PATCHing `wanted` (a policy_patch) would change the `current` policy object."""
    want = wanted["properties"]["scheduledEventsPolicy"]
    for key, value in want.items():
        have = current.get(key) or {}
        for inner, setting in value.items():
            if inner == "eventGridAndResourceGraph":
                got = have.get(inner) or {}
                if bool(got.get("enable")) != setting["enable"]:
                    return True
                if setting["enable"] and got.get("scheduledEventsApiVersion") != setting["scheduledEventsApiVersion"]:
                    return True
            elif bool(have.get(inner)) != bool(setting):
                return True
    return False


def explain(exc):
    """What to do about the refusals an operator meets first: the message, then the remedy, as sentences."""
    said = str(exc).rstrip().rstrip(".")
    if exc.code == "SubscriptionNotRegisteredForFeature" or (exc.code or "").startswith("FeatureNotRegistered") or \
            "SendScheduledEventsPolicy" in str(exc):
        return ("%s. Register the preview feature once per subscription: az feature register --namespace "
                "Microsoft.Compute --name SendScheduledEventsPolicy (then az provider register -n Microsoft.Compute)"
                % said)
    if "scheduledEventsPolicy" in str(exc) and exc.status == 400:
        return "%s. scheduledEventsPolicy needs Compute api-version %s or later" % (said, COMPUTE_POLICY_API)
    if exc.status == 401:
        return ("%s. Authentication failed (401): Azure Resource Manager does not accept the token of this identity "
                "(%s). Check that it is issued by the tenant of the subscriptions, for the audience of "
                "management_endpoint, that the identity still exists and its tokens were not revoked, and that this "
                "machine's clock is right" % (said, exc.identity or "unknown"))
    if exc.status == 403:
        return ("%s. Authorisation failed (403): the identity (%s) signed in, but no role assignment allows this. "
                "%s" % (said, exc.identity or "unknown", _role_needed(exc.method, exc.path)))
    return str(exc)


def _role_needed(method, path):
    """The role assignment a refused request needs, said for the request it was."""
    path = path or ""
    if path.lower().startswith(GRAPH_PATH.lower()):
        return ("Assign it Reader on the subscriptions or management groups queried (Resource Graph shows only what "
                "the identity may read)")
    owner = _RESOURCE_ID.match(re.split(r"/providers/microsoft\.maintenance/", path, flags=re.IGNORECASE)[0])
    scope = owner.group(0) if owner else "the VM, scale set or availability set"
    if "/providers/microsoft.maintenance/scheduledevents" in path.lower():
        return ("Assign it the \"Scheduled Events Contributor\" role (action "
                "Microsoft.Maintenance/scheduledevents/acknowledge/action) on %s" % scope)
    if method in ("PATCH", "PUT") and owner:
        return ("Assign it a role with Microsoft.Compute/%s/write on %s, for example Virtual Machine Contributor"
                % (OWNER_KINDS[owner.group("kind").lower()], scope))
    if owner:
        return "Assign it Reader on %s" % scope
    return ("It needs Reader on the resources for Resource Graph, and the \"Scheduled Events Contributor\" role "
            "(Microsoft.Maintenance/scheduledevents/acknowledge/action) to acknowledge")
