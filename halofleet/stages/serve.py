"""
The serving stage and the benchmark, as ``@deploy`` functions: the engine chosen by halo_serve (llama-server from
the distro or a toolbox image, or vLLM) as halo-serve.service, and llama-bench against the served model.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import apt, dnf

from ..box import gate
from ..box.gate import GateSpec
from ..contract import policy
from ..contract.paths import HF_HEADER, MODELS_PRESET, SERVE_CACHE, SERVE_CONF, SERVE_ENV
from ..deploy import current_plan, managed_sha256, planned_hosts, restart_batch
from ..facts.model_header import host_model_token_cost
from ..operations import halo_bench, halo_files, halo_models, halo_rpc, halo_serve
from ..views import summary
from .gateway import gateway_slots


@deploy("serve")
def serve() -> None:
    """
    Stage 7: the engine as halo-serve.service, run by the service user, started only when the unit, its
    environment or the model changed, and considered started only once it answers on its health endpoint.
    """
    summary.install()
    plan = current_plan()
    if plan is None or plan.serve is None:
        return
    engine, config = plan.serve, plan.config
    user = config.service_user
    if plan.uses_apt:
        apt.packages(name=f"Packages for {engine.engine} ({engine.flavour})", packages=engine.packages,
                     no_recommends=True, extra_install_args=policy.APT_LOCK_WAIT)
    else:
        dnf.packages(name=f"Packages for {engine.engine} ({engine.flavour})", packages=engine.packages)

    if engine.image:
        halo_serve.image_pulled(name=f"Image {engine.image}", image=engine.image, present=engine.image_present)

    _models(plan)
    if engine.model_push_source:
        halo_serve.owned_directory(name="Model directory", path=config.model_dir, owner=user,
                                   current=plan.probe["model"].get("parent"))
        halo_serve.model_file(
            name=f"Model {engine.model_host_path}", path=engine.model_host_path, source=engine.model_push_source,
            owner=user, source_sha256=engine.model_push_sha256, current_sha256=engine.model_host_sha256,
        )
    model = plan.probe.get("model") or {}
    if engine.model_host_path and model.get("sha256") and model.get("sha256") == (
            engine.model_push_sha256 if engine.model_push_source else config.model_sha256):
        # Hashed in full by this run's probe and accepted: recorded, so the next run stats it instead.
        halo_models.model_recorded(name=f"Verified record of {engine.model_host_path}", path=engine.model_host_path,
                                   sha256=model["sha256"], stat=model.get("stat"), recorded=bool(model.get("recorded")))
    if engine.flavour == "vllm":
        halo_serve.owned_directory(name="Engine caches (HF, vLLM, Triton)", path=SERVE_CACHE, owner=user,
                                   current=plan.probe["serve"].get("cache"))

    if plan.rpc_members and (engine.restart or engine.start):
        # A head changes only once every worker it names is listening in this run (the RPC stage ran first).
        halo_rpc.workers_ready(name="RPC workers listening", workers=[member.name for member in plan.rpc_members])
    halo_files.checked_file(
        name="Engine environment (API key)", path=SERVE_ENV, content=engine.env, mode="0600", redact=True,
        current_sha256=managed_sha256(plan, SERVE_ENV),
    )
    halo_files.checked_file(
        name="What this host serves", path=SERVE_CONF, content=engine.conf,
        current_sha256=managed_sha256(plan, SERVE_CONF),
    )
    halo_files.absent_file(
        name="Remove the other flavour's unit", path=engine.stale_unit_path, activate=halo_serve.DAEMON_RELOAD,
        current_sha256=managed_sha256(plan, engine.stale_unit_path),
    )
    halo_serve.unit_file(
        name=f"{engine.engine} unit ({engine.flavour})", path=engine.unit_path, content=engine.unit,
        current_sha256=managed_sha256(plan, engine.unit_path),
    )
    batch = restart_batch()
    halo_serve.engine_running(
        name=f"{engine.engine} serving on {engine.url}", restart=engine.restart, start=engine.start,
        enable=engine.flavour == "distro", stamp=engine.live_stamp,
        # Rolling (halo_restart_batch): batches of N hosts, each serving again before the next batch restarts.
        rolling_url=engine.url if batch else None, _parallel=batch or 0, gate=gate_spec(plan),
        check=plan.config.restart_check,
        gateways=gateway_slots() if batch else (),  # drained before, back in rotation after
    )


def gate_spec(plan) -> GateSpec | None:
    """
    The correctness gate for this host's engine (halo_correctness_gate), or None: it needs one model file whose
    SHA-256 is known (pushed, or pinned with halo_model_sha256); router hosts (halo_models) are not gated yet.
    """
    own = host.name

    def peers() -> dict[str, list[str]]:  # at run time: every host's plan is built by then
        return gate.peers_of({name: gate.gate_identity(other) for name, other in planned_hosts().items()}, own)

    spec = gate.spec_for(plan, peers)
    if spec is None and plan.config.correctness_gate and not plan.serve.models:
        logger.warning(f"{host.print_prefix}halofleet: no correctness gate: the model's SHA-256 is not known "
                       "(push it with halo_model_push or pin it with halo_model_sha256)")
    return spec


def _models(plan) -> None:
    """
    halo_models: per-model directories, the Hub token file, pushed and downloaded files (each verified), then the
    router preset; all before the engine's environment and unit, so a failed or mismatching download fails this
    host while the running engine keeps serving the previous models with its unit unchanged.
    """
    engine, config = plan.serve, plan.config
    models, user = engine.models, config.service_user
    on_host = (plan.probe.get("model_files") or {}) if models else {}
    dirs = on_host.get("dirs") or {}
    if models and models.directories:
        for path in [config.model_dir, *models.directories]:
            halo_serve.owned_directory(name=f"Model directory {path}", path=path, owner=user, current=dirs.get(path))
    with_token = bool(models and models.token_needed and config.hf_token)
    if with_token:
        halo_files.checked_file(
            name="Hugging Face token (for curl, root only)", path=HF_HEADER,
            content=f"Authorization: Bearer {config.hf_token}\n", mode="0600", redact=True,
            current_sha256=managed_sha256(plan, HF_HEADER),
        )
    else:
        halo_files.absent_file(name="No Hugging Face token file", path=HF_HEADER,
                               current_sha256=managed_sha256(plan, HF_HEADER))
    header = HF_HEADER if with_token else None
    for action in models.pushes if models else []:
        halo_serve.model_file(
            name=f"Model {action.spec}: {action.file.name} (pushed)", path=action.file.host_path,
            source=action.file.local, owner=user, source_sha256=action.file.sha256,
            current_sha256=(action.current or {}).get("sha256"),
        )
    for spec in models.specs if models else []:
        for item in spec.files if spec.source in ("path", "file") else []:
            current = (on_host.get("files") or {}).get(item.host_path) or {}
            # A path model accepted by the plan, or a pushed one already right: recorded once hashed.
            if current.get("sha256") and (spec.source == "path" or current["sha256"] == item.sha256):
                halo_models.model_recorded(
                    name=f"Verified record of {item.host_path}", path=item.host_path, sha256=current["sha256"],
                    stat=current.get("stat"), recorded=bool(current.get("recorded")),
                )
    for action in models.downloads if models else []:
        item = action.file
        size = f"{item.size:,} bytes" if item.size is not None else "size unknown"
        halo_models.model_download(
            name=f"Model {action.spec}: {item.name} ({size}) from {urlsplit(item.url).netloc}",
            path=item.host_path, url=item.url, owner=user, sha256=item.sha256, git_oid=item.git_oid,
            header_file=header if action.hub else None,
            current=action.current, size=item.size,
        )
    if models and models.preset is not None:
        halo_files.checked_file(name="Router preset (the models llama-server serves)", path=MODELS_PRESET,
                                content=models.preset, current_sha256=managed_sha256(plan, MODELS_PRESET))
    else:
        halo_files.absent_file(name="No router preset", path=MODELS_PRESET,
                               current_sha256=managed_sha256(plan, MODELS_PRESET))


@deploy("bench")
def bench() -> None:
    """
    llama-bench (pp512, tg128) for the model each llama-server host serves, stored on the host; ``halofleet bench``
    and ``halofleet report`` show it next to the memory roofline. The engine is stopped during the run and
    started again after it, ``halo_restart_batch`` hosts at a time.
    """
    summary.install()
    plan = current_plan()
    if plan is None:
        return
    engine = plan.serve
    batch = restart_batch()
    if engine and engine.engine == "llama-server" and engine.flavour == "distro" and engine.model_host_path:
        # The roofline's bytes per token, from the model's GGUF header read on the host now (a few MB).
        cost, why_not = host_model_token_cost(host, engine.model_host_path)
        if cost is None:
            logger.warning(f"{host.print_prefix}halofleet: bench roofline by file size: GGUF header of "
                           f"{engine.model_host_path}: {why_not}")
        logger.info(f"{host.print_prefix}halofleet: bench stops halo-serve.service here while llama-bench runs "
                    f"(batches of {batch} host(s), halo_restart_batch), then starts it again")
        halo_bench.llama_bench(
            name=f"llama-bench {engine.model_host_path} (halo-serve stopped meanwhile)",
            model=engine.model_host_path,
            user=plan.config.service_user,
            repetitions=plan.config.bench_repetitions,
            bytes_per_token=cost.bytes_per_token if cost else None,
            experts=cost.experts if cost else None,
            gateways=gateway_slots(),  # out of the gateways' rotation while the engine is stopped
            _parallel=batch,  # never more engines stopped at once than a restart batch
        )
    else:
        # The toolbox and vLLM images carry their own tools; benchmarking inside them is not built yet.
        logger.warning(f"{host.print_prefix}halofleet: bench skipped: it runs llama-bench for llama-server from "
                       "the distro packages (halo_serve: llama-server, halo_llama_source: distro)")
