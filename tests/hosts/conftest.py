"""Fixtures for host tests: real SSH + systemd test hosts (etcdforge.testing.hosts), booted once per session.

- ``test_hosts``: 3 hosts (h1..h3) for the whole session; tests that change host state should use
  ``hosts`` instead, which resets them (healed, running, no etcd) before the test.
- ``five_test_hosts``: 5 hosts on their own prefix and subnet, for the module that asks for them.

Without root or the tools these tests skip with the reason; with ``ETCDFORGE_REQUIRE_HOST_TESTS=1`` (CI)
they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from etcdforge.testing.hosts import SubnetInUseError, TestHosts, cleanup_stale, missing_prerequisites

# a few private /24s the tests own, tried in order (another run on this machine may hold the first)
#: every harness booted in this process, for the failure report (closed ones are skipped there)
BOOTED: list[TestHosts] = []

THREE_HOST_SUBNETS = ("10.213.77.0/24", "10.213.87.0/24", "10.213.97.0/24")
FIVE_HOST_SUBNETS = ("10.213.78.0/24", "10.213.88.0/24", "10.213.98.0/24")


def require_host_tests(*extra_problems: str) -> None:
    """Skip (or, with ETCDFORGE_REQUIRE_HOST_TESTS=1, fail) when test hosts cannot run here."""
    problems = [*missing_prerequisites(), *extra_problems]
    if problems:
        msg = "host tests need root and systemd-nspawn/sshd/ip: " + "; ".join(problems)
        if os.environ.get("ETCDFORGE_REQUIRE_HOST_TESTS") == "1":
            pytest.fail(msg + " (ETCDFORGE_REQUIRE_HOST_TESTS=1 forbids skipping)")
        pytest.skip(msg)


def boot(count: int, workdir: Path, prefix: str, subnets: Sequence[str]) -> TestHosts:
    """Remove dead runs' leftovers, then boot on the first subnet no route already uses."""
    require_host_tests()
    cleanup_stale(prefix)
    for subnet in subnets[:-1]:
        try:
            harness = TestHosts.start(count, workdir, subnet=subnet, prefix=prefix)
            break
        except SubnetInUseError:
            continue
    else:
        harness = TestHosts.start(count, workdir, subnet=subnets[-1], prefix=prefix)
    BOOTED.append(harness)
    return harness


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed host test's report carries what each live test host looked like at the failure."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    live = [h for h in BOOTED if not h.closed]
    sections = [f"{h.instance}/{host.name}:\n{h.diagnose(host.name)}" for h in live for host in h.hosts]
    if sections:
        report.sections.append(("test hosts at the failure", "\n\n".join(sections)))


def closed_cleanly(harness: TestHosts) -> None:
    problems = harness.close()
    assert not problems, f"test-host teardown left problems: {problems}"


@pytest.fixture
def host_requirements() -> Callable[..., None]:
    """``require_host_tests`` for test modules (which cannot import this conftest reliably)."""
    return require_host_tests


@pytest.fixture
def boot_hosts() -> Callable[[int, Path, str, Sequence[str]], TestHosts]:
    """``boot(count, workdir, prefix, subnets)`` for tests that need a harness of their own."""
    return boot


@pytest.fixture(scope="session")
def test_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHosts]:
    """Three booted hosts h1..h3 shared by the session (booted once, torn down at the end)."""
    harness = boot(3, tmp_path_factory.mktemp("hosts3"), "efh", THREE_HOST_SUBNETS)
    print(f"\n[test-hosts] 3 hosts up in {harness.boot_seconds:.2f}s on {harness.subnet}")
    try:
        yield harness
    finally:
        closed_cleanly(harness)


@pytest.fixture
def hosts(test_hosts: TestHosts) -> TestHosts:
    """The session's three hosts, reset first: healed, running, no etcd state left by earlier tests."""
    test_hosts.reset()
    return test_hosts


@pytest.fixture(scope="module")
def five_test_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHosts]:
    """Five booted hosts h1..h5 for one module (own prefix and subnet, so they coexist with the three)."""
    harness = boot(5, tmp_path_factory.mktemp("hosts5"), "efv", FIVE_HOST_SUBNETS)
    print(f"\n[test-hosts] 5 hosts up in {harness.boot_seconds:.2f}s on {harness.subnet}")
    try:
        yield harness
    finally:
        closed_cleanly(harness)
