"""The control API: drive and inspect the simulation over JSON.

It listens on its own 127.0.0.1 port, separate from the IMDS listeners, so a
client under test can never stumble onto it through an IMDS URL. Like the
IMDS service it is a function from a request to a Reply.
"""

from __future__ import annotations

import json
import re
import urllib.parse

from . import scenario as scenario_mod
from .listener import BaseHandler
from .entra import EntraUnavailable
from .reply import json_reply
from .world import RESOURCE_KINDS, Conflict, NotFound


class ControlService:
    """Routes control requests to the simulator.

    ``sim`` is the Simulator (it owns the world, the request log and the
    listeners); ``settle`` is called after every change so a caller that
    rebooted a VM or moved the clock sees the listeners updated on return.
    """

    def __init__(self, sim):
        self.sim = sim
        self._routes = [
            ("GET", r"/state", self.get_state),
            ("GET", r"/events", self.list_events),
            ("POST", r"/events", self.add_event),
            ("GET", r"/events/(?P<event_id>[^/]+)", self.get_event),
            ("POST", r"/events/(?P<event_id>[^/]+)/cancel", self.cancel_event),
            ("POST", r"/events/(?P<event_id>[^/]+)/start", self.start_event),
            ("POST", r"/clock/advance", self.advance),
            ("POST", r"/vms/(?P<vm>[^/]+)/reboot", self.reboot),
            ("GET", r"/faults", self.list_faults),
            ("POST", r"/faults", self.add_fault),
            ("DELETE", r"/faults", self.clear_faults),
            ("DELETE", r"/faults/(?P<fault_id>[^/]+)", self.clear_faults),
            ("GET", r"/approvals", self.approvals),
            ("GET", r"/requests", self.requests),
            ("POST", r"/reset", self.reset),
            ("GET", r"/control-plane", self.control_plane),
            ("POST", r"/control-plane", self.set_control_plane),
            ("GET", r"/control-plane/resources", self.cp_resources),
            ("POST", r"/control-plane/opt-in", self.opt_in),
            ("GET", r"/control-plane/rows", self.cp_rows),
            ("GET", r"/control-plane/events/(?P<event_id>[^/]+)", self.cp_event),
            ("GET", r"/control-plane/acknowledgements", self.acknowledgements),
            ("POST", r"/control-plane/tokens/expire", self.expire_tokens),
            ("POST", r"/control-plane/tokens/revoke", self.revoke_tokens),
            ("GET", r"/control-plane/requests", self.cp_requests),
            ("GET", r"/control-plane/event-grid/subscriptions", self.eg_subscriptions),
            ("POST", r"/control-plane/event-grid/subscriptions", self.eg_subscribe),
            ("DELETE", r"/control-plane/event-grid/subscriptions/(?P<sub_id>[^/]+)", self.eg_unsubscribe),
            ("GET", r"/control-plane/event-grid/deliveries", self.eg_deliveries),
            ("POST", r"/control-plane/event-grid/flush", self.eg_flush),
            ("GET", r"/entra/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", self.entra_configuration),
            ("GET", r"/entra/(?P<tenant>[^/]+)/discovery/v2\.0/keys", self.entra_keys),
            ("POST", r"/entra/keys/rotate", self.entra_rotate),
        ]

    @property
    def world(self):
        """The simulator's world."""
        return self.sim.world

    def handle(self, method, target, body=b""):
        """Answer one control request."""
        parts = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        path = parts.path.rstrip("/") or "/"
        allowed = []
        for route_method, pattern, func in self._routes:
            match = re.fullmatch(pattern, path)
            if not match:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            try:
                data = _json_body(body) if method in ("POST", "DELETE") else {}
                reply = func(data=data, query=query, **match.groupdict())
            except scenario_mod.ScenarioError as exc:
                return json_reply(400, {"error": str(exc)})
            except NotFound as exc:
                return json_reply(404, {"error": str(exc)})
            except Conflict as exc:
                return json_reply(409, {"error": str(exc)})
            except EntraUnavailable as exc:
                return json_reply(501, {"error": str(exc)})
            if method != "GET":
                self.sim.settle()
            return reply
        if allowed:
            return json_reply(405, {"error": f"method {method} not allowed on {path} (allowed: {', '.join(allowed)})"})
        return json_reply(404, {"error": f"no control endpoint {path}"})

    def _vm_arg(self, name):
        if name is not None and name not in self.world.vms:
            raise NotFound(f"no VM {name}")
        return name

    # -- endpoints (each takes data, query and path groups) ----------------

    def get_state(self, data, query):
        """GET /state[?vm=NAME]: clock, VMs with their view and endpoint, events, faults."""
        del data
        state = self.world.state(self._vm_arg(query.get("vm")))
        for vm in state["vms"]:
            vm["endpoint"] = self.sim.endpoint(vm["name"])
            vm["listening"] = self.sim.is_listening(vm["name"])
        state["control"] = self.sim.control_url
        return json_reply(200, state)

    def list_events(self, data, query):
        """GET /events[?vm=NAME]: every event (with internal states), or those a VM can see."""
        del data
        vm = self._vm_arg(query.get("vm"))
        return json_reply(200, {"events": self.world.state(vm)["events"]})

    def get_event(self, data, query, event_id):
        """GET /events/{id}."""
        del data, query
        return json_reply(200, self.world.event_state(self.world.event(event_id)))

    def add_event(self, data, query):
        """POST /events: inject an event; ``at`` defaults to now, ``notice`` is relative to ``at``."""
        del query
        check = scenario_mod.Checker("request body")
        spec = scenario_mod.parse_event(check, data, "", list(self.world.vms.values()), default_at=self.world.now())
        return json_reply(201, self.world.event_state(self.world.add_event(spec)))

    def cancel_event(self, data, query, event_id):
        """POST /events/{id}/cancel: the event vanishes without being Started."""
        del data, query
        return json_reply(200, self.world.event_state(self.world.cancel_event(event_id)))

    def start_event(self, data, query, event_id):
        """POST /events/{id}/start: start a Scheduled event now (as NotBefore expiry would)."""
        del data, query
        return json_reply(200, self.world.event_state(self.world.start_event(event_id)))

    def advance(self, data, query):
        """POST /clock/advance {"seconds": n}: jump the simulated clock forward."""
        del query
        check = scenario_mod.Checker("request body")
        check.mapping(data, "", ("seconds",))
        seconds = check.number(data, "", "seconds", minimum=0)
        self.world.advance(seconds)
        return json_reply(200, {"clock": self.world.clock_state()})

    def reboot(self, data, query, vm):
        """POST /vms/{name}/reboot {"seconds": n}: the VM's listener refuses connections for n sim seconds."""
        del query
        self._vm_arg(vm)
        check = scenario_mod.Checker("request body")
        check.mapping(data, "", ("seconds",))
        seconds = check.number(data, "", "seconds", positive=True)
        return json_reply(200, {"vm": vm, "down_until": self.world.reboot(vm, seconds)})

    def list_faults(self, data, query):
        """GET /faults."""
        del data, query
        return json_reply(200, {"faults": [fault.as_dict() for fault in self.world.faults]})

    def add_fault(self, data, query):
        """POST /faults: activate a fault; ``from`` defaults to now."""
        del query
        check = scenario_mod.Checker("request body")
        spec = scenario_mod.parse_fault(check, data, "", list(self.world.vms.values()), default_from=self.world.now())
        return json_reply(201, self.world.add_fault(spec).as_dict())

    def clear_faults(self, data, query, fault_id=None):
        """DELETE /faults (all) or /faults/{id}."""
        del data, query
        return json_reply(200, {"removed": [fault.as_dict() for fault in self.world.clear_faults(fault_id)]})

    def approvals(self, data, query):
        """GET /approvals[?vm=&event=]: every approval received, oldest first."""
        del data
        vm = self._vm_arg(query.get("vm"))
        event = query.get("event")
        records = [record for record in list(self.world.approvals)
                   if (vm is None or record["vm"] == vm) and (event is None or record["event_id"].upper() == event.upper())]
        return json_reply(200, {"approvals": records})

    def requests(self, data, query):
        """GET /requests[?vm=&since=&limit=]: the IMDS request log (wall time, sim time, status...)."""
        del data
        vm = self._vm_arg(query.get("vm") or None)
        check = scenario_mod.Checker("query")
        try:
            since = float(query["since"]) if query.get("since") else None
            limit = int(query["limit"]) if query.get("limit") else None
        except ValueError:
            check.fail("since/limit", "must be numbers")
        return json_reply(200, {"requests": self.sim.request_log.query(vm, since, limit)})

    # -- the control-plane face ------------------------------------------------------

    def control_plane(self, data, query):
        """GET /control-plane: feature registration, retention, scopes, token state and the opted-in resources."""
        del data, query
        world = self.world
        control = world.scenario.control_plane
        return json_reply(200, {
            "arm": self.sim.arm_url, "identity_endpoint": self.sim.identity_endpoint,
            "features_registered": world.features_registered, "retention": world.retention,
            "management_group": control.management_group, "tenant_id": control.tenant_id,
            "token_epoch": world.token_epoch, "tokens_issued": self.sim.arm.tokens_issued,
            "opted_in": [resource.id for resource in world.resources.values() if resource.opted_in]})

    def set_control_plane(self, data, query):
        """POST /control-plane {"features_registered": bool, "retention": seconds}."""
        del query
        check = scenario_mod.Checker("request body")
        check.mapping(data, "", ("features_registered", "retention"))
        self.world.set_control_plane(check.get(data, "", "features_registered", "bool", None),
                                     check.number(data, "", "retention", None, minimum=0))
        return self.control_plane({}, {})

    def _resources(self, name, kind):
        if kind is not None and kind.lower() not in [known.lower() for known in RESOURCE_KINDS]:
            raise scenario_mod.ScenarioError("request", "kind", f"unknown kind {kind!r} (expected one of "
                                                                f"{', '.join(RESOURCE_KINDS)})")
        found = [resource for resource in self.world.resources.values()
                 if (name is None or resource.name.lower() == name.lower())
                 and (kind is None or resource.kind.lower() == kind.lower())]
        if name is not None and not found:
            raise NotFound(f"no VM, scale set or availability set {name}" + (f" of kind {kind}" if kind else ""))
        return found

    def cp_resources(self, data, query):
        """GET /control-plane/resources[?name=&kind=]: ARM's view of VMs, scale sets and availability sets."""
        del data
        return json_reply(200, {"resources": [resource.as_dict()
                                              for resource in self._resources(query.get("name"), query.get("kind"))]})

    def opt_in(self, data, query):
        """POST /control-plane/opt-in {"resource": name, "kind"?, "enable": true}: set the publishing policy."""
        del query
        check = scenario_mod.Checker("request body")
        check.mapping(data, "", ("resource", "kind", "enable"))
        name = check.get(data, "", "resource", "str")
        kind = check.get(data, "", "kind", "str", None)
        enable = check.get(data, "", "enable", "bool", True)
        found = self._resources(name, kind)
        for resource in found:
            self.world.set_policy(resource, self.world.publishing_policy(enable))
        return json_reply(200, {"resources": [resource.as_dict() for resource in found]})

    def cp_rows(self, data, query):
        """GET /control-plane/rows[?all=true]: the rows Resource Graph holds (all=true: opted in or not)."""
        del data
        every = query.get("all", "").lower() in ("1", "true", "yes")
        return json_reply(200, {"rows": self.world.control_plane_rows(opted_in_only=not every)})

    def cp_event(self, data, query, event_id):
        """GET /control-plane/events/{id}: owner, control-plane status, whether Resource Graph shows it, its row."""
        del data, query
        return json_reply(200, self.world.control_plane_event(event_id))

    def acknowledgements(self, data, query):
        """GET /control-plane/acknowledgements[?event=]: every acknowledge request, oldest first."""
        del data
        event = query.get("event")
        return json_reply(200, {"acknowledgements": [
            record for record in list(self.world.acknowledgements)
            if event is None or record["event_id"].upper() == event.upper()]})

    def expire_tokens(self, data, query):
        """POST /control-plane/tokens/expire: every token issued so far is refused from now on."""
        del data, query
        return json_reply(200, {"token_epoch": self.world.expire_tokens()})

    def revoke_tokens(self, data, query):
        """POST /control-plane/tokens/revoke: every token issued so far is refused with a claims challenge."""
        del data, query
        return json_reply(200, {"token_epoch": self.sim.arm.revoke_tokens()})

    def cp_requests(self, data, query):
        """GET /control-plane/requests[?since=&limit=]: the control-plane face's request log."""
        del data
        check = scenario_mod.Checker("query")
        try:
            since = float(query["since"]) if query.get("since") else None
            limit = int(query["limit"]) if query.get("limit") else None
        except ValueError:
            check.fail("since/limit", "must be numbers")
        return json_reply(200, {"requests": self.sim.arm.request_log.query(None, since, limit)})

    # -- the Event Grid face ------------------------------------------------------------

    def eg_subscriptions(self, data, query):
        """GET /control-plane/event-grid/subscriptions: every webhook subscription, oldest first."""
        del data, query
        return json_reply(200, {"subscriptions": [sub.as_dict() for sub in self.sim.event_grid.subscriptions()]})

    def eg_subscribe(self, data, query):
        """POST /control-plane/event-grid/subscriptions: subscribe a loopback webhook (after the handshake)."""
        del query
        spec = scenario_mod.parse_event_grid_subscription(scenario_mod.Checker("request body"), data, "")
        return json_reply(201, self.sim.event_grid.subscribe(spec).as_dict())

    def eg_unsubscribe(self, data, query, sub_id):
        """DELETE /control-plane/event-grid/subscriptions/{id}."""
        del data, query
        return json_reply(200, {"removed": self.sim.event_grid.unsubscribe(urllib.parse.unquote(sub_id)).as_dict()})

    def eg_deliveries(self, data, query):
        """GET /control-plane/event-grid/deliveries[?subscription=]: every delivery attempt, oldest first."""
        del data
        return json_reply(200, {"deliveries": self.sim.event_grid.delivery_log(query.get("subscription") or None)})

    def eg_flush(self, data, query):
        """POST /control-plane/event-grid/flush {"timeout"?: s}: return once every due change is delivered or
        dead-lettered (504 with what is still pending when the timeout runs out first)."""
        del query
        check = scenario_mod.Checker("request body")
        check.mapping(data, "", ("timeout",))
        timeout = check.number(data, "", "timeout", 60.0, positive=True)
        publisher = self.sim.event_grid
        if not publisher.flush(timeout):
            return json_reply(504, {"error": f"Event Grid deliveries still pending after {timeout:g} s",
                                    "pending": publisher.pending()})
        return json_reply(200, {"flushed": True, "deliveries": len(publisher.delivery_log())})

    # -- Microsoft Entra ID (the tokens of Event Grid subscriptions with Entra authentication) ----------------------

    def entra_configuration(self, data, query, tenant):
        """GET /entra/{tenant}/v2.0/.well-known/openid-configuration: Azure's issuer, and jwks_uri on this port."""
        del data, query
        jwks_uri = f"{self.sim.control_url}/entra/{urllib.parse.quote(tenant, safe='')}/discovery/v2.0/keys"
        return json_reply(200, self.sim.event_grid.authority.openid_configuration(tenant, jwks_uri))

    def entra_keys(self, data, query, tenant):
        """GET /entra/{tenant}/discovery/v2.0/keys: the signing keys (one key set whatever the tenant)."""
        del data, query, tenant
        return json_reply(200, self.sim.event_grid.authority.jwks())

    def entra_rotate(self, data, query):
        """POST /entra/keys/rotate {"keep"?: n}: a new key signs from now on; the n newest old ones stay published."""
        del query
        check = scenario_mod.Checker("request body")
        check.mapping(data, "", ("keep",))
        keep = check.integer(data, "", "keep", 1, minimum=0, maximum=10)
        return json_reply(200, {"kids": self.sim.event_grid.authority.rotate(keep)})

    def reset(self, data, query):
        """POST /reset: back to the scenario's initial state (clock 0, request log and rate limits cleared)."""
        del data, query
        self.sim.reset()
        return json_reply(200, {"clock": self.world.clock_state()})


def _json_body(body):
    """Decode a control request body; empty means {}."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise scenario_mod.ScenarioError("request body", None, "not valid JSON") from None
    if not isinstance(data, dict):
        raise scenario_mod.ScenarioError("request body", None, "expected a JSON object")
    return data


class ControlHandler(BaseHandler):
    """Handler for the control listener."""

    def answer(self, body):
        return self.server.service.handle(self.command, self.path, body)
