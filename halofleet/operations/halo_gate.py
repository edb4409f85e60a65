"""
The correctness gate in the restart path: after an engine (re)started and answers, it must reproduce its golden
(:mod:`halofleet.box.gate`); a host that does not fails like one that is not serving, and its stamp is dropped so
the next run restarts and checks it again.
"""

from __future__ import annotations

from pyinfra import logger
from pyinfra.api import QuoteString, StringCommand

from ..box.gate import GateSpec, judge
from ..contract import paths
from ..facts.halo_answers import answers_command, parse_answers, parse_slot_ctx, slot_ctx_command

RUN_REFS_ATTR = "_halofleet_gate_refs"


def passes(state, host, spec: GateSpec, connector: dict) -> bool:
    """Ask ``host``'s engine our prompts and judge the answers; log the verdict either way."""
    if spec.engine == "llama-server":
        # The long prompt must fit the context one request really gets (its slot's n_ctx, which the model's
        # training context may cap below ctx / -np): llama-server says it in /props.
        ok, output = host.run_shell_command(StringCommand("sh", "-c", QuoteString(slot_ctx_command(spec.url))),
                                            print_output=False, print_input=state.print_input, **connector)
        spec = spec.within(parse_slot_ctx(output.stdout_lines) if ok else None)
    command = StringCommand("sh", "-c", QuoteString(answers_command(spec.url, spec.engine, spec.prompts)))
    ok, output = host.run_shell_command(command, print_output=False, print_input=state.print_input, **connector)
    refs = getattr(state, RUN_REFS_ATTR, None)
    if refs is None:
        refs = {}
        setattr(state, RUN_REFS_ATTR, refs)
    verdict = judge(host.name, spec, parse_answers(output.stdout_lines) if ok else {}, refs)
    if verdict.ok:
        logger.info(f"{host.print_prefix}halofleet correctness gate: {verdict.message}")
        return True
    logger.error(f"{host.print_prefix}halofleet: correctness gate failed after the restart: {verdict.message}")
    # The engine runs the new model but answers wrongly: forget that it started, so the next run checks again.
    host.run_shell_command(StringCommand("rm", "-f", paths.SERVE_STAMP), print_output=False, **connector)
    return False
