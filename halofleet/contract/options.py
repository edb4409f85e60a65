"""
The host-data contract as data: every ``halo_*`` key with its type, default, doc, choices and grammar check, in one
table (Ansible-style ``argument_spec``). :mod:`halofleet.contract.config` validates host data against it.
"""

from __future__ import annotations

from . import policy, stacks, validators
from .option_types import Option

# -ctk/-ctv values llama-server 0.7.0 accepts (its --help "allowed values")
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
VLLM_RAY_NOT_BUILT = (
    "not built yet: vLLM across boxes (Ray, --tensor-parallel-size) is designed in README 'vLLM across boxes' but "
    "not built, as nothing here can run vLLM to prove it; split a model across boxes with llama.cpp RPC "
    "(halo_rpc_workers) instead"
)
SERVE_ENGINES = ("llama-server", "vllm", "rpc-worker", "none")
NO_ENDPOINT = ("none", "rpc-worker")  # hosts without an OpenAI endpoint of their own (an RPC worker lends memory)

OPTIONS: dict[str, Option] = {
    "halo_serve": Option(
        "choice", "llama-server", "Serving engine run as a systemd service ('rpc-worker': only ggml-rpc-server, lending this box's memory "
        "to the llama-server head that names it in halo_rpc_workers; 'none': prepare the host only).",
        choices=SERVE_ENGINES,
    ),
    "halo_runtime": Option(
        "choice", "podman", "Container runtime to install; the toolbox and vLLM engines need podman (Quadlet units).",
        choices=("podman", "docker"),
    ),
    "halo_rocm_version": Option(
        "version", "none", "Host ROCm release to install and pin, or 'none' (containers carry their own ROCm).",
        check=validators.check_rocm_version,
    ),
    "halo_rocm_repo_url": Option(
        "url", None, "ROCm apt repository URL (default: AMD's repo for the release's stream and, for 7.14+/10.x, "
        "the host's suite directory; set for mirrors; a plain URL: no query, fragment or credentials).",
        nullable=True, check=validators.check_apt_url,
    ),
    "halo_rocm_repo_suite": Option(
        "str", None, "Legacy ROCm (<= 7.2.x): the apt suite (default noble). TheRock (7.14+, 10.x): AMD's directory "
        "(ubuntu2204, ubuntu2404, ubuntu2604, debian12, debian13; default: from the host's os-release).",
        nullable=True, check=validators.check_apt_suite,
    ),
    "halo_rocm_repo_key_url": Option(
        "url", None, "Signing key of the ROCm repository (default: AMD's key for the stream: ASCII-armored for "
        "legacy, a binary keyring for TheRock); unused with halo_rocm_repo_trusted.", nullable=True,
        check=validators.check_url,
    ),
    "halo_rocm_repo_trusted": Option(
        "bool", False, "Trust the ROCm repository without a key (local test repositories only)."
    ),
    "halo_rocm_packages": Option(
        "list", None, "Packages installed from the ROCm repository (default: rocm for legacy; amdrocmX.Y-<gpu "
        "target> for TheRock, e.g. amdrocm7.14-gfx1151; add amdrocm-core-sdkX.Y-<target> for the SDK; Debian "
        "names, optionally =version).", nullable=True, check=validators.check_packages,
    ),
    "halo_gtt_gib": Option(
        "int", None, "GTT size in GiB (default: MemTotal minus halo_os_reserve_gib).", nullable=True, minimum=1,
        maximum=1024,
    ),
    "halo_os_reserve_gib": Option(
        "int", policy.DEFAULT_OS_RESERVE_GIB, "GiB of RAM kept out of GTT for the OS.",
        minimum=policy.MIN_OS_RESERVE_GIB, maximum=1024,
    ),
    "halo_iommu": Option(
        "choice", "off", "IOMMU mode: 'off' (amd_iommu=off, faster, disables the NPU) or 'pt' (iommu=pt).",
        choices=("off", "pt"),
    ),
    "halo_cwsr_policy": Option(
        "choice", "enforce", "Without kernel CWSR support: 'enforce' refuses vLLM, 'warn' only reports.",
        choices=("enforce", "warn"),
    ),
    "halo_boot": Option(
        "choice", "manage", "Who owns the kernel cmdline: halofleet ('manage': GRUB drop-in or grubby, reboots) or "
        "'external' (containers, systemd-boot, image-built hosts: the kernel stage changes nothing and warns when the "
        "live cmdline lacks the Strix Halo parameters).", choices=("manage", "external"),
    ),
    "halo_reboot": Option(
        "choice", "auto", "Reboot when the configured cmdline differs from the live one ('never': report only).",
        choices=("auto", "never"),
    ),
    "halo_reboot_timeout": Option(
        "int", 600, "Seconds to wait for a rebooting host; one that does not come back stops the rollout.",
        minimum=30, maximum=7200,
    ),
    "halo_reboot_batch": Option(
        "int", 1, "Hosts rebooted at a time (fleet-wide: the smallest value in the inventory wins).", minimum=1,
        maximum=10000,
    ),
    "halo_emit_gttsize": Option(
        "bool", None, "Also emit the deprecated amdgpu.gttsize (always equal to ttm.pages_limit); null: what the "
        "running kernel wants (left out on 7.x kernels, which log a deprecation warning for it; emitted on older "
        "ones).", nullable=True,
    ),
    "halo_stack": Option(
        "stack", None, "The stack profile the host must run (README 'Stack profiles'): a name from halofleet's "
        "table (" + ", ".join(stacks.PROFILES) + ") or a mapping, a site's own profile (name, source, "
        "kernel_package, kernel_release; optional kernel_version, firmware_package, firmware_version, firmware_min, "
        "mes_min, rocm). verify and report show each host's drift from it; on apt hosts the kernel stage installs "
        "and holds its kernel and firmware packages, makes its kernel GRUB's default and reboots into it.",
        nullable=True, check=stacks.check_stack,
    ),
    "halo_allow_non_strix_halo": Option(
        "bool", False, "Run on hosts without a gfx1151 GPU (test hosts); GPU checks report 'skipped'."
    ),
    "halo_allow_amdgpu_dkms": Option(
        "bool", False, "Accept amdgpu-dkms; the TTM params then become amdttm.* (ROCm/ROCm#5562)."
    ),
    "halo_service_user": Option(
        "str", "halo", "Non-root system user that runs the engines (gets video/render).",
        check=validators.check_user_name,
    ),
    # -- serving (deploys/serve.py) --
    "halo_llama_source": Option(
        "choice", "distro", "Where llama-server comes from: the distro's llama.cpp-tools, or the toolbox image.",
        choices=("distro", "toolbox"),
    ),
    "halo_llama_backend": Option(
        "choice", "vulkan", "ggml backend for llama-server ('cpu' for test hosts without a GPU).",
        choices=("vulkan", "hip", "cpu"),
    ),
    "halo_image": Option(
        "str", None, "Container image for the toolbox/vLLM flavours (default: the kyuz0 image for the engine and "
        "backend); pin with @sha256:<digest>.", nullable=True, check=validators.check_image,
    ),
    "halo_model": Option(
        "str", None, "Model to serve: a GGUF file path on the host (llama-server), a directory on the host or a "
        "Hugging Face id (vLLM); with halo_model_push, a GGUF file on the control machine (a relative path is "
        "relative to the inventory file's directory).", nullable=True,
    ),
    "halo_model_push": Option("bool", False, "Copy halo_model from the control machine into halo_model_dir."),
    "halo_model_sha256": Option(
        "str", None, "Expected SHA-256 of the model file, checked on the host before serving.", nullable=True,
        check=validators.check_sha256,
    ),
    "halo_model_dir": Option(
        "str", "/var/lib/halofleet/models", "Directory for pushed models (owned by the service user).",
        check=validators.check_absolute_path,
    ),
    "halo_models": Option(
        "models", [], "Several models on one host (llama-server router mode; vLLM: one hf entry): a list of "
        "mappings with name, one source (file on the control machine, relative to the inventory's directory; "
        "path on the host, url of a GGUF or of a "
        "split set's first shard, hf owner/repo with include and revision), sha256 (required for url), ctx, "
        "keep_loaded. Files land in halo_model_dir/<name>/, verified by SHA-256. Empty: halo_model.",
    ),
    "halo_hf_endpoint": Option(
        "url", "https://huggingface.co", "Hugging Face Hub (or mirror) the hf sources of halo_models come from.",
        check=validators.check_http_url,
    ),
    "halo_hf_token": Option(
        "secret", None, "Hugging Face token for private or gated repos; sent to the Hub only, kept on the host in a "
        "0600 file, never in argv, diffs or logs.", nullable=True, check=validators.check_hf_token,
    ),
    "halo_model_alias": Option(
        "str", None, "Name clients use for halo_model (llama-server --alias, vLLM --served-model-name).",
        nullable=True, check=validators.check_model_name,
    ),
    "halo_models_max": Option(
        "int", None, "llama-server router --models-max: models loaded at once (default: every model of halo_models, "
        "so none is ever evicted).", nullable=True, minimum=1, maximum=1024,
    ),
    "halo_metrics": Option(
        "bool", False, "llama-server --metrics: Prometheus /metrics on the API's own address and port (behind "
        "halo_api_key; in router mode per model: /metrics?model=NAME).",
    ),
    "halo_bind": Option("str", "127.0.0.1", "Address the engine listens on (beyond loopback: set halo_api_key).",
                        check=validators.check_bind),
    "halo_port": Option("int", 8080, "TCP port the engine listens on.", minimum=1024, maximum=65535),
    "halo_api_key": Option(
        "secret", None, "API key clients must send; kept in a 0600 environment file, never in diffs or logs.",
        nullable=True, check=validators.check_api_key,
    ),
    "halo_allow_unauthenticated": Option(
        "bool", False, "Let the engine listen beyond loopback without an API key (otherwise refused).",
    ),
    "halo_ctx": Option("int", 8192, "Context length (llama-server -c, vLLM --max-model-len).", minimum=256,
                       maximum=1048576),
    "halo_llama_batch": Option("int", 2048, "llama-server -b (logical batch).", minimum=32, maximum=16384),
    "halo_llama_ubatch": Option("int", 512, "llama-server -ub (physical batch, <= -b).", minimum=32, maximum=16384),
    "halo_llama_parallel": Option("int", 1, "llama-server -np (slots; 1 for big models).", minimum=1, maximum=64),
    "halo_llama_kv_type": Option(
        "choice", "f16", "llama-server --cache-type-k and --cache-type-v: the KV cache type (q8_0 halves KV memory; "
        "a quantized V needs halo_llama_flash_attn on).", choices=KV_CACHE_TYPES,
    ),
    "halo_llama_kv_type_v": Option(
        "choice", None, "llama-server --cache-type-v when V differs from K (null: halo_llama_kv_type).",
        choices=KV_CACHE_TYPES, nullable=True,
    ),
    "halo_llama_kv_unified": Option(
        "bool", False, "llama-server --kv-unified: one KV buffer shared by all slots (otherwise ctx / slots each).",
    ),
    "halo_llama_swa_full": Option(
        "bool", False, "llama-server --swa-full: full-size cache for sliding-window layers (more memory).",
    ),
    "halo_llama_flash_attn": Option(
        "choice", "on", "llama-server -fa (off: more compute memory, no quantized V cache).", choices=("on", "off"),
    ),
    "halo_llama_args": Option(
        "args", [], "Extra llama-server arguments, appended after halofleet's (not --host, --port, --api-key*).",
        check=lambda value: validators.check_args("halo_llama_args", value), hide_value=True,
    ),
    # -- several boxes, one model: llama.cpp RPC (README "RPC groups") --
    "halo_rpc_address": Option(
        "str", None, "This host's address on the private link of its RPC group: a worker binds ggml-rpc-server to "
        "it, the head's is the only source a worker's firewall lets in (RFC 1918/ULA or loopback only: RPC is "
        "unauthenticated upstream).", nullable=True, check=validators.check_rpc_address,
    ),
    "halo_rpc_port": Option("int", 50052, "TCP port of ggml-rpc-server on a worker.", minimum=1024, maximum=65535),
    "halo_rpc_cache": Option(
        "bool", False, "Worker: ggml-rpc-server -c, caching large tensors on disk (in the service user's cache "
        "directory) so a restarted head loads faster.",
    ),
    "halo_rpc_device": Option(
        "str", None, "Worker: ggml-rpc-server -d, the devices it lends (e.g. Vulkan0; default: every GPU, else the "
        "CPU).", nullable=True, check=validators.check_rpc_device,
    ),
    "halo_rpc_workers": Option(
        "hosts", [], "Head: the inventory names of its RPC workers (each halo_serve: rpc-worker), in order: the head's "
        "llama-server gets --rpc with their addresses in this order.", check=validators.check_host_names,
    ),
    "halo_tensor_split": Option(
        "numbers", None, "Head: llama-server --tensor-split, the share of the model per device in llama.cpp's "
        "device order (default: in proportion to each device's free memory).", nullable=True,
    ),
    "halo_vllm_gpu_memory_utilization": Option(
        "float", 0.90, "vLLM --gpu-memory-utilization (above 0.90 swaps on unified memory).", minimum=0.05,
        maximum=policy.VLLM_MAX_GPU_MEMORY_UTILIZATION,
    ),
    "halo_vllm_max_num_seqs": Option("int", 8, "vLLM --max-num-seqs (concurrent sequences).", minimum=1,
                                     maximum=1024),
    "halo_vllm_dtype": Option("choice", "auto", "vLLM --dtype.", choices=("auto", "float16", "bfloat16")),
    "halo_vllm_enforce_eager": Option("bool", False, "vLLM --enforce-eager (needed for AWQ models)."),
    "halo_vllm_args": Option(
        "args", [], "Extra vLLM arguments, appended after halofleet's (not --host, --port, --api-key).",
        check=lambda value: validators.check_args("halo_vllm_args", value), hide_value=True,
    ),
    # -- vLLM across boxes (Ray): designed in README "vLLM across boxes", reserved, refused until built --
    "halo_vllm_tensor_parallel_size": Option(
        "int", 1, "Reserved (not built yet): vLLM --tensor-parallel-size across a Ray cluster of boxes.", minimum=1,
        maximum=64, check=lambda value: None if value == 1 else VLLM_RAY_NOT_BUILT,
    ),
    "halo_vllm_ray_head": Option(
        "str", None, "Reserved (not built yet): inventory name of the Ray head of this host's vLLM cluster.",
        nullable=True, check=lambda value: VLLM_RAY_NOT_BUILT,
    ),
    "halo_vllm_ray_interface": Option(
        "str", None, "Reserved (not built yet): the private link's interface (NCCL_SOCKET_IFNAME, "
        "GLOO_SOCKET_IFNAME) of a Ray cluster.", nullable=True, check=lambda value: VLLM_RAY_NOT_BUILT,
    ),
    "halo_vllm_ray_address": Option(
        "str", None, "Reserved (not built yet): this host's address on the Ray cluster's link (VLLM_HOST_IP).",
        nullable=True, check=lambda value: VLLM_RAY_NOT_BUILT,
    ),
    "halo_memory_max_gib": Option(
        "int", None, f"systemd MemoryMax of the engine (default: RAM minus {policy.SERVE_MEMORY_HEADROOM_GIB} GiB).",
        nullable=True, minimum=1, maximum=1024,
    ),
    "halo_start_timeout": Option(
        "int", 900, "Seconds the engine may take to become healthy (first vLLM load JIT-compiles for minutes).",
        minimum=30, maximum=7200,
    ),
    "halo_bench_repetitions": Option("int", 3, "llama-bench -r (repetitions of pp512 and tg128).", minimum=1,
                                     maximum=50),
    "halo_mem_bandwidth_gbs": Option(
        "int", policy.STRIX_HALO_BANDWIDTH_GBS["theoretical"], "Theoretical memory bandwidth (GB/s) for the roofline.",
        minimum=1, maximum=10000,
    ),
    "halo_mem_bandwidth_measured_gbs": Option(
        "int", policy.STRIX_HALO_BANDWIDTH_GBS["measured"], "Measured memory bandwidth (GB/s) for the roofline.",
        minimum=1, maximum=10000,
    ),
    "halo_devices_optional": Option(
        "bool", False, "Test hosts only: start containers even where /dev/kfd or /dev/dri is missing."
    ),
    "halo_restart_batch": Option(
        "int", 1, "Engines stopped at a time: restarts when a model or flag changes (each batch answering /health "
        "and a real completion before the next; a failure stops the rollout) and halofleet bench (fleet-wide: the "
        "smallest value wins; a number as large as the fleet restarts every engine at once).",
        minimum=1, maximum=10000,
    ),
    "halo_restart_check": Option(
        "choice", "completion", "What a restarted engine must answer before the next batch restarts: 'completion' "
        "(/health 200 and a real one-token completion) or 'health' (/health 200 only: for engines that serve no "
        "completions, such as embedding or reranking models).", choices=("completion", "health"),
    ),
    "halo_correctness_gate": Option(
        "bool", True, "After a (re)start the engine must reproduce its model's golden (greedy tokens and top-k "
        "log-probabilities for fixed prompts, one longer than -ub; recorded on the first verified start) and agree "
        "with the other hosts serving the same model file name on the same backend; a host that does not fails "
        "like one that is not serving.",
    ),
    # -- the front door (deploys/gateway.py): haproxy in front of the fleet's engines --
    "halo_gateway": Option(
        "bool", False, "Run the fleet's front door on this host: Debian's haproxy, one OpenAI endpoint balancing "
        "the serving hosts of halo_gateway_groups, health-checked on /health.",
    ),
    "halo_gateway_groups": Option(
        "names", None, "Inventory groups whose serving hosts are the gateway's backends, one haproxy backend per "
        "group (default: every serving host of the inventory, as one backend).", nullable=True,
        check=validators.check_gateway_groups,
    ),
    "halo_gateway_models": Option(
        "map", None, "Routing by model name: {model name: group of halo_gateway_groups}; a request's JSON "
        "'model' picks the group, an unknown one gets a 404 (needed when there are several groups).",
        nullable=True, check=validators.check_gateway_models,
    ),
    "halo_gateway_mixed_pools": Option(
        "bool", False, "Let one group of halo_gateway_groups pool hosts that serve different engines or model "
        "sets (refused otherwise: a request balanced to a host that lacks its model fails).",
    ),
    "halo_gateway_bind": Option(
        "str", None, "Address the gateway listens on (required with halo_gateway; beyond loopback every backend "
        "needs halo_api_key, or this host halo_allow_unauthenticated).", nullable=True,
        check=validators.check_bind,
    ),
    "halo_gateway_port": Option("int", 8080, "TCP port the gateway listens on.", minimum=1, maximum=65535),
    "halo_gateway_balance": Option(
        "choice", "leastconn", "How requests are spread over a group's healthy backends ('leastconn' suits "
        "requests that last seconds to minutes).", choices=("leastconn", "roundrobin"),
    ),
    "halo_gateway_check_inter_s": Option(
        "int", 2, "Seconds between two health checks (GET /health, 200 expected) of a backend.", minimum=1,
        maximum=3600,
    ),
    "halo_gateway_fall": Option("int", 3, "Failed checks in a row that take a backend out.", minimum=1,
                                maximum=100),
    "halo_gateway_rise": Option("int", 2, "Passed checks in a row that put a backend back.", minimum=1,
                                maximum=100),
    "halo_gateway_timeout_s": Option(
        "int", 600, "Seconds a request may stay silent (client and server side; long generations stream).",
        minimum=10, maximum=86400,
    ),
    "halo_gateway_max_body_kib": Option(
        "int", 1024, "Largest request body (KiB) the gateway reads to route by model; a larger one gets a 413 "
        "(only with halo_gateway_models; sets haproxy's buffer size).", minimum=16, maximum=65536,
    ),
    "halo_gateway_tls_cert": Option(
        "str", None, "TLS for the gateway: a PEM file on the control machine holding the certificate chain and "
        "its private key, pushed mode 0600; a relative path is relative to the inventory file's directory (unset: "
        "plain HTTP).", nullable=True,
    ),
    # -- seeing the fleet: Prometheus (README "Monitoring") --
    "halo_monitor": Option(
        "bool", False, "Run the fleet's Prometheus on this host (its own unit, config and storage under "
        "halofleet's paths), scraping every inventory host's node exporter, engine /metrics and gateway; with "
        "a monitor host in the inventory every host runs node exporter.",
    ),
    "halo_monitor_bind": Option(
        "str", None, "Address the fleet's Prometheus listens on (required with halo_monitor; its HTTP API has no "
        "authentication: keep it on a private address).", nullable=True, check=validators.check_bind,
    ),
    "halo_monitor_port": Option("int", 9090, "TCP port the fleet's Prometheus listens on.", minimum=1024,
                                maximum=65535),
    "halo_monitor_scrape_s": Option("int", 15, "Seconds between two scrapes of every target (and between two "
                                    "evaluations of the alert rules).", minimum=1, maximum=3600),
    "halo_monitor_retention_days": Option("int", 15, "Days of samples the fleet's Prometheus keeps.", minimum=1,
                                          maximum=3650),
    "halo_alert_for_s": Option(
        "int", 120, "Seconds an engine or a gateway backend must be down (and a host's GTT above the threshold) "
        "before its alert fires.", minimum=0, maximum=86400,
    ),
    "halo_alert_gtt_fraction": Option(
        "float", 0.95, "Alert when a card's GTT in use exceeds this fraction of its GTT size.", minimum=0.05,
        maximum=1.0,
    ),
    "halo_alert_tps_fraction": Option(
        "float", 0.5, "Alert when an engine's generation speed (llama-server's predicted tokens/s) stays below "
        "this fraction of the host's last bench tg figure.", minimum=0.01, maximum=1.0,
    ),
    "halo_alert_fault_window_s": Option(
        "int", 900, "An amdgpu fault (page fault, MES timeout, GPU reset, ring timeout) logged within this many "
        "seconds fires the faults alert.", minimum=10, maximum=604800,
    ),
    "halo_exporter_bind": Option(
        "str", None, "Address this host's node exporter listens on when the inventory has a monitor host "
        "(default: halo_bind; beyond loopback it needs halo_exporter_password, or halo_allow_unauthenticated).",
        nullable=True, check=validators.check_bind,
    ),
    "halo_exporter_port": Option("int", 9100, "TCP port of this host's node exporter.", minimum=1024,
                                 maximum=65535),
    "halo_exporter_password": Option(
        "secret", None, "Basic-auth password of this host's node exporter (user 'halofleet'); the host keeps only "
        "its bcrypt hash, the monitor the password, each in a 0600 file.", nullable=True,
        check=validators.check_api_key,
    ),
    "halo_textfile_interval_s": Option(
        "int", 60, "Seconds between two runs of halofleet's textfile collector (amdgpu faults, GTT, the engine's "
        "state).", minimum=5, maximum=3600,
    ),
}
