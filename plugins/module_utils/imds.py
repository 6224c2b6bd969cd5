# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one IMDS client: GET and approve scheduled events, read this VM's name.

Why it looks the way it does:
- IMDS must never be reached through a proxy, so the session ignores the
  environment (HTTP_PROXY, NO_PROXY, netrc) and redirects are refused.
- IMDS allows 5 requests per second per VM, shared by every process on it, so
  the client paces itself below that even while retrying.
- The first request of a process may block for up to two minutes while the
  service enables itself for the VM; later requests get a short timeout.
- Answers are bounded in size and nesting before they are parsed.
It imports nothing from ansible: the watcher role installs it on VMs as is.
"""

from __future__ import annotations

import collections
import json
import os
import random
import time
import traceback

try:
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported
    urlsplit = None

try:
    import requests
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:
    requests = None
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

from .events import Document, DocumentError, ThisVm, is_event_id

DEFAULT_ENDPOINT = "http://169.254.169.254"
ENDPOINT_ENV = "IMDS_ENDPOINT"
DEFAULT_API_VERSION = "2020-07-01"
API_VERSIONS = (
    "2017-03-01", "2017-08-01", "2017-11-01", "2019-01-01",
    "2019-04-01", "2019-08-01", "2020-07-01",
)
INSTANCE_API_VERSION = "2021-02-01"
SCHEDULED_EVENTS_PATH = "/metadata/scheduledevents"
COMPUTE_NAME_PATH = "/metadata/instance/compute/name"

DEFAULT_TIMEOUT = 5.0          # 1 s is known to flake on busy hosts
DEFAULT_FIRST_TIMEOUT = 120.0  # the first call enables the service and may block this long
DEFAULT_RETRIES = 4            # five requests in all
DEFAULT_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 30.0
DEFAULT_MAX_RATE = 5           # IMDS's budget per VM, for every process together
MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
USER_AGENT = "imds.scheduled_events"

# 404: endpoint updating; 410: back within 70 s; 429: throttled; 5xx: service error.
RETRY_STATUSES = frozenset([404, 410, 429])
_NO_PROXIES = {"http": None, "https": None}

# Endpoints that have answered once in this process: their warm-up is behind us.
_WARMED = set()


class ImdsError(Exception):
    """Any failure to talk to IMDS. The message names the request, the status and a
    short excerpt of the body, so it can be shown to a user or logged in one line."""

    def __init__(self, message, method=None, path=None, status=None, body=None, retryable=False):
        super(ImdsError, self).__init__(message)
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        self.retryable = retryable


def resolve_endpoint(endpoint=None, environ=None):
    """The option wins, then IMDS_ENDPOINT, then Azure's link-local address."""
    environ = os.environ if environ is None else environ
    value = endpoint or environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImdsError("IMDS endpoint %r is not an http:// or https:// URL with a host" % value)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ImdsError("IMDS endpoint %r must not carry a path or query; give only scheme, host and port"
                        % value)
    if parts.username or parts.password:
        raise ImdsError("IMDS endpoint must not carry credentials")
    try:
        parts.port  # pylint: disable=pointless-statement
    except ValueError:
        raise ImdsError("IMDS endpoint %r has an invalid port" % value)
    return "%s://%s" % (parts.scheme, parts.netloc)


def poll_delay(poll_interval, failures, max_backoff):
    """Seconds until the next poll of a loop that sends one request per tick (the watcher, the EDA source):
    poll_interval after a success; after failures 1, 2, 4 ... seconds, never less than poll_interval nor more
    than max_backoff."""
    if not failures:
        return poll_interval
    return min(max_backoff, max(poll_interval, 2.0 ** (failures - 1)))


class RateLimiter(object):
    """At most `rate` requests in any sliding one-second window."""

    def __init__(self, rate=DEFAULT_MAX_RATE, window=1.0, clock=time.monotonic, sleep=time.sleep):
        if rate < 1:
            raise ValueError("the request rate must be at least 1 per second")
        self.rate = int(rate)
        self.window = float(window)
        self._clock = clock
        self._sleep = sleep
        self._stamps = collections.deque()

    def acquire(self):
        while True:
            now = self._clock()
            while self._stamps and now - self._stamps[0] >= self.window:
                self._stamps.popleft()
            if len(self._stamps) < self.rate:
                self._stamps.append(now)
                return
            self._sleep(self.window - (now - self._stamps[0]))


class ImdsClient(object):
    """Scheduled events and this VM's name from the Instance Metadata Service."""

    def __init__(self, endpoint=None, api_version=DEFAULT_API_VERSION, timeout=DEFAULT_TIMEOUT,
                 first_timeout=DEFAULT_FIRST_TIMEOUT, retries=DEFAULT_RETRIES, backoff=DEFAULT_BACKOFF,
                 max_backoff=DEFAULT_MAX_BACKOFF, max_rate=DEFAULT_MAX_RATE, max_body_bytes=MAX_BODY_BYTES,
                 session=None, clock=time.monotonic, sleep=time.sleep, jitter=random.random, environ=None):
        if not HAS_REQUESTS:
            raise ImdsError("the Python library 'requests' is required to talk to IMDS")
        if api_version not in API_VERSIONS:
            raise ImdsError("api-version %r is not a scheduled-events version; use one of %s"
                            % (api_version, ", ".join(API_VERSIONS)))
        if timeout <= 0 or first_timeout <= 0:
            raise ImdsError("timeout and first_timeout must be positive")
        if retries < 0:
            raise ImdsError("retries must not be negative")
        self.endpoint = resolve_endpoint(endpoint, environ)
        self.api_version = api_version
        self.timeout = float(timeout)
        self.first_timeout = max(float(first_timeout), self.timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_body_bytes = int(max_body_bytes)
        self.requests_sent = 0
        self._sleep = sleep
        self._jitter = jitter
        self._limiter = RateLimiter(max_rate, clock=clock, sleep=sleep)
        self._session = session or requests.Session()
        self._session.trust_env = False  # no proxies, no netrc: IMDS is link-local
        self._this_vm = None

    # -- the API ---------------------------------------------------------------

    def get_document(self):
        """GET the scheduled-events document and parse it."""
        body = self._request("GET", SCHEDULED_EVENTS_PATH, self._events_params())
        data = self._decode_json("GET", SCHEDULED_EVENTS_PATH, body)
        try:
            return Document.from_json(data)
        except DocumentError as exc:
            raise ImdsError("IMDS GET %s returned an unusable document: %s" % (SCHEDULED_EVENTS_PATH, exc),
                            method="GET", path=SCHEDULED_EVENTS_PATH, body=_excerpt(body))

    def approve(self, event_ids, incarnation=None):
        """POST one StartRequests body for all ids. Approval starts the event for every
        VM in its Resources; choosing which ids are safe is the caller's job."""
        ids = list(event_ids)
        if not ids:
            raise ImdsError("no EventId to approve")
        bad = [i for i in ids if not is_event_id(i)]
        if bad:
            raise ImdsError("not an EventId (a GUID is expected): %s" % ", ".join(repr(b) for b in bad))
        payload = {"StartRequests": [{"EventId": i} for i in ids]}
        if incarnation is not None and self.api_version == "2017-03-01":
            payload["DocumentIncarnation"] = str(incarnation)  # only the preview API wanted it
        self._request("POST", SCHEDULED_EVENTS_PATH, self._events_params(), json.dumps(payload))
        return ids

    def compute_name(self):
        """This VM's resource name: the value Resources lists (never the OS hostname)."""
        params = [("api-version", INSTANCE_API_VERSION), ("format", "text")]
        body = self._request("GET", COMPUTE_NAME_PATH, params)
        try:
            name = body.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ImdsError("IMDS GET %s returned a name that is not UTF-8" % COMPUTE_NAME_PATH,
                            method="GET", path=COMPUTE_NAME_PATH)
        if not name or len(name) > 256 or any(c.isspace() for c in name):
            raise ImdsError("IMDS GET %s returned no usable VM name: %s" % (COMPUTE_NAME_PATH, _excerpt(body)),
                            method="GET", path=COMPUTE_NAME_PATH, body=_excerpt(body))
        return name

    def this_vm(self, refresh=False):
        if self._this_vm is None or refresh:
            self._this_vm = ThisVm(self.compute_name())
        return self._this_vm

    # -- transport -------------------------------------------------------------

    def _events_params(self):
        return [("api-version", self.api_version)]

    def _request(self, method, path, params, data=None):
        url = self.endpoint + path
        headers = {"Metadata": "true", "User-Agent": USER_AGENT}
        if data is not None:
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            attempt += 1
            error = self._attempt(method, url, path, params, headers, data)
            if not isinstance(error, ImdsError):
                return error
            if not error.retryable:
                raise error
            if attempt > self.retries:
                if self.retries:
                    error.args = ("%s (gave up after %d attempts)" % (error.args[0], attempt),)
                raise error
            self._sleep(self._delay(attempt, error.status))

    def _attempt(self, method, url, path, params, headers, data):
        """One request: the body on success, an ImdsError (not raised) on failure."""
        warm = self.endpoint in _WARMED
        timeout = self.timeout if warm else self.first_timeout
        _WARMED.add(self.endpoint)  # the long wait is granted once per process, not per retry
        self._limiter.acquire()
        self.requests_sent += 1
        what = "IMDS %s %s" % (method, path)
        try:
            response = self._session.request(
                method, url, params=params, headers=headers, data=data, timeout=timeout,
                allow_redirects=False, stream=True, proxies=_NO_PROXIES)
        except requests.exceptions.Timeout:
            return ImdsError("%s timed out after %g s" % (what, timeout), method, path, retryable=True)
        except requests.exceptions.ConnectionError as exc:
            return ImdsError("%s failed to connect to %s: %s" % (what, self.endpoint, _reason(exc)),
                             method, path, retryable=True)
        except requests.exceptions.RequestException as exc:
            return ImdsError("%s failed: %s" % (what, _reason(exc)), method, path)
        try:
            body = self._read_body(response, what, method, path)
        except requests.exceptions.RequestException as exc:
            return ImdsError("%s broke off while reading the answer: %s" % (what, _reason(exc)),
                             method, path, retryable=True)
        finally:
            response.close()
        if isinstance(body, ImdsError):
            return body
        status = response.status_code
        if 200 <= status < 300:
            return body
        return ImdsError(
            "%s answered %d %s: %s" % (what, status, response.reason or "", _excerpt(body) or "(empty body)"),
            method, path, status=status, body=_excerpt(body),
            retryable=status in RETRY_STATUSES or status >= 500)

    def _read_body(self, response, what, method, path):
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            return ImdsError("%s answered with more than the %d bytes allowed (Content-Length %s)"
                             % (what, self.max_body_bytes, declared), method, path,
                             status=response.status_code)
        chunks = []
        size = 0
        for chunk in response.iter_content(65536):
            size += len(chunk)
            if size > self.max_body_bytes:
                return ImdsError("%s answered with more than the %d bytes allowed"
                                 % (what, self.max_body_bytes), method, path, status=response.status_code)
            chunks.append(chunk)
        return b"".join(chunks)

    def _delay(self, attempt, status):
        ceiling = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        delay = ceiling / 2.0 + self._jitter() * ceiling / 2.0
        if status is not None and (status == 429 or status >= 500):
            delay = max(delay, 1.0)  # fast retries after 5xx earn a 429
        return delay

    def _decode_json(self, method, path, body):
        what = "IMDS %s %s" % (method, path)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ImdsError("%s returned a body that is not UTF-8: %s" % (what, _excerpt(body)),
                            method, path, body=_excerpt(body))
        try:
            data = json.loads(text)
        except RecursionError:
            raise ImdsError("%s returned JSON nested too deeply" % what, method, path)
        except ValueError as exc:
            raise ImdsError("%s returned malformed JSON (%s): %s" % (what, exc, _excerpt(body)),
                            method, path, body=_excerpt(body))
        if _depth(data) > MAX_JSON_DEPTH:
            raise ImdsError("%s returned JSON nested deeper than %d levels" % (what, MAX_JSON_DEPTH),
                            method, path)
        return data


def _depth(value):
    """Nesting depth, iteratively: a hostile document must not exhaust the stack."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                return level
            stack.extend((child, level + 1) for child in item)
    return deepest


def _excerpt(body, limit=200):
    if body is None:
        return ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    body = " ".join(body.split())
    return body if len(body) <= limit else body[:limit] + "..."


def _reason(exc):
    """The innermost cause, without urllib3's pool and object noise."""
    text = str(exc)
    for marker in ("Caused by ", "Failed to establish a new connection: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip(" ()'\"")[:200] or type(exc).__name__
