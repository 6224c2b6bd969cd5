"""The IMDS endpoints, as a function from one request to one Reply.

No sockets here: the listener hands over (vm, method, target, headers, body)
and writes back the Reply. The order of checks is: rate limit, faults that
wait or short-circuit, routing (404, 405), request hygiene (duplicate query
parameters, X-Forwarded-For, the Metadata header), api-version, then the
endpoint itself, then body faults.
"""

from __future__ import annotations

import dataclasses
import json
import time
import typing as t
import urllib.parse

from . import document
from .faults import FaultEngine
from .reply import json_reply, text_reply, Reply
from .world import UnknownEventIds

SCHEDULED_EVENTS = "/metadata/scheduledevents"
INSTANCE = "/metadata/instance"

_IMDS_DOCS = "For more information refer to aka.ms/azureimds"
ERR_METADATA = "Bad request. Required metadata header not specified"
ERR_FORWARDED = "Bad request. Requests with an X-Forwarded-For header are not allowed"
ERR_DUPLICATE = "Bad request. Duplicate query parameter names are not allowed"
ERR_NO_VERSION = f"Bad request. api-version was not specified in the request. {_IMDS_DOCS}"
ERR_BAD_VERSION = f"Bad request. api-version is invalid or was not specified in the request. {_IMDS_DOCS}"
SCHEDULED_EVENTS_NEWEST = list(reversed(document.SCHEDULED_EVENTS_VERSIONS[-3:]))


def bad_request(message, **extra):
    """A 400 with IMDS's ``{"error": ...}`` body."""
    return json_reply(400, dict({"error": message}, **extra))


@dataclasses.dataclass(frozen=True)
class Request:
    """One IMDS request as the listener received it; ``headers`` are keyed by lower-case name."""

    vm: str
    method: str
    target: str
    headers: t.Mapping[str, str]
    body: bytes = b""

    @property
    def path(self):
        """The URL path without the query."""
        return urllib.parse.urlsplit(self.target).path

    def query(self):
        """(name, value) pairs of the query string, in order, duplicates kept."""
        return urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query, keep_blank_values=True)


class ImdsService:
    """Answers IMDS requests for the VMs of a world."""

    def __init__(self, world, limiter, request_log, *, sleep=time.sleep, monotonic=time.monotonic, wall=time.time,
                 on_request=None):
        self.world = world
        self.limiter = limiter
        self.request_log = request_log
        self.faults = FaultEngine(sleep, monotonic)
        self._wall = wall
        self._on_request = on_request

    def handle(self, request):
        """Answer one Request and log it (with its arrival time, before any fault delay)."""
        arrived, sim_arrived = self._wall(), self.world.now()
        reply = self._process(request)
        entry = self.request_log.add(wall_time=arrived, sim_time=sim_arrived, vm=request.vm,
                                     method=request.method, path=request.target,
                                     status=reply.status if reply.action != "drop" else None, fault=reply.fault)
        if self._on_request is not None:
            self._on_request(entry)
        return reply

    def _process(self, request):
        if not self.limiter.allow(request.vm):
            return json_reply(429, {"error": "Too many requests"})
        faults = self.world.active_faults(request.vm, request.path, request.method)
        waited = self.faults.wait(request.vm, faults)
        reply = self.faults.short_circuit(faults)
        if reply is None:
            reply = self.faults.mangle(faults, self._route(request))
        if waited:
            reply.fault = ",".join(waited + ([reply.fault] if reply.fault else []))
        return reply

    def _route(self, request):
        path = request.path
        if path == SCHEDULED_EVENTS:
            allowed = ("GET", "POST")
        elif path == INSTANCE or path.startswith(INSTANCE + "/"):
            allowed = ("GET",)
        else:
            return json_reply(404, {"error": "Not found"})
        if request.method not in allowed:
            return json_reply(405, {"error": f"Method not allowed. Only {' and '.join(allowed)} are supported here"})
        query = request.query()
        names = [pair[0] for pair in query]
        if len(names) != len(set(names)):
            return bad_request(ERR_DUPLICATE)
        if "x-forwarded-for" in request.headers:
            return bad_request(ERR_FORWARDED)
        if request.headers.get("metadata") != "true":
            return bad_request(ERR_METADATA)
        params = dict(query)
        if path == SCHEDULED_EVENTS:
            return self._scheduled_events(request, params)
        return self._instance(request.vm, path, params)

    # -- /metadata/scheduledevents -------------------------------------------

    def _scheduled_events(self, request, params):
        version = params.get("api-version")
        if not document.is_scheduled_events_version(version):
            message = ERR_NO_VERSION if version is None else ERR_BAD_VERSION
            return bad_request(message, **{"newest-versions": SCHEDULED_EVENTS_NEWEST})
        if request.method == "GET":
            return json_reply(200, self.world.document(request.vm, version))
        event_ids, problem = parse_start_requests(request.body)
        if problem:
            return bad_request(f"Bad request. {problem}")
        try:
            self.world.approve(request.vm, event_ids, version)
        except UnknownEventIds as exc:
            return bad_request(f"Bad request. EventId not found in this VM's scheduled events document: {exc}",
                               **{"unknownEventIds": exc.ids})
        return Reply(200, b"", None)

    # -- /metadata/instance ----------------------------------------------------

    def _instance(self, vm, path, params):
        version = params.get("api-version")
        if not document.is_instance_version(version):
            message = ERR_NO_VERSION if version is None else ERR_BAD_VERSION
            return bad_request(message, **{"newest-versions": document.INSTANCE_NEWEST_VERSIONS})
        output = params.get("format", "json")
        if output not in ("json", "text"):
            return bad_request("Bad request. format must be json or text")
        node = document.instance_metadata(self.world.vms[vm], self.world.vm_index(vm), version,
                                          self.world.vm_metadata(vm))
        for part in [part for part in path[len(INSTANCE):].split("/") if part]:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return json_reply(404, {"error": "Not found"})
        if isinstance(node, str):
            if output != "text":
                return bad_request("Bad request. Querying a leaf node requires format=text")
            return text_reply(200, node)
        if output == "text":
            children = node.items() if isinstance(node, dict) else enumerate(node)
            return text_reply(200, "\n".join(f"{key}{'' if isinstance(value, str) else '/'}" for key, value in children))
        return json_reply(200, node)


def parse_start_requests(body):
    """Event ids of a ``{"StartRequests": [{"EventId": ...}, ...]}`` body, or (None, problem).

    An extra ``DocumentIncarnation`` key (sent by 2017-era samples) is
    accepted and ignored; any other key, an empty list or a malformed entry is
    refused so client bugs surface in tests.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "The request body is not valid JSON"
    if not isinstance(data, dict):
        return None, "The request body must be a JSON object"
    extra = sorted(set(data) - {"StartRequests", "DocumentIncarnation"})
    if extra:
        return None, f"Unexpected key(s) in the request body: {', '.join(extra)}"
    requests = data.get("StartRequests")
    if not isinstance(requests, list) or not requests:
        return None, "StartRequests must be a non-empty list"
    ids = []
    for entry in requests:
        if not isinstance(entry, dict) or set(entry) != {"EventId"} or not isinstance(entry["EventId"], str):
            return None, 'Each StartRequests entry must be {"EventId": "<id>"}'
        ids.append(entry["EventId"])
    return ids, None
