"""
Stage 5, CWSR: report whether the running kernel exports the CWSR properties vLLM on ROCm needs. The refusal
itself (halo_serve: vllm with halo_cwsr_policy: enforce) happens in preflight, before any change.
"""

from pyinfra import host, logger

from halofleet.deploy import current_plan

plan = current_plan()
if plan is not None:
    status = plan.gpu_check(plan.cwsr["supported"])
    detail = f" (missing: {', '.join(plan.cwsr['missing'])})" if plan.cwsr["missing"] else ""
    logger.info(f"{host.print_prefix}CWSR kernel support: {status}{detail}")
