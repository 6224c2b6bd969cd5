"""Bounded waits for the system suites: poll a condition, never time anything.

A bound only ends a wait that would otherwise hang; it is never the thing a test checks,
so it is generous (a loaded 2-core machine, an ssh round trip per check).
"""

import time

import pytest


def wait_for(predicate, timeout, interval=0.2, what="the condition", diagnose=None):
    """Poll until `predicate()` is truthy and return its value; fail naming `what` after `timeout` seconds.
    `diagnose()`, when given, adds what the failure message should show (a log, a status)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value:
        if time.monotonic() >= deadline:
            pytest.fail("timed out after %s s waiting for %s%s" % (timeout, what, diagnose() if diagnose else ""))
        time.sleep(interval)
        value = predicate()
    return value
