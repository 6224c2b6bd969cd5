# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""pytest plugin: with CI=true a skipped test is a failed test.

Suites on real parts (systemd, puppet, SMTP, Chromium) skip loudly when the
machine cannot run them; CI must never pass because something quietly did not run.
The report is turned into a failure when it is made, before any other plugin (the
terminal's summary among them) has filed it as a skip.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # pylint: disable=unused-argument
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI", "").lower() == "true" and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = "skipped under CI=true, which counts as a failure: %s" % reason
