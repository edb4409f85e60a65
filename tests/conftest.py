"""Settings every test tier shares."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def golden_directory(tmp_path_factory) -> None:
    """
    The correctness gate's goldens (halofleet.box.golden) go to a directory of this session, never the user's state
    directory: unit runs, containers and VMs alike, and one session's goldens never judge the next session's hosts.
    """
    from halofleet.box import golden

    os.environ[golden.DIR_ENV] = str(tmp_path_factory.mktemp("golden"))


UNIT_TEST_BOUND_S = 300  # the slowest unit test takes well under a minute


@pytest.fixture(autouse=True)
def bounded_unit_test(request):
    """
    A unit test that blocks (a FIFO opened without O_NONBLOCK, a socket read without its deadline) fails after
    UNIT_TEST_BOUND_S instead of waiting forever: mutmut bounds a mutant by CPU time, which a blocked call never
    uses, so such a mutant hung its run until ended by hand. Real hosts' tiers (nspawn, VM) have their own bounds.
    """
    import signal

    if "unit" not in request.node.path.parts or not hasattr(signal, "SIGALRM"):
        yield
        return

    def blocked(signum, frame):  # noqa: ARG001 (signal's signature)
        raise TimeoutError(f"a unit test ran over {UNIT_TEST_BOUND_S} s (blocked?)")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(UNIT_TEST_BOUND_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


SLOW_TEST_REPORT_S = 30.0
_SESSION_STARTED = __import__("time").monotonic()


def pytest_runtest_logreport(report):
    """
    Print each slow test's wall time as it finishes, with the time since the session began: a CI run killed at its
    deadline prints no summary, and these lines are then the only record of where the time went.
    """
    import time

    if report.duration < SLOW_TEST_REPORT_S:
        return
    elapsed = time.monotonic() - _SESSION_STARTED
    print(f"\n[{elapsed:6.0f} s] {report.nodeid} ({report.when}) took {report.duration:.0f} s", flush=True)
