"""pytest fixtures for the real-systemd test machine.

Register from a conftest with ``tests/`` on sys.path::

    from harness.pytest_container import systemd_container, systemd_container_factory  # noqa: F401

or with ``-p harness.pytest_container``.  A host that cannot run the harness
(not root, no tools) skips the tests; with ``CI=true`` that is a failure
instead, so CI can never go green by silently skipping the system tests.
"""

import pytest

from harness.container import SystemdContainer
from harness.hostenv import HarnessUnavailable, ci_strict


def _unavailable(exc):
    """Skip locally, fail under CI."""
    if ci_strict():
        pytest.fail(f"{exc}\n(CI=true: the real-systemd tests must run, not skip)", pytrace=False)
    pytest.skip(str(exc))


def start_container(**kwargs):
    """A booted SystemdContainer; skips (fails with CI=true) when the harness cannot run here."""
    container = SystemdContainer(**kwargs)
    unavailable = None
    try:
        container.start()
    except HarnessUnavailable as exc:
        container.cleanup()
        unavailable = exc
    except BaseException:
        container.cleanup()
        raise
    if unavailable is not None:
        _unavailable(unavailable)  # outside the except block: no chained traceback in the report
    return container


@pytest.fixture(scope="session")
def systemd_container():
    """One booted container shared by the whole test session; torn down even if tests fail."""
    container = start_container()
    try:
        yield container
    finally:
        container.cleanup()


@pytest.fixture
def systemd_container_factory():
    """Make extra containers (e.g. for destructive tests); all are cleaned up after the test."""
    made = []

    def make(**kwargs):
        container = start_container(**kwargs)
        made.append(container)
        return container

    try:
        yield make
    finally:
        for container in made:
            container.cleanup()
