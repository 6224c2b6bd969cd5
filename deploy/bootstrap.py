"""Protect a VM from its first boot: install the imds.scheduled_events watcher on this machine.

The one bootstrap behind both first-boot paths of deploy/README.md: cloud-init (deploy/cloud-init.yaml runs it from
the collection tarball) and the Custom Script extension (the ARM templates run it the same way). It

1. takes every secret it is given: the webhook secret, the SMTP password and the webhook's URL (a chat webhook's URL is
   its credential), from the extension's script (the `# imds-se-secrets:` line, removed from the script at once) and
   from the role's variables; once step 2 has passed, they go into /etc/imds-scheduled-events/secrets.json (0600)
   and out of the settings and variables files that held them, before anything is installed;
2. works out what it must install for what it was asked, and checks with apt-get --simulate that it can, before it
   changes anything: an ansible-core new enough for the collection (the distribution's, else one from PyPI in a venv,
   with python3-venv), git when ansible-pull is configured (ansible-pull clones with it), and the watcher's own
   packages; a package that cannot be installed is named, with why it is needed and what apt said;
3. installs them (apt, Debian and Ubuntu; elsewhere they must be there already), then the collection (a tarball
   file or URL, or a Galaxy name) under /usr/share/ansible/collections;
4. optionally puts ansible-pull on a systemd timer, for the watcher role to run through imds-drift-guard, and holds
   that timer during events (the one default of what is held);
5. applies the watcher role to this machine (connection local) with the operator's variables, each string that
   could be a template marked !unsafe (data, never rendered), and watcher_manage_secrets false: the role reads the
   secrets file; no secret is in its variables, on a command line or in any environment.

Run it again and it changes nothing that is already so. Nothing it prints holds a secret (the extension sends the
end of its output to Azure, where anyone who may read the VM sees it).

Runs on the VM's own python3 (3.6 or later), standard library only (PyYAML, when there, reads YAML variables files):
nothing is installed before it runs.
"""

import argparse
import base64
import binascii
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request

try:
    import yaml
except ImportError:  # JSON variables files still work
    yaml = None

NAME = "imds-se-bootstrap"
COLLECTION = "imds.scheduled_events"
# The oldest ansible-core the collection claims (meta/runtime.yml requires_ansible; a unit test keeps them equal).
MIN_ANSIBLE = (2, 14)
CONF_DIR = "/etc/imds-scheduled-events/bootstrap"
STATE_DIR = "/var/lib/imds-scheduled-events/bootstrap"
SECRETS_FILE = "/etc/imds-scheduled-events/secrets.json"
COLLECTIONS_DIR = "/usr/share/ansible/collections"
VENV = "/opt/imds-scheduled-events/ansible"
SYSTEM_PYTHON = "/usr/bin/python3"  # modules run here: it has the distribution's apt/dnf bindings
UNIT_DIR = "/etc/systemd/system"
PULL_SERVICE = "ansible-pull.service"
PULL_TIMER = "ansible-pull.timer"
PULL_CHECKOUT = "/var/lib/ansible-pull/checkout"
HOLD_UNITS_VAR = "watcher_hold_systemd_units"
WATCHER_SERVICE = "imds-watcher.service"
# The watcher role's own packages (its watcher_packages default; a unit test keeps the two equal): installed here with
# the rest, so that they are checked before anything changes, and the role finds them.
ROLE_PACKAGES = ("python3-requests", "python3-jmespath")
SETTINGS_KEYS = ("collection", "vars", "vars_files", "ansible", "ansible_pull")
PULL_KEYS = ("url", "playbook", "branch", "interval")
# The secrets file's keys, and the role variables that carry a secret (the webhook's URL is watcher_notify_webhook.url).
SECRET_KEYS = ("webhook_secret", "smtp_password", "webhook_url")
SECRET_VARS = {"watcher_webhook_secret": "webhook_secret", "watcher_smtp_password": "smtp_password"}
WEBHOOK_VAR = "watcher_notify_webhook"
# The lines of the extension's script (deploy/arm/*.json) that carry the settings and the secrets, base64 of JSON.
SCRIPT_SETTINGS = "# imds-se-settings: "
SCRIPT_SECRETS = "# imds-se-secrets: "
# Earlier versions took these from the environment, which every child process inherits: refused, with where to go.
OLD_ENVIRONMENT = ("IMDS_SE_SETTINGS_B64", "IMDS_SE_SECRETS_B64")
DOWNLOAD_ATTEMPTS = 5

PLAYBOOK = """\
---
# Written by deploy/bootstrap.py of imds.scheduled_events: applies the watcher role to this machine.
- name: Install the imds.scheduled_events watcher on this machine
  hosts: localhost
  connection: local
  gather_facts: true
  roles:
    - role: imds.scheduled_events.watcher
"""


class BootstrapError(Exception):
    """Something the operator must fix; the message says what (and never holds a secret)."""


def log(message):
    sys.stdout.write("%s: %s\n" % (NAME, message))
    sys.stdout.flush()


# --- settings ----------------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="bootstrap.py", description="Install the imds.scheduled_events watcher on this machine (run as root).")
    parser.add_argument("--settings", metavar="FILE",
                        help="a JSON file of settings: collection, vars, vars_files, ansible, ansible_pull "
                             "(deploy/README.md)")
    parser.add_argument("--script", metavar="FILE",
                        help="the Custom Script extension's script (the ARM templates pass their own): settings and "
                             "secrets from its '%s' and '%s' lines, read first; the secrets line is removed from it "
                             "at once" % (SCRIPT_SETTINGS.strip(), SCRIPT_SECRETS.strip()))
    parser.add_argument("--collection", metavar="SOURCE",
                        help="the collection: a tarball path or http(s) URL, or a Galaxy name[:version] "
                             "(default: %s from Galaxy)" % COLLECTION)
    parser.add_argument("--vars", metavar="FILE", action="append", default=[],
                        help="a YAML or JSON file of the watcher role's variables (repeatable; later files win); a "
                             "secret in it is moved to %s" % SECRETS_FILE)
    parser.add_argument("--ansible", choices=("auto", "distribution", "venv"),
                        help="where ansible-core comes from: auto (an installed one, else the distribution's when "
                             "new enough, else a venv; the default), distribution or venv")
    parser.add_argument("--pull-url", metavar="URL", help="run ansible-pull from this repository on a timer")
    parser.add_argument("--pull-playbook", metavar="FILE", help="the playbook in that repository (default local.yml)")
    parser.add_argument("--pull-branch", metavar="BRANCH", help="the branch or tag to check out (default: the remote's)")
    parser.add_argument("--pull-interval", metavar="TIME",
                        help="systemd time span between the end of a run and the next (default 30min)")
    return parser.parse_args(argv)


def refuse_old_environment(environ):
    found = [name for name in OLD_ENVIRONMENT if name in environ]
    if found:
        raise BootstrapError("%s: settings and secrets are no longer read from the environment, which every process "
                             "the bootstrap starts would inherit. Give the settings with --settings FILE and put the "
                             "secrets in a variables file (--vars FILE, moved to %s) or in that file itself; the ARM "
                             "templates of this version pass them in their script (--script)"
                             % (", ".join(found), SECRETS_FILE))


def decode_b64_json(text, what):
    try:
        return json.loads(base64.b64decode(text.strip(), validate=True).decode("utf-8"))
    except (binascii.Error, ValueError):
        raise BootstrapError("%s is not base64 of a JSON document" % what)  # no excerpt: it may hold a secret


def b64_json(value):
    return base64.b64encode(json.dumps(value, sort_keys=True).encode("utf-8")).decode("ascii")


def read_text(path, what):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise BootstrapError("cannot read %s %s: %s" % (what, path, getattr(exc, "strerror", None) or exc))


def read_settings_file(path):
    try:
        return json.loads(read_text(path, "the settings file"))
    except ValueError as exc:
        raise BootstrapError("the settings file %s is not JSON: %s" % (path, exc))


class Secrets(object):
    """The secrets a run was given, in the order it found them (later wins), and the files to rewrite without them.

    `replace`: the extension's secrets line is the deployment's whole set (an empty value removes that secret); without
    it, the secrets found are added to those already in the secrets file."""

    def __init__(self):
        self.found = {}
        self.replace = False
        self.rewrites = []  # (path, text): a settings or variables file, without its secrets

    def take(self, variables, where):
        """The variables without their secrets; the secrets are kept here, by the secrets file's keys."""
        if not isinstance(variables, dict):
            return variables
        rest = dict(variables)
        for var, key in SECRET_VARS.items():
            if var in rest:
                self._add(key, rest.pop(var), "%s in %s" % (var, where))
        webhook = rest.get(WEBHOOK_VAR)
        if isinstance(webhook, dict) and webhook.get("url") not in (None, ""):
            self._add("webhook_url", webhook["url"], "%s.url in %s" % (WEBHOOK_VAR, where))
            rest[WEBHOOK_VAR] = dict(webhook, url=None)  # null: the role writes no URL, the daemon reads secrets.json
        return rest

    def take_line(self, secrets, where):
        if not isinstance(secrets, dict):
            raise BootstrapError("%s must be a JSON object of %s" % (where, ", ".join(SECRET_KEYS)))
        unknown = sorted(set(secrets) - set(SECRET_KEYS))
        if unknown:
            raise BootstrapError("%s: unknown key(s) %s; known: %s" % (where, ", ".join(unknown), ", ".join(SECRET_KEYS)))
        self.replace = True
        for key, value in secrets.items():
            self._add(key, value, "%s in %s" % (key, where))

    def _add(self, key, value, where):
        if value in (None, ""):
            if self.replace:
                self.found[key] = None
            return
        if not isinstance(value, str) or "\x00" in value:
            raise BootstrapError("%s must be a string" % where)  # never the value: it is a secret
        if key == "webhook_url" and (not value.startswith(("https://", "http://")) or "\n" in value):
            raise BootstrapError("%s must be an http:// or https:// URL" % where)
        self.found[key] = value

    def rewrite(self, path, text):
        """`path` is to be rewritten as `text`, without its secrets; refused now, before anything changes, when it
        cannot be (the atomic rewrite needs its directory writable)."""
        if not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK | os.X_OK) or not os.access(path, os.W_OK):
            raise BootstrapError("%s holds secrets, which the bootstrap moves to %s, but it cannot rewrite that file "
                                 "without them (it or its directory is read-only): put the secrets in a file it can "
                                 "rewrite, or in %s yourself" % (path, SECRETS_FILE, SECRETS_FILE))
        self.rewrites.append((path, text))

    def merged(self, existing):
        """What the secrets file holds after this run."""
        out = {} if self.replace else dict(existing)
        out.update(self.found)
        return dict((k, v) for k, v in out.items() if v is not None)


def read_script(path, secrets):
    """Settings and secrets from the extension's script, which is rewritten without its secrets before anything else,
    whatever happens next (a refused run included): the extension runs it once per deployment, with new ones then."""
    text = read_text(path, "the extension's script")
    kept, settings_line, secrets_line = [], None, None
    for line in text.splitlines(True):
        if line.startswith(SCRIPT_SETTINGS):
            settings_line = line[len(SCRIPT_SETTINGS):]
        elif line.startswith(SCRIPT_SECRETS):
            secrets_line = line[len(SCRIPT_SECRETS):]
        else:
            kept.append(line)
    settings, problem = {}, None
    try:
        if settings_line is not None:
            settings = decode_b64_json(settings_line, "the settings line of %s" % path)
            if isinstance(settings, dict) and "vars" in settings:
                settings = dict(settings, vars=secrets.take(settings["vars"], "the settings of %s" % path))
            kept.append(SCRIPT_SETTINGS + b64_json(settings) + "\n")
        if secrets_line is not None:
            secrets.take_line(decode_b64_json(secrets_line, "the secrets line of %s" % path), "the secrets of %s" % path)
    except BootstrapError as exc:
        problem = exc
    try:
        write_file(path, "".join(kept), os.stat(path).st_mode & 0o7777)
    except OSError as exc:
        raise BootstrapError("cannot take the secrets out of %s: %s" % (path, exc.strerror or exc))
    if problem:
        raise problem
    return settings


def _merge(into, more, what):
    if not isinstance(more, dict):
        raise BootstrapError("%s must be a JSON object, not %s" % (what, type(more).__name__))
    unknown = sorted(set(more) - set(SETTINGS_KEYS))
    if unknown:
        raise BootstrapError("%s: unknown setting(s) %s; known: %s" % (what, ", ".join(unknown), ", ".join(SETTINGS_KEYS)))
    for key, value in more.items():
        if key == "ansible_pull" and isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = dict(into[key], **value)
        else:
            into[key] = value


def load_settings(args, secrets, script_settings=None):
    """The extension's script, then the settings file, then the command line: later wins. Checked before anything
    changes; a secret among the variables is taken out (to `secrets`) and its file rewritten without it later."""
    settings = {}
    if script_settings:
        _merge(settings, script_settings, "the settings of %s" % args.script)
    if args.settings:
        from_file = read_settings_file(args.settings)
        if isinstance(from_file, dict) and isinstance(from_file.get("vars"), dict):
            scrubbed = dict(from_file, vars=secrets.take(from_file["vars"], args.settings))
            if scrubbed != from_file:
                secrets.rewrite(args.settings, json.dumps(scrubbed, indent=2, sort_keys=True) + "\n")
            from_file = scrubbed
        _merge(settings, from_file, args.settings)
    flags = {"collection": args.collection, "ansible": args.ansible}
    _merge(settings, dict((k, v) for k, v in flags.items() if v is not None), "the command line")
    pull_flags = (("url", args.pull_url), ("playbook", args.pull_playbook), ("branch", args.pull_branch),
                  ("interval", args.pull_interval))
    pull = dict((k, v) for k, v in pull_flags if v is not None)
    if pull:
        _merge(settings, {"ansible_pull": pull}, "the command line")
    settings["vars_files"] = list(settings.get("vars_files") or []) + list(args.vars)
    return check_settings(settings)


def check_settings(settings):
    out = {
        "collection": settings.get("collection") or COLLECTION,
        "vars": settings.get("vars") or {},
        "vars_files": settings.get("vars_files") or [],
        "ansible": settings.get("ansible") or "auto",
        "ansible_pull": None,
    }
    if not isinstance(out["collection"], str) or not out["collection"].strip() or "\n" in out["collection"]:
        raise BootstrapError("collection must be a tarball path or URL, or a Galaxy name: %r" % (out["collection"],))
    out["collection"] = out["collection"].strip()
    if not isinstance(out["vars"], dict):
        raise BootstrapError("vars must be an object of the watcher role's variables, not %s" % type(out["vars"]).__name__)
    if not isinstance(out["vars_files"], list) or not all(isinstance(p, str) and p for p in out["vars_files"]):
        raise BootstrapError("vars_files must be a list of file paths")
    for path in out["vars_files"]:
        if not os.path.isfile(path):
            raise BootstrapError("the variables file %s does not exist" % path)
    if out["ansible"] not in ("auto", "distribution", "venv"):
        raise BootstrapError("ansible must be auto, distribution or venv, not %r" % (out["ansible"],))
    pull = settings.get("ansible_pull")
    if pull and (not isinstance(pull, dict) or pull.get("url")):
        out["ansible_pull"] = check_pull(pull)
    return out


_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_SAFE_ARG = re.compile(r"^[A-Za-z0-9@%+=:,./_~-]+$")
_INTERVAL = re.compile(r"^[0-9]+ ?(s|sec|m|min|h|hr|d|days?|w|weeks?)?( [0-9]+ ?(s|sec|m|min|h|hr|d|days?|w|weeks?)?)*$")


def check_pull(pull):
    if not isinstance(pull, dict):
        raise BootstrapError("ansible_pull must be an object with url, playbook, branch and interval")
    unknown = sorted(set(pull) - set(PULL_KEYS))
    if unknown:
        raise BootstrapError("ansible_pull: unknown setting(s) %s; known: %s" % (", ".join(unknown), ", ".join(PULL_KEYS)))
    out = {"url": pull.get("url"), "playbook": pull.get("playbook") or "local.yml", "branch": pull.get("branch") or "",
           "interval": pull.get("interval") or "30min"}
    # These go into a unit file's ExecStart=: plain words only, so nothing there is ever quoted or expanded.
    for key in ("url", "playbook", "branch"):
        value = out[key]
        if value and (not isinstance(value, str) or not _SAFE_ARG.match(value) or value.startswith("-")):
            raise BootstrapError("ansible_pull %s %r: only letters, digits and @%%+=:,./_~- are allowed, and it must "
                                 "not start with -" % (key, value))
    if not isinstance(out["interval"], str) or not _INTERVAL.match(out["interval"]):
        raise BootstrapError("ansible_pull interval %r is not a systemd time span such as 30min or 1h"
                             % (out["interval"],))
    return out


# --- the role's variables ----------------------------------------------------------------------------------------


if yaml is not None:
    class _VarsLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
        """YAML as Ansible reads a variables file, with its !unsafe tag (a plain value here: everything becomes one)."""

    def _unsafe(loader, node):
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_mapping(node, deep=True)

    _VarsLoader.add_constructor("!unsafe", _unsafe)


def read_vars_file(path):
    """A variables file's object. JSON, else YAML (when PyYAML is there). Errors name the place, never the text."""
    text = read_text(path, "the variables file")
    try:
        value = json.loads(text)
    except ValueError:
        if yaml is None:
            raise BootstrapError("the variables file %s is not JSON, and %s has no YAML parser: install python3-yaml, "
                                 "or write the variables as JSON" % (path, sys.executable))
        try:
            value = yaml.load(text, Loader=_VarsLoader)  # nosec: a SafeLoader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = " (line %d, column %d)" % (mark.line + 1, mark.column + 1) if mark else ""
            raise BootstrapError("the variables file %s is not YAML: %s%s" % (path, getattr(exc, "problem", None)
                                                                              or type(exc).__name__, where))
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise BootstrapError("the variables file %s must hold a mapping of variables, not %s"
                             % (path, type(value).__name__))
    return value


def collect_variables(settings, secrets):
    """The role's variables: the settings' vars, then each file's (later wins, whole variables as extra vars do),
    their secrets taken out; a file that held one is rewritten without it."""
    variables = dict(settings["vars"])
    for path in settings["vars_files"]:
        raw = read_vars_file(path)
        scrubbed = secrets.take(raw, path)
        if scrubbed != raw:
            header = "" if path.endswith(".json") else (
                "# Rewritten by deploy/bootstrap.py of imds.scheduled_events: its secrets are in %s now.\n" % SECRETS_FILE)
            secrets.rewrite(path, header + json.dumps(scrubbed, indent=2, sort_keys=True, default=str) + "\n")
        variables.update(scrubbed)
    return variables


def yaml_quoted(text):
    """A YAML double-quoted scalar of any string, in ASCII (escapes for everything else), as PyYAML reads it back."""
    out = ['"']
    for char in text:
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            raise BootstrapError("it holds a lone surrogate (\\u%04x), which is not Unicode text" % code)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFF:
            out.append("\\x%02x" % code)
        elif code <= 0xFFFF:
            out.append("\\u%04x" % code)
        else:
            out.append("\\U%08x" % code)
    out.append('"')
    return "".join(out)


def unsafe_yaml(value):
    """`value` (JSON-like) as YAML in which no string is a template for ansible-core: each that could be one (a `{`
    opens every Jinja delimiter, a `#jinja2:` header changes them) is tagged !unsafe; the others stay plain quoted
    strings, since ansible-core 2.19 and later read an !unsafe scalar again as if unquoted (`!unsafe "123"` would be
    a number, `!unsafe ""` null), and none of those could hold a template."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BootstrapError("it holds %r, which is not a number Ansible can read" % value)
        return "!!float %s" % yaml_quoted(repr(value))
    if isinstance(value, dict):
        return "{%s}" % ", ".join("%s: %s" % (yaml_quoted(k) if isinstance(k, str) else unsafe_yaml(k), unsafe_yaml(v))
                                  for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[%s]" % ", ".join(unsafe_yaml(v) for v in value)
    text = str(value)
    return ("!unsafe %s" if "{" in text or "#" in text else "%s") % yaml_quoted(text)


def role_vars_text(variables):
    """The role's variables file: what ansible-playbook reads (-e @file), every value data, never a template."""
    lines = ["---", "# Written by deploy/bootstrap.py of imds.scheduled_events: the watcher role's variables. A string "
             "that could be a template is !unsafe: data, never rendered."]
    for name, value in sorted(variables.items()):
        try:
            lines.append("%s: %s" % (yaml_quoted(name), unsafe_yaml(value)))
        except BootstrapError as exc:
            raise BootstrapError("the variable %s cannot be passed on: %s" % (name, exc))
    return "\n".join(lines) + "\n"


# --- running things ----------------------------------------------------------------------------------------------


def run(argv, env=None, check=True, capture=False, timeout=3600):
    """argv without a shell; output to ours (cloud-init's or the extension's log) unless captured."""
    log("running: %s" % " ".join(argv))
    try:
        proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.STDOUT if capture else None, universal_newlines=True,
                              timeout=timeout, check=False)
    except OSError as exc:
        raise BootstrapError("cannot run %s: %s" % (argv[0], exc.strerror or exc))
    except subprocess.TimeoutExpired:
        raise BootstrapError("%s did not finish within %d s" % (" ".join(argv[:3]), timeout))
    if check and proc.returncode != 0:
        tail = ("\n" + proc.stdout[-4000:]) if capture and proc.stdout else ""
        raise BootstrapError("%s failed with exit code %d%s" % (" ".join(argv[:3]), proc.returncode, tail))
    return proc


def version_tuple(text):
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(p or 0) for p in found.groups()) if found else None


def ansible_version(bin_dir):
    """(version tuple, text) of the ansible-core whose executables are in bin_dir, or None."""
    playbook = os.path.join(bin_dir, "ansible-playbook")
    if not os.access(playbook, os.X_OK):
        return None
    try:
        proc = subprocess.run([playbook, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else ""
    version = version_tuple(first)
    return (version, first.strip()) if version else None


def usable(bin_dir):
    found = ansible_version(bin_dir)
    return found is not None and found[0][:2] >= MIN_ANSIBLE


# --- what this run installs: decided and checked before anything changes -----------------------------------------


class Plan(object):
    """What a run installs. `packages` are (name, why) pairs, installed with apt in one go; `installs` is what apt-get
    says that takes (the packages and all they need), checked with --simulate before anything changes."""

    def __init__(self):
        self.bin_dir = None  # the ansible-core already here, else the one to install
        self.venv = False  # ansible-core from PyPI in a venv at VENV
        self.packages = []
        self.installs = []

    def need(self, package, why):
        self.packages.append((package, why))


def apt_environment():
    return dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def apt_get(action, packages=(), capture=False, check=True):
    # Wait for the dpkg lock (a VM's first minutes may have apt-daily or the agent in it), retry a flaky mirror.
    argv = ["apt-get", action, "-q", "-o", "DPkg::Lock::Timeout=600", "-o", "Acquire::Retries=3"]
    if action == "install":
        argv += ["-y", "--no-install-recommends"]
    return run(argv + list(packages), env=apt_environment(), capture=capture, check=check)


def apt_candidate(package):
    proc = run(["apt-cache", "policy", "--", package], capture=True, check=False)
    found = re.search(r"Candidate:\s*(\S+)", proc.stdout or "")
    return None if not found or found.group(1) == "(none)" else version_tuple(found.group(1).split(":")[-1])


def dpkg_installed(package):
    proc = run(["dpkg-query", "--show", "--showformat=${db:Status-Status}", "--", package], capture=True, check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "installed"


def has_venv_module():
    """Whether the system python can build a venv with pip in it (Debian and Ubuntu split ensurepip off into
    python3-venv)."""
    return run([SYSTEM_PYTHON, "-c", "import ensurepip, venv"], capture=True, check=False).returncode == 0


def installed_ansible(mode):
    """The bin directory of an ansible-core >= MIN_ANSIBLE already here (the venv's first), or None."""
    if mode in ("auto", "venv") and usable(os.path.join(VENV, "bin")):
        return os.path.join(VENV, "bin")
    if mode in ("auto", "distribution") and usable("/usr/bin"):
        return "/usr/bin"
    return None


def role_packages(variables):
    """The OS packages the watcher role installs (its watcher_packages, unless watcher_install_packages is false)."""
    if variables.get("watcher_install_packages", True) is False:
        return []
    packages = variables.get("watcher_packages", list(ROLE_PACKAGES))
    if not isinstance(packages, list) or not all(isinstance(p, str) and _PACKAGE.match(p) for p in packages):
        raise BootstrapError("watcher_packages must be a list of package names")
    return packages


def plan_install(settings, variables):
    """What this run must install for what it was asked (ansible-core, git for ansible-pull, python3-venv for a venv,
    the watcher's own packages), checked with apt-get --simulate: refused before anything changes, with each package
    and why it is needed, when one cannot be installed. The only thing done on the way is `apt-get update` (apt's
    package lists; a cloud image ships none), and only when something is missing."""
    plan = Plan()
    mode = settings["ansible"]
    apt = shutil.which("apt-get") is not None
    wanted = "%d.%d" % MIN_ANSIBLE
    updated = False
    plan.bin_dir = installed_ansible(mode)
    if plan.bin_dir is None:
        candidate = None
        if mode in ("auto", "distribution") and apt:
            apt_get("update")
            updated = True
            candidate = apt_candidate("ansible-core")
        if candidate and candidate[:2] >= MIN_ANSIBLE:
            plan.need("ansible-core", "the distribution's %s applies the watcher role" % ".".join(map(str, candidate)))
            plan.bin_dir = "/usr/bin"
        elif mode == "distribution":
            raise BootstrapError("this distribution packages no ansible-core %s or later (candidate: %s); use --ansible "
                                 "venv" % (wanted, ".".join(map(str, candidate)) if candidate else "none"))
        else:
            plan.venv, plan.bin_dir = True, os.path.join(VENV, "bin")
            if not has_venv_module():
                plan.need("python3-venv", "%s cannot build the venv for ansible-core %s from PyPI without it (the "
                                          "distribution's is older)" % (SYSTEM_PYTHON, wanted))
    if settings["ansible_pull"] and shutil.which("git") is None:
        plan.need("git", "ansible-pull clones its repository with it")
    if apt:
        for package in role_packages(variables):
            if not dpkg_installed(package):
                plan.need(package, "the watcher's own, watcher_packages")
    if not plan.packages:
        return plan
    needs = ", ".join("%s (%s)" % pair for pair in plan.packages)
    if not apt:
        raise BootstrapError("this machine needs %s, and the bootstrap installs packages with apt only (Debian, "
                             "Ubuntu): there is no apt-get here. Install them, then run it again; nothing was changed"
                             % needs)
    if not updated:
        apt_get("update")
    names = [name for name, dummy in plan.packages]
    proc = apt_get("install", ["--simulate"] + names, capture=True, check=False)
    if proc.returncode != 0:
        said = [line for line in (proc.stdout or "").splitlines()
                if line.startswith("E:") or re.match(r"^ \S+ : ", line) or "Depends:" in line]
        raise BootstrapError("cannot install %s: apt-get install --simulate refused it (exit %d), and nothing was "
                             "changed:\n%s" % (needs, proc.returncode, "\n".join(said) or (proc.stdout or "")[-2000:]))
    plan.installs = [line.split()[1] for line in (proc.stdout or "").splitlines() if line.startswith("Inst ")]
    log("to install: %s; apt-get installs %d package(s): %s" % (needs, len(plan.installs), " ".join(plan.installs)))
    return plan


def carry_out(plan):
    """Install what plan_install() found missing; the bin directory of the ansible-core to use."""
    if plan.packages:
        apt_get("install", [name for name, dummy in plan.packages])
    if plan.venv:
        make_venv()
    if not usable(plan.bin_dir):
        raise BootstrapError("no usable ansible-core %d.%d or later in %s after the install" % (MIN_ANSIBLE + (plan.bin_dir,)))
    return plan.bin_dir


def make_venv():
    """ansible-core from PyPI (or PIP_INDEX_URL) in a venv, for distributions whose own is too old."""
    log("installing ansible-core %d.%d or later in a venv at %s" % (MIN_ANSIBLE + (VENV,)))
    os.makedirs(os.path.dirname(VENV), mode=0o755, exist_ok=True)
    run([SYSTEM_PYTHON, "-m", "venv", VENV])
    pip = os.path.join(VENV, "bin", "pip")
    run([pip, "install", "--disable-pip-version-check", "ansible-core>=%d.%d" % MIN_ANSIBLE, "requests", "jmespath"])


# --- the collection ----------------------------------------------------------------------------------------------


def download(url, dest):
    """http(s) only; a few tries with backoff (a VM's network is not always up at its first minute)."""
    if not url.startswith(("https://", "http://")):
        raise BootstrapError("cannot download %r: only http and https URLs" % url)
    partial = dest + ".part"
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
            os.replace(partial, dest)
            return dest
        except (OSError, ValueError) as exc:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise BootstrapError("cannot download the collection from %s: %s" % (redact(url), exc))
            log("download of %s failed (%s); trying again" % (redact(url), exc))
            time.sleep(2 ** attempt)
    return dest


def redact(url):
    """A storage URL's SAS token is a secret: never print the query."""
    return url.split("?", 1)[0] + ("?..." if "?" in url else "")


def tarball_version(path):
    try:
        with tarfile.open(path, "r:gz") as tar:
            manifest = json.load(tar.extractfile("MANIFEST.json"))
    except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
        raise BootstrapError("%s is not a collection tarball: %s" % (path, exc))
    info = manifest.get("collection_info") or {}
    name = "%s.%s" % (info.get("namespace"), info.get("name"))
    if name != COLLECTION:
        raise BootstrapError("%s holds the collection %s, not %s" % (path, name, COLLECTION))
    return info.get("version")


def installed_version():
    path = os.path.join(COLLECTIONS_DIR, "ansible_collections", *COLLECTION.split(".")) + "/MANIFEST.json"
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)["collection_info"]["version"]
    except (OSError, KeyError, ValueError):
        return None


def install_collection(bin_dir, source):
    galaxy = [os.path.join(bin_dir, "ansible-galaxy"), "collection", "install", "-p", COLLECTIONS_DIR]
    if source.startswith(("https://", "http://")):
        os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
        source = download(source, os.path.join(STATE_DIR, "collection.tar.gz"))
    if os.path.exists(source):
        version, have = tarball_version(source), installed_version()
        if version == have:
            log("%s %s is already installed in %s" % (COLLECTION, have, COLLECTIONS_DIR))
            return have
        run(galaxy + (["--force"] if have else []) + [source], env=ansible_environment())
    else:
        if source.startswith(("/", ".")) or source.endswith(".tar.gz"):
            raise BootstrapError("the collection tarball %s does not exist" % source)
        run(galaxy + ["--upgrade", source], env=ansible_environment())
    return installed_version()


# --- ansible-pull ------------------------------------------------------------------------------------------------


def pull_units(bin_dir, pull):
    # --full: a shallow clone fails on git's dumb HTTP (a repository published to static hosting, a storage account).
    argv = [os.path.join(bin_dir, "ansible-pull"), "--url", pull["url"], "--full", "--directory", PULL_CHECKOUT]
    if pull["branch"]:
        argv += ["--checkout", pull["branch"]]
    argv += ["-e", "ansible_python_interpreter=%s" % SYSTEM_PYTHON, pull["playbook"]]
    service = (
        "# Written by deploy/bootstrap.py of imds.scheduled_events; the watcher role runs it through imds-drift-guard.\n"
        "[Unit]\nDescription=Apply this machine's configuration with ansible-pull\n"
        "Documentation=man:ansible-pull(1)\nWants=network-online.target\nAfter=network-online.target\n\n"
        "[Service]\nType=oneshot\nEnvironment=ANSIBLE_COLLECTIONS_PATH=%s\nExecStart=%s\n"
        % (COLLECTIONS_DIR, " ".join(argv)))
    timer = (
        "# Written by deploy/bootstrap.py of imds.scheduled_events.\n"
        "[Unit]\nDescription=Run ansible-pull every %s\n\n"
        "[Timer]\nOnBootSec=5min\nOnUnitInactiveSec=%s\nRandomizedDelaySec=5min\n\n"
        "[Install]\nWantedBy=timers.target\n" % (pull["interval"], pull["interval"]))
    return {PULL_SERVICE: service, PULL_TIMER: timer}


def setup_pull(bin_dir, pull):
    changed = False
    for name, text in pull_units(bin_dir, pull).items():
        changed = write_file(os.path.join(UNIT_DIR, name), text, 0o644) or changed
    if changed:
        run(["systemctl", "daemon-reload"])
    run(["systemctl", "enable", "--now", PULL_TIMER])
    return changed


# --- the role ----------------------------------------------------------------------------------------------------


def write_file(path, text, mode):
    """Write when different; True when it changed. Atomic, owned by root, mode set before the content lands."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            if handle.read() == text and (os.stat(path).st_mode & 0o7777) == mode:
                return False
    except OSError:
        pass
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def read_secrets_file():
    """The secrets file's object ({} when there is none). Errors never quote it."""
    try:
        with open(SECRETS_FILE, "r", encoding="utf-8") as handle:
            existing = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        raise BootstrapError("the secrets file %s cannot be read as JSON: fix it (docs/watcher.md) or remove it"
                             % SECRETS_FILE)
    if not isinstance(existing, dict):
        raise BootstrapError("the secrets file %s must hold a JSON object: fix it (docs/watcher.md) or remove it"
                             % SECRETS_FILE)
    return existing


def move_secrets(secrets):
    """The one step that handles secrets: the secrets file gets what this run was given (0600, root, atomic), and
    the settings and variables files that held a secret lose it. True when the secrets file changed."""
    changed = False
    if secrets.found or secrets.replace:
        wanted = secrets.merged(read_secrets_file() if not secrets.replace else {})
        if wanted:
            os.makedirs(os.path.dirname(SECRETS_FILE), mode=0o755, exist_ok=True)
            changed = write_file(SECRETS_FILE, json.dumps(wanted, indent=2, sort_keys=True) + "\n", 0o600)
        elif os.path.exists(SECRETS_FILE):
            os.unlink(SECRETS_FILE)
            changed = True
        log("the secrets file %s: %s (%s)" % (SECRETS_FILE, "updated" if changed else "unchanged",
                                              ", ".join(sorted(wanted)) or "no secret"))
    for path, text in secrets.rewrites:
        write_file(path, text, os.stat(path).st_mode & 0o7777)
        log("moved the secrets of %s to %s" % (path, SECRETS_FILE))
    secrets.found.clear()
    # What earlier versions left: a secrets file for one run that a crash kept, and vars files now role-vars.yml.
    for leftover in glob.glob(os.path.join(STATE_DIR, "secrets-*.json")) + [
            os.path.join(CONF_DIR, name) for name in ("bootstrap-vars.json", "vars-from-settings.json")]:
        if os.path.exists(leftover):
            os.unlink(leftover)
    return changed


def ansible_environment():
    env = dict(os.environ)
    env.setdefault("HOME", "/root")  # cloud-init's runcmd may run without one
    env.update(ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_DIR, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_LOCAL_TEMP=os.path.join(STATE_DIR, "tmp"), ANSIBLE_REMOTE_TEMP=os.path.join(STATE_DIR, "tmp"),
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0", PYTHONUNBUFFERED="1")
    return env


def role_variables(settings, variables):
    """What the role gets: ours, the operator's (which win), and watcher_manage_secrets false (which wins: the role
    must leave the secrets file, which holds what the operator's variables no longer do). What is held by default is
    decided here and nowhere else: the ansible-pull timer when the bootstrap puts ansible-pull on one, with the units
    the operator lists; nothing else."""
    out = {"ansible_python_interpreter": SYSTEM_PYTHON}
    if settings["ansible_pull"]:
        out.update(watcher_ansible_pull_guard="systemd", watcher_ansible_pull_service=PULL_SERVICE)
    out.update(variables)
    units = variables.get(HOLD_UNITS_VAR, [])
    if settings["ansible_pull"] and isinstance(units, list) and PULL_TIMER not in units:
        out[HOLD_UNITS_VAR] = [PULL_TIMER] + units
    out["watcher_manage_secrets"] = False
    return out


def unit_known(unit):
    proc = run(["systemctl", "list-unit-files", "--no-legend", "--", unit], capture=True, check=False)
    return proc.returncode == 0 and unit in (proc.stdout or "").split()


def check_held_units(settings, variables):
    """A unit the watcher is to hold but this machine lacks makes its hold fail at the first event (hold_failed):
    the ansible-pull timer without ansible_pull is refused now, another unit is reported (something may install it
    later, ansible-pull's own playbook for one)."""
    units = variables.get(HOLD_UNITS_VAR, [])
    if not isinstance(units, list):
        return  # the role's argument spec says what it must be
    for unit in units:
        if not isinstance(unit, str) or (settings["ansible_pull"] and unit in (PULL_TIMER, PULL_SERVICE)) or \
                unit_known(unit):
            continue
        if unit in (PULL_TIMER, PULL_SERVICE):
            raise BootstrapError("%s names %s, but no ansible_pull url is set (ansiblePullUrl in the ARM templates) "
                                 "and this machine has no such unit: the watcher could not hold it at an event. Set "
                                 "the url, or leave %s out (the bootstrap holds the timer it sets up by itself)"
                                 % (HOLD_UNITS_VAR, unit, unit))
        log("warning: %s names %s, which is not on this machine: holding it fails at an event unless something "
            "installs it first" % (HOLD_UNITS_VAR, unit))


def apply_role(bin_dir, role_vars_yaml):
    playbook = os.path.join(CONF_DIR, "site.yml")
    write_file(playbook, PLAYBOOK, 0o600)
    role_vars = os.path.join(CONF_DIR, "role-vars.yml")
    write_file(role_vars, role_vars_yaml, 0o600)
    run([os.path.join(bin_dir, "ansible-playbook"), "-i", "localhost,", playbook, "-e", "@" + role_vars],
        env=ansible_environment())


def service_state():
    return run(["systemctl", "is-active", WATCHER_SERVICE], capture=True, check=False).stdout.strip()


def record_run(entry):
    """One line per run: how a second boot shows that it ran nothing again."""
    with open(os.path.join(STATE_DIR, "runs.log"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")


def main(argv=None, environ=None):
    environ = os.environ if environ is None else environ
    started = time.time()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        refuse_old_environment(environ)
        secrets = Secrets()
        script_settings = read_script(args.script, secrets) if args.script else None
        settings = load_settings(args, secrets, script_settings)
        variables = collect_variables(settings, secrets)
        role_vars_yaml = role_vars_text(role_variables(settings, variables))
        if os.geteuid() != 0:
            raise BootstrapError("run me as root: I install packages, a systemd service and files under /etc")
        os.umask(0o022)
        check_held_units(settings, variables)
        plan = plan_install(settings, variables)
        for path, mode in ((CONF_DIR, 0o700), (STATE_DIR, 0o700), (os.path.join(STATE_DIR, "tmp"), 0o700)):
            os.makedirs(path, mode=mode, exist_ok=True)
            os.chmod(path, mode)
        secrets_changed = move_secrets(secrets)
        bin_dir = carry_out(plan)
        ansible = ansible_version(bin_dir)[1]
        log("using %s from %s" % (ansible, bin_dir))
        version = install_collection(bin_dir, settings["collection"])
        if settings["ansible_pull"]:
            setup_pull(bin_dir, settings["ansible_pull"])
        was_active = service_state() == "active"
        apply_role(bin_dir, role_vars_yaml)
        if secrets_changed and was_active:  # the role restarts it for what it changed; it did not see the secrets
            run(["systemctl", "try-restart", WATCHER_SERVICE])
        active = service_state()
        record_run({"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "collection": version,
                    "ansible": ansible, "ansible_pull": bool(settings["ansible_pull"]), "installed": plan.installs,
                    "venv": plan.venv, "seconds": round(time.time() - started, 1), "watcher": active})
        log("done in %.0f s: %s %s, %s is %s" % (time.time() - started, COLLECTION, version, WATCHER_SERVICE, active))
        return 0
    except BootstrapError as exc:
        sys.stderr.write("%s: error: %s\n" % (NAME, exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
