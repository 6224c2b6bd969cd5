# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one IMDS client: GET and approve scheduled events, read this VM's name.

Why it looks the way it does:
- IMDS must never be reached through a proxy, so the session ignores the
  environment (HTTP_PROXY, NO_PROXY, netrc) and redirects are refused.
- IMDS allows 5 requests per second per VM, shared by every process on it, so
  the client paces itself below that even while retrying, in one budget kept in
  a locked file that every process of the same user shares (see Pace).
- Every call has a deadline that bounds all of it: attempts, backoff, pacing.
  Each attempt is cut off at its timeout however the answer trickles in.
- The first scheduled-events request may block for up to two minutes while the
  service enables itself for the VM; it gets that long (beyond the deadline)
  unless this user's processes had an answer lately.
- Answers are bounded in size and nesting before they are parsed.
It imports nothing from ansible: the watcher role installs it on VMs as is.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import math
import os
import random
import socket
import stat
import tempfile
import threading
import time
import traceback

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: the pacing stays per process there
    fcntl = None

try:
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported
    urlsplit = None

try:
    import requests
    from requests.adapters import HTTPAdapter
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:
    requests = None
    HTTPAdapter = object
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

from .events import Document, DocumentError, ThisVm, is_event_id
from .lifecycle import read_boot_id

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
DEFAULT_DEADLINE = 30.0        # a whole call: attempts, backoff, pacing (plus first_timeout while the service is cold)
DEFAULT_RETRIES = 4            # five requests in all
DEFAULT_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 30.0
DEFAULT_MAX_RATE = 5           # IMDS's budget per VM, for every process together
PACE_WINDOW = 1.0
MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
USER_AGENT = "imds.scheduled_events"

# Azure disables scheduled events after 24 h without requests: an answer this recent means it is still enabled.
WARM_FOR = 12 * 3600.0
# A retry is made only when at least this long (or `timeout`, when shorter) is left of the deadline after its backoff.
MIN_ATTEMPT = 1.0

# The shared pacing file: one per user and endpoint, in a directory only that user may write.
PACE_DIR_ENV = "IMDS_SE_PACE_DIR"
ROOT_PACE_DIR = "/run/imds-scheduled-events"
MAX_HOLD = 600.0    # the longest a request in flight keeps its slot (a crashed process's slot frees after this)
PACE_POLL = 0.05    # how often a request waiting for a slot held by a request in flight looks again
LOCK_WAIT = 2.0     # the file's lock is held for microseconds; a holder this slow is stuck
PACE_FILE_PAD = 4096  # a shorter record is padded with blanks up to the file's size, not truncated

# 404: endpoint updating; 410: back within 70 s; 429: throttled; 5xx: service error.
RETRY_STATUSES = frozenset([404, 410, 429])
_NO_PROXIES = {"http": None, "https": None}

# Endpoints whose long first wait this process has granted: it is granted once, not per retry or per client.
_WARMED = set()
# What the pacing had to say about its file, said once per process.
_SAID = set()
# One pace per (directory, endpoint) or, for this process alone, per endpoint.
_PACES = {}
_PACES_LOCK = threading.Lock()
_TOKENS = itertools.count(1)
_IN_FLIGHT = threading.local()
LOG = logging.getLogger(__name__)


class ImdsError(Exception):
    """Any failure to talk to IMDS. The message names the request, the status and a
    short excerpt of the body, so it can be shown to a user or logged in one line.
    `reason` is the message without the request's name; `attempts` and `elapsed` (seconds) say how much it took."""

    def __init__(self, message, method=None, path=None, status=None, body=None, retryable=False, reason=None):
        super(ImdsError, self).__init__(message)
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        self.retryable = retryable
        self.reason = reason or message
        self.attempts = None
        self.elapsed = None


class PaceUnusable(Exception):
    """The shared pacing file cannot be used; the message says why."""


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


# -- pacing: IMDS's 5 requests/s, for every process of the user together ---------------------------------------------

class PaceRecord(object):
    """The requests that count against the budget, and when scheduled events last answered.

    `slots` maps a request's token to the moment it stops counting minus the window: once answered, the time of
    its answer; while in flight, the latest it can end. A request thus counts from before it leaves until a window
    after its answer, and IMDS, which counts arrivals, never sees more than `rate` in a window, whatever the
    latency. Times are time.monotonic(), which every process of a Linux system shares."""

    def __init__(self, slots=None, answered=None):
        self.slots = slots if slots is not None else {}
        self.answered = answered

    def take(self, token, now, hold, rate, window=PACE_WINDOW):
        """Take a slot for a request that may be in flight for `hold` seconds and return 0, or return how long to
        wait before asking again."""
        for key, until in list(self.slots.items()):
            if until + window <= now or until > now + MAX_HOLD:  # past, or from another boot or clock
                del self.slots[key]
        if len(self.slots) < rate:
            self.slots[token] = now + min(hold, MAX_HOLD)
            return 0.0
        blocking = sorted(self.slots.values())[len(self.slots) - rate]
        if blocking > now:  # in flight: its answer may come at any moment
            return min(PACE_POLL, blocking + window - now)
        return blocking + window - now

    def finish(self, token, now, answered=False):
        """The request of `token` is over; `answered`: scheduled events answered it."""
        self.slots[token] = now
        if answered:
            self.answered = now

    def is_warm(self, now):
        return self.answered is not None and now - WARM_FOR < self.answered <= now

    def dump(self, boot_id):
        lines = ["imds-scheduled-events pace 1", "boot %s" % (boot_id or "-")]
        if self.answered is not None:
            lines.append("answered %r" % self.answered)
        lines.extend("slot %s %r" % (token, until) for token, until in sorted(self.slots.items()))
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text, boot_id):
        """The record in `text`; an empty one when it is from another boot. Lines that do not parse are left out."""
        record = cls()
        lines = text.splitlines()
        if lines[1:2] != ["boot %s" % (boot_id or "-")]:
            return record
        for line in lines[2:]:
            words = line.split()
            try:
                stamp = float(words[-1])
            except (IndexError, ValueError):
                continue
            if not math.isfinite(stamp):
                continue
            if len(words) == 2 and words[0] == "answered":
                record.answered = stamp
            elif len(words) == 3 and words[0] == "slot":
                record.slots[words[1]] = stamp
        return record


class Pace(object):
    """This process's record for one endpoint: what is left when no shared file can be used."""

    def __init__(self):
        self._lock = threading.Lock()
        self._record = PaceRecord()

    def update(self, change):
        """change(record) under the lock; returns what it returns."""
        with self._lock:
            return change(self._record)


class SharedPace(Pace):
    """The record in a file that every process of this user shares for one endpoint, changed under flock.

    The file is the user's own (0600, in a directory only the user may write): another user can neither read it,
    nor lock it, nor fill it, so nobody can starve root's watcher through it."""

    def __init__(self, path, boot_id=None):
        super(SharedPace, self).__init__()
        self.path = path
        self.boot_id = boot_id

    def update(self, change):
        """change(record) under the file's lock, then the record is written back. Raises OSError or PaceUnusable."""
        with self._lock:
            fd = _open_own_file(self.path)
            try:
                _lock(fd, self.path)
                chunks = []
                while True:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                text = b"".join(chunks)
                record = PaceRecord.parse(text.decode("ascii", "replace"), self.boot_id)
                result = change(record)
                data = record.dump(self.boot_id).encode("ascii")
                if len(data) < len(text) <= PACE_FILE_PAD:
                    # padded with blanks rather than truncated: ext4 flushes a file truncated and rewritten in
                    # place to disk on close (auto_da_alloc), milliseconds per request
                    data += b" " * (len(text) - len(data))
                elif len(data) < len(text):
                    os.ftruncate(fd, len(data))
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, data)
                return result
            finally:
                os.close(fd)  # releases the lock


def pace_directories(environ, euid):
    """Where the pacing file may live, in order: IMDS_SE_PACE_DIR alone when set; for root
    /run/imds-scheduled-events; for other users $XDG_RUNTIME_DIR/imds-scheduled-events, then
    <tmp>/imds-scheduled-events-<uid>. Relative paths are left out."""
    if environ.get(PACE_DIR_ENV):
        candidates = [environ[PACE_DIR_ENV]]
    elif euid == 0:
        candidates = [ROOT_PACE_DIR]
    else:
        candidates = [os.path.join(environ.get("XDG_RUNTIME_DIR") or "", "imds-scheduled-events"),
                      os.path.join(tempfile.gettempdir(), "imds-scheduled-events-%d" % euid)]
    return [path for path in candidates if os.path.isabs(path)]


def pace_directory(environ=None):
    """The first of pace_directories() that is usable: made (0700) when missing, it must be a directory of this user
    that nobody else may write. Raises PaceUnusable, saying why each was refused."""
    environ = os.environ if environ is None else environ
    if fcntl is None:
        raise PaceUnusable("this system has no file locks")
    euid = os.geteuid()
    problems = []
    for path in pace_directories(environ, euid):
        try:
            return own_directory(path, euid)
        except PaceUnusable as exc:
            problems.append(str(exc))
    raise PaceUnusable("; ".join(problems) or "no directory for it")


def own_directory(path, euid):
    """`path`, made (0700) when missing; raises PaceUnusable unless it is a directory of `euid` that nobody else may
    write."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise PaceUnusable("cannot create %s: %s" % (path, exc.strerror))
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise PaceUnusable("%s is not a directory" % path)
    _check_own(info, path, euid)
    return path


def _check_own(info, path, euid):
    if info.st_uid != euid:
        raise PaceUnusable("%s belongs to uid %d, not to uid %d" % (path, info.st_uid, euid))
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PaceUnusable("%s may be written by group or others (mode %04o)" % (path, stat.S_IMODE(info.st_mode)))


def _open_own_file(path):
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PaceUnusable("%s is a symlink" % path)
        raise PaceUnusable("cannot open %s: %s" % (path, exc.strerror))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PaceUnusable("%s is not a regular file" % path)
        _check_own(info, path, os.geteuid())
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock(fd, path):
    """flock, waiting at most LOCK_WAIT real seconds (a holder keeps it for microseconds)."""
    give_up = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise PaceUnusable("cannot lock %s: %s" % (path, exc.strerror))
        if time.monotonic() > give_up:
            raise PaceUnusable("%s has been locked by another process for more than %g s" % (path, LOCK_WAIT))
        time.sleep(0.001)


def shared_pace(endpoint, environ=None):
    """(the pace this user's processes share for `endpoint`, None), or (None, why there is none)."""
    try:
        directory = pace_directory(environ)
    except PaceUnusable as exc:
        return None, str(exc)
    digest = hashlib.sha256(endpoint.encode("utf-8")).hexdigest()[:16]
    with _PACES_LOCK:
        pace = _PACES.get((directory, endpoint))
        if pace is None:
            pace = _PACES[(directory, endpoint)] = SharedPace(os.path.join(directory, "pace-%s" % digest),
                                                              read_boot_id())
    return pace, None


def own_pace(endpoint):
    """This process's pace for `endpoint`."""
    with _PACES_LOCK:
        return _PACES.setdefault((None, endpoint), Pace())


# -- cutting an attempt off ---------------------------------------------------------------------------------------------

class _Cutoff(object):
    """Cuts the connection of the attempt in flight after `seconds`, however slowly the answer trickles in: the
    socket's timeout only bounds each read, and a server that sends a byte now and then never trips it."""

    def __init__(self, seconds):
        self.fired = False
        self.connection = None  # set by the pool when it hands this attempt its connection
        self._lock = threading.Lock()
        self._over = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self):
        _IN_FLIGHT.cutoff = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info):
        _IN_FLIGHT.cutoff = None
        with self._lock:
            self._over = True
        self._timer.cancel()
        return False

    def _fire(self):
        with self._lock:
            if self._over:
                return
            self.fired = True
            sock = getattr(self.connection, "sock", None)
            if sock is not None:
                try:  # the plain socket's shutdown, under TLS too: it wakes the reader, which then fails
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except (OSError, TypeError):
                    pass


_POOLS = {}


def _pool_class(base):
    """`base` (a urllib3 pool class), telling the attempt in flight which connection it got."""
    if base not in _POOLS:
        class CutoffPool(base):
            def _get_conn(self, timeout=None):
                conn = super(CutoffPool, self)._get_conn(timeout=timeout)
                cutoff = getattr(_IN_FLIGHT, "cutoff", None)
                if cutoff is not None:
                    cutoff.connection = conn
                return conn
        _POOLS[base] = CutoffPool
    return _POOLS[base]


class _CutoffAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super(_CutoffAdapter, self).init_poolmanager(*args, **kwargs)
        manager = self.poolmanager
        manager.pool_classes_by_scheme = dict((scheme, _pool_class(cls))
                                              for scheme, cls in manager.pool_classes_by_scheme.items())


def _session():
    session = requests.Session()
    session.trust_env = False  # no proxies, no netrc: IMDS is link-local
    for prefix in ("http://", "https://"):
        session.mount(prefix, _CutoffAdapter())
    return session


class ImdsClient(object):
    """Scheduled events and this VM's name from the Instance Metadata Service.

    `deadline` bounds each call (get_document, approve, compute_name) with all its attempts, backoff and pacing.
    While the service may be cold (no answer from scheduled events to this process, nor in the last WARM_FOR seconds
    to any process of this user), the first scheduled-events request may take `first_timeout`, and what it takes
    beyond `timeout` does not count against the deadline. `warn` reports, once per process, that the pacing file
    cannot be used."""

    def __init__(self, endpoint=None, api_version=DEFAULT_API_VERSION, timeout=DEFAULT_TIMEOUT,
                 first_timeout=DEFAULT_FIRST_TIMEOUT, retries=DEFAULT_RETRIES, backoff=DEFAULT_BACKOFF,
                 max_backoff=DEFAULT_MAX_BACKOFF, max_rate=DEFAULT_MAX_RATE, max_body_bytes=MAX_BODY_BYTES,
                 deadline=DEFAULT_DEADLINE, clock=time.monotonic, sleep=time.sleep, jitter=random.random,
                 environ=None, warn=None):
        if not HAS_REQUESTS:
            raise ImdsError("the Python library 'requests' is required to talk to IMDS")
        if api_version not in API_VERSIONS:
            raise ImdsError("api-version %r is not a scheduled-events version; use one of %s"
                            % (api_version, ", ".join(API_VERSIONS)))
        if timeout <= 0 or first_timeout <= 0:
            raise ImdsError("timeout and first_timeout must be positive")
        if deadline <= 0:
            raise ImdsError("deadline must be positive")
        if retries < 0:
            raise ImdsError("retries must not be negative")
        if max_rate < 1:
            raise ImdsError("max_rate must be at least 1 request per second")
        self.endpoint = resolve_endpoint(endpoint, environ)
        self.api_version = api_version
        self.timeout = float(timeout)
        self.first_timeout = max(float(first_timeout), self.timeout)
        self.deadline = float(deadline)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_rate = int(max_rate)
        self.max_body_bytes = int(max_body_bytes)
        self.requests_sent = 0
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._warn = warn or LOG.warning
        self._own_pace = own_pace(self.endpoint)
        self._pace, problem = shared_pace(self.endpoint, environ)
        if problem:
            self._say_unshared(problem)
        self._session = _session()
        self._this_vm = None

    # -- the API ---------------------------------------------------------------

    def get_document(self, within=None):
        """GET the scheduled-events document and parse it. `within`: seconds left to a caller's own bound (a wait),
        when shorter than the deadline."""
        body = self._request("GET", SCHEDULED_EVENTS_PATH, self._events_params(), within=within)
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

    def _request(self, method, path, params, data=None, within=None):
        """The body of a 2xx answer, after as many attempts as the retries and the deadline allow."""
        url = self.endpoint + path
        what = "IMDS %s %s" % (method, path)
        headers = {"Metadata": "true", "User-Agent": USER_AGENT}
        if data is not None:
            headers["Content-Type"] = "application/json"
        events = path == SCHEDULED_EVENTS_PATH
        started = self._clock()
        cold = events and self._is_cold(started)
        stop = None if within is None else started + max(within, 0.0)
        grace = 0.0  # what the service's first answer took beyond `timeout`: that does not count against the deadline
        attempts = 0
        result = None

        def end(first=False):
            at = started + self.deadline + (self.first_timeout - self.timeout if first else grace)
            return at if stop is None else min(at, stop)

        while True:
            first = cold and not attempts
            longest = self.first_timeout if first else self.timeout
            if first:
                _WARMED.add(self.endpoint)  # the long wait is granted once per process, not per retry
            token, why = self._take_slot(min(longest, end(first) - self._clock()), end(first))
            if token is None:
                raise self._out_of_time(what, attempts, started, grace, stop, result, method, path, why)
            attempts += 1
            sent = self._clock()
            budget = max(min(longest, end(first) - sent), 0.001)
            result = self._attempt(method, url, what, path, params, headers, data, budget)
            answered = not isinstance(result, ImdsError)
            now = self._clock()
            self._update_pace(lambda record: record.finish(token, now, answered and events))
            if first:
                grace = max(0.0, min(now - sent, self.first_timeout) - self.timeout)
            if answered:
                return result
            if not result.retryable or attempts > self.retries:
                raise self._gave_up(what, result, attempts, started)
            delay = self._delay(attempts, result.status)
            if now + delay + min(self.timeout, MIN_ATTEMPT) > end():
                raise self._out_of_time(what, attempts, started, grace, stop, result, method, path,
                                        "another after %s s of backoff would not fit" % _num(delay, 1))
            self._sleep(delay)

    def _gave_up(self, what, error, attempts, started):
        """The last error, saying how many attempts it took and how long when there were several."""
        error.attempts, error.elapsed = attempts, self._clock() - started
        if attempts > 1:
            error.args = ("%s: gave up after %d attempts in %s s; last: %s"
                          % (what, attempts, _num(error.elapsed, 1), error.reason),)
        return error

    def _out_of_time(self, what, attempts, started, grace, stop, last, method, path, why=None):
        """The error for a call that reached its deadline, or `stop`: `last` is the last attempt's ImdsError (or
        None), `why` what kept it from another attempt."""
        elapsed = self._clock() - started
        if stop is not None and stop < started + self.deadline + grace:
            bound = "the %s s left" % _num(stop - started)
        else:
            bound = "the %s s deadline" % _num(self.deadline)
            if grace >= 0.05:
                bound += ", plus %s s for the service's first answer" % _num(grace, 1)
        message = "%s: no answer within %s: %d attempt%s in %s s" % (
            what, bound, attempts, "" if attempts == 1 else "s", _num(elapsed, 1))
        if why:
            message += "; %s" % why
        if last is not None:
            message += "; last: %s" % last.reason
        error = ImdsError(message, method, path, status=last.status if last else None,
                          body=last.body if last else None, retryable=True)
        error.attempts, error.elapsed = attempts, elapsed
        return error

    # -- pacing ----------------------------------------------------------------

    def _update_pace(self, change):
        """change(record) on the shared record, or on this process's own when the shared file fails (said once)."""
        if self._pace is not None:
            try:
                return self._pace.update(change)
            except (OSError, PaceUnusable) as exc:
                self._say_unshared(str(exc))
        return self._own_pace.update(change)

    def _say_unshared(self, problem):
        if problem not in _SAID:
            _SAID.add(problem)
            self._warn("IMDS requests are paced for this process alone, not with the other processes of this user "
                       "on this VM (%s); together they may exceed IMDS's 5 requests per second and get 429 answers, "
                       "which are retried. Set %s to a directory of this user to share the budget"
                       % (problem, PACE_DIR_ENV))

    def _take_slot(self, hold, until):
        """Wait for a slot in the budget for a request that may take `hold` seconds. Returns its token, or None and
        why there is none: no time left before `until` (a clock value), or no slot comes free before it."""
        token = "%d-%d" % (os.getpid(), next(_TOKENS))
        why = "no time left for a request"
        while True:
            now = self._clock()
            if now >= until:
                return None, why
            wait = self._update_pace(lambda record: record.take(token, now, hold, self.max_rate))
            if wait <= 0:
                return token, None
            why = "no free slot in the budget of %d requests per second" % self.max_rate
            if now + wait >= until:
                return None, why
            self._sleep(wait)

    def _is_cold(self, now):
        """Whether the service may still have to enable itself: neither this process nor, lately, another process of
        this user had an answer from scheduled events."""
        if self.endpoint in _WARMED:
            return False
        return not self._update_pace(lambda record: record.is_warm(now))

    # -- one attempt -----------------------------------------------------------

    def _attempt(self, method, url, what, path, params, headers, data, budget):
        """One request, cut off after `budget` seconds whatever the server does: the body of a 2xx answer, or an
        ImdsError (not raised)."""
        self.requests_sent += 1
        cutoff = _Cutoff(budget)
        try:
            with cutoff:
                result = self._exchange(method, url, what, path, params, headers, data, budget)
        except (OSError, ValueError):  # what a socket cut under http.client may raise unwrapped
            if not cutoff.fired:
                raise
        if cutoff.fired:
            return _fault(what, "timed out after %s s" % _num(budget), method, path, retryable=True)
        return result

    def _exchange(self, method, url, what, path, params, headers, data, budget):
        try:
            response = self._session.request(
                method, url, params=params, headers=headers, data=data, timeout=budget,
                allow_redirects=False, stream=True, proxies=_NO_PROXIES)
        except requests.exceptions.Timeout:
            return _fault(what, "timed out after %s s" % _num(budget), method, path, retryable=True)
        except requests.exceptions.ConnectionError as exc:
            return _fault(what, "failed to connect to %s: %s" % (self.endpoint, _reason(exc)), method, path,
                          retryable=True)
        except requests.exceptions.RequestException as exc:
            return _fault(what, "failed: %s" % _reason(exc), method, path)
        try:
            body = self._read_body(response, what, method, path)
        except requests.exceptions.RequestException as exc:
            return _fault(what, "broke off while reading the answer: %s" % _reason(exc), method, path, retryable=True)
        finally:
            response.close()
        if isinstance(body, ImdsError):
            return body
        status = response.status_code
        if 200 <= status < 300:
            return body
        return _fault(what, "answered %d %s: %s" % (status, response.reason or "", _excerpt(body) or "(empty body)"),
                      method, path, status=status, body=_excerpt(body),
                      retryable=status in RETRY_STATUSES or status >= 500)

    def _read_body(self, response, what, method, path):
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            return _fault(what, "answered with more than the %d bytes allowed (Content-Length %s)"
                          % (self.max_body_bytes, declared), method, path, status=response.status_code)
        chunks = []
        size = 0
        for chunk in response.iter_content(65536):
            size += len(chunk)
            if size > self.max_body_bytes:
                return _fault(what, "answered with more than the %d bytes allowed" % self.max_body_bytes, method,
                              path, status=response.status_code)
            chunks.append(chunk)
        if declared and declared.isdigit() and size < int(declared):  # urllib3 before 2.0 does not check it
            return _fault(what, "broke off while reading the answer: %d of %s bytes" % (size, declared), method, path,
                          status=response.status_code, retryable=True)
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


def _fault(what, reason, method, path, **kwargs):
    """An ImdsError for the request `what` (not raised)."""
    return ImdsError("%s %s" % (what, reason), method, path, reason=reason, **kwargs)


def _num(seconds, places=None):
    """Seconds for a message: 5, 0.3, 150; with `places`, that many decimals (30.0)."""
    if places is not None:
        return "%.*f" % (places, seconds)
    return "%g" % round(seconds, 1)


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
