"""The serving plan (pure): ids, units, restart decisions, ports, memory cap."""

import hashlib

import pytest

from halofleet.box import serving
from halofleet.contract import paths
from halofleet.contract.config import ConfigError, HostRefused
from halofleet.models.specs import validate

MODEL = {"kind": "file", "size": 497440, "mtime": 1795442225, "magic": "GGUF", "parent": "root 755"}
ACCOUNTS = {"users": {"root": (0, 0), "daemon": (1, 1)}, "groups": {"root": 0, "video": 44, "daemon": 1}}


def plan_for(data=None, probe=None, visible_gib=15):
    config = validate("h", {"halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "cpu", **(data or {})})
    probe = {"model": MODEL, "serve": {"active": "inactive", "enabled": "not-found", "listeners": []}, "files": {},
             "accounts": ACCOUNTS, **(probe or {})}
    ids = serving.allocate_ids(config, probe["accounts"])
    return serving.build_serve_plan(config, probe, visible_gib, ids)


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def test_new_service_user_and_render_group_get_the_highest_free_system_ids():
    config = validate("h", {"halo_serve": "none"})
    ids = serving.allocate_ids(config, {"users": {"root": (0, 0), "x": (999, 999)}, "groups": {"video": 44, "x": 999}})
    assert (ids.render_gid, ids.uid, ids.gid, ids.video_gid) == (998, 997, 997, 44)
    assert ids.new_user and ids.new_groups == {"render": 998, "halo": 997}


def test_existing_service_user_keeps_its_ids():
    config = validate("h", {"halo_serve": "none"})
    ids = serving.allocate_ids(config, {"users": {"halo": (990, 985)}, "groups": {"video": 44, "render": 991}})
    assert (ids.uid, ids.gid, ids.new_user, ids.new_groups) == (990, 985, False, {})


def test_fresh_host_installs_and_restarts():
    plan = plan_for()
    assert plan.flavour == "distro" and plan.unit_path == paths.SERVE_UNIT
    assert plan.packages == ["curl", "llama.cpp-tools"]
    assert plan.restart and not plan.start
    assert "MemoryMax=11G" in plan.unit and "User=halo" in plan.unit


def test_converged_running_host_needs_nothing_and_a_stopped_one_is_started():
    first = plan_for()
    files = {paths.SERVE_UNIT: sha(first.unit), paths.SERVE_ENV: sha(first.env)}
    running = {"active": "active", "enabled": "enabled", "listeners": [["127.0.0.1", 8080]],
               "stamp": first.model_stamp}
    again = plan_for(probe={"files": files, "serve": running})
    assert not again.restart and not again.start
    stopped = plan_for(probe={"files": files, "serve": {**running, "active": "inactive", "listeners": []}})
    assert stopped.start and not stopped.restart


@pytest.mark.parametrize("probe_change", [
    {"model": {**MODEL, "mtime": 1795442999}},  # the model file was replaced
    {"files_env": "other"},  # the environment (API key) changed
])
def test_model_or_environment_change_restarts(probe_change):
    first = plan_for()
    env_sha = sha("other") if "files_env" in probe_change else sha(first.env)
    files = {paths.SERVE_UNIT: sha(first.unit), paths.SERVE_ENV: env_sha}
    running = {"active": "active", "enabled": "enabled", "listeners": [], "stamp": first.model_stamp}
    probe = {"files": files, "serve": running}
    if "model" in probe_change:
        probe["model"] = probe_change["model"]
    assert plan_for(probe=probe).restart


def test_toolbox_unit_uses_numeric_ids_devices_and_the_default_image():
    plan = plan_for({"halo_llama_source": "toolbox", "halo_llama_backend": "hip"})
    assert plan.unit_path == paths.SERVE_QUADLET and plan.stale_unit_path == paths.SERVE_UNIT
    for line in ("Image=docker.io/kyuz0/amd-strix-halo-toolboxes:rocm-10.0", "AddDevice=/dev/kfd",
                 "AddDevice=/dev/dri", "GroupAdd=44", "SeccompProfile=unconfined", "Volume=/srv/models:/models:ro",
                 "Exec=llama-server --model /models/tiny.gguf"):
        assert line in plan.unit
    assert any("not pinned by digest" in warning for warning in plan.warnings)


def test_vulkan_toolbox_gets_no_kfd_and_keeps_seccomp():
    plan = plan_for({"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan"})
    assert "/dev/kfd" not in plan.unit and "SeccompProfile" not in plan.unit


def test_vllm_unit_flags_environment_and_cache():
    digest = "docker.io/kyuz0/vllm-therock-gfx1151@sha256:" + "a" * 64
    plan = plan_for({"halo_serve": "vllm", "halo_model": "Qwen/Qwen3-8B", "halo_image": digest,
                     "halo_vllm_gpu_memory_utilization": 0.85, "halo_vllm_enforce_eager": True})
    assert "Exec=vllm serve Qwen/Qwen3-8B --host 127.0.0.1 --port 8080 --dtype auto --gpu-memory-utilization 0.85 " \
           "--max-model-len 8192 --max-num-seqs 8 --enforce-eager" in plan.unit
    assert "Environment=PYTORCH_ROCM_ARCH=gfx1151" in plan.unit and "PodmanArgs=--ipc=host" in plan.unit
    assert "HSA_OVERRIDE_GFX_VERSION" not in plan.unit
    assert f"Volume={paths.SERVE_CACHE}:/cache" in plan.unit
    assert plan.model_stamp == "hf:Qwen/Qwen3-8B" and plan.warnings == []


def test_api_key_goes_to_the_environment_file_only():
    key = "sk-serving-unit-test-0123456789"
    plan = plan_for({"halo_api_key": key, "halo_bind": "0.0.0.0"})
    assert plan.env.strip().endswith(f"LLAMA_API_KEY={key}")
    assert key not in plan.unit and key not in plan.conf
    assert plan.url == "http://127.0.0.1:8080" and plan.warnings == []


def test_listening_beyond_loopback_without_a_key_is_refused_unless_allowed():
    with pytest.raises(ConfigError, match="listening beyond loopback needs an API key"):
        plan_for({"halo_bind": "::"})
    plan = plan_for({"halo_bind": "::", "halo_allow_unauthenticated": True})
    assert plan.url == "http://[::1]:8080"
    assert any("without an API key" in warning for warning in plan.warnings)


def test_port_taken_on_a_wildcard_address_is_refused():
    with pytest.raises(HostRefused, match="port 8080 is already in use on ::"):
        plan_for(probe={"serve": {"active": "inactive", "listeners": [["::", 8080]]}})


def test_memory_cap_must_stay_below_ram():
    assert "MemoryMax=12G" in plan_for({"halo_memory_max_gib": 12}).unit
    with pytest.raises(ConfigError, match="must be below the 15 GiB"):
        plan_for({"halo_memory_max_gib": 15})


def test_port_held_by_our_own_unit_while_it_starts_is_not_a_conflict():
    starting = {"active": "activating", "enabled": "enabled", "listeners": [["127.0.0.1", 8080]], "stamp": None}
    plan = plan_for(probe={"serve": starting})
    assert plan.restart  # and the restart waits for it to answer


def test_moving_to_a_port_another_program_holds_is_refused_while_our_engine_runs_elsewhere():
    ours_on_8080 = {"active": "active", "enabled": "enabled", "port": 8080,
                    "listeners": [["127.0.0.1", 8080], ["127.0.0.1", 9000]], "stamp": None}
    with pytest.raises(HostRefused, match="port 9000 is already in use on 127.0.0.1"):
        plan_for({"halo_port": 9000}, probe={"serve": ours_on_8080})
    assert plan_for({"halo_port": 8080}, probe={"serve": ours_on_8080}) is not None


def test_container_engines_have_their_image_probed_and_pulled_only_when_missing():
    vllm = {"halo_serve": "vllm", "halo_model": "org/m"}
    config = validate("h", {**vllm})
    assert serving.probe_args(config)["image"] == "docker.io/kyuz0/vllm-therock-gfx1151:stable"
    assert "image" not in serving.probe_args(validate("h", {"halo_model": "/srv/models/tiny.gguf"}))
    absent = plan_for(vllm)
    assert absent.image == "docker.io/kyuz0/vllm-therock-gfx1151:stable" and not absent.image_present
    assert plan_for(vllm, probe={"image": {"runtime": True, "present": True}}).image_present
    toolbox = plan_for({"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan"})
    assert toolbox.image == "docker.io/kyuz0/amd-strix-halo-toolboxes:vulkan-radv"
    assert plan_for().image is None  # the distro's llama-server runs no container


def test_probe_reports_the_image_only_when_asked():
    from halofleet.facts.probe import PROBE_MARK, HostProbe, parse_probe

    assert f"{PROBE_MARK}image" in HostProbe().command(image="localhost/x:1")
    assert f"{PROBE_MARK}image" not in HostProbe().command()
    assert parse_probe([f"{PROBE_MARK}image", "@present"])["image"] == {"runtime": True, "present": True}
    assert "image" not in parse_probe([])
