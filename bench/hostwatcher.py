# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared by footprint and request_rate: the watcher daemon as the role installs it (a copy of
plugins/module_utils as the package imds_scheduled_events, `imds-watcher run`), run on this host against the
simulator, with a config of its own in a temporary directory (guard held in a private hold record, no syslog).
Every process gets tests/guard on PYTHONPATH, so nothing but loopback is reachable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GUARD = os.path.join(ROOT, "tests", "guard")

LAUNCHER = ("import sys\nsys.path.insert(0, sys.argv.pop(1))\n"
            "from imds_scheduled_events.watcher.cli import main\nsys.exit(main(sys.argv[1:]))\n")


def clean_env():
    env = dict(os.environ)
    for key in [k for k in env if k.lower().endswith("_proxy")]:
        del env[key]
    env["PYTHONPATH"] = GUARD
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class HostWatcher(object):
    """`imds-watcher run` in a subprocess; stop() sends SIGTERM and waits."""

    def __init__(self, endpoint, vm_name, poll_interval=1.0, max_backoff=5.0, python=sys.executable, log_level="INFO"):
        self.tmp = tempfile.mkdtemp(prefix="imds-bench-watcher-")
        os.chmod(self.tmp, 0o755)
        lib = os.path.join(self.tmp, "lib")
        shutil.copytree(os.path.join(ROOT, "plugins", "module_utils"), os.path.join(lib, "imds_scheduled_events"),
                        ignore=shutil.ignore_patterns("ansible_support.py", "__pycache__"))
        # The role installs compiled files too (python3 writes them on first run as root): compile once here.
        subprocess.run([python, "-m", "compileall", "-q", lib], check=True, env=clean_env())
        for name in ("etc", "state", "hooks", "hooks/pre", "hooks/post"):
            os.makedirs(os.path.join(self.tmp, name), mode=0o755, exist_ok=True)
        self.state = os.path.join(self.tmp, "state")
        self.config = os.path.join(self.tmp, "etc", "watcher.json")
        with open(self.config, "w") as handle:
            json.dump({"endpoint": endpoint, "vm_name": vm_name, "poll_interval": poll_interval,
                       "max_backoff": max_backoff, "state_dir": self.state,
                       "hooks_dir": os.path.join(self.tmp, "hooks"),
                       "hold": {"guard": True, "state_file": os.path.join(self.state, "holds.json")},
                       "notify": {"syslog": False}, "metrics_file": os.path.join(self.state, "metrics.prom"),
                       "log_level": log_level}, handle)
        os.chmod(self.config, 0o644)
        self.log = open(os.path.join(self.tmp, "watcher.log"), "w")
        env = clean_env()
        env.pop("PYTHONDONTWRITEBYTECODE")  # as installed: the library's bytecode is cached
        self.proc = subprocess.Popen([python, "-c", LAUNCHER, lib, "--config", self.config,
                                      "--secrets", os.path.join(self.tmp, "etc", "secrets.json"), "run"],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self, chars=4000):
        with open(self.log.name) as handle:
            return handle.read()[-chars:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.proc.returncode
