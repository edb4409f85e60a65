"""
The rollout across hosts, shared by the engine restart (:mod:`.halo_serve`) and the bench (:mod:`.halo_bench`): the
run-wide flag that stops later batches once one fails, draining a backend at its gateways and putting it back, and
one host's turn in a rolling restart (drain, restart, correctness gate, back into rotation). The turn runs inside a
``FunctionCommand`` with the run's ``State`` passed in, over the host's own connection.
"""

from __future__ import annotations

from pyinfra import logger, state
from pyinfra.api import QuoteString, StringCommand
from pyinfra.api.util import print_host_combined_output

from ..box.gate import GateSpec
from ..fleet.gateway import Slot, drain_script, ready_script
from . import halo_gate

ROLLOUT_ATTR = "_halofleet_restart_halted"


def restart_halted() -> str | None:
    """Why the rolling engine restart stopped in this run (an engine did not come back serving), or None."""
    return getattr(state, ROLLOUT_ATTR, None)


def _gateway_in_run(state, slot: Slot):
    """The gateway host of ``slot`` if this run reaches it (connected, not failed or refused), else None."""
    gateway = state.inventory.get_host(slot.gateway, None)
    if gateway is None or gateway not in state.activated_hosts or gateway in state.failed_hosts:
        return None
    return gateway


def on_gateway(state, host, slot: Slot, script: str, connector: dict) -> bool:
    """Run a drain or ready script on the gateway host of ``slot`` (which :func:`_gateway_in_run` found)."""
    gateway = _gateway_in_run(state, slot)
    if gateway is None:
        return False
    ok, output = gateway.run_shell_command(StringCommand("sh", "-c", QuoteString(script)),
                                           print_output=state.print_output, print_input=state.print_input,
                                           **connector)
    if not ok and not state.print_output:
        print_host_combined_output(gateway, output)
    return ok


def restart_in_turn(state, host, command: StringCommand, connector: dict, gateways: tuple[Slot, ...] = (),
                     gate: GateSpec | None = None) -> bool:
    """
    One host's turn in the rolling restart: refused once an earlier batch failed; drained at its gateways first,
    restarted, checked by the correctness gate, and put back after; a failure here halts it (a backend left drained
    stays out of rotation: safe).
    """
    halted = getattr(state, ROLLOUT_ATTR, None)  # the run's State, as passed (no context in this call)
    if halted:
        logger.error(f"{host.print_prefix}halofleet: not restarted: the rollout stopped because {halted}")
        return False

    def halt(why: str) -> bool:
        if not getattr(state, ROLLOUT_ATTR, None):
            setattr(state, ROLLOUT_ATTR, why)
        return False

    absent = sorted({slot.gateway for slot in gateways if _gateway_in_run(state, slot) is None})
    if absent:
        # Restarting without a drain would drop that gateway's requests; failing this host would let another host's
        # bad data stop it. So the restart waits: the engine keeps serving what it served, and the next run that
        # reaches the gateway restarts it (its stamp is not written, so the change stays pending).
        logger.warning(f"{host.print_prefix}halofleet: restart deferred (pending): gateway "
                       f"{', '.join(absent)} is not in this run (refused, unreachable or left out with --limit), "
                       "so this backend cannot be drained first; the engine keeps serving its current configuration")
        return True
    for slot in gateways:
        if not on_gateway(state, host, slot, drain_script(slot), connector):
            return halt(f"{host.name} could not be drained at gateway {slot.gateway}")
    ok, output = host.run_shell_command(command, print_output=state.print_output, print_input=state.print_input,
                                        **connector)
    if not ok:
        if not state.print_output:
            print_host_combined_output(host, output)
        return halt(f"{host.name} was not serving after its restart")
    if gate is not None and not halo_gate.passes(state, host, gate, connector):
        return halt(f"{host.name} failed the correctness gate after its restart")
    for slot in gateways:
        if not on_gateway(state, host, slot, ready_script(slot), connector):
            return halt(f"{host.name} was not back in rotation at gateway {slot.gateway}")
    return True
