"""pytest fixtures for the real-systemd test machine, one leg per Debian release.

Register from a conftest with ``tests/`` on sys.path::

    from harness.pytest_container import *  # noqa: F401,F403  (fixtures and hooks)

A test that uses ``systemd_container``, ``systemd_container_factory`` or
``debian_release`` runs once per selected release, with ids ``debian11``,
``debian12``, ``debian13``.  Choose releases with ``--debian=12,trixie`` or
``IMDS_SE_TEST_RELEASES`` (default: all of harness.rootfs.RELEASES); restrict a test
or module to some with ``@pytest.mark.debian_releases("bookworm", "trixie")``.
``--legs=releases`` keeps only the per-release tests, ``--legs=shared`` only the
others: tests/system/run starts one pytest per release plus one for the shared tests,
side by side (pytest-xdist's loadgroup cannot group by release under pytest 9).

A host that cannot run the harness (not root, no tools) skips the tests; with
``CI=true`` that is a failure instead, so CI can never go green by silently
skipping the system tests.
"""

import os

import pytest

from harness import rootfs as rootfs_mod
from harness.container import SystemdContainer
from harness.hostenv import HarnessUnavailable, ci_strict

__all__ = ["pytest_addoption", "pytest_configure", "pytest_generate_tests", "pytest_collection_modifyitems",
           "debian_release", "systemd_container", "systemd_container_factory"]

RELEASES_ENV = "IMDS_SE_TEST_RELEASES"
NOT_SELECTED = "not-selected"  # the parameter of a test none of whose releases is selected: deselected


def pytest_addoption(parser):
    parser.addoption("--debian", default=None, metavar="RELEASES",
                     help="comma-separated Debian releases for the real-systemd tests (bullseye,12,debian13...); "
                          f"default: ${RELEASES_ENV}, else all of {', '.join(rootfs_mod.RELEASES)}")
    parser.addoption("--legs", choices=("all", "releases", "shared"), default="all",
                     help="run the tests that need a Debian release (releases), the others (shared), or both (all)")


def pytest_configure(config):
    config.addinivalue_line("markers", "debian_releases(*suites): run only on these Debian releases")


def selected_releases(config):
    """The releases asked for on the command line or in the environment, in RELEASES order."""
    raw = config.getoption("--debian", default=None) or os.environ.get(RELEASES_ENV, "")
    if not raw.strip():
        return list(rootfs_mod.RELEASES.values())
    wanted = {rootfs_mod.release(name).suite for name in raw.replace(" ", ",").split(",") if name}
    return [rel for rel in rootfs_mod.RELEASES.values() if rel.suite in wanted]


def pytest_generate_tests(metafunc):
    """One leg per selected release, for every test that needs a container."""
    if "debian_release" not in metafunc.fixturenames:
        return
    releases = selected_releases(metafunc.config)
    marker = metafunc.definition.get_closest_marker("debian_releases")
    if marker is not None:
        allowed = {rootfs_mod.release(name).suite for name in marker.args}
        releases = [rel for rel in releases if rel.suite in allowed]
    if not releases:  # not an empty parameter set: pytest would report a skip, which CI counts as a failure
        metafunc.parametrize("debian_release", [NOT_SELECTED], ids=[NOT_SELECTED], indirect=True, scope="session")
        return
    metafunc.parametrize("debian_release", releases, ids=[rel.test_id for rel in releases], indirect=True,
                         scope="session")


def pytest_collection_modifyitems(config, items):
    """Deselect the tests none of whose releases is selected, and those --legs leaves out."""
    legs = config.getoption("--legs", default="all")
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        release = callspec.params.get("debian_release") if callspec else None
        if release == NOT_SELECTED or (legs == "releases" and release is None) or (legs == "shared" and release):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def unavailable(exc):
    """Skip locally, fail under CI."""
    if ci_strict():
        pytest.fail(f"{exc}\n(CI=true: the real-systemd tests must run, not skip)", pytrace=False)
    pytest.skip(str(exc))


def start_container(**kwargs):
    """A booted SystemdContainer; skips (fails with CI=true) when the harness cannot run here."""
    container = SystemdContainer(**kwargs)
    unavailable_exc = None
    try:
        container.start()
    except HarnessUnavailable as exc:
        container.cleanup()
        unavailable_exc = exc
    except BaseException:
        container.cleanup()
        raise
    if unavailable_exc is not None:
        unavailable(unavailable_exc)  # outside the except block: no chained traceback in the report
    return container


@pytest.fixture(scope="session")
def debian_release(request):
    """The harness.rootfs.Release this leg runs on (parametrized by pytest_generate_tests)."""
    return request.param


@pytest.fixture(scope="session")
def systemd_container(debian_release):
    """One booted container of this leg's release, shared by the session; torn down even if tests fail."""
    container = start_container(suite=debian_release.suite, name=f"imds-se-{debian_release.test_id}-{os.getpid()}")
    try:
        yield container
    finally:
        container.cleanup()


@pytest.fixture
def systemd_container_factory(debian_release):
    """Make extra containers (of this leg's release unless `suite` is given); all are cleaned up after the test."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("suite", debian_release.suite)
        container = start_container(**kwargs)
        made.append(container)
        return container

    try:
        yield make
    finally:
        for container in made:
            container.cleanup()
