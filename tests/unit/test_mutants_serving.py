"""The serving plan's decisions on inputs a user gives (mutation-tested); expected units and flags are literals."""

import hashlib

import pytest

from halofleet.box import serving
from halofleet.contract import paths
from halofleet.contract.config import ConfigError, HostRefused
from halofleet.models.specs import validate

GGUF = {"kind": "file", "size": 497440, "mtime": 1795442225, "magic": "GGUF", "parent": "root 755"}
ACCOUNTS = {"users": {"root": (0, 0)}, "groups": {"root": 0, "video": 44, "render": 993}}
IDLE = {"active": "inactive", "enabled": "not-found", "listeners": []}


def config_for(**data):
    return validate("h", {"halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "cpu", **data})


def plan_for(data=None, probe=None, visible_gib=15):
    config = config_for(**(data or {}))
    probe = {"model": GGUF, "serve": IDLE, "files": {}, "accounts": ACCOUNTS, **(probe or {})}
    return serving.build_serve_plan(config, probe, visible_gib, serving.allocate_ids(config, probe["accounts"]))


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def line(unit, prefix):
    found = [text for text in unit.splitlines() if text.startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


def converged_probe(plan, **serve):
    """What the probe shows once ``plan`` was applied and its engine runs."""
    files = {plan.unit_path: sha(plan.unit), paths.SERVE_ENV: sha(plan.env)}
    state = {"active": "active", "enabled": "enabled", "listeners": [["127.0.0.1", 8080]], "stamp": plan.model_stamp,
             "port": 8080, **serve}
    return {"files": files, "serve": state}


# -- llama-server flags ----------------------------------------------------------------------------------------

def test_distro_llama_server_command_line():
    plan = plan_for({"halo_ctx": 16384, "halo_llama_batch": 4096, "halo_llama_ubatch": 1024, "halo_llama_parallel": 2,
                     "halo_port": 8081, "halo_llama_args": ["--threads", "8"]})
    assert line(plan.unit, "ExecStart=") == (
        "ExecStart=/usr/bin/llama-server --model /srv/models/tiny.gguf --host 127.0.0.1 --port 8081 -ngl 999 -fa on "
        "-c 16384 -b 4096 -ub 1024 -np 2 --threads 8")
    assert "Environment=LLAMA_ARG_LOAD_MODE=none" in plan.unit and "Environment=LLAMA_ARG_NO_MMAP=1" in plan.unit


def test_kv_cache_q8_0_sets_both_cache_types_and_f16_sets_none():
    q8 = line(plan_for({"halo_llama_kv_type": "q8_0"}).unit, "ExecStart=")
    assert q8.endswith("-np 1 --cache-type-k q8_0 --cache-type-v q8_0")
    assert "--cache-type" not in plan_for({"halo_llama_kv_type": "f16"}).unit


def test_memory_flags_reach_the_unit_as_the_plan_sizes_them():
    unit = line(plan_for({"halo_llama_kv_type_v": "q4_0", "halo_llama_kv_unified": True,
                          "halo_llama_swa_full": True}).unit, "ExecStart=")
    assert unit.endswith("-fa on -c 8192 -b 2048 -ub 512 -np 1 --cache-type-k f16 --cache-type-v q4_0 --kv-unified "
                         "--swa-full")
    off = line(plan_for({"halo_llama_flash_attn": "off"}).unit, "ExecStart=")
    assert " -fa off " in off and " -fa on " not in off


def test_distro_packages_per_backend():
    assert plan_for().packages == ["curl", "llama.cpp-tools"]
    assert plan_for({"halo_llama_backend": "vulkan"}).packages == ["curl", "llama.cpp-tools", "libggml0-backend-vulkan"]
    assert plan_for({"halo_llama_backend": "hip"}).packages == ["curl", "llama.cpp-tools", "libggml0-backend-hip"]


def test_distro_unit_runs_as_the_service_user_with_the_memory_cap():
    plan = plan_for({"halo_service_user": "llm", "halo_start_timeout": 1200}, visible_gib=125)
    assert (plan.engine, plan.flavour, plan.unit_path, plan.stale_unit_path) == (
        "llama-server", "distro", paths.SERVE_UNIT, paths.SERVE_QUADLET)
    for text in ("User=llm", "Group=llm", "MemoryMax=121G", "TimeoutStartSec=1200",
                 "EnvironmentFile=/etc/halofleet/serve.env", "curl -fsS -o /dev/null --max-time 5 "
                 "http://127.0.0.1:8080/health;"):
        assert text in plan.unit
    assert plan.image is None and plan.image_present is False


# -- containers ------------------------------------------------------------------------------------------------

def test_vllm_quadlet_has_kfd_unconfined_seccomp_ipc_host_and_its_environment():
    plan = plan_for({"halo_serve": "vllm", "halo_model": "/srv/models/qwen", "halo_vllm_dtype": "bfloat16",
                     "halo_vllm_max_num_seqs": 4, "halo_vllm_args": ["--kv-cache-dtype", "fp8"]},
                    probe={"model": {"kind": "dir", "has_config": True}})
    assert (plan.engine, plan.flavour, plan.unit_path, plan.stale_unit_path) == (
        "vllm", "vllm", paths.SERVE_QUADLET, paths.SERVE_UNIT)
    unit = plan.unit.splitlines()
    for text in ("AddDevice=/dev/dri", "AddDevice=/dev/kfd", "SeccompProfile=unconfined", "PodmanArgs=--ipc=host",
                 "Volume=/srv/models:/models:ro", "Volume=/var/lib/halofleet/cache:/cache",
                 "Environment=PYTORCH_ROCM_ARCH=gfx1151", "Environment=FLASH_ATTENTION_TRITON_AMD_ENABLE=TRUE",
                 "Environment=HIP_FORCE_DEV_KERNARG=1", "Environment=MIOPEN_FIND_MODE=FAST",
                 "Environment=VLLM_ROCM_USE_AITER=0", "Environment=HOME=/cache",
                 "Environment=HF_HOME=/cache/huggingface", "Environment=VLLM_CACHE_ROOT=/cache/vllm",
                 "Environment=TRITON_CACHE_DIR=/cache/triton", "User=999", "Group=999", "GroupAdd=44",
                 "GroupAdd=993"):
        assert text in unit, text
    assert line(plan.unit, "Exec=") == (
        "Exec=vllm serve /models/qwen --host 127.0.0.1 --port 8080 --dtype bfloat16 --gpu-memory-utilization 0.9 "
        "--max-model-len 8192 --max-num-seqs 4 --kv-cache-dtype fp8")
    assert "LLAMA_ARG" not in plan.unit and "--enforce-eager" not in plan.unit
    assert plan.model_stamp == "dir:/srv/models/qwen" and plan.model_host_path == "/srv/models/qwen"
    assert plan.packages == ["curl"]


def test_optional_devices_are_marked_for_test_hosts():
    plan = plan_for({"halo_serve": "vllm", "halo_model": "org/m", "halo_devices_optional": True})
    assert "AddDevice=-/dev/dri" in plan.unit.splitlines() and "AddDevice=-/dev/kfd" in plan.unit.splitlines()
    assert "Volume=/var/lib/halofleet/cache:/cache" in plan.unit and ":/models:ro" not in plan.unit


def test_hip_toolbox_gets_kfd_and_unconfined_seccomp_vulkan_gets_neither():
    hip = plan_for({"halo_llama_source": "toolbox", "halo_llama_backend": "hip"}).unit.splitlines()
    assert "AddDevice=/dev/kfd" in hip and "SeccompProfile=unconfined" in hip and "PodmanArgs=--ipc=host" not in hip
    vulkan = plan_for({"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan"})
    assert "AddDevice=/dev/dri" in vulkan.unit.splitlines()
    assert "kfd" not in vulkan.unit and "Seccomp" not in vulkan.unit
    assert "Environment=LLAMA_ARG_LOAD_MODE=none" in vulkan.unit and "Environment=LLAMA_ARG_NO_MMAP=1" in vulkan.unit
    assert line(vulkan.unit, "Exec=") == (
        "Exec=llama-server --model /models/tiny.gguf --host 127.0.0.1 --port 8080 -ngl 999 -fa on -c 8192 -b 2048 "
        "-ub 512 -np 1")
    assert vulkan.packages == ["curl"] and vulkan.flavour == "toolbox"


def test_image_pinned_by_digest_gives_no_warning():
    image = "docker.io/kyuz0/amd-strix-halo-toolboxes@sha256:" + "b" * 64
    plan = plan_for({"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan", "halo_image": image})
    assert plan.image == image and plan.warnings == []
    unpinned = plan_for({"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan"})
    assert unpinned.warnings == [
        "image docker.io/kyuz0/amd-strix-halo-toolboxes:vulkan-radv is not pinned by digest (name@sha256:...)"]


def test_engine_image_per_engine():
    assert serving.engine_image(config_for(halo_serve="vllm", halo_model="org/m")) == \
        "docker.io/kyuz0/vllm-therock-gfx1151:stable"
    assert serving.engine_image(config_for(halo_serve="vllm", halo_model="org/m", halo_image="localhost/v/l:1")) == \
        "localhost/v/l:1"
    assert serving.engine_image(config_for(halo_llama_source="toolbox", halo_llama_backend="hip")) == \
        "docker.io/kyuz0/amd-strix-halo-toolboxes:rocm-10.0"
    assert serving.engine_image(config_for()) is None
    assert serving.engine_image(config_for(halo_serve="none")) is None


# -- restart / start decisions ---------------------------------------------------------------------------------

def test_converged_running_enabled_engine_is_left_alone():
    first = plan_for()
    again = plan_for(probe=converged_probe(first))
    assert (again.restart, again.start) == (False, False)


def test_running_but_disabled_engine_is_started_so_it_gets_enabled():
    first = plan_for()
    again = plan_for(probe=converged_probe(first, enabled="disabled"))
    assert (again.restart, again.start) == (False, True)


def test_a_quadlet_engine_reports_generated_and_counts_as_enabled():
    data = {"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan"}
    first = plan_for(data)
    again = plan_for(data, probe=converged_probe(first, enabled="generated"))
    assert (again.restart, again.start) == (False, False)


def test_stopped_engine_is_started():
    first = plan_for()
    again = plan_for(probe=converged_probe(first, active="failed", listeners=[]))
    assert (again.restart, again.start) == (False, True)


def test_flavour_switch_restarts_even_if_the_new_unit_is_already_in_place():
    data = {"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan"}
    first = plan_for(data)
    probe = converged_probe(first)
    probe["files"][paths.SERVE_UNIT] = "0" * 64  # the distro flavour's unit is still there
    switched = plan_for(data, probe=probe)
    assert switched.restart and not switched.start
    assert switched.stale_unit_path == paths.SERVE_UNIT


@pytest.mark.parametrize("what", ["unit", "env", "stamp"])
def test_any_change_restarts(what):
    first = plan_for()
    probe = converged_probe(first)
    if what == "stamp":
        probe["serve"]["stamp"] = "file:/srv/models/tiny.gguf:1:2"
    else:
        probe["files"][first.unit_path if what == "unit" else paths.SERVE_ENV] = "f" * 64
    again = plan_for(probe=probe)
    assert (again.restart, again.start) == (True, False)


# -- ports, urls, warnings -------------------------------------------------------------------------------------

@pytest.mark.parametrize("bind, url", [("127.0.0.1", "http://127.0.0.1:8080"), ("0.0.0.0", "http://127.0.0.1:8080"),
                                       ("::", "http://[::1]:8080"), ("fd00::5", "http://[fd00::5]:8080"),
                                       ("10.0.0.5", "http://10.0.0.5:8080")])
def test_urls(bind, url):
    plan = plan_for({"halo_bind": bind, "halo_api_key": "k" * 16})
    assert plan.url == url
    assert f"HALO_URL={url}" in plan.conf.splitlines()


def test_conf_names_engine_flavour_and_service():
    conf = plan_for({"halo_serve": "vllm", "halo_model": "org/m"}).conf.splitlines()
    assert "HALO_ENGINE=vllm" in conf and "HALO_FLAVOUR=vllm" in conf and "HALO_SERVICE=halo-serve.service" in conf


def test_api_key_lands_under_the_engine_s_variable():
    key = "k" * 16
    assert f"LLAMA_API_KEY={key}" in plan_for({"halo_api_key": key}).env.splitlines()
    vllm = plan_for({"halo_serve": "vllm", "halo_model": "org/m", "halo_api_key": key})
    assert f"VLLM_API_KEY={key}" in vllm.env.splitlines() and key not in vllm.unit
    assert "API_KEY" not in plan_for().env


def test_exposed_without_key_warns_with_address_and_port():
    plan = plan_for({"halo_bind": "10.0.0.5", "halo_port": 9000, "halo_allow_unauthenticated": True})
    assert plan.warnings[0].startswith("the API on 10.0.0.5:9000 is reachable beyond this host without an API key")
    assert plan_for({"halo_bind": "::1"}).warnings == []


@pytest.mark.parametrize("bind, listener, taken", [
    ("127.0.0.1", ["127.0.0.1", 8080], True),
    ("127.0.0.1", ["0.0.0.0", 8080], True),
    ("127.0.0.1", ["::", 8080], True),
    ("0.0.0.0", ["10.0.0.5", 8080], True),
    ("127.0.0.1", ["10.0.0.5", 8080], False),
    ("127.0.0.1", ["127.0.0.1", 8081], False),
    ("10.0.0.5", ["10.0.0.6", 8080], False),
])
def test_port_conflicts(bind, listener, taken):
    probe = {"serve": {**IDLE, "listeners": [listener]}}
    data = {"halo_bind": bind, "halo_api_key": "k" * 16}
    if taken:
        with pytest.raises(HostRefused) as error:
            plan_for(data, probe=probe)
        assert str(error.value) == (f"host 'h': port 8080 is already in use on {listener[0]} by another program "
                                    "(choose another halo_port or stop that program)")
    else:
        assert plan_for(data, probe=probe) is not None


@pytest.mark.parametrize("state", ["active", "activating", "reloading", "deactivating"])
def test_our_own_engine_holding_the_port_is_no_conflict(state):
    serve = {"active": state, "enabled": "enabled", "listeners": [["127.0.0.1", 8080]], "stamp": None}
    assert plan_for(probe={"serve": serve}).restart
    assert plan_for(probe={"serve": {**serve, "port": 8080}}).restart


@pytest.mark.parametrize("state", ["inactive", "failed", "unknown"])
def test_a_stopped_engine_cannot_be_the_port_holder(state):
    serve = {"active": state, "enabled": "enabled", "listeners": [["127.0.0.1", 8080]], "port": 8080}
    with pytest.raises(HostRefused, match="port 8080 is already in use"):
        plan_for(probe={"serve": serve})


# -- memory cap ------------------------------------------------------------------------------------------------

def test_memory_cap_defaults_to_ram_minus_4_gib_and_at_least_1():
    assert serving.memory_max_gib(config_for(), 128) == 124
    assert serving.memory_max_gib(config_for(), 5) == 1
    assert serving.memory_max_gib(config_for(), 4) == 1
    assert serving.memory_max_gib(config_for(halo_memory_max_gib=127), 128) == 127
    with pytest.raises(ConfigError) as error:
        serving.memory_max_gib(config_for(halo_memory_max_gib=128), 128)
    assert str(error.value) == ("host 'h': halo_memory_max_gib=128 is invalid: must be below the 128 GiB of RAM the "
                                "host sees (MemoryMax below RAM)")


# -- models ----------------------------------------------------------------------------------------------------

def test_pushed_model_path_stamp_and_digest(tmp_path):
    local = tmp_path / "tiny.gguf"
    local.write_bytes(b"GGUF" + b"\0" * 12)
    digest = "6f7d30a097a9638a7ed1ed7eabd78eff291d1cf66280c643efac4f3a6dc47543"  # `sha256sum` of these 16 bytes
    assert serving.local_sha256(str(local)) == digest
    data = {"halo_model": str(local), "halo_model_push": True, "halo_model_dir": "/srv/pushed"}
    config = config_for(**data)
    assert serving.pushed_model_path(config) == "/srv/pushed/tiny.gguf"
    assert serving.probe_args(config) == {"model_path": "/srv/pushed/tiny.gguf", "hash_model": True}
    plan = plan_for(data, probe={"model": {"kind": "missing", "sha256": "e" * 64}})
    assert (plan.model_host_path, plan.model_push_source, plan.model_push_sha256, plan.model_stamp) == (
        "/srv/pushed/tiny.gguf", str(local), digest, f"sha256:{digest}")
    assert plan.model_host_sha256 == "e" * 64
    assert "--model /srv/pushed/tiny.gguf " in plan.unit
    assert plan_for({**data, "halo_model_sha256": digest}).model_stamp == f"sha256:{digest}"
    with pytest.raises(ConfigError) as error:
        plan_for({**data, "halo_model_sha256": "0" * 64})
    assert str(error.value) == (f"host 'h': halo_model_sha256='{'0' * 64}' is invalid: the local file {local} has "
                                f"SHA-256 {digest}: it is corrupt or a different model")


def test_probe_args_per_model_kind():
    assert serving.probe_args(config_for()) == {"model_path": "/srv/models/tiny.gguf", "hash_model": False}
    assert serving.probe_args(config_for(halo_model_sha256="a" * 64)) == {
        "model_path": "/srv/models/tiny.gguf", "hash_model": True}
    assert serving.probe_args(config_for(halo_serve="vllm", halo_model="org/m", halo_image="localhost/v/l:1")) == {
        "image": "localhost/v/l:1"}
    assert serving.probe_args(config_for(halo_serve="none")) == {}
    assert serving.probe_args(validate("h", {"halo_model": None}, serving=False)) == {}


def test_host_model_stamps():
    assert plan_for().model_stamp == "file:/srv/models/tiny.gguf:497440:1795442225"
    plan = plan_for({"halo_serve": "vllm", "halo_model": "Qwen/Qwen3-8B"}, probe={"model": {"kind": "none"}})
    assert (plan.model_stamp, plan.model_host_path) == ("hf:Qwen/Qwen3-8B", None)
    assert line(plan.unit, "Exec=").startswith("Exec=vllm serve Qwen/Qwen3-8B --host")
    assert "/models:ro" not in plan.unit


@pytest.mark.parametrize("model, message", [
    ({"kind": "missing"}, "model /srv/models/tiny.gguf does not exist on the host (halo_model)"),
    ({"kind": "none"}, "model /srv/models/tiny.gguf does not exist on the host (halo_model)"),
    ({"kind": "dir"}, "model /srv/models/tiny.gguf is not a file (llama-server needs one GGUF file)"),
    ({**GGUF, "magic": "GGU"}, "model /srv/models/tiny.gguf is not a GGUF file (it does not start with 'GGUF')"),
])
def test_llama_server_model_refusals(model, message):
    with pytest.raises(HostRefused) as error:
        plan_for(probe={"model": model})
    assert str(error.value) == f"host 'h': {message}"


def test_model_digest_on_the_host():
    digest = "d" * 64
    assert plan_for({"halo_model_sha256": digest}, probe={"model": {**GGUF, "sha256": digest}}) is not None
    with pytest.raises(HostRefused) as error:
        plan_for({"halo_model_sha256": digest}, probe={"model": {**GGUF, "sha256": "c" * 64}})
    assert str(error.value) == (f"host 'h': model /srv/models/tiny.gguf has SHA-256 {'c' * 64}, not "
                                "halo_model_sha256: corrupt or replaced")


def test_vllm_model_directory_needs_config_json_and_a_file_is_fine():
    data = {"halo_serve": "vllm", "halo_model": "/srv/models/qwen"}
    with pytest.raises(HostRefused) as error:
        plan_for(data, probe={"model": {"kind": "dir"}})
    assert str(error.value) == ("host 'h': model directory /srv/models/qwen has no config.json (not a HF model dir)")
    plan = plan_for(data, probe={"model": {**GGUF, "magic": "XXXX"}})
    assert plan.model_stamp == "file:/srv/models/qwen:497440:1795442225"
    assert "Volume=/srv/models:/models:ro" in plan.unit.splitlines()


# -- ids -------------------------------------------------------------------------------------------------------

def test_ids_for_a_user_whose_group_exists_already():
    ids = serving.allocate_ids(config_for(), {"users": {}, "groups": {"video": 44, "render": 993, "halo": 500}})
    assert (ids.uid, ids.gid, ids.video_gid, ids.render_gid, ids.new_user, ids.new_groups) == (
        999, 500, 44, 993, True, {})


def test_ids_skip_every_taken_uid_and_gid():
    accounts = {"users": {"a": (999, 5), "b": (997, 5)}, "groups": {"c": 998, "video": 44, "render": 995}}
    ids = serving.allocate_ids(config_for(), accounts)
    assert (ids.uid, ids.gid, ids.new_groups) == (996, 996, {"halo": 996})


def test_ids_when_accounts_are_unknown():
    ids = serving.allocate_ids(config_for(), {"users": None, "groups": None})
    assert (ids.video_gid, ids.render_gid, ids.uid, ids.gid) == (999, 998, 997, 997)
    assert ids.new_groups == {"video": 999, "render": 998, "halo": 997}


def test_no_free_system_id_is_a_refusal():
    taken = {f"u{n}": (n, n) for n in range(100, 1000)}
    with pytest.raises(HostRefused) as error:  # 99 is no system id to hand out
        serving.allocate_ids(config_for(), {"users": taken, "groups": {"video": 1, "render": 2}})
    assert str(error.value) == "host 'h': no free system uid/gid between 100 and 999 for the service account"
    almost = {f"u{n}": (n, n) for n in range(101, 1000)}
    assert serving.allocate_ids(config_for(), {"users": almost, "groups": {"video": 1, "render": 2}}).uid == 100


def test_serve_none_has_no_plan():
    config = validate("h", {"halo_serve": "none"})
    assert serving.build_serve_plan(config, {}, 15, serving.allocate_ids(config, {})) is None
