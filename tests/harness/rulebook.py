"""Run the real Event-Driven Ansible engine, ansible-rulebook, for the system tests.

The engine lives in its own venv, ``.build/venvs/eda`` (``make eda-venv``, a prerequisite of ``make system``;
pinned in tests/requirements/eda.txt: ansible-rulebook 1.3.2, drools-jpy 0.4.1, ansible-core 2.21). The tests run
in the main venv and start ``<eda venv>/bin/ansible-rulebook`` as a program::

    from harness.rulebook import Rulebook

    with Rulebook(rulebook, inventory, tmp_path) as engine:   # starts it; leaving the block stops it
        engine.wait_for_log("Job finished")                     # substring, compiled regex or predicate(text)
        data = engine.wait_for_file(tmp_path / "out.json", json.loads)
        assert data["x"] == 1, engine.log()
    # or: engine = Rulebook(...).start(); ...; rc = engine.stop()     (rc = engine.wait_exit() if it ends alone)

Every wait is bounded by a generous timeout that only stops a hang; it never decides whether a test passes.

What the runner sets up (``environment()``):

- PATH starts with the eda venv's bin: ``run_playbook`` goes through ansible-runner, which runs the first
  ``ansible-playbook`` on PATH, and the engine finds collections with the first ``ansible-galaxy`` on PATH.
- Java: ``java`` on PATH (Debian's openjdk-17-jre-headless, installed with apt-get when missing and we are root;
  otherwise the test is skipped with what to install, which ``CI=true`` turns into a failure). JAVA_HOME is set from
  it unless given.
- The Makefile's settings: ANSIBLE_HOME, ANSIBLE_LOCAL_TEMP/REMOTE_TEMP/ASYNC_DIR under .build, no proxies, no
  color, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false; TMPDIR is a fresh directory removed by stop() (ansible-runner's
  private data dirs and the JVM's java.io.tmpdir go there).
- PYTHONPATH starts with tests/guard: the network guard's sitecustomize is loaded by the engine's own interpreter
  (so a source plugin cannot reach anything but loopback) and by the playbooks it starts. Drools' channel back to
  Python connects to ``localhost``, which the guard allows: loopback must be up.
- ANSIBLE_COLLECTIONS_PATH: ``collections`` (extra roots, e.g. a throw-away collection under tmp_path) first, then
  the checkout's tree ``.build/collections`` (``make collection``; made here when missing).

How ansible-rulebook 1.3.2 finds a source plugin, and what a plugin can import (checked on this engine):

- ``sources: - imds.scheduled_events.NAME:`` is looked up by running ``ansible-galaxy collection list
  imds.scheduled_events`` (the first on PATH, with the environment's ANSIBLE_COLLECTIONS_PATH, but with
  ANSIBLE_LOCAL_TEMP forced to /tmp), then ``<collection>/extensions/eda/plugins/event_source/NAME.py`` (also
  ``event_sources/`` and ``plugins/event_source/``). Rulebooks and playbooks named by FQCN are found the same way.
- The file is executed with ``runpy.run_path``: it is not imported as part of a package, ``__file__`` is the path
  under the collection root as ansible-galaxy printed it (symlinks not resolved), relative imports fail, and
  ansible-rulebook installs no collection loader and puts no collection root on sys.path. So
  ``from ansible_collections.imds.scheduled_events.plugins.module_utils.events import Event`` raises
  ``ModuleNotFoundError: No module named 'ansible_collections'`` unless the directory that holds
  ``ansible_collections/`` is on sys.path: on PYTHONPATH, or the collection installed into the engine's
  site-packages. This runner does NOT put it on PYTHONPATH, so a test sees what an installed collection sees. A
  plugin that imports its module_utils should make the root importable itself before importing, e.g.::

      try:
          import ansible_collections.imds.scheduled_events.plugins.module_utils  # noqa: F401
      except ImportError:  # run by ansible-rulebook via runpy: <root>/ansible_collections/imds/scheduled_events/
          sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 7)))
      from ansible_collections.imds.scheduled_events.plugins.module_utils.events import Event

  (seven levels up from extensions/eda/plugins/event_source/NAME.py; ``ansible_collections`` is a namespace package,
  so roots on sys.path merge). Once importable, module_utils import normally, including their ``ansible.*``
  imports (ansible-core is in the engine's venv).
- A source is ``async def main(queue, args)``; when every source returns, the rulebook ends and exits 0 (after the
  actions it triggered). A failed ``run_playbook`` also leaves exit 0: assert on side effects. localhost in the
  inventory needs ``ansible_python_interpreter: "{{ ansible_playbook_python }}"`` (interpreter discovery finds pyenv
  shims that fail here). SIGINT ends the engine with exit 130.
"""

import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from harness import debian_tools
from harness.ansible_env import COLLECTIONS, ROOT, ansible_env
from harness.hostenv import HarnessUnavailable, ci_strict

EDA_VENV = ROOT / ".build" / "venvs" / "eda"
ANSIBLE_RULEBOOK = EDA_VENV / "bin" / "ansible-rulebook"
JAVA_PACKAGE = debian_tools.PACKAGES["java"]
MIN_JAVA = 17
# bounds on waits that would otherwise hang (a loaded 2-core machine): never what a test checks
WAIT_TIMEOUT = 120
BUILD_TIMEOUT = 1200

_ready = {}


class EngineUnavailable(HarnessUnavailable):
    """This host cannot run ansible-rulebook (no Java and no way to install it, no venv)."""


def _java_major(java):
    proc = subprocess.run([java, "-version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60, check=False)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def ensure_java():
    """The path of a Java >= 17: $JAVA_HOME/bin/java when JAVA_HOME is set, else `java`, installing Debian's
    openjdk-17-jre-headless when it is missing (root, apt-get)."""
    home_java = os.path.join(os.environ.get("JAVA_HOME", ""), "bin", "java")
    if os.environ.get("JAVA_HOME") and os.access(home_java, os.X_OK):
        java = home_java
    else:
        java = debian_tools.ensure("java")["java"]
    if java is None:
        raise EngineUnavailable(
            "skipped: ansible-rulebook needs Java %d or later and there is no `java` (as root with apt-get the "
            "harness installs it; here it could not): apt-get install %s" % (MIN_JAVA, JAVA_PACKAGE))
    major = _java_major(java)
    if major is None or major < MIN_JAVA:
        raise EngineUnavailable("skipped: ansible-rulebook needs Java %d or later; %s is Java %s: apt-get install %s "
                                "(or set JAVA_HOME to a Java %d+)" % (MIN_JAVA, java, major, JAVA_PACKAGE, MIN_JAVA))
    return java


def ensure_venv():
    """Build or refresh .build/venvs/eda with `make eda-venv` (a no-op when its stamp is current), under a lock
    so that legs running side by side do not build it twice."""
    if not shutil.which("make"):
        if ANSIBLE_RULEBOOK.exists():
            return ANSIBLE_RULEBOOK
        raise EngineUnavailable("skipped: %s is missing and there is no make to build it (make eda-venv)"
                                % ANSIBLE_RULEBOOK)
    env = dict((k, v) for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"))
    EDA_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(str(EDA_VENV) + ".lock", "w", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "eda-venv"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=BUILD_TIMEOUT,
                              check=False)
    if proc.returncode != 0 or not ANSIBLE_RULEBOOK.exists():
        raise EngineUnavailable("skipped: could not build the ansible-rulebook venv (make eda-venv, exit %s):\n%s"
                                % (proc.returncode, proc.stdout[-3000:]))
    return ANSIBLE_RULEBOOK


def ensure_engine():
    """{"ansible-rulebook": path, "java": path}; raises EngineUnavailable (a message starting with "skipped:")."""
    if not _ready:
        _ready.update({"java": ensure_java(), "ansible-rulebook": ensure_venv()})
    return dict(_ready)


def require_engine():
    """ensure_engine() for a test: skips loudly (a failure under CI=true, see strict_skips) when unavailable."""
    try:
        return ensure_engine()
    except EngineUnavailable as exc:
        reason = str(exc)
    if ci_strict():  # strict_skips does this too, for pytest runs that load it
        pytest.fail("%s\n(CI=true: the rulebook tests must run, not skip)" % reason, pytrace=False)
    pytest.skip(reason)
    return None  # not reached


class Rulebook:
    """One ansible-rulebook process: `with Rulebook(...) as engine:` starts it and stops it at the end."""

    def __init__(self, rulebook, inventory, workdir, env=None, extra_vars=None, vars_file=None, collections=(),
                 args=(), verbosity=1):
        """`rulebook`, `inventory`: paths (or a rulebook FQCN). `workdir`: the engine's cwd (relative playbook names
        resolve there); it gets the log (rulebook.log) and the vars file. `env` adds or overrides
        environment variables (a PYTHONPATH given is appended after the guard). `extra_vars` (a dict) and
        `vars_file` (a YAML file, extra_vars winning) become the engine's --vars. `collections`: extra collection
        roots (directories holding ansible_collections/), searched before the checkout's. `args`: more CLI
        arguments (e.g. ["--shutdown-delay", "5"]). `verbosity`: the number of -v (1 = --verbose: INFO)."""
        self.rulebook = str(rulebook)
        self.inventory = str(inventory)
        self.workdir = Path(workdir)
        self.extra_env = dict(env or {})
        self.extra_vars = dict(extra_vars or {})
        self.vars_file = vars_file
        self.collections = [str(c) for c in collections]
        self.args = [str(a) for a in args]
        self.verbosity = verbosity
        self.log_path = self.workdir / "rulebook.log"
        self.proc = None
        self._log_handle = None
        self._tmp = None

    # --- starting ------------------------------------------------------------------------------------------------
    def environment(self, java):
        env = ansible_env()
        extra = dict(self.extra_env)
        guard_first = env["PYTHONPATH"].split(os.pathsep)
        if extra.get("PYTHONPATH"):
            guard_first += [p for p in extra.pop("PYTHONPATH").split(os.pathsep) if p]
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="imds-se-rulebook-")
        path = [str(EDA_VENV / "bin")] + [p for p in env["PATH"].split(os.pathsep) if p != str(EDA_VENV / "bin")]
        env.update(PATH=os.pathsep.join(path), PYTHONPATH=os.pathsep.join(guard_first), TMPDIR=self._tmp,
                   ANSIBLE_COLLECTIONS_PATH=os.pathsep.join(self.collections + [str(COLLECTIONS)]),
                   PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        for name in ("VIRTUAL_ENV", "PYTHONHOME", "ANSIBLE_CONFIG", "ANSIBLE_INVENTORY"):
            env.pop(name, None)
        env.setdefault("JAVA_HOME", os.path.dirname(os.path.dirname(os.path.realpath(java))))
        Path(env["ANSIBLE_LOCAL_TEMP"]).mkdir(parents=True, exist_ok=True)
        env.update(extra)
        return env

    def argv(self):
        argv = [str(ANSIBLE_RULEBOOK), "--rulebook", self.rulebook, "--inventory", self.inventory]
        argv += ["--verbose"] * self.verbosity
        if self.extra_vars or self.vars_file:
            merged = {}
            if self.vars_file:
                with open(self.vars_file, encoding="utf-8") as handle:
                    merged.update(yaml.safe_load(handle) or {})
            merged.update(self.extra_vars)
            path = self.workdir / "rulebook-vars.yml"
            path.write_text(yaml.safe_dump(merged, default_flow_style=False), encoding="utf-8")
            argv += ["--vars", str(path)]
        return argv + self.args

    def start(self):
        """Start the engine (skipping the test when this host cannot run it); returns self."""
        if self.proc is not None:
            raise RuntimeError("already started")
        engine = require_engine()
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = self.environment(engine["java"])
        argv = self.argv()
        # both stay open while the engine runs: stop() (or wait_exit()) closes the log
        self._log_handle = open(self.log_path, "ab")  # pylint: disable=consider-using-with
        self._log_handle.write(("$ %s\n" % " ".join(argv)).encode())
        self._log_handle.flush()
        # a session of its own: stop() can end what the engine started (ansible-playbook) if it must kill it
        self.proc = subprocess.Popen(argv, cwd=str(self.workdir), env=env, stdin=subprocess.DEVNULL,  # pylint: disable=consider-using-with
                                     stdout=self._log_handle, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # --- looking -------------------------------------------------------------------------------------------------
    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def returncode(self):
        """The exit code once the engine ended, else None."""
        return self.proc.poll() if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        """Everything the engine (and the playbooks it ran) printed so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self, tail=8000):
        """The engine's state and the end of its log, for assertion and failure messages."""
        state = "running" if self.running else "exited with %s" % self.returncode
        return "\n--- ansible-rulebook (pid %s, %s), %s:\n%s" % (self.pid, state, self.log_path, self.log()[-tail:])

    # --- waiting -------------------------------------------------------------------------------------------------
    def wait_for(self, predicate, timeout=WAIT_TIMEOUT, what="the condition", interval=0.2):
        """Poll `predicate()` until it returns something truthy and return that. Fails the test when the engine
        ended before it held (checked once more after the exit) or after `timeout` s (a bound on a hang)."""
        deadline = time.monotonic() + timeout
        while True:
            ended = not self.running
            value = predicate()
            if value:
                return value
            if ended:
                pytest.fail("ansible-rulebook ended before %s%s" % (what, self.describe()))
            if time.monotonic() >= deadline:
                pytest.fail("timed out after %s s waiting for %s%s" % (timeout, what, self.describe()))
            time.sleep(interval)

    def wait_for_log(self, expected, timeout=WAIT_TIMEOUT, what=None):
        """Wait until the log holds `expected`: a substring (returned), a compiled regex (its match returned) or a
        predicate on the whole log text (its value returned)."""
        if isinstance(expected, str):
            def check():
                return expected if expected in self.log() else None
        elif hasattr(expected, "search"):
            def check():
                return expected.search(self.log())
        else:
            def check():
                return expected(self.log())
        return self.wait_for(check, timeout, what or "%r in the log" % (getattr(expected, "pattern", expected),))

    def wait_for_file(self, path, predicate=None, timeout=WAIT_TIMEOUT, what=None):
        """Wait until `path` exists (and `predicate(text)` is truthy); return the predicate's value, else the text.
        A predicate that raises (e.g. json.loads on a half-written file) counts as not yet."""
        path = Path(path)

        def check():
            try:
                text = path.read_text(encoding="utf-8")
            except (FileNotFoundError, IsADirectoryError):
                return None
            if predicate is None:
                return text
            try:
                return predicate(text)
            except Exception:  # pylint: disable=broad-exception-caught
                return None
        return self.wait_for(check, timeout, what or "%s%s" % (path, " to hold the condition" if predicate else ""))

    def wait_exit(self, timeout=WAIT_TIMEOUT):
        """Wait until the engine ends by itself (every source returned) and return its exit code."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("timed out after %s s waiting for ansible-rulebook to end%s" % (timeout, self.describe()))
        self._reap()
        return code

    # --- stopping ------------------------------------------------------------------------------------------------
    def stop(self, grace=30):
        """SIGINT (what Ctrl-C sends), then SIGTERM and SIGKILL to its whole session after `grace` s each; returns
        the exit code (130 after SIGINT; -9 if it had to be killed). Idempotent; None when never started."""
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 10), (signal.SIGKILL, 30)):
            if self.proc.poll() is not None:
                break
            try:
                if sig == signal.SIGINT:
                    self.proc.send_signal(sig)
                else:
                    os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        self._reap()
        return self.proc.returncode

    def _reap(self):
        """Kill what the engine left running in its session (a playbook it started), close the log."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
