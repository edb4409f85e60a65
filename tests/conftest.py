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
VM_TIER = "tests/vm/"
# Set by whoever wants every tier in one process, one after the other.
TIERS_SERIAL_ENV = "HALOFLEET_TIERS_SERIAL"
VM_CHILD_ENV = "HALOFLEET_VM_TIER_PROCESS"  # set in the VM tier's own process


def pytest_collection_modifyitems(session, config, items):
    """
    When the VM tier and another tier are both selected, the VM tier runs in pytest processes started here, beside
    this one: on 2 cores the VMs' TCG leaves about a core mostly idle, and the nspawn and unit tiers fit in it
    (docs/testing.md). A VM module marked ``own_vm_process`` gets a process of its own; the others share one.
    Their reports are printed at the end of this session, and a failure there fails it.
    """
    import subprocess
    import sys
    import tempfile

    vm = [item for item in items if item.nodeid.startswith(VM_TIER)]
    if not vm or len(vm) == len(items) or config.getoption("collectonly") or \
            os.environ.get(TIERS_SERIAL_ENV) or os.environ.get(VM_CHILD_ENV):
        return
    groups: dict[str, list[str]] = {}
    for item in vm:
        groups.setdefault("own" if item.get_closest_marker("own_vm_process") else "shared", []).append(item.nodeid)
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    started = []
    for name, nodeids in groups.items():
        log = tempfile.NamedTemporaryFile(prefix=f"halofleet-vm-{name}-", suffix=".log", delete=False)
        args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *nodeids]
        if config.getoption("maxfail"):  # -x is --maxfail=1
            args.append(f"--maxfail={config.getoption('maxfail')}")
        # The report goes to the log; the progress lines (slow tests, figures) to the shared stderr as they come.
        process = subprocess.Popen(args, cwd=config.rootpath, stdout=log, env={**os.environ, VM_CHILD_ENV: "1"})
        started.append((process, log.name, len(nodeids)))
        terminal.write_line(f"VM tests ({len(nodeids)}) run beside this session in pid {process.pid}; "
                            f"their report: {log.name}")
    config.stash[_VM_TIER_KEY] = started
    items[:] = [item for item in items if not item.nodeid.startswith(VM_TIER)]


_VM_TIER_KEY = pytest.StashKey()


def pytest_sessionfinish(session, exitstatus):
    """Wait for the VM tier's processes (stopped at once if this session stops on a failure), print their reports."""
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    for process, log, count in session.config.stash.get(_VM_TIER_KEY, []):
        if session.shouldfail or session.shouldstop:
            process.terminate()
        process.wait()
        terminal.write_sep("=", f"VM tests: {count} in pid {process.pid}, exit {process.returncode}")
        with open(log, errors="replace") as report:
            terminal.write(report.read())
        if process.returncode != 0 and session.exitstatus == 0:
            session.exitstatus = process.returncode


def pytest_runtest_logreport(report):
    """
    Print each slow test's wall time as it finishes, with the time since the session began (a CI run killed at its
    deadline prints no summary, and these lines are then the only record of where the time went), and the figures
    a test hands over as ``user_properties`` named ``figures`` (shown without ``-s``).
    """
    import sys
    import time

    out = sys.stderr if os.environ.get(VM_CHILD_ENV) else sys.stdout
    for name, value in report.user_properties:
        if name == "figures" and report.when == "call":
            print(f"\n{value}", file=out, flush=True)
    if report.duration < SLOW_TEST_REPORT_S:
        return
    elapsed = time.monotonic() - _SESSION_STARTED
    print(f"\n[{elapsed:6.0f} s] {report.nodeid} ({report.when}) took {report.duration:.0f} s", file=out,
          flush=True)
