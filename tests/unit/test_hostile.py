"""
Hostile values past the contract: what the operations and templates do with them (quoted, or refused before a
command), and property tests of the validators, the unit quoting and the cmdline merge.
"""

from __future__ import annotations

import re
import shlex
from itertools import islice

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyinfra.api import OperationError

from halofleet.box import cmdline
from halofleet.contract import policy, validators
from halofleet.contract.config import OPTIONS, ConfigError, option_value
from halofleet.contract.templating import render
from halofleet.facts.probe import parse_probe
from halofleet.operations import halo_rocm, halo_serve

HOSTILE = ["evil $(touch PWNED);x.gguf", "a'b\"c", "%n%h", "$HOME ${X} $$", "--host 0.0.0.0", "x\\y", ";", "",
           "\t tab", "`id`", "\u00e9\u00df"]


def systemd_words(line: str) -> list[str]:
    """
    The arguments systemd passes for an ExecStart= value (``systemd.service(5)`` "Command lines"): specifiers
    first (only ``%%`` allowed here), then words split on whitespace with "..."/'...' quoting and C escapes,
    then variables (only ``$$`` allowed here). Raises on any expansion: our values must never expand.
    """
    if re.search(r"%[^%]", line.replace("%%", "")):
        raise AssertionError(f"a specifier would expand in {line!r}")
    line = line.replace("%%", "%")
    words, i = [], 0
    while i < len(line):
        if line[i].isspace():
            i += 1
            continue
        word, quote = [], None
        while i < len(line) and (quote or not line[i].isspace()):
            char = line[i]
            if char == "\\" and quote != "'":
                i += 1
                word.append({"n": "\n", "t": "\t"}.get(line[i], line[i]))
            elif char in "\"'" and quote in (None, char):
                quote = None if quote else char
            else:
                word.append(char)
            i += 1
        assert quote is None, f"unterminated quote in {line!r}"
        words.append("".join(word))
    result = []
    for word in words:
        if re.search(r"\$[^$]", word.replace("$$", "")):
            raise AssertionError(f"a variable would expand in {word!r}")
        result.append(word.replace("$$", "$"))
    return result


@pytest.mark.parametrize("value", HOSTILE)
def test_systemd_word_round_trips(value):
    assert systemd_words("/bin/x " + validators.systemd_word(value)) == ["/bin/x", value]


@given(st.text(alphabet=st.characters(blacklist_characters="\n\r\0", blacklist_categories=("Cs",)), max_size=40))
@settings(max_examples=120, deadline=None)
def test_systemd_word_round_trips_any_text(value):
    if any(c.isspace() and c not in " \t" for c in value):
        return  # systemd's whitespace is " \t\n\r"; other Unicode spaces are not separators (nor in our grammar)
    assert systemd_words("/bin/x " + validators.systemd_word(value)) == ["/bin/x", value]


def test_unit_files_hold_every_argument_as_one_word():
    args = ["--model", "/m/evil $(touch PWNED);x.gguf", "-c", "%h", "$HOME", "a\"b"]
    unit = render("halo-serve.service.j2", binary="/usr/bin/llama-server", exec_args=args, environment={},
                  engine="llama-server", backend="cpu",
                  user="halo", env_file="/etc/halofleet/serve.env", memory_max_gib=8, start_timeout=900,
                  health_url="http://127.0.0.1:8080/health")
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert systemd_words(line.removeprefix("ExecStart=")) == ["/usr/bin/llama-server", *args]
    quadlet = render("halo-serve.container.j2", image="docker.io/a/b:c", command=["llama-server", *args],
                     ids=type("Ids", (), {"uid": 1, "gid": 1, "video_gid": 2, "render_gid": 3})(), devices=[],
                     seccomp_unconfined=False, ipc_host=False, volumes=[], environment={}, engine="llama-server",
                     user="halo", env_file="/e", memory_max_gib=8, start_timeout=900, health_url="http://x/health",
                     backend="cpu")
    line = next(line for line in quadlet.splitlines() if line.startswith("Exec="))
    assert systemd_words(line.removeprefix("Exec=")) == ["llama-server", *args]


def shell_words(script: str) -> list[str]:
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def test_model_push_quotes_a_hostile_path_and_owner():
    path = "/srv/evil $(touch PWNED);x/m 'q'.gguf"
    commands = list(halo_serve.model_file._inner(path=path, source="m.gguf", owner="halo", source_sha256="aa"))
    outer = shlex.split(commands[-1].get_raw_value())
    assert outer[:2] == ["sh", "-c"] and len(outer) == 3
    words = shell_words(outer[2])
    assert path in words and "$(touch" not in words and "PWNED);x/m" not in words
    assert shlex.split(commands[0].get_raw_value()) == ["mkdir", "-p", "/srv/evil $(touch PWNED);x"]


def test_key_url_is_quoted_everywhere_in_the_fetch_script():
    url = "https://mirror.example/k.asc?a=1&b=(2);c"
    commands = list(islice(halo_rocm.repository._inner(url="https://mirror.example/rocm", suite="noble",
                                                       key_url=url, current={}), 2))  # mkdir, fetch
    script = shlex.split(commands[1].get_raw_value())[2]
    words = shell_words(script)
    assert words.count(url) == 2  # curl and wget
    assert f"halofleet: could not fetch the ROCm signing key from {url}" in words


@pytest.mark.parametrize("kwargs, message", [
    ({"key_url": "https://x/'$(touch PWNED)'"}, "refusing ROCm repository key URL"),
    ({"url": "https://x/rocm noble"}, "refusing ROCm repository URL"),
    ({"suite": "noble evil-suite"}, "refusing ROCm repository suite 'noble evil-suite'"),
])
def test_repository_refuses_what_the_contract_refuses(kwargs, message):
    args = {"url": "https://x/rocm", "suite": "noble", "key_url": None, "current": {}, **kwargs}
    with pytest.raises(OperationError, match=re.escape(message)):
        next(halo_rocm.repository._inner(**args))


@pytest.mark.parametrize("kwargs, message", [
    ({"packages": ["-oDPkg::Pre-Invoke::=touch /PWNED"]}, "refusing ROCm packages"),
    ({"version": "7.2.1 "}, "refusing ROCm release '7.2.1 '"),
    ({"version": "7.2.1;reboot"}, "refusing ROCm release"),
])
def test_release_refuses_options_and_odd_versions(kwargs, message):
    args = {"version": "7.2.1", "packages": ["rocm"], "installed": None, **kwargs}
    with pytest.raises(OperationError, match=re.escape(message)):
        list(halo_rocm.release._inner(**args))


def test_apt_install_ends_options_before_the_names():
    command = next(iter(halo_rocm.release._inner(version="7.2.1", packages=["rocm=7.2.1-1"], installed=None)))
    words = shlex.split(command.get_raw_value())
    assert words[words.index("--"):] == ["--", "rocm-core", "rocm=7.2.1-1"]


# -- properties of the grammars ------------------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(st.one_of(TEXT, st.from_regex(r"/[A-Za-z0-9._+@,=%$: -]{1,20}(/[A-Za-z0-9._-]{1,10}){0,3}", fullmatch=True)))
@settings(max_examples=120, deadline=None)
def test_an_accepted_path_needs_no_quoting_anywhere(value):
    if validators.check_absolute_path(value) is None:
        assert shlex.quote(value) == value
        assert validators.systemd_word(value) == value
        assert validators.check_unit_value(value) is None
        assert ".." not in value.split("/") and "//" not in value


@given(TEXT)
@settings(max_examples=120, deadline=None)
def test_an_accepted_bind_is_a_plain_address(value):
    if validators.check_bind(value) is None:
        assert "%" not in value and shlex.quote(value) == value


@given(st.one_of(TEXT, st.from_regex(r"(10|172|192|100|127)\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True),
                 st.from_regex(r"f[cde][0-9a-f]{2}::[0-9a-f%$ ]{1,6}", fullmatch=True)))
@settings(max_examples=150, deadline=None)
def test_an_accepted_rpc_address_is_one_plain_private_address(value):
    import ipaddress

    if validators.check_rpc_address(value) is None:
        address = ipaddress.ip_address(value)
        assert not address.is_unspecified and (address.is_loopback or address.is_private)
        assert shlex.quote(value) == value and validators.systemd_word(value) == value


@given(st.one_of(TEXT, st.from_regex(r"[A-Za-z][A-Za-z0-9_,;%$ /-]{0,12}", fullmatch=True)))
@settings(max_examples=150, deadline=None)
def test_an_accepted_rpc_device_is_one_plain_word_of_device_names(value):
    if validators.check_rpc_device(value) is None:
        assert validators.systemd_word(value) == value and shlex.quote(value) == value
        assert all(part and not part.startswith("-") for part in value.split(","))


@given(st.lists(TEXT, max_size=4))
@settings(max_examples=150, deadline=None)
def test_accepted_worker_names_cannot_break_a_unit_or_nft_comment(value):
    if value and validators.check_host_names(value) is None:
        for name in value:
            assert not any(c.isspace() or c in "%$'\"\\;#{}" for c in name)
            assert len(set(value)) == len(value)


@given(st.one_of(TEXT, st.integers(), st.floats(), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)))
@settings(max_examples=120, deadline=None)
def test_coercion_gives_a_value_or_a_config_error_and_nothing_else(value):
    for key in ("halo_gtt_gib", "halo_reboot_batch", "halo_vllm_gpu_memory_utilization", "halo_emit_gttsize",
                "halo_rpc_port", "halo_rpc_workers", "halo_tensor_split", "halo_rpc_address", "halo_rpc_device"):
        try:
            result = option_value("h", key, value)
        except ConfigError:
            continue
        option = OPTIONS[key]
        if option.minimum is not None and result is not None:
            assert option.minimum <= result <= option.maximum


@given(st.lists(TEXT, max_size=4))
@settings(max_examples=120, deadline=None)
def test_accepted_extra_args_are_plain_words_without_reserved_options(value):
    for key in ("halo_llama_args", "halo_vllm_args"):
        if validators.check_args(key, value) is None:
            for item in value:
                assert validators.systemd_word(item) in (item, f'"{item}"')
                assert item.split("=", 1)[0] not in validators.RESERVED_ARGS[key]


@given(st.lists(TEXT, max_size=6))
@settings(max_examples=100, deadline=None)
def test_accepted_packages_are_never_apt_options(value):
    if value and validators.check_packages(value) is None:
        assert all(not item.startswith("-") and shlex.quote(item) == item for item in value)


PARAM = st.one_of(
    st.sampled_from(["quiet", "splash", "amd_iommu=on", "iommu=pt", "ttm.pages_limit=1", "amdgpu.gttsize=5",
                     "amdttm.pages_limit=3", "amd-iommu=off", "console=ttyS0", "root=UUID=x"]),
    st.from_regex(r"[a-z_.-]{1,8}(=[a-z0-9]{1,4})?", fullmatch=True),
)


@given(st.lists(PARAM, max_size=8), st.sampled_from(["off", "pt"]), st.integers(1, 1024))
@settings(max_examples=120, deadline=None)
def test_cmdline_merge_keeps_the_users_params_and_each_of_ours_once(existing, iommu, gib):
    ours = [policy.IOMMU_PARAMS[iommu], f"ttm.pages_limit={gib * policy.PAGES_PER_GIB}",
            f"amdgpu.gttsize={gib * policy.MIB_PER_GIB}"]
    merged = cmdline.merge(existing, ours)
    managed = {cmdline.key(k) for k in policy.MANAGED_PARAM_KEYS}
    assert merged[-len(ours):] == ours
    assert [p for p in merged[:-len(ours)]] == [p for p in existing if cmdline.key(p) not in managed]
    assert cmdline.satisfies(merged, ours)


@given(st.lists(st.one_of(TEXT, st.sampled_from(["@@halofleet-probe rocm", "@@halofleet-probe model",
                                                  "@@halofleet-probe kfd_nodes", "@@halofleet-probe serve",
                                                  "@@halofleet-probe accounts", "@node ", "@info ", "@file x",
                                                  "@magic zz", "@listen 1:2"])), max_size=30))
@settings(max_examples=120, deadline=None)
def test_the_probe_parser_never_raises(lines):
    probe = parse_probe(lines)
    assert set(probe) >= {"os", "rocm", "model", "cwsr"}


def test_verify_cells_survive_a_health_answer_without_latency():
    from halofleet.facts.halo_serve import parse_serve_health
    from halofleet.views.verify import serving_cells

    health = parse_serve_health(["@engine llama-server distro", "@active active", "@health 200", "@models 200",
                                 "@completion 200", "@tokens 2"])
    assert serving_cells(health) == ("llama-server active, /health 200", "2 tokens")


@pytest.mark.parametrize("extra", [{}, {"halo_llama_source": "toolbox", "halo_llama_backend": "vulkan"}])
def test_unusual_but_valid_values_render_as_given(extra):
    from halofleet.box import serving
    from halofleet.models.specs import validate

    model = "/srv/models/v2.q-4/Qwen3+8B@Q4_K_M.gguf"
    config = validate("h", {"halo_model": model, "halo_llama_backend": "cpu", "halo_llama_args": ["--alias=a@b,c"],
                            **extra})
    probe = {"model": {"kind": "file", "size": 1, "mtime": 1, "magic": "GGUF"}, "serve": {}, "files": {},
             "accounts": {"users": {}, "groups": {"video": 44, "render": 993}}}
    plan = serving.build_serve_plan(config, probe, 15, serving.allocate_ids(config, probe["accounts"]))
    exec_line = next(line for line in plan.unit.splitlines() if line.startswith(("ExecStart=", "Exec=")))
    words = systemd_words(exec_line.split("=", 1)[1])
    assert words[words.index("--model") + 1] in (model, "/models/Qwen3+8B@Q4_K_M.gguf")
    assert words[-1] == "--alias=a@b,c"
    if extra:
        assert "Volume=/srv/models/v2.q-4:/models:ro" in plan.unit.splitlines()


@pytest.mark.parametrize("text", [
    '{"model": "/m.gguf", "llama_bench": [{"n_prompt": 512, "n_gen": 0}]}',  # no avg_ts
    '{"model": "/m.gguf", "model_file_bytes": "lots", "llama_bench": [{"n_gen": 128, "avg_ts": "fast"}]}',
    '{"llama_bench": [7, null, {"n_gen": 128, "avg_ts": 1e999}]}',
    '{"llama_bench": [{"n_prompt": 512, "avg_ts": [1]}], "model_file_bytes": -5}',
    '{"llama_bench": "x"}', "[]", "", "{",
])
def test_a_bench_file_without_its_fields_reads_as_unknown(text):
    from halofleet.box.bench import bench_cell, parse_bench_result

    figures = parse_bench_result(text)
    assert bench_cell(figures, 256, 215).startswith(("pp512", "-"))


def test_the_live_probe_parts_survive_garbage():
    probe = parse_probe(["@@halofleet-probe health", "@completion 200 x", "@tokens \u00b2", "@health",
                         "@@halofleet-probe bench", '{"llama_bench": [{"n_gen": 128}]}'])
    assert probe["health"]["healthy"] is False and probe["bench"].tg_tps is None


# -- halo_models ----------------------------------------------------------------------------------------------

MODEL_ENTRY_KEYS = {"name": {"url": "http://x.test/m.gguf", "sha256": "a" * 64},
                    "url": {"name": "m", "sha256": "a" * 64}, "hf": {"name": "m"},
                    "include": {"name": "m", "hf": "o/r"}, "revision": {"name": "m", "hf": "o/r"},
                    "path": {"name": "m"}, "ctx": {"name": "m", "path": "/m.gguf"},
                    "sha256": {"name": "m", "url": "http://x.test/m.gguf"}}


@pytest.mark.parametrize("key", sorted(MODEL_ENTRY_KEYS))
@pytest.mark.parametrize("value", HOSTILE + ["a\nb", "[x]", "x]\n[y", "../../etc/passwd", "/a/../b.gguf"])
def test_hostile_model_entry_values_are_refused(key, value):
    from halofleet.models.specs import validate

    entry = {**MODEL_ENTRY_KEYS[key], key: value}
    with pytest.raises(ConfigError) as error:
        validate("h", {"halo_models": [entry], "halo_llama_backend": "cpu"})
    assert "halo_models[0]" in str(error.value)


@pytest.mark.parametrize("key", ["halo_model_alias", "halo_hf_endpoint", "halo_hf_token"])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_single_model_keys_are_refused(key, value):
    with pytest.raises(ConfigError):
        option_value("h", key, value)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True))
@settings(max_examples=100, deadline=None)
def test_an_accepted_model_name_is_an_ini_section_an_exec_word_and_a_path_component(name):
    from halofleet.models import specs as models

    assert models.check_ini_value(name) is None and validators.check_file_name(name) is None
    assert validators.systemd_word(name) == name and shlex.quote(name) == name


def test_download_script_keeps_every_url_and_path_one_quoted_word():
    from halofleet.operations.halo_models import download_script

    url = "http://x.test/m.gguf?sig=a;b&c=(d)|e"
    script = download_script("/var/lib/m/a/m.gguf", url, "halo", "a" * 64, None, "/etc/halofleet/hf.header")
    curl_lines = [line for line in script.splitlines() if "-- curl " in line]
    assert curl_lines and all(shlex.quote(url) in line and f" {url} " not in line for line in curl_lines)
    assert shlex.quote(url) != url  # the URL needed quoting, and got it


# -- the gateway's keys land in haproxy.cfg: an accepted value is one plain haproxy word --------------------------

HAPROXY_SPECIAL = set(" \t#'\"\\${}")


@given(st.dictionaries(TEXT, TEXT, max_size=3))
@settings(max_examples=150, deadline=None)
def test_accepted_gateway_models_are_plain_haproxy_words(value):
    if value and validators.check_gateway_models(value) is None:
        for model, group in value.items():
            assert not HAPROXY_SPECIAL & set(model + group) and model.isprintable() and group.isascii()


@given(st.lists(TEXT, max_size=3))
@settings(max_examples=150, deadline=None)
def test_accepted_gateway_groups_are_plain_haproxy_words(value):
    if value and validators.check_gateway_groups(value) is None:
        assert all(not HAPROXY_SPECIAL & set(group) and not group.startswith(("-", ".")) for group in value)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_gateway_values_are_refused_by_the_contract(value):
    from halofleet.models.specs import validate

    base = {"halo_serve": "none", "halo_gateway": True, "halo_gateway_bind": "127.0.0.1"}
    for data in ({"halo_gateway_bind": value}, {"halo_gateway_groups": [value]},
                 {"halo_gateway_groups": ["g"], "halo_gateway_models": {value: "g"}},
                 {"halo_gateway_groups": ["g"], "halo_gateway_models": {"m": value}},
                 {"halo_gateway_port": value}, {"halo_restart_batch": value}):
        if data.get("halo_gateway_groups") == [value] and validators.HAPROXY_GROUP.fullmatch(value):
            continue
        with pytest.raises(ConfigError):
            validate("gw", {**base, **data}, serving=False)


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_backend_value_refuses_the_gateway_and_never_reaches_its_config(value):
    from halofleet.contract.config import HostRefused
    from halofleet.fleet.gateway import plan_gateway
    from halofleet.models.specs import validate

    config = validate("gw", {"halo_serve": "none", "halo_gateway": True, "halo_gateway_bind": "10.1.0.1"},
                      serving=False)
    for field in ("halo_bind", "halo_port", "halo_serve", "halo_api_key"):
        backend = {"halo_bind": "10.1.0.2", "halo_api_key": "k" * 20, field: value}
        with pytest.raises((HostRefused, ConfigError)):
            plan_gateway(config, {"fleet": [("b", backend)]})
