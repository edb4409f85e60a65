"""
Stage 7, serving: the engine chosen by halo_serve (llama-server from the distro or a toolbox image, or vLLM) as
halo-serve.service, run by the service user, started only when the unit, its environment or the model changed,
and considered started only once it answers on its health endpoint.
"""

from pyinfra.operations import apt, dnf

from halofleet import policy
from halofleet.deploy import current_plan, managed_sha256
from halofleet.operations import halo_files, halo_serve
from halofleet.paths import SERVE_CACHE, SERVE_CONF, SERVE_ENV

plan = current_plan()
if plan is not None and plan.serve is not None:
    serve, config = plan.serve, plan.config
    user = config.service_user
    if plan.uses_apt:
        apt.packages(name=f"Packages for {serve.engine} ({serve.flavour})", packages=serve.packages,
                     no_recommends=True, extra_install_args=policy.APT_LOCK_WAIT)
    else:
        dnf.packages(name=f"Packages for {serve.engine} ({serve.flavour})", packages=serve.packages)

    if serve.image:
        halo_serve.image_pulled(name=f"Image {serve.image}", image=serve.image, present=serve.image_present)

    if serve.model_push_source:
        halo_serve.owned_directory(name="Model directory", path=config.model_dir, owner=user,
                                   current=plan.probe["model"].get("parent"))
        halo_serve.model_file(
            name=f"Model {serve.model_host_path}", path=serve.model_host_path, source=serve.model_push_source,
            owner=user, source_sha256=serve.model_push_sha256, current_sha256=serve.model_host_sha256,
        )
    if serve.flavour == "vllm":
        halo_serve.owned_directory(name="Engine caches (HF, vLLM, Triton)", path=SERVE_CACHE, owner=user,
                                   current=plan.probe["serve"].get("cache"))

    halo_files.checked_file(
        name="Engine environment (API key)", path=SERVE_ENV, content=serve.env, mode="0600", redact=True,
        current_sha256=managed_sha256(plan, SERVE_ENV),
    )
    halo_files.checked_file(
        name="What this host serves", path=SERVE_CONF, content=serve.conf,
        current_sha256=managed_sha256(plan, SERVE_CONF),
    )
    halo_files.absent_file(
        name="Remove the other flavour's unit", path=serve.stale_unit_path, activate=halo_serve.DAEMON_RELOAD,
        current_sha256=managed_sha256(plan, serve.stale_unit_path),
    )
    halo_serve.unit_file(
        name=f"{serve.engine} unit ({serve.flavour})", path=serve.unit_path, content=serve.unit,
        current_sha256=managed_sha256(plan, serve.unit_path),
    )
    halo_serve.engine_running(
        name=f"{serve.engine} serving on {serve.url}", restart=serve.restart, start=serve.start,
        enable=serve.flavour == "distro", stamp=serve.model_stamp,
    )
