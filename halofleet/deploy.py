"""
Glue between pyinfra's deploy files and the pure plan: probe once per host, validate once, and fail only the
host whose data or state is bad (a raised exception would abort the whole fleet run).
"""

from __future__ import annotations

import dataclasses

from pyinfra import host, logger, state
from pyinfra.api.exceptions import PyinfraError
from pyinfra.context import ctx_host, ctx_state

from .box.cmdline import ParamConflict
from .box.plan import HostPlan, build_plan
from .box.serving import probe_args
from .contract.config import PARSE_FAILURES, ConfigError, HaloConfig, HostRefused, option_value
from .contract.localfiles import anchor_local_paths
from .facts.probe import HostProbe
from .facts.model_header import host_reader
from .fleet.monitor import check_monitoring
from .fleet.rpc import check_group
from .models.fit import check_host_memory
from .models.http import Reads
from .models.hub import resolve_models
from .models.specs import validate
from .views.inventory import inventory_dir_of, loaded_inventory_dir

_PLAN_ATTR = "_halofleet_plan"


def current_plan() -> HostPlan | None:
    """
    This host's plan, built on first use in the run: host data is validated before any fact is gathered, so
    bad data reaches no host at all. A bad host is logged and failed; the others carry on.
    """
    if hasattr(host, _PLAN_ATTR):
        return getattr(host, _PLAN_ATTR)
    reads = Reads()  # this host's HTTP reads from here: bounded in time together
    try:
        config = resolve(validate(host.name, host_data()), reads)
        fleet = fleet_data()
        check_group(config, fleet)  # the other members' data, before any command reaches this host
        check_monitoring(config, list(fleet.items()))  # node exporter's exposure, the monitor's address
        probe = read_probe(stack=True, **probe_args(config))
        worker_plans = _worker_plans(config.rpc_workers)
        try:
            plan = build_plan(host.name, {}, probe, config=config, fleet=fleet, worker_plans=worker_plans)
            worker_gtt = {name: each.gtt.gtt_gib << 30 for name, each in worker_plans.items() if each}
            plan.memory = check_host_memory(plan, host_reader(host), worker_gtt, reads)
        except (ConfigError, HostRefused, ParamConflict):
            raise  # the plan's own refusals (some are ValueErrors) say what is wrong themselves
        except PARSE_FAILURES as error:  # facts the plan cannot judge: this host only, never the whole run
            raise HostRefused(host.name, f"could not plan from the host's facts ({type(error).__name__}: {error}); "
                                         "nothing was changed") from None
    except (ConfigError, HostRefused, ParamConflict) as error:
        setattr(host, _PLAN_ATTR, None)
        _refuse(error)
        return None
    for warning in plan.warnings:
        logger.warning(f"{host.print_prefix}halofleet: {warning}")
    setattr(host, _PLAN_ATTR, plan)
    return plan


def inventory_dir() -> str | None:
    """
    The directory of this run's inventory file: set by halofleet's own commands when they load it, else the
    INVENTORY argument of pyinfra's own command line; None: a host list or connector, paths as given.
    """
    known = loaded_inventory_dir()
    if known:
        return known
    if not _cli_inventory:
        _cli_inventory.append(_pyinfra_cli_inventory())
    return inventory_dir_of(_cli_inventory[0]) if _cli_inventory[0] else None


_cli_inventory: list[str | None] = []  # parsed once per process


def _pyinfra_cli_inventory() -> str | None:
    """pyinfra's INVENTORY argument, parsed from this process's command line by pyinfra's own parser (the
    deploy runs in greenlets, where click's current context is not visible)."""
    import sys

    if not sys.argv or "pyinfra" not in sys.argv[0]:
        return None
    try:
        from pyinfra_cli.cli import cli

        context = cli.make_context("pyinfra", list(sys.argv[1:]), resilient_parsing=True)
    except Exception:  # noqa: BLE001 - not pyinfra's command line after all: paths stay as given
        return None
    name = context.params.get("inventory")
    return name if isinstance(name, str) else None


def host_data(name: str | None = None) -> dict:
    """A host's data (default: the current one) with relative control-machine paths anchored at the inventory."""
    data = (host if name is None else state.inventory.get_host(name)).data.dict()
    return anchor_local_paths(data, inventory_dir())


def planned_hosts() -> dict[str, HostPlan]:
    """The plans built so far in this run, by host name (refused hosts have none)."""
    return {each.name: getattr(each, _PLAN_ATTR) for each in state.inventory if getattr(each, _PLAN_ATTR, None)}


def fleet_data() -> dict[str, dict]:
    """Every inventory host's data by name: an RPC group's members read each other's (validated by the plan)."""
    return {each.name: each.data.dict() for each in state.inventory}


def _worker_plans(names: list[str]) -> dict[str, HostPlan | None]:
    """
    The plans of an RPC head's workers (each built in its own host's context, once per run, as its own deploy
    would): the head's unit folds in their digests and the group's memory plan their GTT budgets. A worker that
    is not in this run (unreachable, --limit) is absent, and the plan refuses the head.
    """
    plans: dict[str, HostPlan | None] = {}
    active = set(state.activated_hosts) - set(state.failed_hosts)
    for name in names:
        other = state.inventory.get_host(name, None)
        if other is None or other not in active and not hasattr(other, _PLAN_ATTR):
            continue
        with ctx_host.use(other):
            plans[name] = current_plan()
    return plans


def resolve(config: HaloConfig, reads: Reads | None = None) -> HaloConfig:
    """``halo_models`` with every file and digest known (the Hub asked from here, pushed files hashed here)."""
    if not config.models or config.serve == "none":
        return config
    specs = resolve_models(config.host, config.models, config.hf_endpoint, config.hf_token, config.serve,
                           reads=reads)
    return dataclasses.replace(config, values={**config.values, "halo_models": specs})


def current_config_and_probe() -> tuple[HaloConfig, dict] | None:
    """
    For undoing halofleet's changes: validated host data and the probe, without the plan's checks of the host
    (a host refused for a deploy, e.g. one with ROCm 7.0.1 installed, can still be rolled back).
    """
    try:
        config = validate(host.name, host_data(), serving=False)
        probe = read_probe(stack=True)
    except (ConfigError, HostRefused) as error:
        _refuse(error)
        return None
    return config, probe


def read_probe(**kwargs) -> dict:
    """The host's probe; output the parsers cannot read refuses this host alone, with the reason."""
    try:
        return host.get_fact(HostProbe, **kwargs)
    except PARSE_FAILURES as error:
        raise HostRefused(host.name, f"could not read the host's facts ({type(error).__name__}: {error}); "
                                     "nothing was changed") from None


def _refuse(error: Exception) -> None:
    """Log why and fail this host alone; the others carry on."""
    logger.error(f"{host.print_prefix}halofleet refuses this host: {error}")
    real_state = ctx_state.get()
    prompt = real_state.should_raise_failed_hosts
    # Never ask: pyinfra without -y asks "continue?" when a host fails (an EOFError without a terminal, in a dry
    # run too); a refusal fails its own host only, by design, and the run goes on for the others.
    real_state.should_raise_failed_hosts = lambda _state: False
    try:
        real_state.fail_hosts({ctx_host.get()})  # the real Host, not the context proxy
    except PyinfraError:
        # Every host is refused: end the run with the reason rather than pyinfra's "No hosts remaining!".
        raise PyinfraError(f"halofleet: no host left to deploy ({error})") from None
    finally:
        real_state.should_raise_failed_hosts = prompt


def managed_sha256(plan: HostPlan, path: str) -> str | None:
    """A managed file's SHA-256 as the probe saw it (None: absent)."""
    return plan.probe.get("files", {}).get(path)


def reboot_batch() -> int:
    """
    Hosts rebooted together in this run: the smallest ``halo_reboot_batch`` of the inventory (default 1), read
    through the contract (``"4"`` is 4, as validation says); a host whose value is invalid is refused anyway.
    """
    sizes = []
    for each in state.inventory:
        try:
            sizes.append(option_value(each.name, "halo_reboot_batch", each.data.get("halo_reboot_batch")))
        except ConfigError:
            continue
    return min(sizes or [1])


def restart_batch() -> int:
    """
    Engines stopped together (a restart when a model or flag changes, a benchmark): the smallest
    ``halo_restart_batch`` of the inventory (default 1), read through the contract; a host whose value is invalid
    is refused anyway.
    """
    sizes = []
    for each in state.inventory:
        try:
            sizes.append(option_value(each.name, "halo_restart_batch", each.data.get("halo_restart_batch")))
        except ConfigError:
            continue
    return min(sizes or [1])
