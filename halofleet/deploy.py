"""
Glue between pyinfra's deploy files and the pure plan: probe once per host, validate once, and fail only the
host whose data or state is bad (a raised exception would abort the whole fleet run).
"""

from __future__ import annotations

from pyinfra import host, logger, state
from pyinfra.api.exceptions import PyinfraError
from pyinfra.context import ctx_host

from .cmdline import ParamConflict
from .config import ConfigError, HaloConfig, HostRefused, validate
from .facts.halo import HostProbe
from .plan import HostPlan, build_plan
from .serving import probe_args

_PLAN_ATTR = "_halofleet_plan"


def current_plan() -> HostPlan | None:
    """
    This host's plan, built on first use in the run: host data is validated before any fact is gathered, so
    bad data reaches no host at all. A bad host is logged and failed; the others carry on.
    """
    if hasattr(host, _PLAN_ATTR):
        return getattr(host, _PLAN_ATTR)
    try:
        config = validate(host.name, host.data.dict())
        plan = build_plan(host.name, {}, host.get_fact(HostProbe, **probe_args(config)), config=config)
    except (ConfigError, HostRefused, ParamConflict) as error:
        setattr(host, _PLAN_ATTR, None)
        _refuse(error)
        return None
    for warning in plan.warnings:
        logger.warning(f"{host.print_prefix}halofleet: {warning}")
    setattr(host, _PLAN_ATTR, plan)
    return plan


def current_config_and_probe() -> tuple[HaloConfig, dict] | None:
    """
    For undoing halofleet's changes: validated host data and the probe, without the plan's checks of the host
    (a host refused for a deploy, e.g. one with ROCm 7.0.1 installed, can still be rolled back).
    """
    try:
        config = validate(host.name, host.data.dict(), serving=False)
    except ConfigError as error:
        _refuse(error)
        return None
    return config, host.get_fact(HostProbe)


def _refuse(error: Exception) -> None:
    """Log why and fail this host alone; the others carry on."""
    logger.error(f"{host.print_prefix}halofleet refuses this host: {error}")
    try:
        state.fail_hosts({ctx_host.get()})  # the real Host, not the context proxy
    except PyinfraError:
        # Every host is refused: end the run with the reason rather than pyinfra's "No hosts remaining!".
        raise PyinfraError(f"halofleet: no host left to deploy ({error})") from None


def managed_sha256(plan: HostPlan, path: str) -> str | None:
    """A managed file's SHA-256 as the probe saw it (None: absent)."""
    return plan.probe.get("files", {}).get(path)


def reboot_batch() -> int:
    """Hosts rebooted together in this run: the smallest valid ``halo_reboot_batch`` of the inventory (default 1)."""
    sizes = []
    for each in state.inventory:
        value = each.data.get("halo_reboot_batch", 1)
        sizes.append(value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1)
    return min(sizes or [1])
