"""
The front door as a ``@deploy`` stage: on hosts with ``halo_gateway: true``, Debian's haproxy in front of the
serving hosts of ``halo_gateway_groups`` (read from the pyinfra inventory, each through the host-data contract).
Every other host gets nothing from it.
"""

from __future__ import annotations

from pyinfra import host, logger, state
from pyinfra.api import deploy
from pyinfra.facts.files import FindInFile
from pyinfra.operations import apt, systemd

from ..contract import policy
from ..contract.config import ConfigError, HostRefused, option_value
from ..contract.paths import GATEWAY_CERT, HAPROXY_CFG
from ..deploy import _refuse, host_data
from ..facts.gateway import GatewayState
from ..fleet.gateway import GatewayPlan, Slot, inventory_groups, plan_gateway, slots_of
from ..fleet.monitor import monitor_source
from ..models.specs import validate
from ..operations import halo_files
from ..views import summary

GATEWAY_PACKAGES = ["haproxy", "netcat-openbsd"]  # nc reads haproxy's stats socket for verify
HAPROXY_CHECK = 'haproxy -c -dW -q -f "$HALO_CANDIDATE"'  # -dW: a warning refuses the file too
# Reload, not restart: established connections (streaming generations) finish on the old process. Debian's unit
# starts haproxy with a master CLI (-S /run/haproxy-master.sock): its "reload" answers Success=0 when the new
# configuration does not load (a port taken...), where `systemctl reload` (kill -USR2) says success regardless
# and the old configuration would stay live unnoticed. Not running: a start, whose failure systemd reports.
MASTER_SOCKET = "/run/haproxy-master.sock"
HAPROXY_ACTIVATE = (
    f"if systemctl is-active --quiet haproxy.service && [ -S {MASTER_SOCKET} ]; then "
    f"r=$(echo reload | nc -N -w 60 -U {MASTER_SOCKET}); "
    # [U] haproxy before 2.7 (Debian 12's 2.6) answers without Success=: then systemd's reload, unverified.
    'case "$r" in Success=1*) ;; Success=*) printf "%s\\n" "$r" >&2; exit 1;; '
    "*) systemctl reload haproxy.service;; esac; "
    "else systemctl reload-or-restart haproxy.service; fi"
)
_GATEWAY_ATTR = "_halofleet_gateway_plan"


def current_gateway_plan() -> GatewayPlan | None:
    """This host's gateway plan (None: not a gateway, or refused: then logged and failed alone)."""
    if hasattr(host, _GATEWAY_ATTR):
        return getattr(host, _GATEWAY_ATTR)
    setattr(host, _GATEWAY_ATTR, None)
    data = host_data()
    try:
        if not option_value(host.name, "halo_gateway", data.get("halo_gateway")):
            return None
        config = validate(host.name, data, serving=False)
        everyone = [(each.name, host_data(each.name)) for each in state.inventory]
        plan = plan_gateway(config, inventory_groups(config, state.inventory),
                            metrics_source=monitor_source(everyone))
    except (ConfigError, HostRefused) as error:
        _refuse(error)
        return None
    for warning in plan.warnings:
        logger.warning(f"{host.print_prefix}halofleet: {warning}")
    setattr(host, _GATEWAY_ATTR, plan)
    return plan


def gateway_slots() -> tuple[Slot, ...]:
    """
    Where the current host serves behind a gateway of the inventory (each gateway's data through the contract; a
    gateway whose data is invalid is refused on its own and skipped here).
    """
    gateways = []
    for each in state.inventory:
        try:
            data = host_data(each.name)
            if not option_value(each.name, "halo_gateway", data.get("halo_gateway")):
                continue
            config = validate(each.name, data, serving=False)
            gateways.append((config, inventory_groups(config, state.inventory)))
        except (ConfigError, HostRefused):
            continue
    try:
        return tuple(slots_of(host.name, gateways))
    except (ConfigError, HostRefused):
        return ()  # this host's data as a backend is refused by the gateway's own plan


@deploy("gateway")
def gateway() -> None:
    """
    The gateway: haproxy installed, the TLS certificate (if any) pushed private, the configuration checked by
    ``haproxy -c`` before it replaces the live one (the previous one kept), then reloaded; haproxy enabled.
    """
    summary.install()
    plan = current_gateway_plan()
    if plan is None:
        return
    groups = "; ".join(f"{group}: {', '.join(backend.host for backend in backends)}"
                       for group, backends in plan.groups.items())
    logger.info(f"{host.print_prefix}gateway {plan.url} -> {groups}")
    current = host.get_fact(GatewayState)["files"]
    apt.packages(name="Gateway packages (haproxy)", packages=GATEWAY_PACKAGES, no_recommends=True,
                 extra_install_args=policy.APT_LOCK_WAIT)
    if plan.cert is not None:
        halo_files.checked_file(
            name="Gateway TLS certificate and key", path=GATEWAY_CERT, content=plan.cert, mode="0600",
            redact=True, activate=HAPROXY_ACTIVATE, current_sha256=current.get(GATEWAY_CERT),
        )
    halo_files.checked_file(
        name=f"haproxy configuration ({plan.url})", path=HAPROXY_CFG, content=plan.config, check=HAPROXY_CHECK,
        activate=HAPROXY_ACTIVATE, current_sha256=current.get(HAPROXY_CFG),
    )
    if plan.cert is None:
        # After the configuration that no longer names it.
        halo_files.absent_file(name="Gateway TLS certificate (TLS is off)", path=GATEWAY_CERT,
                               current_sha256=current.get(GATEWAY_CERT))
    systemd.service(name="haproxy running and enabled", service="haproxy.service", running=True, enabled=True)


MANAGED_MARK = "^# Managed by halofleet"  # the first line of haproxy.cfg.j2


def remove_gateway(records: list[str]) -> None:
    """
    For the rollback: a haproxy.cfg the user had before halofleet's first touch is put back exactly (bytes, mode,
    owner) and haproxy, if running, reloaded onto it; one halofleet created is removed (kept under
    /var/backups/halofleet/generations) and haproxy stopped and disabled; the certificate removed. The package
    stays, as the engines' do. A haproxy.cfg halofleet never touched is left alone.
    """
    files = host.get_fact(GatewayState)["files"]
    record = halo_files.record_of(records, HAPROXY_CFG)
    ours = bool(host.get_fact(FindInFile, path=HAPROXY_CFG, pattern=MANAGED_MARK))
    if record == "original":
        halo_files.restored_file(name=f"{HAPROXY_CFG} back to the user's own", path=HAPROXY_CFG, record=record,
                                 current_sha256=files.get(HAPROXY_CFG),
                                 activate="systemctl try-reload-or-restart haproxy.service")
    elif ours:  # created by halofleet (recorded absent), or by a release before these records
        systemd.service(name="Stop the gateway (haproxy)", service="haproxy.service", running=False, enabled=False)
        halo_files.restored_file(name=f"Remove {HAPROXY_CFG} (the gateway's)", path=HAPROXY_CFG, record=record,
                                 current_sha256=files.get(HAPROXY_CFG))
    halo_files.restored_file(name="Remove the gateway TLS certificate", path=GATEWAY_CERT,
                             record=halo_files.record_of(records, GATEWAY_CERT), current_sha256=files.get(GATEWAY_CERT))
