"""
llama.cpp RPC groups, pure: one model across several boxes. A head is a llama-server host whose
``halo_rpc_workers`` names its workers in order; each worker (``halo_serve: rpc-worker``) runs ggml-rpc-server
bound to its private-link address, behind our own nftables table that lets only the head's address in.

Other hosts' data is read from the inventory (``fleet``: name -> raw host data) and validated through the same
contract (:func:`halofleet.models.specs.validate`) as the host's own; a group that does not fit refuses the host that
names or serves it, with the reason.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..contract import paths, policy, validators
from ..contract.config import ConfigError, HaloConfig, HostRefused, option_value
from ..contract.templating import render, sha256_text
from ..models.specs import validate

GIB = 2**30


@dataclass(frozen=True)
class Member:
    """One worker as its head sees it: where to reach it and a digest of everything it runs with."""

    name: str
    address: str
    port: int
    digest: str  # SHA-256 of the worker's unit, firewall unit and nft file: a change restarts the head

    @property
    def endpoint(self) -> str:
        address = ipaddress.ip_address(self.address)
        return f"[{address}]:{self.port}" if address.version == 6 else f"{address}:{self.port}"


@dataclass(frozen=True)
class GroupMember:
    """One box of a group for the memory plan: its GTT budget, from its own probe."""

    name: str
    role: str  # head | worker
    gtt_bytes: int


@dataclass
class WorkerPlan:
    head: str
    head_address: str
    endpoint: str
    packages: list[str]
    unit: str
    firewall_unit: str
    nft: str
    digest: str
    restart: bool  # unit, firewall unit or nft file changed
    start: bool  # nothing changed, but the worker, its firewall unit or our table is not up
    cache: bool


def _family(address: str) -> str:
    return "ip6" if ipaddress.ip_address(address).version == 6 else "ip"


def _same_family(host: str, key: str, own: str, other_name: str, other: str) -> None:
    if ipaddress.ip_address(own).version != ipaddress.ip_address(other).version:
        raise ConfigError(host, key, own, f"is not the same IP version as {other_name}'s halo_rpc_address "
                                          f"{other}: the head reaches its workers over one private link")


def heads_of(name: str, fleet: dict[str, dict[str, Any]]) -> list[str]:
    """Inventory hosts whose halo_rpc_workers name ``name`` (a host with invalid data refuses itself: skipped)."""
    heads = []
    for other, data in fleet.items():
        try:
            workers = option_value(other, "halo_rpc_workers", data.get("halo_rpc_workers"))
        except ConfigError:
            continue
        if name in workers and other != name:
            heads.append(other)
    return heads


def _peer(host: str, key: str, value: Any, name: str, fleet: dict[str, dict[str, Any]], what: str) -> HaloConfig:
    """Another host's data through the contract; its own refusal becomes this host's, naming it."""
    if name not in fleet:
        raise ConfigError(host, key, value, f"{name!r} is not a host of the inventory")
    try:
        return validate(name, fleet[name])
    except ConfigError as error:
        raise ConfigError(host, key, value, f"its {what} {name!r} has invalid data ({error})") from None


def resolve_workers(config: HaloConfig, fleet: dict[str, dict[str, Any]]) -> list[HaloConfig]:
    """A head's workers, validated, in its order: each an rpc-worker of this head only, on the same link."""
    workers = []
    for name in config.rpc_workers:
        worker = _peer(config.host, "halo_rpc_workers", config.rpc_workers, name, fleet, "RPC worker")
        if worker.serve != "rpc-worker":
            raise ConfigError(config.host, "halo_rpc_workers", config.rpc_workers,
                              f"{name!r} is not an RPC worker (its halo_serve is {worker.serve}, not rpc-worker)")
        heads = heads_of(name, fleet)
        if len(heads) > 1:
            raise ConfigError(config.host, "halo_rpc_workers", config.rpc_workers,
                              f"{name!r} is also named by {', '.join(h for h in heads if h != config.host)}: a "
                              "worker serves one head (its firewall lets one address in)")
        _same_family(config.host, "halo_rpc_address", config.rpc_address, name, worker.rpc_address)
        workers.append(worker)
    return workers


def find_head(config: HaloConfig, fleet: dict[str, dict[str, Any]]) -> HaloConfig:
    """The one head naming this worker, validated."""
    heads = heads_of(config.host, fleet)
    if not heads:
        raise ConfigError(config.host, "halo_serve", "rpc-worker",
                          "no host names it in halo_rpc_workers: a worker lends its memory to one head, and "
                          "its firewall lets only that head's halo_rpc_address in")
    if len(heads) > 1:
        raise ConfigError(config.host, "halo_serve", "rpc-worker",
                          f"named by several heads ({', '.join(heads)}) in halo_rpc_workers: a worker serves one "
                          "head (its firewall lets one address in)")
    problem = validators.check_host_names(heads)  # the head's name goes into this worker's unit and nft file
    if problem:
        raise ConfigError(config.host, "halo_serve", "rpc-worker", f"its RPC head {problem}")
    head = _peer(config.host, "halo_serve", "rpc-worker", heads[0], fleet, "RPC head")
    _same_family(config.host, "halo_rpc_address", config.rpc_address, heads[0], head.rpc_address)
    return head


def check_group(config: HaloConfig, fleet: dict[str, dict[str, Any]]) -> None:
    """The group rules that need only data (the members' own, validated): checked before the host is probed."""
    if config.serve == "rpc-worker":
        find_head(config, fleet)
    if config.rpc_workers:
        resolve_workers(config, fleet)


def worker_args(config: HaloConfig) -> list[str]:
    """ggml-rpc-server's arguments: the private address only (its default is loopback, never all interfaces)."""
    args = ["-H", config.rpc_address, "-p", str(config.rpc_port)]
    if config.rpc_cache:
        args.append("-c")
    if config.rpc_device:
        args += ["-d", config.rpc_device]
    return args


def listen_hex(address: str, port: int) -> tuple[str, str]:
    """How /proc/net/tcp (or tcp6) shows a socket bound to address:port, and which of the two files."""
    raw = ipaddress.ip_address(address).packed
    words = "".join(raw[i:i + 4][::-1].hex().upper() for i in range(0, len(raw), 4))  # host-order 32-bit words
    proc = "/proc/net/tcp6" if len(raw) == 16 else "/proc/net/tcp"
    return f"{words}:{port:04X}", proc


def worker_files(config: HaloConfig, head: HaloConfig, memory_max_gib: int) -> tuple[str, str, str]:
    """The worker's unit, its firewall unit and the nft file."""
    hex_address, proc = listen_hex(config.rpc_address, config.rpc_port)
    unit = render(
        "halo-rpc.service.j2", backend=config.llama_backend, head=head.host, head_address=head.rpc_address,
        firewall_service=paths.RPC_FIREWALL_SERVICE, user=config.service_user, cache_dir=paths.RPC_CACHE,
        binary=policy.RPC_SERVER_BINARY, exec_args=worker_args(config), address=config.rpc_address,
        port=config.rpc_port, listen_hex=hex_address, proc_net=proc, memory_max_gib=memory_max_gib,
    )
    firewall = render("halo-rpc-firewall.service.j2", nft_file=paths.RPC_NFT, table=policy.RPC_NFT_TABLE,
                      worker_service=paths.RPC_SERVICE)
    nft = render("rpc.nft.j2", table=policy.RPC_NFT_TABLE, port=config.rpc_port, head=head.host,
                 family=_family(head.rpc_address), head_address=head.rpc_address)
    return unit, firewall, nft


def build_worker_plan(config: HaloConfig, probe: dict[str, Any], fleet: dict[str, dict[str, Any]],
                      memory_max_gib: int) -> WorkerPlan | None:
    """The rpc stage on a worker (None on any other host)."""
    if config.serve != "rpc-worker":
        return None
    head = find_head(config, fleet)
    own = probe.get("addresses")
    if own is not None and str(ipaddress.ip_address(config.rpc_address)) not in own:
        # Refused here, before any change: its unit would fail ("not listening") and its head lose the worker.
        raise ConfigError(config.host, "halo_rpc_address", config.rpc_address,
                          f"is not an address of this host (it has {', '.join(own)})")
    state = probe.get("rpc") or {}
    holder = _other_listener(config, probe, state)
    if holder:
        raise HostRefused(config.host, f"port {config.rpc_port} is already in use on {holder} by another program "
                                       "(choose another halo_rpc_port or stop that program)")
    unit, firewall, nft = worker_files(config, head, memory_max_gib)
    files = probe.get("files") or {}
    restart = any(files.get(path) != sha256_text(content)
                  for path, content in ((paths.RPC_UNIT, unit), (paths.RPC_FIREWALL_UNIT, firewall),
                                        (paths.RPC_NFT, nft)))
    up = (state.get("active") == "active" and state.get("enabled") == "enabled"
          and state.get("firewall") == "active" and state.get("table"))
    packages = list(policy.RPC_WORKER_PACKAGES) + policy.LLAMA_BACKEND_PACKAGES[config.llama_backend]
    return WorkerPlan(
        head=head.host, head_address=head.rpc_address, endpoint=Member("", config.rpc_address, config.rpc_port,
                                                                       "").endpoint,
        packages=packages, unit=unit, firewall_unit=firewall, nft=nft,
        digest=sha256_text(unit + firewall + nft), restart=restart, start=not restart and not up,
        cache=config.rpc_cache,
    )


def _other_listener(config: HaloConfig, probe: dict[str, Any], state: dict[str, Any]) -> str | None:
    """Who else holds the worker's port (our own worker, alive, holds it legitimately)."""
    if state.get("active") in ("active", "activating", "reloading", "deactivating"):
        return None
    wanted = ipaddress.ip_address(config.rpc_address)
    for address, port in (probe.get("serve") or {}).get("listeners") or []:
        held = ipaddress.ip_address(address)
        if port == config.rpc_port and (held == wanted or held.is_unspecified):
            return address
    return None


def head_members(config: HaloConfig, workers: list[HaloConfig], worker_plans: dict[str, Any]) -> list[Member]:
    """The head's view of its workers, in order; each must have a plan of its own in this run (else refused)."""
    members = []
    for worker in workers:
        plan = worker_plans.get(worker.host)
        if plan is None or getattr(plan, "rpc", None) is None:
            raise HostRefused(config.host, f"RPC worker {worker.host!r} has no plan in this run (refused, "
                                           "unreachable or left out with --limit): the head starts only once every "
                                           "worker it names is serving")
        members.append(Member(worker.host, worker.rpc_address, worker.rpc_port, plan.rpc.digest))
    return members


def head_args(config: HaloConfig, members: list[Member]) -> list[str]:
    """llama-server's --rpc (workers in inventory order) and --tensor-split."""
    if not members:
        return []
    # -lv 4: llama-server 0.7.0 names the devices it loads onto only at verbosity 4, which verify reads.
    args = ["--rpc", ",".join(member.endpoint for member in members), "-lv", "4"]
    if config.tensor_split is not None:
        args += ["--tensor-split", ",".join(f"{share:g}" for share in config.tensor_split)]
    return args


def worker_cell(plan: Any, probe: dict[str, Any]) -> tuple[str, bool]:
    """Verify's view of a worker: unit active, its firewall table loaded, and listening on its address only."""
    config, state = plan.config, probe.get("rpc") or {}
    holders = sorted({address for address, port in (probe.get("serve") or {}).get("listeners") or []
                      if port == config.rpc_port})
    prefix = f"worker of {plan.rpc.head}: "
    if state.get("active") != "active":
        return prefix + f"halo-rpc {state.get('active')}", False
    if not state.get("table"):
        return prefix + f"firewall table inet {policy.RPC_NFT_TABLE} missing", False
    if holders != [str(ipaddress.ip_address(config.rpc_address))]:
        return prefix + f"listening on {', '.join(holders) or 'nothing'}, not {config.rpc_address} only", False
    return prefix + f"listening on {plan.rpc.endpoint} only", True


def head_cell(plan: Any, rpc_log: dict[str, Any] | None) -> tuple[str, bool]:
    """Verify's view of a head: every worker among the devices its engine's current start used, with weights."""
    log = rpc_log or {}
    devices, buffers = log.get("devices") or [], log.get("buffers") or {}
    parts, ok = [], True
    for member in plan.rpc_members:
        if member.endpoint not in devices:
            parts.append(f"{member.name} not seen")
            ok = False
        elif member.endpoint in buffers:
            parts.append(f"{member.name} ok ({buffers[member.endpoint]:g} MiB)")
        else:
            parts.append(f"{member.name} seen, no weights")
    return "head: " + ", ".join(parts), ok


def check_group_memory(config: HaloConfig, members: list[GroupMember], model_bytes: int | None) -> list[str]:
    """
    The memory plan of a group: the one place that judges what the model needs against the members' GTT budgets
    (each from its own probe). Refuses weights larger than the group's summed GTT; returns lines for preflight.
    """
    total = sum(member.gtt_bytes for member in members)
    shares = ", ".join(f"{member.name} ({member.role}) {member.gtt_bytes / GIB:g} GiB" for member in members)
    if model_bytes is not None and model_bytes > total:
        raise HostRefused(config.host, f"model {config.model} ({model_bytes / GIB:.1f} GiB of weights) does not fit "
                                       f"the RPC group's GTT ({total / GIB:g} GiB: {shares})")
    return [f"RPC group GTT {total / GIB:g} GiB: {shares}"]
