# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A Microsoft Entra tenant on loopback for the event_grid receiver's tests: keys the test generates, tokens
signed with them (the simulator's Authority, so the tests and the simulator's Event Grid face mint alike), and an
aiohttp server with the tenant's OpenID configuration and key set that counts its fetches and can misbehave.
Also the raw HTTP a test needs to send header bytes no client library would (newlines, NUL, non-UTF-8)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys

from aiohttp import web

SIMULATOR_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "simulator"))
if SIMULATOR_DIR not in sys.path:
    sys.path.insert(0, SIMULATOR_DIR)

from imds_simulator.entra import ROLE, Authority, issuer  # noqa: E402  pylint: disable=wrong-import-position,import-error

TENANT = "3f1e2d4c-5b6a-4798-8a9b-0c1d2e3f4a5b"
APP = "api://eda-webhook"
APP_ID = "6a0b8c1d-2e3f-4a5b-8c7d-9e0f1a2b3c4d"
NOW = 1900000000


def claims(**changes):
    """The claims of Event Grid's v1 token for APP in TENANT, valid at NOW; a change of None removes the claim."""
    out = {"aud": APP, "iss": issuer(TENANT, 1), "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3600, "tid": TENANT,
           "roles": [ROLE], "appid": "4962773b-9cdb-44cf-a8bf-237846a00ab7", "ver": "1.0"}
    out.update(changes)
    return dict((k, v) for k, v in out.items() if v is not None)


def b64(raw):
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def unsigned(header, payload, signature=b""):
    """A token assembled by hand (alg none, HS256 ...): PyJWT refuses to make these, as it should."""
    signing_input = "%s.%s" % (b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()))
    return "%s.%s" % (signing_input, b64(signature))


def hs256_with_public_key(authority, payload):
    """The classic confusion attack: HS256 keyed with the tenant's public key as PEM, under the key's own kid (a
    verifier that let the token choose the algorithm would accept it)."""
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    from jwt.algorithms import RSAAlgorithm  # pylint: disable=import-outside-toplevel
    jwk = authority.jwks()["keys"][0]
    pem = RSAAlgorithm.from_jwk(jwk).public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}
    signing_input = "%s.%s" % (b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()))
    return signing_input + "." + b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())


class KeyServer(object):
    """The tenant's OpenID configuration (/<tenant>/v2.0/.well-known/openid-configuration) and key set (/keys) on
    127.0.0.1, from `authority`. `fetches` counts the key set's requests; `keys_answer` replaces its answer (a
    callable of the request returning a web.Response or a coroutine; `hang` never answers until the server stops)."""

    def __init__(self, authority):
        self.authority = authority
        self.fetches = 0
        self.config_fetches = 0
        self.keys_answer = None
        self.runner = None
        self.base = None
        self._closing = None

    async def start(self):
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._configuration)
        app.router.add_get("/keys", self._keys)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base = "http://127.0.0.1:%d" % self.runner.addresses[0][1]
        return self

    async def stop(self):
        self._closing.set()
        await self.runner.cleanup()

    async def hang(self, request):
        """An answer that never comes (while the server runs)."""
        del request
        await self._closing.wait()
        return web.Response(status=503)

    @property
    def configuration_url(self):
        return "%s/%s/v2.0/.well-known/openid-configuration" % (self.base, TENANT)

    async def _configuration(self, request):
        self.config_fetches += 1
        return web.json_response(self.authority.openid_configuration(request.match_info["tenant"], self.base + "/keys"))

    async def _keys(self, request):
        self.fetches += 1
        if self.keys_answer is not None:
            answer = self.keys_answer(request)
            return await answer if asyncio.iscoroutine(answer) else answer
        return web.json_response(self.authority.jwks())


async def raw_request(port, head, body=b""):
    """Send bytes as they are (`head`: the request line and headers, without the blank line) to 127.0.0.1:port;
    returns (status, headers lower-cased, body). Status 0 when the server closed without an answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    if not answer:
        return 0, {}, b""
    head_part, _sep, rest = answer.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _c, v in (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), headers, rest


def header_bytes(value):
    """A header value as a hostile sender would put it on the wire (lone surrogates as the bytes they stand for)."""
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


__all__ = ["APP", "APP_ID", "NOW", "ROLE", "TENANT", "Authority", "KeyServer", "claims", "hs256_with_public_key",
           "issuer", "raw_request", "header_bytes", "unsigned"]
