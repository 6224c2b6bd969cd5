# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Hold configuration-management drift correction with a reason, and release it exactly as it was.

The drift_pause module, the imds-hold CLI, the imds-drift-guard wrapper and the
watcher daemon all go through this package, so they share one record and never
lose each other's writes. Nothing here imports ansible: the watcher role installs
these files on VMs as is, and they must run on Python 3.9 (Debian 11) and later.

    common.py    errors, the command runner, timestamps
    store.py     the state file: trust checks, lock, atomic writes, corrupt-file handling
    backends.py  systemd units, the guard, puppet, operator commands
    manager.py   hold, release and status: intent first, each step idempotent
    guard.py     imds-drift-guard: skip a job while held
    cli.py       imds-hold: status, hold, release
"""
