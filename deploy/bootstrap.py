"""Protect a VM from its first boot: install the imds.scheduled_events watcher on this machine.

The one bootstrap behind both first-boot paths of deploy/README.md: cloud-init (deploy/cloud-init.yaml runs it from
the collection tarball) and the Custom Script extension (the ARM templates run it the same way). It

1. finds an ansible-core new enough for the collection, else installs the distribution's, else one in a venv;
2. installs the collection (a tarball file or URL, or a Galaxy name) under /usr/share/ansible/collections;
3. optionally puts ansible-pull on a systemd timer, for the watcher role to run through imds-drift-guard;
4. applies the watcher role to this machine (connection local) with the operator's variables.

Run it again and it changes nothing that is already so. Secrets (the webhook secret, the SMTP password) come only
from the environment (IMDS_SE_SECRETS_B64), are written to a 0600 file for the one ansible-playbook run that needs
them and removed after; they never appear on a command line or in the output.

Runs on the VM's own python3 (3.6 or later), standard library only: nothing is installed before it runs.
"""

import argparse
import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request

NAME = "imds-se-bootstrap"
COLLECTION = "imds.scheduled_events"
# The oldest ansible-core the collection claims (meta/runtime.yml requires_ansible; a unit test keeps them equal).
MIN_ANSIBLE = (2, 14)
CONF_DIR = "/etc/imds-scheduled-events/bootstrap"
STATE_DIR = "/var/lib/imds-scheduled-events/bootstrap"
COLLECTIONS_DIR = "/usr/share/ansible/collections"
VENV = "/opt/imds-scheduled-events/ansible"
SYSTEM_PYTHON = "/usr/bin/python3"  # modules run here: it has the distribution's apt/dnf bindings
UNIT_DIR = "/etc/systemd/system"
PULL_SERVICE = "ansible-pull.service"
PULL_TIMER = "ansible-pull.timer"
PULL_CHECKOUT = "/var/lib/ansible-pull/checkout"
SETTINGS_ENV = "IMDS_SE_SETTINGS_B64"
SECRETS_ENV = "IMDS_SE_SECRETS_B64"
SECRET_VARS = ("watcher_webhook_secret", "watcher_smtp_password")
SETTINGS_KEYS = ("collection", "vars", "vars_files", "ansible", "ansible_pull")
PULL_KEYS = ("url", "playbook", "branch", "interval")
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
    """Something the operator must fix; the message says what."""


def log(message):
    sys.stdout.write("%s: %s\n" % (NAME, message))
    sys.stdout.flush()


# --- settings ----------------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="bootstrap.py", description="Install the imds.scheduled_events watcher on this machine (run as root).")
    parser.add_argument("--settings", metavar="FILE",
                        help="a JSON file of settings: collection, vars, vars_files, ansible, ansible_pull "
                             "(deploy/README.md); %s in the environment is read first" % SETTINGS_ENV)
    parser.add_argument("--collection", metavar="SOURCE",
                        help="the collection: a tarball path or http(s) URL, or a Galaxy name[:version] "
                             "(default: %s from Galaxy)" % COLLECTION)
    parser.add_argument("--vars", metavar="FILE", action="append", default=[],
                        help="a YAML or JSON file of the watcher role's variables (repeatable; later files win)")
    parser.add_argument("--ansible", choices=("auto", "distribution", "venv"),
                        help="where ansible-core comes from: auto (an installed one, else the distribution's when "
                             "new enough, else a venv; the default), distribution or venv")
    parser.add_argument("--pull-url", metavar="URL", help="run ansible-pull from this repository on a timer")
    parser.add_argument("--pull-playbook", metavar="FILE", help="the playbook in that repository (default local.yml)")
    parser.add_argument("--pull-branch", metavar="BRANCH", help="the branch or tag to check out (default: the remote's)")
    parser.add_argument("--pull-interval", metavar="TIME",
                        help="systemd time span between the end of a run and the next (default 30min)")
    return parser.parse_args(argv)


def decode_b64_json(text, what):
    try:
        return json.loads(base64.b64decode(text.strip(), validate=True).decode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise BootstrapError("%s is not base64 of a JSON object: %s" % (what, exc))


def read_settings_file(path):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise BootstrapError("cannot read the settings file %s: %s" % (path, exc.strerror or exc))
    except ValueError as exc:
        raise BootstrapError("the settings file %s is not JSON: %s" % (path, exc))


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


def load_settings(args, environ):
    """Environment, then the settings file, then the command line: later wins. Checked before anything changes."""
    settings = {}
    if environ.get(SETTINGS_ENV, "").strip():
        _merge(settings, decode_b64_json(environ[SETTINGS_ENV], SETTINGS_ENV), SETTINGS_ENV)
    if args.settings:
        _merge(settings, read_settings_file(args.settings), args.settings)
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
    leaked = sorted(set(out["vars"]) & set(SECRET_VARS))
    if leaked:
        raise BootstrapError("%s must not be in the settings (they are logged and stored in clear): pass them in %s"
                             % (", ".join(leaked), SECRETS_ENV))
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


def load_secrets(environ):
    """Only the two secret variables, only from the environment."""
    raw = environ.get(SECRETS_ENV, "").strip()
    if not raw:
        return {}
    secrets = decode_b64_json(raw, SECRETS_ENV)
    if not isinstance(secrets, dict):
        raise BootstrapError("%s must be base64 of a JSON object" % SECRETS_ENV)
    unknown = sorted(set(secrets) - set(SECRET_VARS))
    if unknown:
        raise BootstrapError("%s: unknown key(s) %s; known: %s" % (SECRETS_ENV, ", ".join(unknown), ", ".join(SECRET_VARS)))
    if not all(isinstance(v, str) for v in secrets.values()):
        raise BootstrapError("%s: the secrets must be strings" % SECRETS_ENV)
    return dict((k, v) for k, v in secrets.items() if v)


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


def apt_candidate(package):
    proc = run(["apt-cache", "policy", package], capture=True, check=False)
    found = re.search(r"Candidate:\s*(\S+)", proc.stdout or "")
    return None if not found or found.group(1) == "(none)" else version_tuple(found.group(1).split(":")[-1])


def apt_install(packages):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "install", "-y", "--no-install-recommends"] + list(packages), env=env)


def ensure_ansible(mode):
    """The bin directory of an ansible-core >= MIN_ANSIBLE, installing one when needed."""
    wanted = "%d.%d" % MIN_ANSIBLE
    if mode in ("auto", "venv") and usable(os.path.join(VENV, "bin")):
        return os.path.join(VENV, "bin")
    if mode in ("auto", "distribution") and usable("/usr/bin"):
        return "/usr/bin"
    if mode in ("auto", "distribution"):
        if shutil.which("apt-get"):
            run(["apt-get", "update"], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            candidate = apt_candidate("ansible-core")
            if candidate and candidate[:2] >= MIN_ANSIBLE:
                apt_install(["ansible-core", "python3-requests", "python3-jmespath"])
            elif mode == "distribution":
                raise BootstrapError("this distribution packages no ansible-core %s or later (candidate: %s); use "
                                     "--ansible venv" % (wanted, ".".join(map(str, candidate)) if candidate else "none"))
        elif shutil.which("dnf"):
            run(["dnf", "install", "-y", "ansible-core", "python3-requests", "python3-jmespath"], check=mode == "distribution")
        if usable("/usr/bin"):
            return "/usr/bin"
        if mode == "distribution":
            raise BootstrapError("the distribution's ansible-core is older than %s" % wanted)
    return make_venv()


def make_venv():
    """ansible-core from PyPI (or PIP_INDEX_URL) in a venv, for distributions whose own is too old."""
    log("installing ansible-core %d.%d or later in a venv at %s" % (MIN_ANSIBLE + (VENV,)))
    if run([SYSTEM_PYTHON, "-c", "import ensurepip, venv"], check=False, capture=True).returncode != 0:
        if not shutil.which("apt-get"):
            raise BootstrapError("%s has no venv module; install it (python3-venv) and run again" % SYSTEM_PYTHON)
        apt_install(["python3-venv"])
    os.makedirs(os.path.dirname(VENV), mode=0o755, exist_ok=True)
    run([SYSTEM_PYTHON, "-m", "venv", VENV])
    pip = os.path.join(VENV, "bin", "pip")
    run([pip, "install", "--disable-pip-version-check", "ansible-core>=%d.%d" % MIN_ANSIBLE, "requests", "jmespath"])
    if not usable(os.path.join(VENV, "bin")):
        raise BootstrapError("the venv at %s has no usable ansible-core after pip install" % VENV)
    return os.path.join(VENV, "bin")


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


def ansible_environment():
    env = dict((k, v) for k, v in os.environ.items() if k not in (SETTINGS_ENV, SECRETS_ENV))
    env.setdefault("HOME", "/root")  # cloud-init's runcmd may run without one
    env.update(ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_DIR, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_LOCAL_TEMP=os.path.join(STATE_DIR, "tmp"), ANSIBLE_REMOTE_TEMP=os.path.join(STATE_DIR, "tmp"),
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0", PYTHONUNBUFFERED="1")
    return env


def apply_role(bin_dir, settings, secrets):
    playbook = os.path.join(CONF_DIR, "site.yml")
    write_file(playbook, PLAYBOOK, 0o600)
    generated = {"ansible_python_interpreter": SYSTEM_PYTHON}
    if settings["ansible_pull"]:
        generated.update(watcher_ansible_pull_guard="systemd", watcher_ansible_pull_service=PULL_SERVICE)
    files = [os.path.join(CONF_DIR, "bootstrap-vars.json")]
    write_file(files[0], json.dumps(generated, indent=2, sort_keys=True) + "\n", 0o600)
    if settings["vars"]:
        files.append(os.path.join(CONF_DIR, "vars-from-settings.json"))
        write_file(files[-1], json.dumps(settings["vars"], indent=2, sort_keys=True) + "\n", 0o600)
    files += settings["vars_files"]
    secrets_file = None
    if secrets:
        secrets_file = os.path.join(STATE_DIR, "secrets-%d.json" % os.getpid())
        write_file(secrets_file, json.dumps(secrets), 0o600)
        files.append(secrets_file)
    argv = [os.path.join(bin_dir, "ansible-playbook"), "-i", "localhost,", playbook]
    for path in files:
        argv += ["-e", "@" + path]
    try:
        run(argv, env=ansible_environment())
    finally:
        if secrets_file and os.path.exists(secrets_file):
            os.unlink(secrets_file)


def record_run(entry):
    """One line per run: how a second boot shows that it ran nothing again."""
    with open(os.path.join(STATE_DIR, "runs.log"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")


def main(argv=None, environ=None):
    environ = os.environ if environ is None else environ
    started = time.time()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        settings = load_settings(args, environ)
        secrets = load_secrets(environ)
        if os.geteuid() != 0:
            raise BootstrapError("run me as root: I install packages, a systemd service and files under /etc")
        os.umask(0o022)
        for path, mode in ((CONF_DIR, 0o700), (STATE_DIR, 0o700), (os.path.join(STATE_DIR, "tmp"), 0o700)):
            os.makedirs(path, mode=mode, exist_ok=True)
            os.chmod(path, mode)
        bin_dir = ensure_ansible(settings["ansible"])
        ansible = ansible_version(bin_dir)[1]
        log("using %s from %s" % (ansible, bin_dir))
        version = install_collection(bin_dir, settings["collection"])
        if settings["ansible_pull"]:
            setup_pull(bin_dir, settings["ansible_pull"])
        apply_role(bin_dir, settings, secrets)
        active = run(["systemctl", "is-active", "imds-watcher.service"], capture=True, check=False).stdout.strip()
        record_run({"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "collection": version,
                    "ansible": ansible, "ansible_pull": bool(settings["ansible_pull"]),
                    "seconds": round(time.time() - started, 1), "watcher": active})
        log("done in %.0f s: %s %s, imds-watcher.service is %s" % (time.time() - started, COLLECTION, version, active))
        return 0
    except BootstrapError as exc:
        sys.stderr.write("%s: error: %s\n" % (NAME, exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
