# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # Options of every module that talks to Azure Resource Manager (Resource Graph, acknowledge, the policy).
    DOCUMENTATION = r"""
options:
  auth_source:
    description:
      - How to sign in to Azure, with the C(azure-identity) library on the host that runs the module (usually the
        controller, with C(delegate_to) V(localhost)).
      - V(auto) tries, in order, the environment (E(AZURE_CLIENT_ID), E(AZURE_TENANT_ID), E(AZURE_CLIENT_SECRET)), a
        workload identity, the managed identity of the machine, then the Azure CLI login (C(DefaultAzureCredential)).
        With O(secret) set, V(auto) means V(credentials).
      - V(msi) uses the managed identity only (O(client_id) picks a user-assigned one), V(env) the environment only,
        V(cli) the C(az login) of the user running the module, V(credentials) the service principal given by
        O(client_id), O(secret) and O(tenant).
    type: str
    default: auto
    choices: [auto, msi, env, cli, credentials]
  client_id:
    description:
      - The service principal's application id (with O(secret) and O(tenant)), or the client id of a user-assigned
        managed identity (with O(auth_source=msi) or V(auto)).
    type: str
    aliases: [managed_identity_client_id]
  secret:
    description:
      - The service principal's client secret. Never logged nor returned.
    type: str
  tenant:
    description:
      - The tenant of the service principal.
    type: str
  management_endpoint:
    description:
      - Base URL of Azure Resource Manager, and the audience of the token (V(<endpoint>/.default)).
      - Sovereign clouds have their own (for example V(https://management.usgovcloudapi.net)); the bundled simulator
        listens on loopback (its C(arm) URL).
      - When not set, the E(AZURE_MANAGEMENT_ENDPOINT) environment variable, then V(https://management.azure.com).
    type: str
  timeout:
    description:
      - Seconds to wait for each answer.
    type: float
    default: 60
  retries:
    description:
      - How many times a request is tried again after a 429 (waiting what C(Retry-After) says, else until Resource
        Graph's quota resets, at most 120 seconds), a 5xx answer or a connection error.
      - Besides, Resource Graph queries are paced by the quota its answers announce (C(x-ms-user-quota-remaining),
        C(x-ms-user-quota-resets-after)), so that they are not throttled; and a refused token (401) is replaced once
        by a fresh one (with the claims of Azure's challenge when it sends one), never by the cached one.
    type: int
    default: 4
requirements:
  - azure-identity
  - requests
notes:
  - Azure publishes scheduled events on its control plane only for VMs, scale sets and availability sets that opted
    in (M(imds.scheduled_events.control_plane_policy)), in preview. See C(docs/control-plane.md).
"""
