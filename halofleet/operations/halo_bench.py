"""
Run llama-bench on the host for the model it serves, with the engine stopped meanwhile (both would hold the
model in the same unified memory), and store the result for ``halofleet report``.
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, operation
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
from pyinfra.api.util import print_host_combined_output

from ..contract import paths, policy
from ..fleet.gateway import Slot, drain_script, ready_script
from .halo_rollout import ROLLOUT_ATTR, on_gateway


def bench_script(model: str, user: str, repetitions: int, bytes_per_token: int | None = None,
                 experts: tuple[int, int] | None = None) -> str:
    """
    The flags of DOMAIN.md's reference runs (all layers on the GPU, flash attention on, no mmap), in the spelling
    of the installed llama-bench: newer builds replaced ``-mmp 0`` by ``-lm none`` and ``-fa 1`` by ``-fa on``.
    ``bytes_per_token`` and ``experts`` (used, count), read from the model's header by the controller, are stored
    beside the result for the roofline.
    """
    model_q = shlex.quote(model)
    header = ""  # controller-computed ints only, so they can go into the printf format as they are
    if bytes_per_token:
        header += f'"bytes_per_token": {int(bytes_per_token)}, '
    if experts:
        header += f'"experts": [{int(experts[0])}, {int(experts[1])}], '
    return "\n".join([
        "help=$(llama-bench --help 2>&1)",
        'case "$help" in *--load-mode*) nommap="-lm none";; *) nommap="-mmp 0";; esac',
        'case "$help" in *"<on|off|auto>"*) fa="-fa on";; *) fa="-fa 1";; esac',
        "out=$(mktemp) && chmod 644 $out",
        f"was=$(systemctl is-active {paths.SERVE_SERVICE} 2>/dev/null)",
        f'[ "$was" = active ] && systemctl stop {paths.SERVE_SERVICE}',
        f"runuser -u {shlex.quote(user)} -- llama-bench -m {model_q} -ngl 999 $fa $nommap "
        f"-p {policy.BENCH_PROMPT_TOKENS} -n {policy.BENCH_GEN_TOKENS} -r {int(repetitions)} -o json > $out",
        "rc=$?",
        # Back to serving before anything else: the next batch stops its engines only once this one answers again.
        f'if [ "$was" = active ] && ! systemctl start {paths.SERVE_SERVICE}; then '
        f'echo "halofleet: {paths.SERVE_SERVICE} did not start again after llama-bench" >&2; exit 1; fi',
        'if [ $rc != 0 ]; then rm -f $out; echo "halofleet: llama-bench failed" >&2; exit $rc; fi',
        f"size=$(stat -L -c %s {model_q})",
        f"mkdir -p {paths.BENCH_RESULT.rsplit('/', 1)[0]}",
        f"{{ printf '{{\"model\": \"%s\", \"model_file_bytes\": %s, {header}\"llama_bench\": ' {model_q} \"$size\"; "
        f"cat $out; printf '}}\\n'; }} > {paths.BENCH_RESULT}.new && mv {paths.BENCH_RESULT}.new "
        f"{paths.BENCH_RESULT}",
        "rm -f $out",
    ])


@operation(is_idempotent=False)
def llama_bench(model: str, user: str, repetitions: int = 3, bytes_per_token: int | None = None,
                experts: tuple[int, int] | None = None, gateways: tuple[Slot, ...] = ()):
    """
    Benchmark ``model`` with llama-bench (pp512, tg128) as ``user``; the result goes to /var/lib/halofleet/bench.json.

    + model: GGUF path on the host
    + user: the service user (the model is readable by it)
    + repetitions: llama-bench ``-r``
    + bytes_per_token: bytes one generated token reads (from the GGUF header), stored for the roofline
    + experts: MoE (used, count) experts per token, stored for the report
    + gateways: where this host is a gateway's backend: drained there before the engine stops, put back after

    **Example:**

    .. code:: python

        llama_bench(name="llama-bench", model="/var/lib/halofleet/models/m.gguf", user="halo")
    """
    command = StringCommand("sh", "-c", QuoteString(bench_script(model, user, repetitions, bytes_per_token,
                                                                 experts)))
    connector = {key: value for key, value in (host.current_op_global_arguments or {}).items()
                 if key in CONNECTOR_ARGUMENT_KEYS}
    yield FunctionCommand(_bench_in_turn, (command, connector, tuple(gateways)), {})


def _bench_in_turn(state, host, command: StringCommand, connector: dict, gateways: tuple[Slot, ...] = ()) -> bool:
    """
    One host's benchmark in its batch, out of its gateways' rotation meanwhile (back in once haproxy sees it UP).
    An engine not serving again afterwards stops the benchmarks of later batches (the rolling restart's flag):
    never more engines down than one batch.
    """
    halted = getattr(state, ROLLOUT_ATTR, None)
    if halted:
        logger.error(f"{host.print_prefix}halofleet: not benchmarked: stopped because {halted}")
        return False
    for slot in gateways:
        if not on_gateway(state, host, slot, drain_script(slot), connector):
            return False  # not drained: the engine was never stopped
    ok, output = host.run_shell_command(command, print_output=state.print_output, print_input=state.print_input,
                                        **connector)
    if not ok and not state.print_output:
        print_host_combined_output(host, output)
    serving = host.run_shell_command(StringCommand("systemctl", "is-active", "--quiet", paths.SERVE_SERVICE),
                                     **connector)[0]
    back = serving and all(on_gateway(state, host, slot, ready_script(slot), connector) for slot in gateways)
    if not back:  # a host left drained stays out of rotation: safe, and the later batches keep serving
        setattr(state, ROLLOUT_ATTR, getattr(state, ROLLOUT_ATTR, None)
                or f"{host.name} was not serving again after its benchmark")
        logger.error(f"{host.print_prefix}halofleet: {paths.SERVE_SERVICE} is not serving again after llama-bench; "
                     "the benchmarks of later batches stop here")
    return ok and back
