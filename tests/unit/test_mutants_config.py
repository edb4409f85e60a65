"""The host-data contract at its edges (mutation-tested): what a user can write in an inventory, and the message."""

import pytest

from halofleet.contract.config import ConfigError, HaloConfig, HostRefused, describe_options
from halofleet.models.specs import validate

MODEL = {"halo_model": "/srv/models/tiny.gguf"}


def ok(**data):
    return validate("h", {**MODEL, **data})


def refused(data, serving=True):
    with pytest.raises(ConfigError) as error:
        validate("h", {**MODEL, **data}, serving=serving)
    return str(error.value)


# -- ints -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("port", [1024, 65535, "1024", "65535"])
def test_port_bounds_are_allowed(port):
    assert ok(halo_port=port).port == int(port)


@pytest.mark.parametrize("port, shown", [(1023, "1023"), (65536, "65536"), (0, "0"), (-1, "-1"), ("-8080", "'-8080'")])
def test_port_outside_bounds_is_refused(port, shown):
    assert refused({"halo_port": port}) == f"host 'h': halo_port={shown} is invalid: must be between 1024 and 65535"


@pytest.mark.parametrize("port", ["--5", "-", "\u00b2", "8080.0", "", " 8080 ", 8080.0, [8080], False])
def test_port_that_is_no_whole_number_is_refused(port):
    assert refused({"halo_port": port}) == f"host 'h': halo_port={port!r} is invalid: must be a whole number"


def test_nullable_int_and_its_bounds():
    assert ok(halo_gtt_gib=None).gtt_gib is None
    assert ok(halo_gtt_gib=1).gtt_gib == 1 and ok(halo_gtt_gib=1024).gtt_gib == 1024
    assert refused({"halo_gtt_gib": 1025}).endswith("must be between 1 and 1024")
    assert refused({"halo_os_reserve_gib": 3}).endswith("must be between 4 and 1024")
    assert ok(halo_os_reserve_gib=4).os_reserve_gib == 4


def test_null_is_refused_where_the_key_is_not_nullable():
    assert refused({"halo_port": None}) == "host 'h': halo_port=None is invalid: must be set (null is not allowed)"


# -- bools, floats, lists, args ---------------------------------------------------------------------------------

@pytest.mark.parametrize("word, value", [("yes", True), ("ON", True), ("1", True), ("true", True), ("No", False),
                                         ("off", False), ("0", False), ("FALSE", False), (True, True), (False, False)])
def test_bool_words(word, value):
    assert ok(halo_emit_gttsize=word).emit_gttsize is value


@pytest.mark.parametrize("word", [1, 0, "y", ""])
def test_bool_other_values_are_refused(word):
    assert refused({"halo_emit_gttsize": word}).endswith("must be true or false")
    assert refused({"halo_allow_amdgpu_dkms": None}).endswith("must be set (null is not allowed)")


def test_emit_gttsize_null_is_the_running_kernels_choice():
    assert ok(halo_emit_gttsize=None).emit_gttsize is None


@pytest.mark.parametrize("value, parsed", [(0.05, 0.05), ("0.5", 0.5), (0.9, 0.9), (1, None), ("0.049", None)])
def test_gpu_memory_utilization_bounds(value, parsed):
    if parsed is None:
        assert refused({"halo_vllm_gpu_memory_utilization": value}).endswith("must be between 0.05 and 0.9")
    else:
        assert ok(halo_vllm_gpu_memory_utilization=value).vllm_gpu_memory_utilization == parsed


@pytest.mark.parametrize("value", [True, "lots", [0.5]])
def test_gpu_memory_utilization_must_be_a_number(value):
    assert refused({"halo_vllm_gpu_memory_utilization": value}).endswith("is invalid: must be a number")


def test_package_lists():
    assert ok(halo_rocm_packages="rocm-hip-runtime").rocm_packages == ["rocm-hip-runtime"]
    assert ok(halo_rocm_packages=("rocm-core", "rocm")).rocm_packages == ["rocm-core", "rocm"]
    for bad in ([], [""], ["a b"], [1], {"a": 1}, ["a\tb"]):
        assert refused({"halo_rocm_packages": bad}).endswith("must be a non-empty list of package names")


def test_engine_argument_lists():
    assert ok(halo_llama_args=("--threads", "8")).llama_args == ["--threads", "8"]
    assert ok(halo_llama_args=[]).llama_args == []
    for bad in ("--threads", ["--x y"], [""], ["50%"], ["$HOME"], ["a\\b"], ['"q"'], ["'q'"], ["a;b"], [3]):
        assert refused({"halo_llama_args": bad}).endswith(
            "must be a list of arguments, one word each, without spaces, quotes, '%', '$', ';' or '\\'")


# -- strings, choices, urls -------------------------------------------------------------------------------------

def test_strings_must_be_single_line_strings():
    assert refused({"halo_rocm_repo_suite": 5}).endswith("must be a string, not int")
    for bad in ("noble\rmain", "noble\0", "a\nb"):
        assert refused({"halo_rocm_repo_suite": bad}).endswith("must be a single line")


def test_choice_with_and_without_a_hint():
    assert refused({"halo_runtime": "podmn"}).endswith("must be one of podman, docker (did you mean 'podman'?)")
    assert refused({"halo_runtime": "zzz"}).endswith("must be one of podman, docker")
    assert refused({"halo_iommu": "amd_iommu=pt"}).endswith(
        "amd_iommu=pt is not a valid kernel option (AMD-Vi: Unknown option - 'pt'); use 'off' (amd_iommu=off) "
        "or 'pt' (iommu=pt)")
    assert ok(halo_iommu="pt").iommu == "pt"


def test_urls():
    assert ok(halo_rocm_repo_url="file:/srv/repo").rocm_repo_url == "file:/srv/repo"
    assert ok(halo_rocm_repo_url="http://mirror/rocm").rocm_repo_url == "http://mirror/rocm"
    assert ok(halo_rocm_repo_url="https://mirror/rocm").rocm_repo_url == "https://mirror/rocm"
    assert refused({"halo_rocm_repo_url": "mirror/rocm"}).endswith("must be an http://, https:// or file:/ URL")


def test_rocm_version_values():
    assert ok(halo_rocm_version="7.2.1").rocm_version == "7.2.1"
    assert ok(halo_rocm_version="none").rocm_version == "none"
    assert refused({"halo_rocm_version": "7.0.1"}).startswith(
        "host 'h': halo_rocm_version='7.0.1' is invalid: ROCm 7.0.1 is refused: reported gfx1151 regression")
    assert "must be 'none' or a ROCm release like 7.2.1 (X.Y or X.Y.Z)" in refused({"halo_rocm_version": "7"})


def test_rocm_key_url_null_means_the_streams_own_key():
    assert ok(halo_rocm_version="7.2.1", halo_rocm_repo_key_url=None, halo_rocm_repo_trusted=True)
    assert ok(halo_rocm_repo_key_url=None).rocm_repo_key_url is None
    assert ok(halo_rocm_version="7.2.1").rocm_repo_key_url is None  # AMD's key for the release's stream


# -- the extra checks -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["k" * 16, "A-Za-z0-9._~+/=-x", "k" * 512])
def test_api_key_lengths_16_and_512_are_allowed(key):
    assert ok(halo_api_key=key).api_key == key


@pytest.mark.parametrize("key", ["k" * 15, "k" * 513, "k" * 16 + "!", "k" * 16 + " "])
def test_api_key_refused_and_never_shown(key):
    assert refused({"halo_api_key": key}) == (
        "host 'h': halo_api_key=<redacted> is invalid: must be 16 to 512 characters from A-Z a-z 0-9 . _ ~ + / = - "
        "(no spaces, quotes or newlines)")


def test_model_dir_paths():
    assert ok(halo_model_dir="/srv/..models").model_dir == "/srv/..models"  # a name starting with '..' is fine
    for bad in ("/", "/srv/../etc", "/srv/models/..", "/..", "srv/models", "/srv/my models", "/srv/m\tx", "",
                "/srv//models"):
        assert "must be an absolute path of components made of" in refused({"halo_model_dir": bad}), bad


def test_model_path_with_dotdot_is_refused():
    assert "must be an absolute path on the host" in refused({"halo_model": "/srv/../etc/shadow"})


@pytest.mark.parametrize("user, allowed", [("halo", True), ("_svc", True), ("a" * 31, True), ("a" * 32, False),
                                           ("root", False), ("Halo", False), ("9x", False), ("-x", False),
                                           ("ha-lo_9", True)])
def test_service_user_names(user, allowed):
    if allowed:
        assert ok(halo_service_user=user).service_user == user
    else:
        assert refused({"halo_service_user": user}).endswith(
            "must be a non-root system user name ([a-z_][a-z0-9_-]*, at most 31 characters)")


def test_bind_addresses():
    key = {"halo_api_key": "k" * 16}  # beyond loopback only with a key
    assert ok(halo_bind="::", **key).bind == "::"
    assert ok(halo_bind="10.0.0.5", **key).bind == "10.0.0.5"
    assert refused({"halo_bind": "localhost"}).endswith(
        "must be an IP address to listen on, without a zone id (127.0.0.1 keeps the API on the host; 0.0.0.0 for all)")


@pytest.mark.parametrize("image, allowed", [
    ("docker.io/kyuz0/vllm-therock-gfx1151:stable", True),
    ("localhost:5000/x/y:1", True),
    ("quay.io/a/b@sha256:" + "0" * 64, True),
    ("quay.io/a/b:tag@sha256:" + "f" * 64, True),
    ("kyuz0", False),
    ("Docker.io/a/b", False),
    ("quay.io/a/b@sha256:" + "0" * 63, False),
    ("quay.io/a/b:", False),
])
def test_images(image, allowed):
    data = {"halo_serve": "vllm", "halo_model": "org/m", "halo_image": image}
    if allowed:
        assert validate("h", data).image == image
    else:
        assert refused(data).endswith(
            "must be a fully qualified image reference like docker.io/owner/name:tag or name@sha256:<64 hex>")


def test_model_sha256():
    assert ok(halo_model_sha256="0" * 64).model_sha256 == "0" * 64
    for bad in ("A" * 64, "0" * 63, "0" * 65):
        assert refused({"halo_model_sha256": bad}).endswith("must be 64 lower-case hex digits")


# -- unknown keys, errors, the config object ----------------------------------------------------------------------

def test_unknown_keys():
    assert refused({"halo_zzzzzz": 1}) == "host 'h': halo_zzzzzz is invalid: unknown key; see README 'Host data'"
    assert refused({"halo_prot": 1}) == (
        "host 'h': halo_prot is invalid: unknown key (did you mean 'halo_port'?); see README 'Host data'")
    assert ok(other_tool_key=1, halo_port=8081).port == 8081  # keys of other tools are not ours to judge


def test_errors_carry_their_parts():
    error = ConfigError("h", "halo_api_key", None, "must be set")
    assert str(error) == "host 'h': halo_api_key=None is invalid: must be set"
    assert (error.host, error.key, error.value, error.allowed) == ("h", "halo_api_key", None, "must be set")
    refusal = HostRefused("h", "why")
    assert (str(refusal), refusal.host, refusal.reason) == ("host 'h': why", "h", "why")


def test_config_attributes():
    config = ok()
    assert isinstance(config, HaloConfig) and config.host == "h" and config.port == 8080
    with pytest.raises(AttributeError, match="no_such_key"):
        config.no_such_key  # noqa: B018


# -- rules between serving keys ---------------------------------------------------------------------------------

def test_serving_rules_are_skipped_when_asked_or_not_serving():
    assert validate("h", {"halo_model": None}, serving=False).model is None
    assert validate("h", {"halo_serve": "none"}).model is None
    assert refused({"halo_model": None}) == (
        "host 'h': halo_model=None is invalid: a model is needed for halo_serve: llama-server (a path on the host, "
        "or a local file with halo_model_push: true); set halo_serve: none to prepare the host without serving")


def test_ubatch_may_equal_but_not_exceed_batch():
    assert ok(halo_llama_batch=512, halo_llama_ubatch=512).llama_ubatch == 512
    assert refused({"halo_llama_batch": 512, "halo_llama_ubatch": 513}) == (
        "host 'h': halo_llama_ubatch=513 is invalid: must not exceed halo_llama_batch (512)")


def test_toolbox_cpu_needs_an_image_and_containers_need_podman():
    toolbox = {"halo_llama_source": "toolbox", "halo_llama_backend": "cpu"}
    assert refused(toolbox) == ("host 'h': halo_image=None is invalid: the toolbox images are built for vulkan or "
                                "hip; name an image for the cpu backend")
    assert ok(**toolbox, halo_image="localhost/llama/cpu:1").image == "localhost/llama/cpu:1"
    assert ok(halo_llama_source="toolbox", halo_llama_backend="vulkan").llama_source == "toolbox"
    assert refused({"halo_llama_source": "toolbox", "halo_runtime": "docker"}) == (
        "host 'h': halo_runtime='docker' is invalid: the toolbox and vLLM images are served by podman Quadlet units; "
        "use halo_runtime: podman (or halo_llama_source: distro, which needs no container runtime)")
    assert ok(halo_runtime="docker").runtime == "docker"  # the distro llama-server needs no container


def test_pushed_model_must_be_a_local_gguf_file(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF\x03\x00")
    assert ok(halo_model=str(gguf), halo_model_push=True).model == str(gguf)
    other = tmp_path / "x.bin"
    other.write_bytes(b"GGU")
    assert refused({"halo_model": str(other), "halo_model_push": True}).endswith(
        "is invalid: not a GGUF file (it does not start with 'GGUF')")
    assert refused({"halo_model": str(tmp_path), "halo_model_push": True}).endswith(
        "is invalid: is a directory on the control machine, not a regular file (halo_model_push)")
    assert refused({"halo_model": str(tmp_path / "absent.gguf"), "halo_model_push": True}).endswith(
        "is invalid: no such file on the control machine (halo_model_push)")
    assert refused({"halo_serve": "vllm", "halo_model": str(gguf), "halo_model_push": True}).endswith(
        "halo_model_push=True is invalid: pushing is for single GGUF files (llama-server); give vLLM a host path or "
        "HF id")


def test_model_references_per_engine():
    assert validate("h", {"halo_serve": "vllm", "halo_model": "Qwen/Qwen3-8B"}).model == "Qwen/Qwen3-8B"
    assert validate("h", {"halo_serve": "vllm", "halo_model": "/srv/models/qwen"}).model == "/srv/models/qwen"
    assert refused({"halo_model": "Qwen/Qwen3-8B"}).startswith(
        "host 'h': halo_model='Qwen/Qwen3-8B' is invalid: must be an absolute path on the host (")
    assert refused({"halo_serve": "vllm", "halo_model": "Qwen"}).startswith(
        "host 'h': halo_model='Qwen' is invalid: must be an absolute path on the host or a Hugging Face id like "
        "org/name (")


def test_options_table_rows():
    rows = describe_options().splitlines()
    assert rows[:2] == ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    assert "| `halo_port` | int | `8080` | 1024..65535 | TCP port the engine listens on. |" in rows
    assert "| `halo_iommu` | choice | `'off'` | off \\| pt | IOMMU mode: 'off' (amd_iommu=off, faster, disables the " \
           "NPU) or 'pt' (iommu=pt). |" in rows
    assert "| `halo_service_user` | str | `'halo'` |  | Non-root system user that runs the engines (gets " \
           "video/render). |" in rows


def test_secret_is_redacted_only_when_set_and_only_for_secret_keys():
    assert str(ConfigError("h", "halo_api_key", "sk-abcdefghijklmnop", "x")) == \
        "host 'h': halo_api_key=<redacted> is invalid: x"
    assert str(ConfigError("h", "halo_model", "sk-abcdefghijklmnop", "x")) == \
        "host 'h': halo_model='sk-abcdefghijklmnop' is invalid: x"
    assert str(ConfigError("h", "halo_model", None, "x")) == "host 'h': halo_model=None is invalid: x"


def test_validate_checks_the_serving_rules_by_default():
    with pytest.raises(ConfigError, match="a model is needed for halo_serve: llama-server"):
        validate("h", {})


def test_an_uppercase_x_is_an_ordinary_character():
    assert ok(halo_llama_args=["--alias", "Xwin-LM"]).llama_args == ["--alias", "Xwin-LM"]
    assert ok(halo_model="/srv/models/Xwin-7B.gguf").model == "/srv/models/Xwin-7B.gguf"


def test_vllm_needs_podman():
    assert refused({"halo_serve": "vllm", "halo_model": "org/m", "halo_runtime": "docker"}) == (
        "host 'h': halo_runtime='docker' is invalid: the toolbox and vLLM images are served by podman Quadlet units; "
        "use halo_runtime: podman (or halo_llama_source: distro, which needs no container runtime)")


def test_push_refusals_name_host_key_and_value(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert refused({"halo_serve": "vllm", "halo_model": str(gguf), "halo_model_push": True}) == (
        "host 'h': halo_model_push=True is invalid: pushing is for single GGUF files (llama-server); give vLLM a host "
        "path or HF id")
    missing = str(tmp_path / "absent.gguf")
    assert refused({"halo_model": missing, "halo_model_push": True}) == (
        f"host 'h': halo_model={missing!r} is invalid: no such file on the control machine (halo_model_push)")
    other = tmp_path / "x.bin"
    other.write_bytes(b"\x7fELF")
    assert refused({"halo_model": str(other), "halo_model_push": True}) == (
        f"host 'h': halo_model={str(other)!r} is invalid: not a GGUF file (it does not start with 'GGUF')")


# -- the ROCm keys against the release's stream (mutation-tested; the corpus covers them too but is not in the
#    mutation runs, being slow) ------------------------------------------------------------------------------------

THEROCK_DIRS = "debian12, debian13, ubuntu2204, ubuntu2404, ubuntu2604"


def test_therock_suite_must_be_one_of_amds_directories():
    assert ok(halo_rocm_version="7.14.1", halo_rocm_repo_suite="ubuntu2404").rocm_repo_suite == "ubuntu2404"
    assert ok(halo_rocm_version="10.0").rocm_repo_suite is None  # from the host's os-release later
    assert refused({"halo_rocm_version": "7.14.1", "halo_rocm_repo_suite": "noble"}) == (
        f"host 'h': halo_rocm_repo_suite='noble' is invalid: ROCm 7.14.1 (TheRock) is published for {THEROCK_DIRS}")
    # the legacy stream keeps its apt suites
    assert ok(halo_rocm_version="7.2.1", halo_rocm_repo_suite="noble").rocm_repo_suite == "noble"
    assert ok(halo_rocm_repo_suite="noble").rocm_repo_suite == "noble"  # no ROCm asked for: nothing to judge


def test_therock_packages_must_be_of_the_release_series():
    assert ok(halo_rocm_version="7.14.1", halo_rocm_packages=["amdrocm7.14-gfx1151", "amdrocm-core-sdk7.14-gfx1151"])
    assert refused({"halo_rocm_version": "7.14.1", "halo_rocm_packages": ["amdrocm10.0-gfx1151"]}) == (
        "host 'h': halo_rocm_packages=['amdrocm10.0-gfx1151'] is invalid: ROCm 7.14.1 installs TheRock's per-target "
        "packages of its series, like amdrocm7.14-gfx1151 or amdrocm-core-sdk7.14-gfx1151; 'amdrocm10.0-gfx1151' "
        "is not one")
    assert "'rocm' is not one" in refused({"halo_rocm_version": "10.0.0", "halo_rocm_packages": ["rocm"]})
    assert ok(halo_rocm_version="7.2.1", halo_rocm_packages=["rocm"]).rocm_packages == ["rocm"]


def test_options_as_data_for_json():
    from halofleet.contract.config import options_as_dicts

    rows = {row["key"]: row for row in options_as_dicts()}
    assert rows["halo_port"] == {"key": "halo_port", "type": "int", "default": 8080,
                                 "doc": "TCP port the engine listens on.", "choices": None, "minimum": 1024,
                                 "maximum": 65535, "nullable": False}
    assert rows["halo_iommu"]["choices"] == ["off", "pt"] and rows["halo_gtt_gib"]["nullable"] is True
    assert list(rows)[0] == "halo_serve" and len(rows) == len(describe_options().splitlines()) - 2
