"""A client of the control API, for tests, benchmarks and the demo in other processes.

One place that knows the paths of docs/simulator.md's control API. It always goes
straight to the loopback listener: proxies in the environment are ignored.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request


class ControlError(RuntimeError):
    """The control API answered with an error: the message carries its status and text."""


class ControlClient:
    def __init__(self, url, timeout=30):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method, path, body=None, timeout=None):
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with self.opener.open(request, timeout=timeout or self.timeout) as response:
                return json.loads(response.read().decode("utf-8") or "null")
        except urllib.error.HTTPError as exc:
            raise ControlError("%s %s: %s %s" % (method, path, exc.code, exc.read(500).decode("utf-8", "replace")))

    # --- events and time ---------------------------------------------------------------------

    def state(self, vm=None):
        return self.call("GET", "/state" + _query(vm=vm))

    def events(self, vm=None):
        return self.call("GET", "/events" + _query(vm=vm))["events"]

    def live_events(self):
        return [e for e in self.events() if e["status"] != "gone"]

    def event(self, event_id):
        return self.call("GET", "/events/%s" % urllib.parse.quote(event_id, safe=""))

    def inject(self, **event):
        return self.call("POST", "/events", event)

    def cancel(self, event_id):
        return self.call("POST", "/events/%s/cancel" % urllib.parse.quote(event_id, safe=""))

    def start(self, event_id):
        return self.call("POST", "/events/%s/start" % urllib.parse.quote(event_id, safe=""))

    def advance(self, seconds):
        return self.call("POST", "/clock/advance", {"seconds": seconds})

    def reboot_vm(self, vm, seconds):
        return self.call("POST", "/vms/%s/reboot" % urllib.parse.quote(vm, safe=""), {"seconds": seconds})

    def reset(self):
        return self.call("POST", "/reset")

    # --- faults --------------------------------------------------------------------------------

    def add_fault(self, **fault):
        return self.call("POST", "/faults", fault)

    def clear_faults(self):
        return self.call("DELETE", "/faults")

    # --- what clients did ----------------------------------------------------------------------

    def approvals(self, event_id=None, vm=None):
        return self.call("GET", "/approvals" + _query(event=event_id, vm=vm))["approvals"]

    def requests(self, vm=None, since=None, limit=None):
        return self.call("GET", "/requests" + _query(vm=vm, since=since, limit=limit))["requests"]

    # --- the control-plane face ----------------------------------------------------------------

    def control_plane(self):
        return self.call("GET", "/control-plane")

    def set_control_plane(self, features_registered=None, retention=None):
        body = {key: value for key, value in (("features_registered", features_registered), ("retention", retention))
                if value is not None}
        return self.call("POST", "/control-plane", body)

    def register_feature(self, registered=True):
        return self.set_control_plane(features_registered=registered)

    def opt_in(self, resource, enable=True, kind=None):
        body = {"resource": resource, "enable": enable}
        if kind is not None:
            body["kind"] = kind
        return self.call("POST", "/control-plane/opt-in", body)["resources"]

    def resources(self, name=None, kind=None):
        return self.call("GET", "/control-plane/resources" + _query(name=name, kind=kind))["resources"]

    def control_plane_rows(self, all_rows=False):
        return self.call("GET", "/control-plane/rows" + ("?all=true" if all_rows else ""))["rows"]

    def control_plane_event(self, event_id):
        return self.call("GET", "/control-plane/events/%s" % urllib.parse.quote(event_id, safe=""))

    def acknowledgements(self, event_id=None):
        return self.call("GET", "/control-plane/acknowledgements" + _query(event=event_id))["acknowledgements"]

    def expire_tokens(self):
        return self.call("POST", "/control-plane/tokens/expire")

    def revoke_tokens(self):
        return self.call("POST", "/control-plane/tokens/revoke")

    def arm_requests(self, since=None, limit=None):
        return self.call("GET", "/control-plane/requests" + _query(since=since, limit=limit))["requests"]

    def throttle(self, count=None, retry_after=5, path=None, **fault):
        """Answer the next ``count`` control-plane requests (or those in a from/until window) with 429."""
        fault.update(kind="throttle", retry_after=retry_after)
        if count is not None:
            fault["count"] = count
        if path is not None:
            fault["path"] = path
        return self.add_fault(**fault)

    # --- the Event Grid face -------------------------------------------------------------------

    def subscribe_event_grid(self, endpoint, **options):
        """Subscribe a loopback webhook; the record says ``provisioningState`` Succeeded, or Failed and why."""
        body = dict(options, endpoint=endpoint)
        if isinstance(body.get("retry_delays"), tuple):
            body["retry_delays"] = list(body["retry_delays"])
        return self.call("POST", "/control-plane/event-grid/subscriptions", body,
                         timeout=max(self.timeout, float(options.get("timeout") or 30) + 10))

    def event_grid_subscriptions(self):
        return self.call("GET", "/control-plane/event-grid/subscriptions")["subscriptions"]

    def unsubscribe_event_grid(self, subscription_id):
        return self.call("DELETE", "/control-plane/event-grid/subscriptions/%s"
                         % urllib.parse.quote(subscription_id, safe=""))["removed"]

    def event_grid_deliveries(self, subscription=None):
        return self.call("GET", "/control-plane/event-grid/deliveries" + _query(subscription=subscription))["deliveries"]

    def event_grid_flush(self, timeout=60):
        """Return once every due change is delivered or dead-lettered; ControlError (504) if ``timeout`` runs out."""
        return self.call("POST", "/control-plane/event-grid/flush", {"timeout": timeout}, timeout=timeout + 30)

    # --- Microsoft Entra ID --------------------------------------------------------------------------------------

    def entra_openid_configuration_url(self, tenant):
        """Where the simulator serves ``tenant``'s OpenID configuration (a receiver's Entra key source)."""
        return "%s/entra/%s/v2.0/.well-known/openid-configuration" % (self.url, urllib.parse.quote(tenant, safe=""))

    def entra_keys(self, tenant):
        return self.call("GET", "/entra/%s/discovery/v2.0/keys" % urllib.parse.quote(tenant, safe=""))["keys"]

    def rotate_entra_keys(self, keep=1):
        """A new key signs Event Grid's tokens from now on; returns the published kids, newest first."""
        return self.call("POST", "/entra/keys/rotate", {"keep": keep})["kids"]


def _query(**params):
    given = [(k, v if isinstance(v, str) else repr(v)) for k, v in params.items() if v is not None]
    return "?" + urllib.parse.urlencode(given) if given else ""
