# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Microsoft Entra ID bearer tokens on Event Grid webhook deliveries: when one is accepted, without any HTTP.

An Event Grid subscription with Microsoft Entra authentication sends `Authorization: Bearer <JWT>` with every
request, the validation handshake included: an access token Entra issued to Event Grid for the webhook's app. It
is accepted when it is RS256-signed by one of the tenant's published keys (chosen by `kid`; the algorithm comes
from this side, never from the token, so neither `none` nor HS256 keyed with the public key can pass), its `iss`
is the tenant's v1 or v2 issuer, its `aud` the app's ID or ID URI, `exp` and `nbf` hold within a small leeway (on
the caller's clock), and its `roles` hold AzureEventGridSecureWebhookSubscriber (the app role Event Grid's service
principal is assigned). PyJWT (with `cryptography`) checks the signature and the audience; KeySet decides when the
keys are fetched again, so that a flood of unknown key ids cannot hammer the key endpoint. The fetching itself
(bounded in time and size) is the caller's (the event_grid source's, on aiohttp). No ansible import here.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import traceback
import urllib.parse

from .sources import loggable

try:
    import jwt
    from jwt.algorithms import RSAAlgorithm
    HAS_JWT = True
    JWT_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - the source refuses Entra arguments without it
    jwt = None
    RSAAlgorithm = None
    HAS_JWT = False
    JWT_IMPORT_ERROR = traceback.format_exc()

EVENT_GRID_ROLE = "AzureEventGridSecureWebhookSubscriber"
ALGORITHM = "RS256"
LOGIN = "https://login.microsoftonline.com"
DEFAULT_LEEWAY = 60        # seconds of clock skew allowed on exp and nbf
MAX_LEEWAY = 300
MAX_TOKEN_CHARS = 16384    # Entra's access tokens have 1 to 4 KB
MAX_KID_CHARS = 256
MAX_JWKS_BYTES = 256 * 1024  # the tenant's key set has about 10 KB
MAX_KEYS = 100
MIN_RSA_BITS = 2048
KEYS_MAX_AGE = 24 * 3600   # keys are fetched again after a day, on the next request
KEYS_MIN_INTERVAL = 60     # and never more than once a minute, whatever the requests say
FETCH_TIMEOUT = 10.0       # seconds for one fetch of the OpenID configuration or the key set
TENANT_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class TokenRefused(ValueError):
    """A bearer token that is not accepted; the message names why in a few words, never the token. `status` is
    the HTTP answer: 401, or 503 with `retry_after` seconds when the keys cannot be had right now (Event Grid
    retries a 503, not a 401)."""

    def __init__(self, reason, status=401, retry_after=None):
        super(TokenRefused, self).__init__(reason)
        self.status = status
        self.retry_after = retry_after


class KeysUnavailable(ValueError):
    """The OpenID configuration or the key set could not be fetched or read (the message says why)."""


def issuers_of(tenant_id):
    """The issuers of a tenant's access tokens: v1 (the app's default accessTokenAcceptedVersion) and v2."""
    return ("https://sts.windows.net/%s/" % tenant_id.lower(), "%s/%s/v2.0" % (LOGIN, tenant_id.lower()))


def openid_configuration_url(tenant_id):
    """The tenant's OpenID configuration, whose `jwks_uri` lists its signing keys."""
    return "%s/%s/v2.0/.well-known/openid-configuration" % (LOGIN, tenant_id.lower())


def is_loopback(host):
    if host and host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False


def key_url_problem(url):
    """Why `url` may not serve keys (None when it may): https only, or http on loopback (a test, a local proxy)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # pylint: disable=pointless-statement  # raises ValueError for a bad port
    except ValueError as exc:
        return "is not a URL (%s)" % exc
    if not parts.hostname or parts.scheme not in ("https", "http"):
        return "is not an https:// URL"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "must be https:// (http:// only on loopback)"
    return None


class Policy(object):
    """What a token must say: one of `audiences`, one of `issuers`, the tenant (`tid`), `role`, and `exp`/`nbf`
    within `leeway` seconds."""

    def __init__(self, tenant_id, audiences, issuers=None, role=EVENT_GRID_ROLE, leeway=DEFAULT_LEEWAY):
        self.tenant_id = tenant_id.lower()
        self.audiences = tuple(audiences)
        self.issuers = tuple(issuers) if issuers else issuers_of(tenant_id)
        self.role = role
        self.leeway = leeway


def key_id(token):
    """The `kid` of a token shaped like a JWT, after checking that its header asks for RS256."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not JWT_SHAPE.fullmatch(token):
        raise TokenRefused("malformed token (not a JWT)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenRefused("malformed token (its header is not a JSON object)")
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise TokenRefused("algorithm %s is not %s" % (loggable(alg), ALGORITHM))
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS or not kid.isprintable():
        raise TokenRefused("no usable key id (kid) in the token's header")
    return kid


def verify(token, key, policy, now):
    """The claims of `token` signed with `key` (a public RSA key), or TokenRefused. `now` is seconds since the
    epoch (the receiver's clock, so tests choose it)."""
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=list(policy.audiences), options={
            "verify_signature": True, "verify_aud": True, "verify_iss": False, "verify_exp": False,
            "verify_nbf": False, "verify_iat": False, "require": ["aud", "iss", "exp", "nbf", "tid"]})
    except jwt.InvalidSignatureError:
        raise TokenRefused("bad signature (not signed by the key its kid names)")
    except jwt.InvalidAudienceError:
        raise TokenRefused("wrong audience (not one of entra_audience)")
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRefused("no %s claim" % loggable(exc.claim))
    except jwt.InvalidAlgorithmError:
        raise TokenRefused("algorithm not allowed")
    except jwt.InvalidTokenError:
        raise TokenRefused("malformed token")
    if claims.get("iss") not in policy.issuers:
        raise TokenRefused("wrong issuer %s (not one of %s)" % (loggable(claims.get("iss")), ", ".join(policy.issuers)))
    tenant = claims.get("tid")
    if not isinstance(tenant, str) or tenant.lower() != policy.tenant_id:
        raise TokenRefused("wrong tenant (tid) %s" % loggable(tenant))
    expires, not_before = claims.get("exp"), claims.get("nbf")
    if not _is_time(expires) or not _is_time(not_before):
        raise TokenRefused("exp or nbf is not a number")
    if now > expires + policy.leeway:
        raise TokenRefused("expired %d s ago" % int(now - expires))
    if now + policy.leeway < not_before:
        raise TokenRefused("not valid for another %d s (nbf)" % int(not_before - now))
    roles = claims.get("roles")
    if not isinstance(roles, list) or policy.role not in roles:
        raise TokenRefused("the role %s is missing from roles" % policy.role)
    return claims


def _is_time(value):
    """A NumericDate: a number, not a bool, not NaN nor infinite (a token that never expires)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def jwks_uri_of(body):
    """The `jwks_uri` of an OpenID configuration document (bytes)."""
    document = _json_object(body, "the OpenID configuration")
    uri = document.get("jwks_uri")
    if not isinstance(uri, str):
        raise KeysUnavailable("the OpenID configuration has no jwks_uri")
    problem = key_url_problem(uri)
    if problem:
        raise KeysUnavailable("the OpenID configuration's jwks_uri %s %s" % (loggable(uri), problem))
    return uri


def parse_jwks(body):
    """The RS256 signing keys of a JWKS document (bytes): {kid: public key}, and how many entries were left out
    (other key types and uses, keys shorter than 2048 bits, entries that cannot be read)."""
    document = _json_object(body, "the key set")
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise KeysUnavailable("the key set has no keys list")
    keys = {}
    skipped = 0
    for entry in entries[:MAX_KEYS]:
        key = _signing_key(entry)
        if key is None:
            skipped += 1
            continue
        keys[entry["kid"]] = key
    skipped += max(0, len(entries) - MAX_KEYS)
    if not keys:
        raise KeysUnavailable("the key set has no RSA signing key (%d entries left out)" % skipped)
    return keys, skipped


def _signing_key(entry):
    if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
        return None
    if entry.get("alg", ALGORITHM) != ALGORITHM or not isinstance(entry.get("kid"), str) or not entry["kid"]:
        return None
    if not isinstance(entry.get("n"), str) or not isinstance(entry.get("e"), str):
        return None
    try:  # the public part only: an entry that also carries a private key does not make this side sign
        key = RSAAlgorithm.from_jwk({"kty": "RSA", "n": entry["n"], "e": entry["e"]})
    except (jwt.InvalidKeyError, ValueError, TypeError):
        return None
    return key if key.key_size >= MIN_RSA_BITS else None


def _json_object(body, what):
    if len(body) > MAX_JWKS_BYTES:
        raise KeysUnavailable("%s is larger than %d bytes" % (what, MAX_JWKS_BYTES))
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise KeysUnavailable("%s is not JSON" % what)
    if not isinstance(document, dict):
        raise KeysUnavailable("%s is not a JSON object" % what)
    return document


class KeySet(object):
    """The tenant's signing keys and when to fetch them: before the first use, on a request after KEYS_MAX_AGE,
    and when a token names a key id not in the set (key rotation) - but never twice within KEYS_MIN_INTERVAL, so
    neither a flood of made-up key ids nor a failing endpoint makes more than one fetch a minute. Times are
    monotonic seconds. A failed fetch keeps the keys there were."""

    def __init__(self):
        self.keys = {}
        self.fetched = None    # last successful fetch
        self.attempted = None  # last fetch, successful or not

    def get(self, kid):
        return self.keys.get(kid)

    def wants_fetch(self, kid, now):
        """Whether this request should fetch first: no keys yet, the keys are old, or `kid` is unknown."""
        return self.fetched is None or now - self.fetched >= KEYS_MAX_AGE or kid not in self.keys

    def wait(self, now):
        """Seconds before a fetch is allowed again (0: now)."""
        if self.attempted is None:
            return 0.0
        return max(0.0, KEYS_MIN_INTERVAL - (now - self.attempted))

    def fresh(self):
        """Whether the last fetch succeeded (a kid it did not list is unknown; else the keys may be out of date)."""
        return self.fetched is not None and self.fetched == self.attempted

    def attempt(self, now):
        self.attempted = now

    def update(self, keys, now):
        self.keys = dict(keys)
        self.fetched = now
