# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What every module shares on the Ansible side: option specs and one way to build
the client. This is the only module_utils file that imports ansible; the watcher
daemon never loads it."""

from __future__ import annotations

from ansible.module_utils.basic import env_fallback, missing_required_lib

from .control_plane import ControlPlaneError, explain, query_events, signed_in_client
from .events import EventFilter, ThisVm, is_event_id
from .imds import (API_VERSIONS, DEFAULT_API_VERSION, DEFAULT_DEADLINE, DEFAULT_FIRST_TIMEOUT, DEFAULT_RETRIES,
                   DEFAULT_TIMEOUT, ENDPOINT_ENV, HAS_REQUESTS, REQUESTS_IMPORT_ERROR, ImdsClient, ImdsError)

IMDS_ARGUMENT_SPEC = dict(
    endpoint=dict(type="str", fallback=(env_fallback, [ENDPOINT_ENV])),
    api_version=dict(type="str", default=DEFAULT_API_VERSION, choices=list(API_VERSIONS)),
    timeout=dict(type="float", default=DEFAULT_TIMEOUT),
    first_timeout=dict(type="float", default=DEFAULT_FIRST_TIMEOUT),
    retries=dict(type="int", default=DEFAULT_RETRIES),
    deadline=dict(type="float", default=DEFAULT_DEADLINE),
    vm_name=dict(type="str"),
)

FILTER_ARGUMENT_SPEC = dict(
    event_ids=dict(type="list", elements="str"),
    event_types=dict(type="list", elements="str"),
    statuses=dict(type="list", elements="str"),
    sources=dict(type="list", elements="str"),
    this_vm_only=dict(type="bool", default=False),
)


def argument_spec(*specs, **extra):
    merged = {}
    for spec in specs + (extra,):
        merged.update(spec)
    return merged


def client_options(get):
    """The client's keyword arguments from any option getter (module params or a lookup's get_option)."""
    return dict((name, get(name)) for name in ("endpoint", "api_version", "timeout", "first_timeout", "retries",
                                               "deadline"))


def selection_from_options(get):
    return EventFilter(event_ids=get("event_ids"), types=get("event_types"), statuses=get("statuses"),
                       sources=get("sources"), this_vm_only=get("this_vm_only"))


def this_vm_from_options(get, client):
    """The VM named by `vm_name`, else the one IMDS names. Raises ValueError or ImdsError."""
    name = get("vm_name")
    if name is not None:
        return ThisVm(name)
    return client.this_vm()


def this_vm_if_known(get, client, needed):
    """(vm, warning): the VM named by `vm_name`, else the one IMDS names. When IMDS does not name it (Microsoft's
    mock server has no compute/name) and nothing needs it (`needed`, what for, is None), (None, why) instead, so
    the events can still be read with what depends on the name unknown. Raises ValueError, or ImdsError saying
    what needed it."""
    if get("vm_name") is not None:
        return this_vm_from_options(get, client), None
    try:
        return client.this_vm(), None
    except ImdsError as exc:
        if needed:
            raise ImdsError("this VM's resource name is needed %s, but IMDS did not give it: %s. Set vm_name to the "
                            "name the events' Resources list for this VM" % (needed, exc),
                            method=exc.method, path=exc.path, status=exc.status)
        return None, ("IMDS did not give this VM's resource name (%s), so affects_this_vm, shared and scope are "
                      "null and every event counts as possibly this VM's; set vm_name to know which are" % exc)


def client_from_module(module):
    """The one client, configured from the module's options; fails the task cleanly
    when requests is missing or an option is unusable."""
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
    try:
        return ImdsClient(warn=module.warn, **client_options(module.params.get))
    except ImdsError as exc:
        module.fail_json(msg=str(exc))


def this_vm_from_module(module, client, needed="to tell this VM's events from other VMs'"):
    """Raises ImdsError, saying what `needed` the name, for the caller to report with the request's status. With
    needed=None, returns None (and warns) when IMDS does not name this VM."""
    try:
        vm, warning = this_vm_if_known(module.params.get, client, needed)
    except ValueError as exc:
        module.fail_json(msg="vm_name %r is not a VM name: %s" % (module.params["vm_name"], exc))
    if warning:
        module.warn(warning)
    return vm


def filter_from_module(module):
    return selection_from_options(module.params.get)


# --- Azure's control plane ---------------------------------------------------------------------------------------

CONTROL_PLANE_ARGUMENT_SPEC = dict(
    auth_source=dict(type="str", default="auto", choices=["auto", "msi", "env", "cli", "credentials"]),
    client_id=dict(type="str", aliases=["managed_identity_client_id"]),
    secret=dict(type="str", no_log=True),
    tenant=dict(type="str"),
    management_endpoint=dict(type="str", fallback=(env_fallback, ["AZURE_MANAGEMENT_ENDPOINT"])),
    timeout=dict(type="float", default=60.0),
    retries=dict(type="int", default=4),
)


def arm_client_from_module(module):
    """The control-plane client from the module's options; fails the task cleanly when a library is missing."""
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
    params = module.params
    try:
        return signed_in_client(params["auth_source"], params["client_id"], params["secret"], params["tenant"],
                                endpoint=params["management_endpoint"], timeout=params["timeout"],
                                retries=params["retries"])
    except ControlPlaneError as exc:
        if "azure-identity is required" in str(exc):
            module.fail_json(msg=missing_required_lib("azure-identity"))
        module.fail_json(msg=str(exc))


def fail_on_bad_event_ids(module, event_ids):
    """EventIds are GUIDs: anything else (a typo, an injection attempt) is refused before any request."""
    bad = [i for i in event_ids or () if not is_event_id(i)]
    if bad:
        module.fail_json(msg="not an EventId (a GUID is expected): %s" % ", ".join(repr(b) for b in bad))


def control_plane_events(module, client, query):
    """Every Resource Graph row of the query, read into events; fails the task with what to do about a refusal."""
    params = module.params
    try:
        return query_events(client, query, params["subscriptions"], params["management_groups"])
    except ControlPlaneError as exc:
        module.fail_json(msg=explain(exc), status=exc.status, code=exc.code, query=query,
                         resource_graph_quota=client.quota.as_dict())
