"""
llama.cpp RPC worker operations: ggml-rpc-server up behind its firewall (our own nftables table), or gone.
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, operation

from ..contract import paths, policy

NFT_CHECK = 'nft -c -f "$HALO_CANDIDATE"'  # the candidate nft file must parse before it is installed


def _table_present() -> str:
    return f"nft list table inet {policy.RPC_NFT_TABLE} >/dev/null 2>&1"


@operation()
def worker_running(restart: bool, start: bool, endpoint: str):
    """
    The RPC worker and its firewall enabled and up: the firewall unit loads our nftables table first, the worker
    unit reports started only once ggml-rpc-server listens (its ``ExecStartPost``); then both are checked.

    + restart: the worker's unit, firewall unit or nft file changed
    + start: nothing changed, but the worker, its firewall or our table is not up
    + endpoint: ``address:port`` the worker listens on (for messages)

    **Example:**

    .. code:: python

        worker_running(name="RPC worker", restart=True, start=False, endpoint="10.0.0.2:50052")
    """
    if not (restart or start):
        host.noop(f"{paths.RPC_SERVICE} is listening on {endpoint} behind its firewall")
        return
    units = f"{paths.RPC_FIREWALL_SERVICE} {paths.RPC_SERVICE}"
    failure = shlex.quote(f"halofleet: {paths.RPC_SERVICE} is not listening on {endpoint}")
    # One transaction for both: the worker (Requires= its firewall) restarts once, after the table is loaded.
    verb = "restart" if restart else "start"
    script = [
        f"systemctl reset-failed {units} 2>/dev/null || true",
        f"systemctl enable --quiet {units}",
        f"if ! systemctl {verb} {units}; then systemctl status --no-pager --lines=25 {units} >&2 || true; "
        f"echo {failure} >&2; exit 1; fi",
        # A flushed ruleset (someone ran nft flush ruleset) leaves the firewall unit active without our table.
        f"{_table_present()} || systemctl reload {paths.RPC_FIREWALL_SERVICE}",
        f"{_table_present()} || {{ echo 'halofleet: table inet {policy.RPC_NFT_TABLE} is not loaded' >&2; exit 1; }}",
        f"systemctl is-active --quiet {paths.RPC_SERVICE} || {{ echo {failure} >&2; exit 1; }}",
    ]
    yield StringCommand("sh", "-c", QuoteString("\n".join(script)))


@operation()
def worker_stopped(present: bool):
    """
    Stop and disable the RPC worker, then its firewall unit (which deletes our nftables table on stop), and
    delete the table itself if it is still loaded.

    + present: the worker's units exist, either is active, or our table is loaded (from the probe)

    **Example:**

    .. code:: python

        worker_stopped(name="No RPC worker", present=True)
    """
    if not present:
        host.noop(f"{paths.RPC_SERVICE} is not installed")
        return
    units = f"{paths.RPC_SERVICE} {paths.RPC_FIREWALL_SERVICE}"
    yield StringCommand("sh", "-c", QuoteString(
        f"systemctl disable --now --quiet {units} 2>/dev/null || systemctl stop {units} 2>/dev/null || true; "
        f"systemctl reset-failed {units} 2>/dev/null || true; "
        f"if {_table_present()}; then nft delete table inet {policy.RPC_NFT_TABLE}; fi"
    ))


@operation()
def workers_ready(workers: list[str]):
    """
    An RPC head's gate, before its engine's files change: every worker it names came through this run's RPC stage
    (verified listening, or already up). One that failed fails the head here, so its unit stays as it was and the
    running engine keeps serving with the workers it has. The RPC stage runs before the serving stage, so every
    worker's turn is over when this runs.

    + workers: the inventory names of the head's workers

    **Example:**

    .. code:: python

        workers_ready(name="RPC workers listening", workers=["wrk1", "wrk2"])
    """
    yield FunctionCommand(workers_failed_check, (list(workers),), {})


def workers_failed_check(state, host, workers: list[str]) -> bool:
    """False (and why, logged) when any of ``workers`` failed in this run."""
    failed = sorted(each.name for each in state.failed_hosts if each.name in workers)
    if failed:
        logger.error(f"{host.print_prefix}halofleet: not changed: RPC worker(s) {', '.join(failed)} failed in this "
                     "run; the engine keeps serving as before")
        return False
    return True
