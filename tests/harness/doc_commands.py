"""The commands the docs print, extracted from the docs themselves and run as printed.

Sources: the fenced ```sh, ```bash, ```shell and ```console blocks of README.md, deploy/README.md,
prometheus/README.md and docs/*.md, and the `ansible-playbook` / `ansible-pull` lines of the playbooks' header
comments (playbooks/*.yml). A ```sh block is one script; in a ```console block the lines after a `$ ` or `# ` prompt
are the commands (with their continuation lines) and the others are the output shown.

Where each runs is said by a marker just above it, an HTML comment in Markdown (`<!-- tested: fleet -->`) and a
comment line in a playbook's header (`# tested: fleet`), as docs/contributing.md describes for doc authors. WHERE
and NOT_RUN below are the whole vocabulary; a command without a marker runs here, so a new command that cannot run
here fails until it is marked, and a marker outside the vocabulary fails too.

    python doc_commands.py list                        every command, where it runs, or why it does not
    python doc_commands.py here --workdir DIR          run the `here` and `server` commands with the ansible-core on
                                                       PATH (the integration target doc_commands, on every leg)

Standard library only (Python 3.9 or later): the integration target runs it on each leg's Python.
"""

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = ("README.md", "deploy/README.md", "prometheus/README.md", "docs/*.md")
PLAYBOOKS = "playbooks/*.yml"
SHELLS = ("sh", "bash", "shell", "console")

WHERE = {
    "here": "on the controller, with every matrix ansible-core, against the simulator (the integration target "
            "doc_commands); hosts of the inventory are reached with connection local",
    "server": "here, started in the background: the commands after it in the same file run while it runs, once it "
              "has printed the lines the block shows (until the next server of the file, or the file's end)",
    "fleet": "on the controller, with every matrix ansible-core, against a booted Debian 12 container as the "
             "inventory's VM (tests/system/test_doc_commands.py)",
    "vm": "in a root shell of a booted Debian 12 container that the watcher role was applied to "
          "(tests/system/test_doc_commands.py)",
    "pull": "on booted Debian 12 and 13 containers, by the ansible-core they package "
            "(tests/system/test_pull_packaged_ansible.py)",
    "firstboot": "on the package set of Debian's cloud image (Debian 12 and 13), once deploy/bootstrap.py installed "
                 "the watcher at first boot by cloud-init or the Custom Script extension "
                 "(tests/system/test_first_boot.py)",
}
NOT_RUN = {
    "azure": "talks to Azure (az, Microsoft Graph, a subscription): no test may contact Azure",
    "galaxy": "installs from Galaxy or an Automation Hub, which no test may contact; the tests install the tarball "
              "`make build` makes",
    "checkout": "builds or tests this checkout (make, tests/system/run, pytest, tests/harness/container): make test "
                "is those commands, this test among them",
    "transcript": "shows a command's output in one particular state of a VM, not a command to run as printed; the "
                  "marker names the test that checks that output",
    "site": "needs the reader's own site, which the doc leaves to them (the inventory's hosts, hook scripts, a vault "
            "secret); the marker names the tests that run the same",
    "rulebook": "starts ansible-rulebook, which runs until it is stopped: tests/system/test_rulebooks.py runs every "
                "example rulebook on the real engine against the simulator",
}
MARK = re.compile(r"^\s*<!--\s*tested:\s*(?P<text>.*?)\s*-->\s*$")
HEADER_MARK = re.compile(r"^#\s*tested:\s*(?P<text>.*?)\s*$")
HEADER_COMMAND = re.compile(r"^#\s+(?P<command>(ansible-playbook|ansible-pull)\s.*)$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)\s*$")
PROMPT = re.compile(r"^[$#] ")
# <name>: what a reader substitutes; a runner says what each stands for (PLACEHOLDERS) and refuses any other
PLACEHOLDER = re.compile(r"<([a-z][a-z0-9_-]*)>")
# The docs' <placeholders>, and what a runner puts in their place (placeholder_values; the pull runner for <repo>).
PLACEHOLDERS = {
    "file": "a scenario of simulator/scenarios: control-plane.yaml",
    "sub": "the Azure subscription: the one of that scenario",
    "repo": "the URL of a git repository with the collection's playbooks: a file:// clone on the VM",
}
BOUND = 300  # seconds: the bound of one command (a playbook that waits for an event to be over takes a minute)
SERVER_BOUND = 120  # seconds: the bound of a server's start


class DocCommand(object):
    """One block of commands as a doc prints it: where (file, line), the text shown, the script to run, the output
    lines shown (console blocks), and the marker's verdict."""

    def __init__(self, path, line, lang, shown, script, output, mark):
        self.path = path
        self.line = line
        self.lang = lang
        self.shown = shown
        self.script = script
        self.output = output
        self.mark = mark
        self.where, self.reason, self.note, self.problem = parse_mark(mark)

    @property
    def location(self):
        return "%s:%d" % (self.path, self.line)

    def placeholders(self):
        return sorted(set(PLACEHOLDER.findall(self.script)))

    def __repr__(self):
        return "DocCommand(%s, %s)" % (self.location, self.where or "no: " + str(self.reason))


def parse_mark(mark):
    """(where, reason, note, problem) of a marker's text; None is `here`, the default."""
    if mark is None:
        return "here", None, "", None
    head, note = (mark.split(",", 1) + [""])[:2]
    head, note = head.strip(), note.strip()
    if head.startswith("no:"):
        reason = head[3:].strip()
        if reason not in NOT_RUN:
            return None, reason, note, "unknown reason %r in <!-- tested: %s -->: use one of %s" % (
                reason, mark, ", ".join(sorted(NOT_RUN)))
        return None, reason, note, None
    if head not in WHERE:
        return None, None, note, "unknown marker <!-- tested: %s -->: say where (%s) or `no: <reason>` (%s)" % (
            mark, ", ".join(sorted(WHERE)), ", ".join(sorted(NOT_RUN)))
    return head, None, note, None


def markdown_blocks(text):
    """Every fenced block of a Markdown text, of any language: (line of its first body line, language, body lines,
    the marker's text above it or None). tests/harness/doc_blocks.py reads the json and yaml ones with this too."""
    lines = text.split("\n")
    found = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, closing, lang = len(fence.group("indent")), fence.group("fence"), fence.group("lang")
        end = i + 1
        while end < len(lines) and lines[end].strip() != closing:
            end += 1
        body = [line[indent:] if line[:indent].strip() == "" else line for line in lines[i + 1:end]]
        found.append((i + 2, lang, body, _mark_above(lines, i)))
        i = end + 1
    return found


def markdown_commands(path, text):
    """The shell and console blocks of one Markdown file."""
    return [_block(path, line, lang, body, mark) for line, lang, body, mark in markdown_blocks(text) if lang in SHELLS]


def _mark_above(lines, fence_index):
    """The marker's text on the nearest non-blank line above a fence, or None."""
    j = fence_index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    found = MARK.match(lines[j]) if j >= 0 else None
    return found.group("text") if found else None


def _block(path, line, lang, body, mark):
    shown = "\n".join(body)
    if lang != "console":
        return DocCommand(path, line, lang, shown, shown + "\n", [], mark)
    commands, output, continued = [], [], False
    for text in body:
        if continued:
            commands.append(text)
        elif PROMPT.match(text):
            commands.append(text[2:])
        else:
            if text.strip():
                output.append(text)
            continue
        continued = text.rstrip().endswith("\\")
    return DocCommand(path, line, lang, shown, "\n".join(commands) + "\n", output, mark)


def playbook_commands(path, text):
    """The `ansible-playbook` / `ansible-pull` lines of a playbook's header comment (the comment lines before the
    first other line), with their continuation lines."""
    header = []
    for line in text.split("\n"):
        if line.startswith("---") and not header:
            continue
        if not line.startswith("#"):
            break
        header.append(line)
    found = []
    i = 0
    while i < len(header):
        command = HEADER_COMMAND.match(header[i])
        if not command:
            i += 1
            continue
        first = i
        body = [command.group("command")]
        while body[-1].rstrip().endswith("\\") and i + 1 < len(header):
            i += 1
            body.append(header[i].lstrip("#").strip())
        mark = HEADER_MARK.match(header[first - 1]) if first else None
        shown = "\n".join(body)
        found.append(DocCommand(path, first + 2, "sh", shown, shown + "\n", [], mark.group("text") if mark else None))
        i += 1
    return found


def extract(root=ROOT):
    """Every command the docs and the playbooks' headers print, in file order."""
    files = []
    for pattern in DOCS:
        files.extend(sorted(glob.glob(os.path.join(root, pattern))))
    found = []
    for name in files:
        with open(name, encoding="utf-8") as handle:
            found.extend(markdown_commands(os.path.relpath(name, root), handle.read()))
    for name in sorted(glob.glob(os.path.join(root, PLAYBOOKS))):
        with open(name, encoding="utf-8") as handle:
            text = handle.read()
        # the header's line numbers count from the file's first line, a leading `---` included
        offset = 1 if text.startswith("---") else 0
        for command in playbook_commands(os.path.relpath(name, root), text):
            command.line += offset - 1
            found.append(command)
    return found


def problems(commands):
    """What is wrong with the markers and placeholders, one line each: an unknown marker or reason, a runnable
    command with a <placeholder> no runner stands in for, a server block that does not show what it prints."""
    out = []
    for command in commands:
        if command.problem:
            out.append("%s: %s" % (command.location, command.problem))
            continue
        if command.where is None:
            continue
        unknown = [name for name in command.placeholders() if name not in PLACEHOLDERS]
        if unknown:
            out.append("%s: placeholder(s) %s: no runner knows what they stand for (doc_commands.PLACEHOLDERS)"
                       % (command.location, ", ".join("<%s>" % n for n in unknown)))
        if command.where == "server" and (command.lang != "console" or not command.output
                                          or command.script.count("\n") != 1):
            out.append("%s: a server block is a ```console block with one command and the lines it prints once it "
                       "is ready" % command.location)
    return out


def substitute(script, placeholders):
    """The script with each <placeholder> replaced by its value, shell-quoted."""
    return PLACEHOLDER.sub(lambda m: shlex.quote(str(placeholders[m.group(1)])), script)


def placeholder_values(root=ROOT):
    """PLACEHOLDERS, and what the values imply: <sub> is the subscription of the <file> scenario."""
    values = {"file": "control-plane.yaml"}
    sys.path.insert(0, os.path.join(root, "simulator"))
    try:
        from imds_simulator.scenario import load_scenario  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    values["sub"] = load_scenario(os.path.join(root, "simulator", "scenarios", values["file"])).settings.subscription_id
    return values


def describe(commands):
    """The table `list` prints: location, where it runs (or `no: <reason>`), its first line; then the reasons."""
    rows = []
    for command in commands:
        verdict = command.where or "no: %s" % command.reason
        rows.append("%-34s %-14s %s" % (command.location, verdict, command.shown.split("\n")[0][:100]))
        if command.note:
            rows.append("%-34s %-14s (%s)" % ("", "", command.note))
    reasons = sorted(set(c.reason for c in commands if c.reason in NOT_RUN))
    rows += ["", "Not run, and why:"] + ["  %-10s %s" % (reason, NOT_RUN[reason]) for reason in reasons]
    return "\n".join(rows)


class Failure(object):
    """A command that did not run as printed: everything the lead needs to see which and why."""

    def __init__(self, command, why, output, ansible=""):
        self.command, self.why, self.output, self.ansible = command, why, output, ansible

    def __str__(self):
        hint = ""
        if self.command.mark is None:
            hint = " (no marker: it runs here; if it cannot, say where it runs or why not, docs/contributing.md)"
        return "%s (%s%s): %s%s\n--- the command, as printed:\n%s\n--- its output (the end):\n%s" % (
            self.command.location, self.command.where, ", " + self.ansible if self.ansible else "", self.why, hint,
            self.command.shown, self.output[-6000:])


# A command that runs a playbook: its recap says whether it ran (not ansible-pull.timer, a unit).
PLAYBOOK_RUN = re.compile(r"(^|[\s;&|(])(ansible-playbook|ansible-pull)\s", re.M)
# What a playbook run that did nothing looks like, though it exits 0.
HOLLOW = ("skipping: no hosts matched",)


def verdict(command, returncode, output):
    """Why a finished command did not run as printed, or None: a non-zero exit, a play that matched no host, a
    recap with failed or unreachable hosts; a console block's output lines are not compared (except a server's)."""
    if returncode != 0:
        return "exit status %s" % returncode
    for text in HOLLOW:
        if text in output:
            return "ran on no host (%r)" % text
    if PLAYBOOK_RUN.search(command.script):
        recap = re.findall(r"^\S+\s+: ok=\d+.*$", output, re.M)
        if not recap:
            return "no PLAY RECAP: the playbook did not run"
        bad = [line for line in recap if re.search(r"\b(failed|unreachable)=[1-9]", line)]
        if bad:
            return "failed or unreachable hosts: " + "; ".join(bad)
    return None


def bash_argv(script):
    """How a block runs: bash, stopping at the first failed command, as a reader who checks each result would."""
    return ["bash", "-e", "-o", "pipefail", "-c", script]


class Sandbox(object):
    """Private namespaces that every command of a run shares, and that end with it: a PID namespace (nothing a
    command starts in the background outlives the run), a mount namespace with /srv, /tmp and optionally /var/tmp
    on tmpfs (a command writes /tmp/ready.json or /srv/reports as printed, and nothing is left behind), and with
    `network` a network namespace with loopback alone (fixed ports the docs print never collide with anything else,
    and nothing but loopback exists). The directories under /tmp that `keep` names (ansible-test's injector on PATH,
    pytest's tmp_path) are bound back. Root, or unprivileged user namespaces, are needed."""

    def __init__(self, network=True, var_tmp=True, keep=()):
        user = os.geteuid() != 0
        names = sorted(set(path.split("/")[2] for path in keep if re.match(r"^/tmp/[^/]", path)))
        # /srv first: it holds the real /tmp while /tmp is replaced, then the names are bound back from there
        setup = ["set -e", "mount -t tmpfs -o mode=0755 tmpfs /srv", "mkdir /srv/.tmp",
                 "mount --bind /tmp /srv/.tmp", "mount -t tmpfs -o mode=1777 tmpfs /tmp"]
        setup += ["mkdir /tmp/{0} && mount --bind /srv/.tmp/{0} /tmp/{0}".format(shlex.quote(name)) for name in names]
        setup += ["umount -l /srv/.tmp", "rmdir /srv/.tmp"]
        if var_tmp:
            setup.append("mount -t tmpfs -o mode=1777 tmpfs /var/tmp")
        if network:
            setup.append("ip link set lo up")
        setup += ["echo ready", "exec sleep infinity"]
        argv = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
        argv += ["--net"] if network else []
        argv += ["--user", "--map-root-user"] if user else []
        self._enter = ["nsenter", "--mount", "--pid"] + (["--net"] if network else []) + (
            ["--user", "--preserve-credentials"] if user else [])
        self._holder = subprocess.Popen(argv + ["bash", "-c", "\n".join(setup)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, universal_newlines=True)
        said = self._holder.stdout.readline()
        if said.strip() != "ready":
            rest = said + self._holder.stdout.read() if self._holder.poll() is not None else said
            self.close()
            raise RuntimeError("cannot make the private namespaces the docs' commands run in (root, or unprivileged "
                               "user namespaces, and util-linux's unshare and nsenter are needed): " + rest)
        self.pid = self._inner_pid()

    def _inner_pid(self):
        """The PID (in our namespace) of the namespaces' first process: unshare's child, which said `ready`."""
        for name in os.listdir("/proc"):
            try:
                with open("/proc/%s/stat" % name, encoding="utf-8", errors="replace") as handle:
                    stat = handle.read()
            except (OSError, ValueError):
                continue  # not a process, or one that just ended
            # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after its last ")"
            if name.isdigit() and int(stat.rpartition(")")[2].split()[1]) == self._holder.pid:
                return int(name)
        raise RuntimeError("unshare has no child")

    def popen(self, argv, **kwargs):
        """Start argv inside the namespaces, in a session of its own."""
        return subprocess.Popen(self._enter + ["--target", str(self.pid), "--wd=" + kwargs.pop("cwd")] + argv,
                                start_new_session=True, **kwargs)

    def close(self):
        """End the namespaces: the kernel kills whatever still runs in them."""
        if self._holder.poll() is None:
            self._holder.kill()
        self._holder.wait(timeout=60)
        self._holder.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def stop(proc, timeout=30):
    """SIGTERM to a process's whole group, then SIGKILL after a bounded wait."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def run_script(start, command, script, cwd, env, logdir, timeout=None):
    """Run one block's script with `start` (subprocess.Popen or Sandbox.popen) and wait for it, `timeout` seconds
    at most (BOUND); everything it left in the background is stopped with it. Returns (returncode, output)."""
    timeout = timeout or BOUND
    log = os.path.join(logdir, "%s-%d.log" % (command.path.replace("/", "_"), command.line))
    with open(log, "w+", encoding="utf-8", errors="replace") as out:
        proc = start(bash_argv(script), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                     stdin=subprocess.DEVNULL)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = "none within %d s (stopped)" % timeout
        stop(proc)
        out.seek(0)
        return code, out.read()


class Server(object):
    """A server block: started in the background; ready once every line the block shows has been printed."""

    def __init__(self, start, command, script, cwd, env, logdir):
        self.command = command
        self.log = os.path.join(logdir, "%s-%d.log" % (command.path.replace("/", "_"), command.line))
        self._out = open(self.log, "w+", encoding="utf-8", errors="replace")  # pylint: disable=consider-using-with
        self.proc = start(bash_argv("exec " + script.strip()), cwd=cwd, env=env, stdout=self._out,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def output(self):
        with open(self.log, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def wait_ready(self, timeout=SERVER_BOUND):
        """None once the server printed every line shown, else why not (it ended, or the bound ran out)."""
        wanted = [line for line in self.command.output if line.strip() not in ("", "...")]
        deadline = time.monotonic() + timeout
        while True:
            printed = set(line.rstrip() for line in self.output().split("\n"))
            missing = [line for line in wanted if line.rstrip() not in printed]
            if not missing:
                return None
            if self.proc.poll() is not None:
                return "it ended (exit status %s) before printing %r" % (self.proc.returncode, missing[0])
            if time.monotonic() >= deadline:
                return "after %d s it has not printed %r" % (timeout, missing[0])
            time.sleep(0.1)

    def stop(self):
        stop(self.proc)
        self._out.close()


def scratch_checkout(root, directory):
    """A directory that looks like the checkout (a symlink per top-level entry), where the docs' relative paths
    (playbooks/, simulator/) resolve and the files a reader adds (inventory, ready.json) do not touch the checkout."""
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(root):
        if name not in (".git", ".build"):
            target = os.path.join(directory, name)
            if not os.path.lexists(target):
                os.symlink(os.path.join(root, name), target)
    return directory


def run_file_blocks(commands, start, cwd, env, logdir, placeholders, ansible=""):
    """Run one file's commands in order, servers in the background until the next server or the end; returns the
    failures."""
    failures = []
    server = None
    try:
        for command in commands:
            script = substitute(command.script, placeholders)
            if command.where == "server":
                if server:
                    server.stop()
                server = Server(start, command, script, cwd, env, logdir)
                why = server.wait_ready()
                if why:
                    failures.append(Failure(command, "the server did not start: " + why, server.output(), ansible))
                    server.stop()
                    server = None
                continue
            code, output = run_script(start, command, script, cwd, env, logdir)
            why = verdict(command, code, output)
            if why:
                failures.append(Failure(command, why, output, ansible))
    finally:
        if server:
            server.stop()
    return failures


def by_file(commands):
    """The commands grouped by file, in order."""
    files = {}
    for command in commands:
        files.setdefault(command.path, []).append(command)
    return files


HERE_SCENARIO = """\
# The fleet the docs' `-i inventory` names when their commands run here: two VMs of one availability set.
name: doc-commands
clock: manual
vms:
  - name: myvm
    availability_set: as1
  - name: myvm-peer
    availability_set: as1
events:
  - id: 4CAEA225-A741-474D-A72E-428C86FCD853
    type: Reboot
    at: 0
    resources: [myvm]
    notice: 900
    started_for: 300
    source: User
  - id: C7061BAC-AFDC-4513-B24B-AA5F13A16123
    type: Freeze
    at: 0
    resources: [myvm, myvm-peer]
    notice: 600
    started_for: 60
    duration: 5
"""


def here_inventory(endpoints):
    """The `inventory` of a here run: the simulator's VMs as hosts on connection local, in the groups the docs'
    commands name (web, azure_vms), each with its endpoint (imds_endpoint, the documented variable)."""
    lines = ["[web]"]
    for name, url in sorted(endpoints.items()):
        lines.append("%s ansible_connection=local imds_endpoint=%s availability_set=as1" % (name, url))
    lines += ["", "[azure_vms:children]", "web", "", "[all:vars]",
              "ansible_python_interpreter={{ ansible_playbook_python }}", ""]
    return "\n".join(lines)


def run_here(root, workdir, commands):
    """Run the here and server commands with the ansible-core on PATH, in a Sandbox with loopback alone, against a
    simulator of their own (IMDS_ENDPOINT, the documented variable, names its first VM). Returns the failures."""
    runnable = [c for c in commands if c.where in ("here", "server")]
    os.makedirs(workdir, exist_ok=True)
    cwd = scratch_checkout(root, os.path.join(workdir, "checkout"))
    logdir = os.path.join(workdir, "logs")
    home = os.path.join(workdir, "home")
    os.makedirs(logdir, exist_ok=True)
    os.makedirs(home, exist_ok=True)
    scenario = os.path.join(workdir, "doc-commands.yaml")
    with open(scenario, "w", encoding="utf-8") as handle:
        handle.write(HERE_SCENARIO)
    keep = os.environ.get("PATH", "").split(os.pathsep) + [sys.executable]
    env = dict(os.environ, HOME=home)
    env.pop("TMPDIR", None)
    ansible = ansible_version(env)
    failures = []
    with Sandbox(network=True, keep=keep + [workdir]) as sandbox:
        ready = os.path.join(workdir, "simulator-ready.json")
        with open(os.path.join(logdir, "simulator.log"), "w", encoding="utf-8") as log:
            simulator = sandbox.popen([os.path.join(root, "simulator", "imds-simulator"), "--scenario", scenario,
                                       "--port", "0", "--control-port", "0", "--ready-file", ready], cwd=cwd, env=env,
                                      stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + SERVER_BOUND
            while not os.path.exists(ready) or not os.path.getsize(ready):
                if simulator.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the simulator did not start: see " + os.path.join(logdir, "simulator.log"))
                time.sleep(0.1)
            with open(ready, encoding="utf-8") as handle:
                endpoints = json.load(handle)["vms"]
            with open(os.path.join(cwd, "inventory"), "w", encoding="utf-8") as handle:
                handle.write(here_inventory(endpoints))
            env["IMDS_ENDPOINT"] = endpoints["myvm"]
            placeholders = placeholder_values(root)
            for path, file_commands in by_file(runnable).items():
                print("doc_commands: %s: %d command(s) here (%s)" % (path, len(file_commands), ansible), flush=True)
                failures += run_file_blocks(file_commands, sandbox.popen, cwd, env, logdir, placeholders, ansible)
        finally:
            stop(simulator)
    return failures


def ansible_version(env):
    """`ansible-core X.Y.Z` of the ansible-playbook on PATH, for the failure messages."""
    found = shutil.which("ansible-playbook", path=env.get("PATH"))
    if not found:
        return "no ansible-playbook on PATH"
    proc = subprocess.run([found, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                          universal_newlines=True, timeout=300, check=False)
    match = re.search(r"core (\d+\.\d+\.\d+)", proc.stdout)
    return "ansible-core " + (match.group(1) if match else proc.stdout.strip()[:80])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("action", choices=("list", "here"))
    parser.add_argument("--root", default=ROOT, help="the checkout whose docs to read (default: this one)")
    parser.add_argument("--workdir", help="where a run keeps its files (here)")
    args = parser.parse_args(argv)
    if args.action == "here" and not args.workdir:
        parser.error("here needs --workdir")
    commands = extract(args.root)
    print(describe(commands), flush=True)
    found = problems(commands)
    if found:
        print("doc_commands: the markers are wrong:\n" + "\n".join(found))
        return 1
    if args.action == "list":
        return 0
    failures = run_here(args.root, os.path.abspath(args.workdir), commands)
    for failure in failures:
        print("\n=== doc_commands: FAILED %s\n" % failure)
    if failures:
        print("doc_commands: %d command(s) did not run as printed: %s" % (
            len(failures), ", ".join(f.command.location for f in failures)))
        return 1
    print("doc_commands: every here command ran as printed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
