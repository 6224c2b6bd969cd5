# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The watcher's config file and secrets file, validated strictly.

The config decides what root runs (hold commands, hooks directory), so it is
refused unless root owns it and only root may write it; the secrets file must
also be unreadable by anyone else (0600). An unknown key or a wrong type is an
error naming the key path (`hold.commands[1].release`): a typo must never turn
into a default. Secrets are wrapped so that no repr, log line or error shows them.
The webhook's URL is one of them (a chat webhook's URL is its credential): it lives
in the secrets file as `webhook_url`; one still in the config works, with a warning.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat

try:
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported
    urlsplit = None

from ..hold.backends import CommandBackend, GuardBackend, PuppetBackend, SystemdBackend
from ..hold.common import DEFAULT_STATE_FILE as DEFAULT_HOLD_STATE_FILE, DEFAULT_WAIT_TIMEOUT
from ..imds import API_VERSIONS, DEFAULT_API_VERSION, ImdsError, resolve_endpoint
from ..notify import safe_url, webhook_url_problem
from .machine import PEER_EVENTS
from .policy import Policy, PolicyError

DEFAULT_CONFIG_FILE = "/etc/imds-scheduled-events/watcher.json"
DEFAULT_SECRETS_FILE = "/etc/imds-scheduled-events/secrets.json"
DEFAULT_STATE_DIR = "/var/lib/imds-scheduled-events"
DEFAULT_HOOKS_DIR = "/etc/imds-scheduled-events/hooks"
DEFAULT_METRICS_FILE = "/var/lib/prometheus/node-exporter/imds_scheduled_events.prom"
DEFAULT_JOURNAL_MAX_BYTES = 1024 * 1024
MAX_CONFIG_BYTES = 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SECRET_KEYS = ("webhook_secret", "smtp_password", "webhook_url")


class ConfigError(ValueError):
    """The config cannot be used; the message names the file and the key path."""


class Secret(object):
    """A value that never shows itself in a repr, str, log line or error."""

    __slots__ = ("_value",)

    def __init__(self, value):
        self._value = value

    def reveal(self):
        return self._value

    def __repr__(self):
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other):
        return isinstance(other, Secret) and other.reveal() == self._value

    def __hash__(self):
        return hash(("Secret", self._value))


class Trust(object):
    """Who may own the config, secrets and hooks: root by default; tests pass their own uid."""

    def __init__(self, owner_uid=0):
        self.owner_uid = owner_uid

    def flaw(self, st, path, private=False):
        """(what is wrong, the command that fixes it) for `st` (an os.stat result) of `path`, or None."""
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid != self.owner_uid:
            return ("it is owned by uid %d, not uid %d, and whoever owns it could make root run anything"
                    % (st.st_uid, self.owner_uid), "chown %d %s" % (self.owner_uid, path))
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return ("it may be written by group or others (mode %04o found, %04o wanted: only its owner may write it)"
                    % (mode, mode & ~0o022), "chmod go-w %s" % path)
        if private and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            return ("it may be read by group or others (mode %04o found, %04o wanted: it holds secrets)"
                    % (mode, mode & ~0o077), "chmod 600 %s" % path)
        return None

    def problem(self, st, path, what, private=False):
        """Why `st` (an os.stat result) cannot be trusted, as one sentence naming the fix, or None."""
        flaw = self.flaw(st, path, private=private)
        if flaw is None:
            return None
        return "%s %s is refused because %s. Fix: %s" % (what, path, flaw[0], flaw[1])


# --- the schema ------------------------------------------------------------------------------


class _Spec(object):
    def check(self, value, path):
        raise NotImplementedError


def _fail(path, message):
    raise ConfigError("%s: %s" % (path or "(top level)", message))


def _kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# An HTTP header name (RFC 9110 token); a value that goes into a header or an SMTP command is one line.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


class Text(_Spec):
    """`line`: the value goes into an HTTP or mail header, an SMTP command or a URL, where a line break would end
    it and start another: control characters (but tab) and lone surrogates are refused. `token`: a header name."""

    def __init__(self, choices=None, absolute=False, empty=False, url=False, line=False, token=False):
        self.choices = choices
        self.absolute = absolute
        self.empty = empty
        self.url = url
        self.line = line or url
        self.token = token

    def check(self, value, path):
        if not isinstance(value, str):
            _fail(path, "expected a string, got %s" % _kind(value))
        if "\x00" in value:
            _fail(path, "must not contain NUL characters")
        if self.line and _CONTROL.search(value):
            _fail(path, "must be one line, without control characters (%r)" % (_CONTROL.search(value).group(),))
        if self.token and value and not _TOKEN.match(value):
            _fail(path, "%r is not a header name (letters, digits and !#$%%&'*+.^_`|~-)" % (value,))
        if not value.strip() and not self.empty:
            _fail(path, "must not be empty")
        if self.choices is not None and value not in self.choices:
            _fail(path, "%r is not one of %s" % (value, ", ".join(self.choices)))
        if self.absolute and value and not os.path.isabs(value):
            _fail(path, "%r is not an absolute path" % value)
        if self.url:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                _fail(path, "expected an http:// or https:// URL")
        return value


class Number(_Spec):
    def __init__(self, minimum=None, maximum=None, integer=False, exclusive_minimum=False):
        self.minimum = minimum
        self.maximum = maximum
        self.integer = integer
        self.exclusive_minimum = exclusive_minimum

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.integer and not isinstance(value, int)):
            _fail(path, "expected %s, got %s" % ("an integer" if self.integer else "a number", _kind(value)))
        if self.minimum is not None:
            if self.exclusive_minimum and value <= self.minimum:
                _fail(path, "must be more than %s" % self.minimum)
            if value < self.minimum:
                _fail(path, "must be at least %s" % self.minimum)
        if self.maximum is not None and value > self.maximum:
            _fail(path, "must be at most %s" % self.maximum)
        return value


class Boolean(_Spec):
    def check(self, value, path):
        if not isinstance(value, bool):
            _fail(path, "expected true or false, got %s" % _kind(value))
        return value


class Nullable(_Spec):
    def __init__(self, spec):
        self.spec = spec

    def check(self, value, path):
        return None if value is None else self.spec.check(value, path)


class ListOf(_Spec):
    def __init__(self, item, non_empty=False):
        self.item = item
        self.non_empty = non_empty

    def check(self, value, path):
        if not isinstance(value, list):
            _fail(path, "expected a list, got %s" % _kind(value))
        if self.non_empty and not value:
            _fail(path, "must not be empty")
        return [self.item.check(v, "%s[%d]" % (path, i)) for i, v in enumerate(value)]


class MapOf(_Spec):
    def __init__(self, value, key=None):
        self.value = value
        self.key = key

    def check(self, value, path):
        if not isinstance(value, dict):
            _fail(path, "expected an object, got %s" % _kind(value))
        if self.key is not None:
            for key in value:
                self.key.check(key, "%s (a key)" % path)
        return dict((k, self.value.check(v, "%s.%s" % (path, k))) for k, v in value.items())


REQUIRED = object()


class Obj(_Spec):
    """An object with known keys: {name: (spec, default or REQUIRED)}; any other key is an error."""

    def __init__(self, fields):
        self.fields = fields

    def check(self, value, path):
        if not isinstance(value, dict):
            _fail(path, "expected an object, got %s" % _kind(value))
        for key in value:
            if key not in self.fields:
                _fail(_join(path, key), "unknown key (known: %s)" % ", ".join(sorted(self.fields)))
        out = {}
        for key, (spec, default) in self.fields.items():
            where = _join(path, key)
            if key in value:
                out[key] = spec.check(value[key], where)
            elif default is REQUIRED:
                _fail(where, "is required")
            elif isinstance(spec, Obj) and default is not None:
                out[key] = spec.check({}, where)
            else:
                out[key] = _copy(default)
        return out


def _join(path, key):
    return "%s.%s" % (path, key) if path else key


def _copy(value):
    return json.loads(json.dumps(value))


ARGV = ListOf(Text(), non_empty=True)

SCHEMA = Obj({
    "endpoint": (Nullable(Text()), None),
    "api_version": (Text(choices=API_VERSIONS), DEFAULT_API_VERSION),
    "vm_name": (Nullable(Text(line=True)), None),
    "poll_interval": (Number(minimum=0.2, maximum=3600), 1.0),
    "max_backoff": (Number(minimum=0.2, maximum=3600), 5.0),
    "keepalive_interval": (Number(minimum=1, maximum=43200), 3600),
    "confirm_polls": (Number(minimum=1, maximum=100, integer=True), 3),
    "event_types": (ListOf(Text()), []),
    "peer_events": (Text(choices=PEER_EVENTS), "ignore"),
    "state_dir": (Text(absolute=True), DEFAULT_STATE_DIR),
    "hooks_dir": (Text(absolute=True), DEFAULT_HOOKS_DIR),
    "hook_timeout": (Number(minimum=0, exclusive_minimum=True, maximum=86400), 300),
    "hold": (Obj({
        "systemd_units": (ListOf(Text()), []),
        "systemd_mask": (Boolean(), False),
        "systemd_wait_timeout": (Number(minimum=0, maximum=86400), DEFAULT_WAIT_TIMEOUT),
        "puppet": (Boolean(), False),
        "guard": (Boolean(), False),
        "commands": (ListOf(Obj({
            "name": (Text(), REQUIRED),
            "hold": (ARGV, REQUIRED),
            "release": (ARGV, REQUIRED),
            "timeout": (Number(minimum=0, exclusive_minimum=True, maximum=86400), 300),
        })), []),
        "state_file": (Text(absolute=True), DEFAULT_HOLD_STATE_FILE),
    }), {}),
    "approval": (Obj({
        "rules": (ListOf(Obj({
            "name": (Text(), REQUIRED),
            "when": (Text(), REQUIRED),
            "allow_shared": (Boolean(), False),
        })), []),
    }), {}),
    "notify": (Obj({
        "webhook": (Nullable(Obj({
            "url": (Nullable(Text(url=True, line=True)), None),  # None: the secrets file's webhook_url
            "headers": (MapOf(Text(empty=True, line=True), key=Text(token=True)), {}),
            "secret_header": (Nullable(Text(token=True)), None),
            "verify_tls": (Boolean(), True),
            "ca_file": (Nullable(Text(absolute=True)), None),
            "use_proxy": (Boolean(), False),
            "timeout": (Number(minimum=0, exclusive_minimum=True, maximum=300), 10),
        })), None),
        "email": (Nullable(Obj({
            "host": (Text(line=True), REQUIRED),
            "port": (Number(minimum=1, maximum=65535, integer=True), 25),
            "starttls": (Boolean(), True),
            "username": (Nullable(Text(line=True)), None),
            "from": (Text(line=True), REQUIRED),
            "to": (ListOf(Text(line=True), non_empty=True), REQUIRED),
            "ca_file": (Nullable(Text(absolute=True)), None),
            "timeout": (Number(minimum=0, exclusive_minimum=True, maximum=300), 30),
        })), None),
        "syslog": (Boolean(), True),
    }), {}),
    "metrics_file": (Text(absolute=True, empty=True), DEFAULT_METRICS_FILE),
    "journal_file": (Nullable(Text(absolute=True)), None),
    "journal_max_bytes": (Number(minimum=4096, maximum=1024 ** 3, integer=True), DEFAULT_JOURNAL_MAX_BYTES),
    "log_level": (Text(choices=LOG_LEVELS), "INFO"),
})

SECRETS_SCHEMA = Obj({
    "webhook_secret": (Nullable(Text(line=True)), None),
    "smtp_password": (Nullable(Text()), None),
    "webhook_url": (Nullable(Text(url=True, line=True)), None),
})


# --- loading ---------------------------------------------------------------------------------


class Config(object):
    """The validated settings (`data`), the secrets, the compiled policy and the hold targets."""

    def __init__(self, data, secrets=None, path=None, secrets_path=None):
        self.data = data
        self.secrets = secrets or {}
        self.path = path
        self.secrets_path = secrets_path
        if not self.data["journal_file"]:
            self.data["journal_file"] = os.path.join(self.data["state_dir"], "journal.jsonl")
        self.policy = _policy(self.data["approval"]["rules"])
        self.hold_targets = _hold_targets(self.data["hold"])
        _cross_checks(self.data, self.secrets)
        self.warnings = _warnings(self.data, self.path, self.secrets_path)

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)

    def secret(self, name):
        value = self.secrets.get(name)
        return value.reveal() if value is not None else None

    def webhook_url(self):
        """Where the webhook posts: the secrets file's webhook_url, else (an older config) notify.webhook.url."""
        webhook = self.data["notify"]["webhook"]
        return (webhook["url"] or self.secret("webhook_url")) if webhook else None

    @property
    def state_file(self):
        return os.path.join(self.data["state_dir"], "watcher-state.json")

    def summary(self):
        """What check-config prints: the settings, without secrets (the webhook by scheme, host and port only)."""
        data = _copy(self.data)
        if data["notify"]["webhook"]:
            data["notify"]["webhook"]["url"] = safe_url(self.webhook_url())
        data["secrets"] = sorted(k for k, v in self.secrets.items() if v is not None)
        data["warnings"] = list(self.warnings)
        return data

    def __repr__(self):
        return "Config(%r, secrets=%s)" % (self.path, sorted(self.secrets))


def _policy(rules):
    try:
        return Policy.from_config(rules)
    except PolicyError as exc:
        raise ConfigError("approval.rules: %s" % exc)


def _hold_targets(hold):
    targets = []
    for index, unit in enumerate(hold["systemd_units"]):
        try:
            targets.append(SystemdBackend.target(unit, mask=hold["systemd_mask"],
                                                 wait_timeout=hold["systemd_wait_timeout"]))
        except ValueError as exc:
            raise ConfigError("hold.systemd_units[%d]: %s" % (index, exc))
    if hold["puppet"]:
        targets.append(PuppetBackend.target())
    if hold["guard"]:
        targets.append(GuardBackend.target(wait_timeout=hold["systemd_wait_timeout"]))
    names = set()
    for index, spec in enumerate(hold["commands"]):
        try:
            targets.append(CommandBackend.target(spec["name"], spec["hold"], spec["release"], timeout=spec["timeout"]))
        except ValueError as exc:
            raise ConfigError("hold.commands[%d]: %s" % (index, exc))
        if spec["name"] in names:
            raise ConfigError("hold.commands[%d].name: %r is used twice" % (index, spec["name"]))
        names.add(spec["name"])
    return targets


def _cross_checks(data, secrets):
    if data["endpoint"] is not None:
        try:
            resolve_endpoint(data["endpoint"], environ={})
        except ImdsError as exc:
            raise ConfigError("endpoint: %s" % exc)
    if data["max_backoff"] < data["poll_interval"]:
        raise ConfigError("max_backoff: must be at least poll_interval (%s)" % data["poll_interval"])
    if data["keepalive_interval"] < data["max_backoff"]:
        raise ConfigError("keepalive_interval: must be at least max_backoff (%s)" % data["max_backoff"])
    webhook = data["notify"]["webhook"]
    if webhook:
        in_secrets = secrets.get("webhook_url")
        if webhook["url"] and in_secrets is not None:
            raise ConfigError("notify.webhook.url: the secrets file has a webhook_url too; keep the URL only there")
        if not webhook["url"] and in_secrets is None:
            raise ConfigError("notify.webhook: no URL; put it in the secrets file as webhook_url")
        problem = webhook_url_problem(webhook["url"] or in_secrets.reveal())
        if problem:
            raise ConfigError("%s: %s" % ("notify.webhook.url" if webhook["url"] else "the secrets file's webhook_url",
                                          problem))
    if webhook and webhook["secret_header"] and secrets.get("webhook_secret") is None:
        raise ConfigError("notify.webhook.secret_header: set, but the secrets file has no webhook_secret")
    if webhook and webhook["secret_header"] and webhook["secret_header"].lower() in (h.lower() for h in webhook["headers"]):
        raise ConfigError("notify.webhook.secret_header: %s is also in headers" % webhook["secret_header"])
    email = data["notify"]["email"]
    if email and email["username"]:
        if not email["starttls"]:
            raise ConfigError("notify.email.username: refusing to send a password without starttls")
        if secrets.get("smtp_password") is None:
            raise ConfigError("notify.email.username: set, but the secrets file has no smtp_password")


def _warnings(data, path, secrets_path):
    """What works but should change, each with how to change it."""
    webhook = data["notify"]["webhook"]
    if webhook and webhook["url"]:
        return ["%s: notify.webhook.url: the config file may be read by every user of this machine, and a chat "
                "webhook's URL is its credential: move the URL to %s (0600) as webhook_url and remove it here (the "
                "watcher role does this when applied again)" % (path or "the config", secrets_path or DEFAULT_SECRETS_FILE)]
    return []


def read_trusted(path, what, trust, private=False, missing_ok=False):
    """The bytes of a file that root owns and only root may write (and read, if private).
    None when it does not exist and missing_ok."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ConfigError("%s %s does not exist" % (what, path))
    except OSError as exc:
        raise ConfigError("cannot read %s %s: %s%s" % (what, path, exc.strerror or exc,
                                                       " (is it a symlink?)" if exc.errno == errno.ELOOP else ""))
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("%s %s is not a regular file" % (what, path))
        problem = trust.problem(st, path, what, private=private)
        if problem is None:
            directory = os.path.dirname(os.path.abspath(path))
            problem = trust.problem(os.stat(directory), directory, "the directory of %s" % what)
        if problem:
            raise ConfigError(problem)
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError("%s %s is larger than %d bytes" % (what, path, MAX_CONFIG_BYTES))
    return data


def _parse_json(data, path, what):
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("%s %s is not UTF-8" % (what, path))
    except ValueError as exc:
        raise ConfigError("%s %s is not valid JSON: %s" % (what, path, exc))
    return value


def parse(value, secrets=None, path=None, secrets_path=None):
    """Validate already-decoded JSON values (tests and check-config use this directly)."""
    try:
        raw_secrets = SECRETS_SCHEMA.check(secrets if secrets is not None else {}, "")
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (secrets_path or "the secrets", exc))
    secret_values = dict((k, Secret(v)) for k, v in raw_secrets.items() if v is not None)
    try:
        return Config(SCHEMA.check(value, ""), secret_values, path, secrets_path)
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (path or "the config", exc))


def status_files(path=DEFAULT_CONFIG_FILE, trust=None):
    """The files `imds-watcher status` reads when the config is refused: those the config file names when root can
    trust the file itself (only its content or the secrets file is wrong), else the default ones, since a file that
    others may write must not choose what root reads. Returns (files, whether they came from the config)."""
    trust = trust or Trust()
    value = None
    try:
        value = _parse_json(read_trusted(path, "the config file", trust), path, "the config file")
    except ConfigError:
        pass
    data = value if isinstance(value, dict) else {}

    def absolute(candidate, default):
        return candidate if isinstance(candidate, str) and os.path.isabs(candidate) else default

    state_dir = absolute(data.get("state_dir"), DEFAULT_STATE_DIR)
    hold = data.get("hold") if isinstance(data.get("hold"), dict) else {}
    files = {
        "state_file": os.path.join(state_dir, "watcher-state.json"),
        "journal_file": absolute(data.get("journal_file"), os.path.join(state_dir, "journal.jsonl")),
        "hold_state_file": absolute(hold.get("state_file"), DEFAULT_HOLD_STATE_FILE),
    }
    return files, bool(data)


def load(path=DEFAULT_CONFIG_FILE, secrets_path=DEFAULT_SECRETS_FILE, trust=None):
    """Read, check and validate both files. The secrets file is optional."""
    trust = trust or Trust()
    data = read_trusted(path, "the config file", trust)
    value = _parse_json(data, path, "the config file")
    secrets = None
    if secrets_path:
        raw = read_trusted(secrets_path, "the secrets file", trust, private=True, missing_ok=True)
        if raw is not None:
            try:
                secrets = _parse_json(raw, secrets_path, "the secrets file")
            except ConfigError:
                raise ConfigError("the secrets file %s is not valid JSON" % secrets_path)  # no excerpt: it is secret
            if not isinstance(secrets, dict):
                raise ConfigError("the secrets file %s: expected an object" % secrets_path)
    return parse(value, secrets, path, secrets_path or None)
