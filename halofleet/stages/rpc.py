"""
The RPC stage, as a ``@deploy`` function: llama.cpp RPC workers (``halo_serve: rpc-worker``) configured and
listening before any head (re)starts, since :func:`halofleet.stages.full` runs it before the serve stage and
pyinfra runs every host's operation N before any host's N+1.
"""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt

from ..contract import policy
from ..contract.paths import RPC_CACHE, RPC_FIREWALL_UNIT, RPC_NFT, RPC_UNIT
from ..deploy import current_plan, managed_sha256
from ..operations import halo_files, halo_rpc, halo_serve
from ..views import summary

RPC_FILES = (RPC_UNIT, RPC_FIREWALL_UNIT, RPC_NFT)


@deploy("rpc")
def rpc() -> None:
    """
    Stage 7a: on an RPC worker, ggml-rpc-server as halo-rpc.service (the service user, bound to halo_rpc_address
    only) behind halo-rpc-firewall.service, which loads an nftables table letting only the head's address reach
    the port; (re)started when any of them changed. On any other host, a worker left from earlier is removed.
    """
    summary.install()
    plan = current_plan()
    if plan is None:
        return
    if plan.rpc is None:
        remove_worker(plan.probe)
        return
    worker, config = plan.rpc, plan.config
    apt.packages(name="Packages for the llama.cpp RPC worker", packages=worker.packages, no_recommends=True,
                 extra_install_args=policy.APT_LOCK_WAIT)
    if worker.cache:
        halo_serve.owned_directory(name="RPC tensor cache", path=RPC_CACHE, owner=config.service_user,
                                   current=plan.probe["rpc"].get("cache"))
    halo_files.checked_file(
        name=f"RPC firewall: port {config.rpc_port} from {worker.head} ({worker.head_address}) only",
        path=RPC_NFT, content=worker.nft, check=halo_rpc.NFT_CHECK, current_sha256=managed_sha256(plan, RPC_NFT),
    )
    halo_serve.unit_file(name="RPC firewall unit", path=RPC_FIREWALL_UNIT, content=worker.firewall_unit,
                         current_sha256=managed_sha256(plan, RPC_FIREWALL_UNIT))
    halo_serve.unit_file(name="RPC worker unit", path=RPC_UNIT, content=worker.unit,
                         current_sha256=managed_sha256(plan, RPC_UNIT))
    halo_rpc.worker_running(name=f"RPC worker listening on {worker.endpoint} for {worker.head}",
                            restart=worker.restart, start=worker.start, endpoint=worker.endpoint)


def remove_worker(probe: dict, records: list[str] | None = None) -> None:
    """No RPC worker on this host (any more): stopped, its table deleted, its files removed (backed up); for the
    rollback (``records`` given), each file as it was before halofleet's first touch."""
    files, state = probe.get("files") or {}, probe.get("rpc") or {}
    halo_rpc.worker_stopped(
        name="No RPC worker",
        present=any(path in files for path in RPC_FILES) or bool(state.get("table"))
        or state.get("active") not in ("inactive", "unknown", None),
    )
    for path in RPC_FILES:
        activate = halo_serve.DAEMON_RELOAD if path.endswith(".service") else None
        if records is None:
            halo_files.absent_file(name=f"Remove {path}", path=path, activate=activate,
                                   current_sha256=files.get(path))
        else:
            halo_files.restored_file(name=f"RPC worker file: {path}", path=path,
                                     record=halo_files.record_of(records, path), current_sha256=files.get(path),
                                     activate=activate)
