"""
llama-bench (pp512, tg128) for the model each llama-server host serves, stored on the host; ``halofleet bench``
and ``halofleet report`` show it next to the memory roofline. The engine is stopped during the run and started
again after it.
"""

from pyinfra import host, logger

from halofleet.deploy import current_plan
from halofleet.operations import halo_bench

plan = current_plan()
if plan is not None:
    serve = plan.serve
    if serve and serve.engine == "llama-server" and serve.flavour == "distro" and serve.model_host_path:
        halo_bench.llama_bench(
            name=f"llama-bench {serve.model_host_path}",
            model=serve.model_host_path,
            user=plan.config.service_user,
            repetitions=plan.config.bench_repetitions,
        )
    else:
        # The toolbox and vLLM images carry their own tools; benchmarking inside them is not built yet.
        logger.warning(f"{host.print_prefix}halofleet: bench skipped: it runs llama-bench for llama-server from "
                       "the distro packages (halo_serve: llama-server, halo_llama_source: distro)")
