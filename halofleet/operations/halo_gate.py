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
from ..facts.halo_answers import answers_command, parse_answers

RUN_REFS_ATTR = "_halofleet_gate_refs"


def passes(state, host, spec: GateSpec, connector: dict) -> bool:
    """Ask ``host``'s engine our prompts and judge the answers; log the verdict either way."""
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
