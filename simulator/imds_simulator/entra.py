"""Microsoft Entra ID for the Event Grid face: the signing keys, their OpenID configuration and the access tokens
that Event Grid sends to a webhook whose subscription uses Microsoft Entra authentication.

On Azure, Event Grid asks Entra for a token for the webhook's app (azureActiveDirectoryApplicationIdOrUri in the
tenant azureActiveDirectoryTenantId) and sends ``Authorization: Bearer <it>`` with every request, the validation
handshake included; the receiver checks it against the tenant's keys, published at the ``jwks_uri`` of the
tenant's OpenID configuration. Here an Authority makes an RS256 key pair of its own (on first use), signs the
tokens with it, and the control API serves the configuration and the keys on loopback (``/entra/<tenant>/...``).
Its issuers are Azure's (https://sts.windows.net/<tenant>/ and https://login.microsoftonline.com/<tenant>/v2.0), so
a receiver configured for a tenant needs only the OpenID configuration's URL changed.

The tokens are signed with ``cryptography`` (RSASSA-PKCS1-v1_5 with SHA-256, which is RS256), imported on first
use only: the simulator runs without it as long as no subscription asks for Entra tokens (docs/simulator.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time

ROLE = "AzureEventGridSecureWebhookSubscriber"
# The application id of Microsoft's first-party "Microsoft.EventGrid" app (Microsoft's setup script assigns its
# service principal the webhook app's role); a token names it as the caller (appid, azp in v2).
EVENT_GRID_APP_ID = "4962773b-9cdb-44cf-a8bf-237846a00ab7"
EVENT_GRID_PRINCIPAL = "00000000-0000-4000-8000-00000000e6e6"  # the service principal's object id (oid, sub)
LIFETIME = 3600      # seconds a token is valid (Entra: 60 to 90 minutes)
RENEW_BEFORE = 300   # a cached token is replaced this long before it expires, as Event Grid does
LOGIN = "https://login.microsoftonline.com"


class EntraUnavailable(RuntimeError):
    """The Python package cryptography is missing."""


def _crypto():
    """cryptography's RSA, padding and hashes modules."""
    try:
        from cryptography.hazmat.primitives import hashes  # pylint: disable=import-outside-toplevel
        from cryptography.hazmat.primitives.asymmetric import padding, rsa  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise EntraUnavailable(f"Microsoft Entra tokens need the Python package cryptography ({exc})")
    return rsa, padding, hashes


def issuer(tenant, version=1):
    """The ``iss`` of the tenant's access tokens: v1 (an app's default) or v2."""
    return f"https://sts.windows.net/{tenant}/" if version == 1 else f"{LOGIN}/{tenant}/v2.0"


class Authority:
    """The signing keys (the newest signs; older ones stay published until dropped) and the tokens made with them.

    ``wall`` dates the tokens: real time, since receivers compare exp and nbf with their own clocks."""

    def __init__(self, wall=time.time):
        self._wall = wall
        self._lock = threading.Lock()
        self._keys = []    # [(kid, private key)], newest first
        self._tokens = {}  # (tenant, audience, version) -> (token, expires)

    def _ensure_key(self):
        if not self._keys:
            self._add_key()

    def _add_key(self):
        rsa, _padding, _hashes = _crypto()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = key.public_key().public_numbers()
        digest = hashlib.sha256(_b64(numbers.n).encode("ascii")).digest()
        kid = base64.urlsafe_b64encode(digest[:20]).decode("ascii").rstrip("=")
        self._keys.insert(0, (kid, key))
        self._tokens.clear()

    def rotate(self, keep=1):
        """A new signing key signs from now on; the ``keep`` newest older keys stay published. Returns the kids."""
        with self._lock:
            self._add_key()
            del self._keys[1 + keep:]
            return [kid for kid, _key in self._keys]

    def kids(self):
        with self._lock:
            self._ensure_key()
            return [kid for kid, _key in self._keys]

    def jwks(self):
        """The published keys, as Entra's ``jwks_uri`` serves them."""
        with self._lock:
            self._ensure_key()
            keys = list(self._keys)
        out = []
        for kid, key in keys:
            numbers = key.public_key().public_numbers()
            out.append({"kty": "RSA", "use": "sig", "kid": kid, "x5t": kid, "n": _b64(numbers.n),
                        "e": _b64(numbers.e)})
        return {"keys": out}

    @staticmethod
    def openid_configuration(tenant, jwks_uri):
        """The parts of the tenant's v2.0 OpenID configuration a resource server reads."""
        return {"issuer": issuer(tenant, 2), "jwks_uri": jwks_uri,
                "token_endpoint": f"{LOGIN}/{tenant}/oauth2/v2.0/token",
                "id_token_signing_alg_values_supported": ["RS256"]}

    def token(self, tenant, audience, version=1):
        """Event Grid's access token for the webhook app ``audience`` in ``tenant`` (cached until near expiry)."""
        now = int(self._wall())
        with self._lock:
            cached = self._tokens.get((tenant, audience, version))
            if cached is not None and cached[1] - RENEW_BEFORE > now:
                return cached[0]
            self._ensure_key()
            kid, _key = self._keys[0]
        claims = {"aud": audience, "iss": issuer(tenant, version), "iat": now, "nbf": now, "exp": now + LIFETIME,
                  "oid": EVENT_GRID_PRINCIPAL, "sub": EVENT_GRID_PRINCIPAL, "tid": tenant, "roles": [ROLE],
                  "ver": "1.0" if version == 1 else "2.0"}
        claims.update({"appid": EVENT_GRID_APP_ID, "appidacr": "2"} if version == 1 else
                      {"azp": EVENT_GRID_APP_ID, "azpacr": "2"})
        token = self.sign(claims, kid)
        with self._lock:
            self._tokens[(tenant, audience, version)] = (token, now + LIFETIME)
        return token

    def sign(self, claims, kid=None, headers=None):
        """A token with any ``claims``, signed RS256 - the tokens Event Grid sends, and wrong ones for tests. The
        header names ``kid`` (default the newest key's); it is signed with that key when this authority has it,
        else with the newest (a foreign signature under a known kid). ``headers`` add to the JOSE header. Any JSON
        goes, wrong types included: no library checks what is signed here."""
        _rsa, padding, hashes = _crypto()
        with self._lock:
            self._ensure_key()
            keys = dict(self._keys)
            newest = self._keys[0]
        kid = kid or newest[0]
        header = {"alg": "RS256", "typ": "JWT", "kid": kid, "x5t": kid}
        header.update(headers or {})
        signing_input = f"{_b64_json(header)}.{_b64_json(claims)}".encode("ascii")
        signature = keys.get(kid, newest[1]).sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode('ascii')}.{_b64_bytes(signature)}"


def _b64(number):
    return _b64_bytes(number.to_bytes((number.bit_length() + 7) // 8, "big"))


def _b64_bytes(raw):
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64_json(value):
    return _b64_bytes(json.dumps(value, separators=(",", ":")).encode("ascii"))
