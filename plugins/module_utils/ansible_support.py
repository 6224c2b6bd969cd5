# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What every module shares on the Ansible side: option specs and one way to build
the client. This is the only module_utils file that imports ansible; the watcher
daemon never loads it."""

from __future__ import annotations

from ansible.module_utils.basic import env_fallback, missing_required_lib

from .events import EventFilter, ThisVm
from .imds import (API_VERSIONS, DEFAULT_API_VERSION, DEFAULT_FIRST_TIMEOUT, DEFAULT_RETRIES,
                   DEFAULT_TIMEOUT, ENDPOINT_ENV, HAS_REQUESTS, REQUESTS_IMPORT_ERROR, ImdsClient, ImdsError)

IMDS_ARGUMENT_SPEC = dict(
    endpoint=dict(type="str", fallback=(env_fallback, [ENDPOINT_ENV])),
    api_version=dict(type="str", default=DEFAULT_API_VERSION, choices=list(API_VERSIONS)),
    timeout=dict(type="float", default=DEFAULT_TIMEOUT),
    first_timeout=dict(type="float", default=DEFAULT_FIRST_TIMEOUT),
    retries=dict(type="int", default=DEFAULT_RETRIES),
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


def client_from_module(module):
    """The one client, configured from the module's options; fails the task cleanly
    when requests is missing or an option is unusable."""
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
    params = module.params
    if params["timeout"] <= 0 or params["first_timeout"] <= 0:
        module.fail_json(msg="timeout and first_timeout must be positive")
    if params["retries"] < 0:
        module.fail_json(msg="retries must not be negative")
    try:
        return ImdsClient(endpoint=params["endpoint"], api_version=params["api_version"], timeout=params["timeout"],
                          first_timeout=params["first_timeout"], retries=params["retries"])
    except ImdsError as exc:
        module.fail_json(msg=str(exc))


def this_vm_from_module(module, client):
    if module.params.get("vm_name"):
        return ThisVm(module.params["vm_name"])
    return client.this_vm()


def filter_from_module(module):
    params = module.params
    return EventFilter(event_ids=params.get("event_ids"), types=params.get("event_types"),
                       statuses=params.get("statuses"), sources=params.get("sources"),
                       this_vm_only=params.get("this_vm_only"))
