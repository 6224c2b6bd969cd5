# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What every part of the hold library shares: errors, the one way to run a command, time.

Commands always run from an argument list, never through a shell, so nothing an
event or an operator wrote can become shell syntax. Tests inject their own
`run` callable with the same signature as run_command().
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import subprocess

DEFAULT_STATE_FILE = "/var/lib/imds-scheduled-events/holds.json"
DEFAULT_WAIT_TIMEOUT = 600
DEFAULT_COMMAND_TIMEOUT = 300
DEFAULT_LOCK_TIMEOUT = 900

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What a terminal or a log line must not get raw: C0 and C1 controls (line breaks, ANSI escapes), DEL, the bidi
# controls that reorder what follows, lone surrogates (not encodable).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# What an environment variable cannot carry.
_UNCARRIABLE = re.compile("[\x00\ud800-\udfff]")
MAX_REASON_ID = 128
MAX_REASON_TEXT = 1024


class HoldError(Exception):
    """A hold or release could not be completed; the message is meant for an operator."""


class StateError(HoldError):
    """The state file cannot be trusted, read or locked."""


class CorruptStateError(StateError):
    """The state file is not a hold record; `kept` names the copy kept aside, if one was made."""

    def __init__(self, message, kept=None):
        super(CorruptStateError, self).__init__(message)
        self.kept = kept


class BackendError(HoldError):
    """A backend could not inspect, hold or release its target."""


class WaitTimeout(BackendError):
    """A run in flight did not finish in time; the hold stays in place, half done."""


class CommandResult(object):
    """What a command returned: exit status and its text output."""

    def __init__(self, argv, rc, stdout="", stderr=""):
        self.argv = list(argv)
        self.rc = rc
        self.stdout = stdout or ""
        self.stderr = stderr or ""

    @property
    def ok(self):
        return self.rc == 0

    def describe(self):
        """One line for an error message: the command, its status and what it said."""
        said = (self.stderr.strip() or self.stdout.strip()).splitlines()
        tail = said[-1][:300] if said else "no output"
        return "%s exited with %s: %s" % (format_argv(self.argv), self.rc, tail)


def format_argv(argv):
    return " ".join(shlex.quote(str(a)) for a in argv)


def c_locale_env(extra=None):
    """The environment for tools whose output we parse: stable, untranslated."""
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    if extra:
        env.update(extra)
    return env


def run_command(argv, stdin=None, env=None, timeout=None):
    """Run an argument list (never a shell string) and return a CommandResult.

    A program that cannot be started answers 127 like a shell would, so callers
    handle "not installed" and "failed" the same way.
    """
    if isinstance(argv, (str, bytes)):
        raise TypeError("commands are argument lists, never shell strings")
    argv = [str(a) for a in argv]
    try:
        # not AnsibleModule.run_command: the watcher and imds-hold run this on the VM without Ansible
        proc = subprocess.run(  # pylint: disable=ansible-bad-function
            argv, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, timeout=timeout, universal_newlines=True, errors="replace",
            close_fds=True, check=False)
    except OSError as exc:
        return CommandResult(argv, 127, "", "%s: %s" % (argv[0], exc.strerror or exc))
    except subprocess.TimeoutExpired:
        raise BackendError("%s did not finish within %s s and was killed" % (format_argv(argv), timeout))
    return CommandResult(argv, proc.returncode, proc.stdout, proc.stderr)


def isoformat(epoch):
    """UTC, second precision, with a Z: easy to read and to sort."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def clean_text(value, what, maximum, required=True):
    """Reasons end up in logs, puppet's lock file and environment variables: one line, bounded."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError("%s must not be empty" % what)
        return None
    if not isinstance(value, str):
        raise ValueError("%s must be text, not %s" % (what, type(value).__name__))
    text = value.strip()
    if len(text) > maximum:
        raise ValueError("%s is longer than %d characters" % (what, maximum))
    if "\x00" in text:
        raise ValueError("%s must not contain NUL characters" % what)
    return text


def printable(value):
    """A value as a terminal, a log line or a mail header shows it: every character _UNPRINTABLE names written as an
    escape (\\x1b, \\n, \\u202e), the rest verbatim. Event data can then neither restyle the screen, forge a line or
    a header, nor reorder what follows it; and what was there can still be read."""
    return _UNPRINTABLE.sub(_escape, "" if value is None else str(value))


def _escape(match):
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        "\\x%02x" % ord(char) if ord(char) < 0x100 else "\\u%04x" % ord(char))


def env_text(value):
    """A value for an environment variable, which cannot hold NUL or a lone surrogate: those become U+FFFD (as
    documented for hooks and commands); anything else passes unchanged."""
    return _UNCARRIABLE.sub("\ufffd", "" if value is None else str(value))


def one_line(text):
    """Control characters (newlines included) become spaces: for log lines and puppet's message."""
    return _CONTROL.sub(" ", text or "")
