"""
The serving stage's decisions, pure: from validated host data and the probe to the unit, environment file,
model placement and whether the engine must be (re)started. Every refusal (model missing or corrupt, port taken,
memory cap above RAM) is raised here, before the first change.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..contract import paths, policy, validators
from ..contract.config import GGUF_MAGIC, ConfigError, HaloConfig, HostRefused
from ..contract.localfiles import LocalFileRefused
from ..contract.templating import render, sha256_text
from ..fleet.rpc import head_args
from ..models.files import ModelsPlan, local_sha256, plan_models
from ..models.kvcache import EngineFlags

CONTAINER_MODEL_DIR = "/models"
CONTAINER_CACHE_DIR = "/cache"
FIRST_SYSTEM_ID, LAST_SYSTEM_ID = 100, 999
# DOMAIN.md's "--no-mmap" is gone from newer llama-server builds (forky's 0.7.0, build 11669, rejects it and has
# "--load-mode none" instead). Environment variables are ignored by builds that do not know them, so both
# spellings are set and the same unit works with old toolbox images and new distro packages.
LLAMA_NO_MMAP_ENVIRONMENT = {"LLAMA_ARG_LOAD_MODE": "none", "LLAMA_ARG_NO_MMAP": "1"}


@dataclass
class Ids:
    """Numeric ids the container units need (rootful podman resolves names inside the image, not on the host)."""

    uid: int
    gid: int
    video_gid: int
    render_gid: int
    new_user: bool = False
    new_groups: dict[str, int] = field(default_factory=dict)  # group name -> gid to create with


@dataclass
class ServePlan:
    engine: str  # llama-server | vllm
    flavour: str  # distro | toolbox | vllm
    packages: list[str]
    unit_path: str
    unit: str
    stale_unit_path: str  # the other flavour's unit file, removed if present
    env: str  # holds the API key: mode 0600, never shown in a diff
    conf: str  # what is served where (no secret), read by the verification facts
    model_host_path: str | None  # None: a Hugging Face id fetched by the engine
    model_push_source: str | None
    model_push_sha256: str | None  # of the local file
    model_host_sha256: str | None  # of the pushed copy on the host, as probed (None: absent)
    model_stamp: str
    url: str
    image: str | None  # the container flavours' image
    image_present: bool  # already in podman's storage (else pulled before the unit starts)
    restart: bool  # unit, environment or model changed since the engine started
    start: bool  # not running (or not enabled) although nothing changed
    warnings: list[str] = field(default_factory=list)
    models: ModelsPlan | None = None  # halo_models: downloads, pushes and the router preset
    # What the engine reads at start (unit, environment, preset): their paths and the digest of their contents.
    watched_paths: tuple[str, ...] = ()
    config_stamp: str = ""
    # The command line systemd starts (argv of the distro llama-server); None for the container flavours, whose
    # main process is podman's.
    exec_argv: list[str] | None = None

    @property
    def live_stamp(self) -> str:
        """Written on the host only once the engine runs this exact model and configuration (verified)."""
        return f"{self.model_stamp} {self.config_stamp}"


CONFIG_STAMP_PREFIX = "cfg:"


def config_stamp(digests: dict[str, str | None], watched: tuple[str, ...] | list[str]) -> str:
    """
    One digest of the files an engine reads at start, from each file's SHA-256 (None: absent): computed from the
    planned contents before a restart, and from the probe's digests of what is written on the host by ``verify``.
    """
    lines = "".join(f"{path} {digests.get(path) or '-'}\n" for path in watched)
    return CONFIG_STAMP_PREFIX + sha256_text(lines)


def split_stamp(recorded: str | None) -> tuple[str | None, str | None]:
    """The stamp file's (model stamp, config stamp); a stamp written before config stamps existed has only the
    first (then the written files alone say whether the configuration changed, as before)."""
    if not recorded:
        return None, None
    model, _, last = recorded.strip().rpartition(" ")
    if model and last.startswith(CONFIG_STAMP_PREFIX):
        return model, last
    return recorded.strip(), None


def pushed_model_path(config: HaloConfig) -> str:
    """Where a model pushed from the control machine lives on the host."""
    return f"{config.model_dir}/{PurePosixPath(config.model).name}"


def engine_image(config: HaloConfig) -> str | None:
    """The container image the engine runs from (None: the distro's llama-server, no container)."""
    if config.serve == "vllm":
        return config.image or policy.VLLM_IMAGE
    if config.serve == "llama-server" and config.llama_source == "toolbox":
        return config.image or policy.LLAMA_TOOLBOX_IMAGES[config.llama_backend]
    return None


def probe_args(config: HaloConfig) -> dict[str, Any]:
    """What the preflight probe must look at for this host's engine: the model (hashed only where a digest is
    compared) and the image."""
    if config.serve != "none" and config.models:
        fetched = [spec.directory for spec in config.models if spec.source != "path"]
        args: dict[str, Any] = {"model_files": [path for spec in config.models for path in spec.host_paths],
                                "model_dirs": [config.model_dir, *fetched] if fetched else []}
        if engine_image(config):
            args["image"] = engine_image(config)
        return args
    if config.serve == "none" or config.model is None:
        return {}
    args = {}
    if config.model_push:
        args.update(model_path=pushed_model_path(config), hash_model=True)
    elif config.model.startswith("/"):
        args.update(model_path=config.model, hash_model=bool(config.model_sha256))
    image = engine_image(config)
    if image:
        args["image"] = image
    return args


def allocate_ids(config: HaloConfig, accounts: dict[str, Any]) -> Ids:
    """
    The service user's uid/gid and the GPU groups' gids: existing ones as they are; missing ones get the
    highest free system id, as ``useradd --system`` would, but decided now so units can be written before.
    """
    users = {name: tuple(ids) for name, ids in (accounts.get("users") or {}).items()}
    groups = dict(accounts.get("groups") or {})
    used = {uid for uid, _ in users.values()} | set(groups.values())

    def next_free() -> int:
        for candidate in range(LAST_SYSTEM_ID, FIRST_SYSTEM_ID - 1, -1):
            if candidate not in used:
                used.add(candidate)
                return candidate
        raise HostRefused(config.host, "no free system uid/gid between 100 and 999 for the service account")

    new_groups = {}
    for group in policy.GPU_GROUPS:
        if group not in groups:
            groups[group] = new_groups[group] = next_free()
    user = config.service_user
    if user in users:
        uid, gid = users[user]
        new_user = False
    else:
        uid = next_free()
        gid = groups.get(user) if user in groups else uid
        if user not in groups:
            new_groups[user] = gid
        new_user = True
    return Ids(uid=uid, gid=gid, video_gid=groups["video"], render_gid=groups["render"], new_user=new_user,
               new_groups=new_groups)


def _url(bind: str, port: int) -> str:
    address = ipaddress.ip_address(bind)
    if address.is_unspecified:  # listening everywhere: ask over loopback
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{host}:{port}"


def _port_holder(bind: str, port: int, listeners: list[list]) -> str | None:
    wanted = ipaddress.ip_address(bind)
    for address, listening_port in listeners:
        if listening_port != port:
            continue
        held = ipaddress.ip_address(address)
        if held == wanted or held.is_unspecified or wanted.is_unspecified:
            return address
    return None


def memory_max_gib(config: HaloConfig, visible_gib: int) -> int:
    limit = config.memory_max_gib
    if limit is None:
        return max(1, visible_gib - policy.SERVE_MEMORY_HEADROOM_GIB)
    if limit >= visible_gib:
        raise ConfigError(config.host, "halo_memory_max_gib", limit,
                          f"must be below the {visible_gib} GiB of RAM the host sees (MemoryMax below RAM)")
    return limit


def _model(config: HaloConfig, model: dict[str, Any]) -> tuple[str | None, str | None, str]:
    """(path on the host, local file to push, stamp identifying this exact model)."""
    if config.model_push:
        source = str(Path(config.model).expanduser())
        try:
            digest = local_sha256(source)
        except LocalFileRefused as error:  # replaced since validation looked at it
            raise ConfigError(config.host, "halo_model", config.model, f"{error} (halo_model_push)") from None
        if config.model_sha256 and digest != config.model_sha256:
            raise ConfigError(config.host, "halo_model_sha256", config.model_sha256,
                              f"the local file {source} has SHA-256 {digest}: it is corrupt or a different model")
        return pushed_model_path(config), source, f"sha256:{digest}"
    if not config.model.startswith("/"):  # a Hugging Face id: the engine downloads it into the cache
        return None, None, f"hf:{config.model}"
    kind = model.get("kind")
    if kind == "missing" or kind == "none":
        raise HostRefused(config.host, f"model {config.model} does not exist on the host (halo_model)")
    if config.serve == "llama-server":
        if kind != "file":
            raise HostRefused(config.host, f"model {config.model} is not a file (llama-server needs one GGUF file)")
        if model.get("magic") != GGUF_MAGIC.decode():
            raise HostRefused(config.host, f"model {config.model} is not a GGUF file (it does not start with 'GGUF')")
    elif kind == "dir" and not model.get("has_config"):
        raise HostRefused(config.host, f"model directory {config.model} has no config.json (not a HF model dir)")
    if config.model_sha256 and model.get("sha256") != config.model_sha256:
        raise HostRefused(
            config.host,
            f"model {config.model} has SHA-256 {model.get('sha256')}, not halo_model_sha256: corrupt or replaced",
        )
    if kind == "file":
        return config.model, None, f"file:{config.model}:{model.get('size')}:{model.get('mtime')}"
    return config.model, None, f"dir:{config.model}"


def _llama_args(config: HaloConfig, model_path: str | None, models_max: int = 0,
                rpc_members: tuple = ()) -> list[str]:
    # DOMAIN.md "Server flags": all layers on the GPU, flash attention (no mmap: LLAMA_NO_MMAP_ENVIRONMENT).
    # Router mode: no -m; the preset names the models. No -c either: the router's own arguments override a
    # preset's (measured on 0.7.0), and each model has its own ctx-size there. The rest reaches every model.
    # An RPC head: its workers' devices take layers too (-ngl 999 spreads over local and remote devices).
    model = ["--models-preset", paths.MODELS_PRESET, "--models-max", str(models_max)] if model_path is None \
        else ["--model", model_path]
    # The flags that size memory come from EngineFlags, which the memory plan sizes with too.
    args = [*model, "--host", config.bind, "--port", str(config.port), "-ngl", "999",
            *EngineFlags.of(config).args(None if model_path is None else config.ctx)]
    if config.model_alias:
        args += ["--alias", config.model_alias]
    if config.metrics:
        args.append("--metrics")
    return args + head_args(config, list(rpc_members)) + list(config.llama_args)


def _vllm_args(config: HaloConfig, model: str) -> list[str]:
    args = ["serve", model, "--host", config.bind, "--port", str(config.port),
            "--dtype", config.vllm_dtype,
            "--gpu-memory-utilization", f"{config.vllm_gpu_memory_utilization:g}",
            "--max-model-len", str(config.ctx), "--max-num-seqs", str(config.vllm_max_num_seqs)]
    if config.vllm_enforce_eager:
        args.append("--enforce-eager")
    served = config.models[0].name if config.models else config.model_alias
    if served:
        args += ["--served-model-name", served]
    return args + list(config.vllm_args)


def _unit_safe(config: HaloConfig, key: str, value: str) -> None:
    """Quadlet settings other than Exec= take a value verbatim: it must hold nothing a unit file interprets."""
    problem = validators.check_unit_value(value)
    if problem:
        raise ConfigError(config.host, key, value, f"cannot be written into a Quadlet file: {problem}")


def build_serve_plan(config: HaloConfig, probe: dict[str, Any], visible_gib: int, ids: Ids,
                     rpc_members: tuple = ()) -> ServePlan | None:
    """The serving stage for this host, or None for ``halo_serve: none`` (and rpc-worker: see :mod:`.rpc`).
    ``rpc_members``: an RPC head's workers (:class:`halofleet.fleet.rpc.Member`), in order."""
    if config.serve in ("none", "rpc-worker"):
        return None
    warnings = []
    serve_state = probe.get("serve") or {}
    running = serve_state.get("active") == "active"
    # A unit still starting (or stopping) holds its port too, e.g. after a run interrupted during a restart; but
    # only the port its serve.conf names (when known): another program on the port we move to is still refused.
    ours_alive = serve_state.get("active") in ("active", "activating", "reloading", "deactivating")
    ours_holds_it = ours_alive and serve_state.get("port") in (None, config.port)
    holder = _port_holder(config.bind, config.port, serve_state.get("listeners") or [])
    if holder and not ours_holds_it:
        raise HostRefused(config.host, f"port {config.port} is already in use on {holder} by another program "
                                       "(choose another halo_port or stop that program)")
    if config.api_key is None and not ipaddress.ip_address(config.bind).is_loopback:
        # Refused in validation unless halo_allow_unauthenticated says so: then still worth a line in every run.
        warnings.append(f"the API on {config.bind}:{config.port} is reachable beyond this host without an API key "
                        "(halo_allow_unauthenticated)")

    models = plan_models(config, probe) if config.models else None
    if models:
        model_host_path, push_source, stamp = models.serve_path, None, models.stamp
    else:
        model_host_path, push_source, stamp = _model(config, probe.get("model") or {})
    flavour = "vllm" if config.serve == "vllm" else config.llama_source
    mem_max = memory_max_gib(config, visible_gib)
    url = _url(config.bind, config.port)
    context = {
        "engine": config.serve, "backend": config.llama_backend, "user": config.service_user,
        "env_file": paths.SERVE_ENV, "memory_max_gib": mem_max, "start_timeout": config.start_timeout,
        "health_url": url + "/health",
    }
    packages = ["curl"]  # the unit's readiness check and the verification facts ask the engine over HTTP
    image = engine_image(config)
    if flavour == "distro":
        packages += [policy.LLAMA_DISTRO_PACKAGE] + policy.LLAMA_BACKEND_PACKAGES[config.llama_backend]
        router = models is not None
        if rpc_members:  # without the RPC backend llama-server has no --rpc option at all
            packages.append(policy.RPC_BACKEND_PACKAGE)
        args = _llama_args(config, None if router else model_host_path, models.models_max if router else 0,
                           rpc_members)
        unit = render("halo-serve.service.j2", binary=policy.LLAMA_SERVER_BINARY, exec_args=args,
                      environment=LLAMA_NO_MMAP_ENVIRONMENT, rpc_members=rpc_members, **context)
        unit_path, stale = paths.SERVE_UNIT, paths.SERVE_QUADLET
        exec_argv = [policy.LLAMA_SERVER_BINARY, *args]
    else:
        exec_argv = None
        volumes, model_ref = [], config.model
        if model_host_path:
            host_dir = str(PurePosixPath(model_host_path).parent)
            model_ref = f"{CONTAINER_MODEL_DIR}/{PurePosixPath(model_host_path).name}"
            volumes.append(f"{host_dir}:{CONTAINER_MODEL_DIR}:ro")
        environment = {}
        if flavour == "vllm":
            command = ["vllm"] + _vllm_args(config, model_ref)
            environment = dict(policy.VLLM_ENVIRONMENT)
            environment.update(HOME=CONTAINER_CACHE_DIR, HF_HOME=f"{CONTAINER_CACHE_DIR}/huggingface",
                               VLLM_CACHE_ROOT=f"{CONTAINER_CACHE_DIR}/vllm",
                               TRITON_CACHE_DIR=f"{CONTAINER_CACHE_DIR}/triton")
            volumes.append(f"{paths.SERVE_CACHE}:{CONTAINER_CACHE_DIR}")
        else:
            command = ["llama-server"] + _llama_args(config, model_ref)
            environment = dict(LLAMA_NO_MMAP_ENVIRONMENT)
        for key, value in [("halo_image", image), *(("halo_model", volume) for volume in volumes),
                           *((f"environment {name}", f"{name}={v}") for name, v in environment.items())]:
            _unit_safe(config, key, value)
        if "@sha256:" not in image:
            warnings.append(f"image {image} is not pinned by digest (name@sha256:...)")
        # Vulkan needs only the render node; ROCm (hip, vLLM) also /dev/kfd and an unconfined seccomp profile.
        rocm = flavour == "vllm" or config.llama_backend == "hip"
        optional = "-" if config.devices_optional else ""
        devices = [f"{optional}/dev/dri"] + ([f"{optional}/dev/kfd"] if rocm else [])
        unit = render(
            "halo-serve.container.j2", image=image, command=command, ids=ids, devices=devices,
            seccomp_unconfined=rocm, ipc_host=flavour == "vllm", volumes=volumes, environment=environment,
            **context,
        )
        unit_path, stale = paths.SERVE_QUADLET, paths.SERVE_UNIT

    env = render("serve.env.j2", key_name=policy.API_KEY_ENV[config.serve], api_key=config.api_key)
    conf = render("serve.conf.j2", engine=config.serve, flavour=flavour, url=url, service=paths.SERVE_SERVICE)
    files = probe.get("files") or {}
    watched = [(unit_path, unit), (paths.SERVE_ENV, env)]
    if models and models.preset is not None:
        watched.append((paths.MODELS_PRESET, models.preset))  # the router reads it at start only
    watched_paths = tuple(path for path, _ in watched)
    planned_config = config_stamp({path: sha256_text(content) for path, content in watched}, watched_paths)
    live_model, live_config = split_stamp(serve_state.get("stamp"))
    # Pending is a change: files written by a run whose restart did not happen (a halted rollout, a failed
    # engine) leave the stamp of what last ran verified, so the next run restarts until it is live.
    changed = any(files.get(path) != sha256_text(content) for path, content in watched) \
        or live_model != stamp or (live_config is not None and live_config != planned_config) or stale in files
    enabled = serve_state.get("enabled") in ("enabled", "generated")
    return ServePlan(
        engine=config.serve, flavour=flavour, packages=packages, unit_path=unit_path, unit=unit,
        stale_unit_path=stale, env=env, conf=conf, model_host_path=model_host_path,
        model_push_source=push_source, model_push_sha256=stamp.split(":", 1)[1] if push_source else None,
        model_host_sha256=(probe.get("model") or {}).get("sha256"), model_stamp=stamp, url=url,
        image=image, image_present=bool((probe.get("image") or {}).get("present")), restart=changed,
        start=not changed and not (running and enabled), warnings=warnings, models=models,
        watched_paths=watched_paths, config_stamp=planned_config,
        exec_argv=exec_argv,
    )
