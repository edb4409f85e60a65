"""halo_models: parsing and validation of the entries, the Hub lookup (fake Hub), the models plan and router unit."""

from __future__ import annotations

import hashlib
import json
import urllib.error

import pytest

from halofleet.box import serving
from halofleet.contract import paths
from halofleet.contract.config import ConfigError, HostRefused
from halofleet.facts.probe import parse_probe
from halofleet.facts.halo_models import ModelFiles, parse_model_files
from halofleet.models import hub as hfhub
from halofleet.models import specs as models
from halofleet.models.specs import validate
from halofleet.testing.tinymodel import write_tiny_llama

A, B, C = "a" * 64, "b" * 64, "c" * 64
URL = "https://models.example/tiny/alpha.gguf"
ACCOUNTS = {"users": {"root": (0, 0)}, "groups": {"root": 0, "video": 44}}


def parse(*entries, **extra):
    return validate("h", {"halo_models": list(entries), "halo_llama_backend": "cpu", **extra}).models


def refused(entries, **extra) -> str:
    with pytest.raises(ConfigError) as error:
        validate("h", {"halo_models": entries, "halo_llama_backend": "cpu", **extra})
    return str(error.value)


# -- parsing ----------------------------------------------------------------------------------------------------

def test_a_url_entry_lands_in_its_own_directory_with_its_digest():
    (spec,) = parse({"name": "alpha", "url": URL, "sha256": A, "ctx": "4096", "keep_loaded": "no"})
    assert (spec.source, spec.ctx, spec.keep_loaded) == ("url", 4096, False)
    assert spec.host_path == "/var/lib/halofleet/models/alpha/alpha.gguf"
    assert spec.files[0].url == URL and spec.sha256 == {"alpha.gguf": A}


def test_a_split_set_is_named_by_its_first_shard_and_fetches_every_shard():
    url = "http://mirror.test/m/big-00001-of-00003.gguf"
    digests = {f"big-0000{i}-of-00003.gguf": digest for i, digest in zip((1, 2, 3), (A, B, C))}
    (spec,) = parse({"name": "big", "url": url, "sha256": digests}, halo_model_dir="/srv/m")
    assert [item.url for item in spec.files] == [f"http://mirror.test/m/big-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert spec.host_path == "/srv/m/big/big-00001-of-00003.gguf"
    assert spec.sha256 == digests


@pytest.mark.parametrize("entry, key, words", [
    ({"name": "a", "url": "http://x.test/m-00002-of-00003.gguf", "sha256": A}, "url", "first shard"),
    ({"name": "a", "url": "http://x.test/m-00001-of-00002.gguf", "sha256": A}, "sha256", "split set of 2"),
    ({"name": "a", "url": "http://x.test/m-00001-of-00002.gguf", "sha256": {"m-00001-of-00002.gguf": A}},
     "sha256", "exactly the files"),
    ({"name": "a", "url": URL}, "sha256", "required for a url"),
    ({"name": "a", "url": "ftp://x.test/m.gguf", "sha256": A}, "url", "http"),
    ({"name": "a", "url": "file:/srv/m.gguf", "sha256": A}, "url", "http"),
    ({"name": "a", "url": "http://x.test/model.bin", "sha256": A}, "url", "GGUF file name"),
    ({"name": "a", "url": URL, "sha256": "A" * 64}, "sha256", "hex"),
    ({"name": "a", "url": URL, "sha256": A, "ctx": 100}, "ctx", "between 256"),
    ({"name": "a", "url": URL, "sha256": A, "ctx": True}, "ctx", "whole number"),
    ({"name": "a", "url": URL, "sha256": A, "keep_loaded": "maybe"}, "keep_loaded", "true or false"),
    ({"name": "a", "url": URL, "sha256": A, "revision": "v1"}, "revision", "hf source only"),
    ({"name": "a", "hf": "not-a-repo"}, "hf", "owner/name"),
    ({"name": "a", "hf": "o/r", "include": "../etc/*"}, "include", "glob inside"),
    ({"name": "a", "hf": "o/r", "include": "[ab].gguf"}, "include", "glob inside"),
    ({"name": "a", "hf": "o/r", "revision": "main; rm -rf /"}, "revision", "branch, tag"),
    ({"name": "a", "hf": "o/r", "include": "*.gguf", "sha256": A}, "sha256", "mapping"),
    ({"name": "a", "path": "relative/m.gguf"}, "path", "absolute path"),
    ({"name": "a", "path": "/srv/m.gguf", "sha256": {"other.gguf": A}}, "sha256", "must name the file m.gguf"),
    ({"name": "a", "file": "/nonexistent/m.gguf"}, "file", "no such file"),
])
def test_bad_entries_are_refused_naming_the_entry_key_and_rule(entry, key, words):
    message = refused([entry])
    assert f"halo_models[0].{key}" in message and words in message


@pytest.mark.parametrize("entries, words", [
    ([{"url": URL, "sha256": A}], "is required"),
    ([{"name": "-x", "url": URL, "sha256": A}], "is required"),
    ([{"name": "a b", "url": URL, "sha256": A}], "is required"),
    ([{"name": "a" * 65, "url": URL, "sha256": A}], "is required"),
    ([{"name": "a", "url": URL, "sha256": A}, {"name": "a", "path": "/m.gguf"}], "unique"),
    ([{"name": "a", "url": URL, "path": "/m.gguf", "sha256": A}], "exactly one source"),
    ([{"name": "a"}], "exactly one source"),
    (["a.gguf"], "mapping"),
    ("a.gguf", "list of model entries"),
])
def test_names_and_sources_are_checked(entries, words):
    assert words in refused(entries)


def test_an_unknown_entry_key_gets_a_hint_and_its_value_is_never_shown():
    message = refused([{"name": "a", "url": URL, "sha256": A, "sha265": "hf_secretvalue"}])
    assert "did you mean 'sha256'" in message and "hf_secretvalue" not in message


def test_a_pushed_file_must_be_gguf(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"NOPE" + bytes(10))
    assert "not a GGUF file" in refused([{"name": "a", "file": str(tmp_path / "m.gguf")}])


def test_halo_models_excludes_the_single_model_keys_and_the_toolbox():
    entry = {"name": "a", "url": URL, "sha256": A}
    assert "not both" in refused([entry], halo_model="/srv/m.gguf")
    assert "not both" in refused([entry], halo_model_alias="chat")
    assert "halo_model_push" in refused([entry], halo_model_push=True)
    assert "halo_llama_source" in refused([entry], halo_llama_source="toolbox")
    assert "one entry with an hf source" in refused([entry], halo_serve="vllm")
    with pytest.raises(ConfigError, match="halo_models_max"):
        validate("h", {"halo_model": "/srv/m.gguf", "halo_models_max": 2})


@pytest.mark.parametrize("key, value", [
    ("halo_model_alias", "bad alias"), ("halo_model_alias", "x]"), ("halo_hf_endpoint", "file:/srv/hub"),
    ("halo_hf_endpoint", "https://user:pw@hub.test"), ("halo_hf_token", "short"), ("halo_hf_token", "hf_abc\ndef12"),
    ("halo_models_max", 0),
])
def test_new_single_keys_are_checked(key, value):
    with pytest.raises(ConfigError, match=key):
        validate("h", {"halo_model": "/srv/m.gguf", key: value})


def test_a_refused_token_is_never_repeated():
    with pytest.raises(ConfigError) as error:
        validate("h", {"halo_model": "/srv/m.gguf", "halo_hf_token": "hf_secret but spaced"})
    assert "hf_secret" not in str(error.value) and "<redacted>" in str(error.value)


def test_rollback_needs_no_model_file():
    config = validate("h", {"halo_models": [{"name": "a", "file": "/gone/m.gguf"}]}, serving=False)
    assert config.models == []


# -- the router preset ------------------------------------------------------------------------------------------

def test_preset_has_one_section_per_model_with_its_context_and_loading():
    specs = parse({"name": "alpha", "url": URL, "sha256": A, "ctx": 4096},
                  {"name": "beta", "path": "/srv/b.gguf", "keep_loaded": False})
    assert models.render_preset("h", specs, 8192).splitlines()[2:] == [
        "[alpha]", "model = /var/lib/halofleet/models/alpha/alpha.gguf", "ctx-size = 4096", "load-on-startup = true",
        "", "[beta]", "model = /srv/b.gguf", "ctx-size = 8192", "load-on-startup = false"]


@pytest.mark.parametrize("value", ["a\nb", "[x]", "; x", "# x", "a;b", " a", "a=b", "", "a\x00", 'a"b'])
def test_ini_values_outside_the_grammar_are_refused(value):
    assert models.check_ini_value(value)


# -- the Hub lookup (a fake Hub) --------------------------------------------------------------------------------

def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Answers the tree API in pages of two entries, as the Hub paginates."""

    def __init__(self, files: dict[str, bytes], lfs=(".gguf", ".safetensors"), error: Exception | None = None):
        self.entries = []
        for path, data in sorted(files.items()):
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_oid(data)}
            if path.endswith(lfs):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}
            self.entries.append(entry)
        self.entries.insert(1, {"type": "directory", "path": "sub", "oid": "0" * 40})
        self.calls, self.error = [], error

    def __call__(self, url, headers):
        self.calls.append((url, headers))
        if self.error:
            raise self.error
        page = int(url.split("cursor=")[1]) if "cursor=" in url else 0
        body = json.dumps(self.entries[page * 2:page * 2 + 2]).encode()
        more = (page + 1) * 2 < len(self.entries)
        return body, f'<https://hub.test/api/x?cursor={page + 1}>; rel="next"' if more else None


def resolve(entries, fetch, engine="llama-server", token=None):
    specs = parse(*entries) if engine == "llama-server" else validate(
        "h", {"halo_models": entries, "halo_serve": "vllm"}).models
    return hfhub.resolve_models("h", specs, "https://hub.test", token, engine, fetch=fetch)


def test_hub_files_get_their_lfs_digests_across_pages_and_the_token_goes_in_a_header():
    hub = FakeHub({"m/q4-00001-of-00002.gguf": b"one", "m/q4-00002-of-00002.gguf": b"two", "README.md": b"hi",
                   "m/q8.gguf": b"eight"})
    (spec,) = resolve([{"name": "q4", "hf": "acme/tiny", "include": "m/q4-*.gguf", "revision": "v1.0"}], hub,
                      token="hf_token_value")
    assert [item.name for item in spec.files] == ["m/q4-00001-of-00002.gguf", "m/q4-00002-of-00002.gguf"]
    assert [item.sha256 for item in spec.files] == [hashlib.sha256(b"one").hexdigest(),
                                                     hashlib.sha256(b"two").hexdigest()]
    assert spec.files[0].url == "https://hub.test/acme/tiny/resolve/v1.0/m/q4-00001-of-00002.gguf"
    assert spec.host_path == "/var/lib/halofleet/models/q4/m/q4-00001-of-00002.gguf"
    assert hub.calls[0][0] == "https://hub.test/api/models/acme/tiny/tree/v1.0?recursive=true"
    assert len(hub.calls) == 3 and all(h["Authorization"] == "Bearer hf_token_value" for _, h in hub.calls)


def test_the_first_shard_by_name_brings_its_whole_set():
    hub = FakeHub({"q4-00001-of-00002.gguf": b"one", "q4-00002-of-00002.gguf": b"two", "q8.gguf": b"x"})
    (spec,) = resolve([{"name": "q4", "hf": "acme/tiny", "include": "q4-00001-of-00002.gguf"}], hub)
    assert [item.name for item in spec.files] == ["q4-00001-of-00002.gguf", "q4-00002-of-00002.gguf"]


@pytest.mark.parametrize("include, words", [
    ("*.gguf", "one GGUF file or one complete split set"),
    ("q4-00001-of-00003.gguf", "matches no file"),
    ("*", "GGUF files only"),
    ("nothing*", "matches no file"),
])
def test_llama_server_gets_one_gguf_or_one_complete_set(include, words):
    hub = FakeHub({"q4-00001-of-00002.gguf": b"one", "q4-00002-of-00002.gguf": b"two", "q8.gguf": b"x",
                   "README.md": b"r"})
    with pytest.raises(HostRefused, match=words):
        resolve([{"name": "q", "hf": "acme/tiny", "include": include}], hub)


def test_a_pinned_digest_must_match_the_hubs():
    hub = FakeHub({"q8.gguf": b"x"})
    with pytest.raises(HostRefused, match="not the pinned"):
        resolve([{"name": "q", "hf": "acme/tiny", "include": "q*.gguf", "sha256": {"q8.gguf": A}}], hub)


def test_pinned_by_name_and_digest_needs_no_lookup():
    hub = FakeHub({}, error=AssertionError("no lookup expected"))
    (spec,) = resolve([{"name": "q", "hf": "acme/tiny", "include": "q8.gguf", "sha256": A}], hub)
    assert spec.files[0].sha256 == A and hub.calls == []


def test_vllm_gets_every_matching_file_small_ones_by_git_blob_id():
    hub = FakeHub({"config.json": b"{}", "model.safetensors": b"w" * 10, "tokenizer.json": b"t"})
    (spec,) = resolve([{"name": "m", "hf": "acme/tiny"}], hub, engine="vllm")
    by_name = {item.name: item for item in spec.files}
    assert by_name["config.json"].sha256 is None and by_name["config.json"].git_oid == git_oid(b"{}")
    assert by_name["model.safetensors"].sha256 == hashlib.sha256(b"w" * 10).hexdigest()


def test_hub_errors_refuse_the_host_without_the_token():
    error = urllib.error.HTTPError("https://hub.test/x", 401, "no", {}, None)
    with pytest.raises(HostRefused) as refusal:
        resolve([{"name": "q", "hf": "acme/tiny", "include": "*.gguf"}], FakeHub({}, error=error), token="hf_tok123")
    assert "HTTP 401" in str(refusal.value) and "halo_hf_token" in str(refusal.value)
    assert "hf_tok123" not in str(refusal.value)
    with pytest.raises(HostRefused, match="could not list"):
        resolve([{"name": "q", "hf": "acme/tiny", "include": "*.gguf"}], FakeHub({}, error=OSError("down")))


def test_hub_paths_outside_the_grammar_are_refused():
    hub = FakeHub({"a b.gguf": b"x"})
    with pytest.raises(HostRefused, match="cannot hold"):
        resolve([{"name": "q", "hf": "acme/tiny", "include": "*.gguf"}], hub)


def test_pushed_files_are_hashed_here_and_checked_against_a_pin(tmp_path):
    model = write_tiny_llama(tmp_path / "m.gguf")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    (spec,) = hfhub.resolve_models("h", parse({"name": "m", "file": str(model)}), "https://hub.test", None,
                                   "llama-server")
    assert spec.files[0].sha256 == digest and spec.files[0].local == str(model)
    with pytest.raises(HostRefused, match="corrupt or a different model"):
        hfhub.resolve_models("h", parse({"name": "m", "file": str(model), "sha256": A}), "https://hub.test", None,
                             "llama-server")


# -- the plan on a host -----------------------------------------------------------------------------------------

def plan_for(entries, probe_files=None, data=None, files=None, serve_state=None):
    config = validate("h", {"halo_models": entries, "halo_llama_backend": "cpu", **(data or {})})
    config = __import__("dataclasses").replace(config, values={
        **config.values, "halo_models": hfhub.resolve_models("h", config.models, "https://hub.test", None,
                                                             config.serve, fetch=FakeHub({"beta.gguf": b"b"}))})
    probe = {"serve": serve_state or {"active": "inactive", "listeners": []}, "files": files or {},
             "accounts": ACCOUNTS, "model_files": {"files": probe_files or {}, "dirs": {}}}
    return config, serving.build_serve_plan(config, probe, 15, serving.allocate_ids(config, ACCOUNTS))


TWO = [{"name": "alpha", "url": URL, "sha256": A, "ctx": 512}, {"name": "beta", "hf": "acme/tiny",
                                                                 "include": "beta.gguf", "keep_loaded": False}]


def test_router_unit_has_no_model_and_no_context_and_loads_every_model_at_most():
    _, plan = plan_for(TWO, data={"halo_metrics": True})
    line = next(line for line in plan.unit.splitlines() if line.startswith("ExecStart="))
    assert line.startswith(f"ExecStart=/usr/bin/llama-server --models-preset {paths.MODELS_PRESET} --models-max 2 "
                           "--host 127.0.0.1 --port 8080")
    assert " -c " not in line and "--model " not in line and line.endswith(" --metrics")
    assert "[alpha]" in plan.models.preset and "ctx-size = 512" in plan.models.preset
    assert [action.file.name for action in plan.models.downloads] == ["alpha.gguf", "beta.gguf"]
    assert [action.hub for action in plan.models.downloads] == [False, True]
    assert plan.model_host_path == "/var/lib/halofleet/models/alpha/alpha.gguf"


def test_models_max_is_what_the_host_data_says():
    _, plan = plan_for(TWO, data={"halo_models_max": 1})
    assert "--models-max 1 " in plan.unit


def test_a_changed_preset_or_file_restarts_and_a_converged_router_does_not():
    _, first = plan_for(TWO)
    files = {paths.SERVE_UNIT: serving.sha256_text(first.unit), paths.SERVE_ENV: serving.sha256_text(first.env),
             paths.MODELS_PRESET: serving.sha256_text(first.models.preset)}
    running = {"active": "active", "enabled": "enabled", "listeners": [["127.0.0.1", 8080]],
               "stamp": first.model_stamp}
    assert not plan_for(TWO, files=files, serve_state=running)[1].restart
    other_ctx = [{**TWO[0], "ctx": 1024}, TWO[1]]
    assert plan_for(other_ctx, files=files, serve_state=running)[1].restart
    other_digest = [{**TWO[0], "sha256": B}, TWO[1]]
    assert plan_for(other_digest, files=files, serve_state=running)[1].restart


def test_a_host_path_model_must_exist_be_gguf_and_match_its_pin():
    entry = [{"name": "p", "path": "/srv/p.gguf", "sha256": A}]
    with pytest.raises(HostRefused, match="does not exist"):
        plan_for(entry)
    with pytest.raises(HostRefused, match="not a GGUF"):
        plan_for(entry, probe_files={"/srv/p.gguf": {"sha256": A, "magic": "NOPE"}})
    with pytest.raises(HostRefused, match="not the pinned one"):
        plan_for(entry, probe_files={"/srv/p.gguf": {"sha256": B, "magic": "GGUF"}})
    _, plan = plan_for(entry, probe_files={"/srv/p.gguf": {"sha256": A, "magic": "GGUF"}})
    assert plan.models.downloads == [] and plan.models.directories == []


def test_vllm_serves_the_verified_directory_under_its_name():
    config = validate("h", {"halo_models": [{"name": "qwen", "hf": "acme/tiny"}], "halo_serve": "vllm"})
    config = __import__("dataclasses").replace(config, values={**config.values, "halo_models": hfhub.resolve_models(
        "h", config.models, "https://hub.test", None, "vllm", fetch=FakeHub({"config.json": b"{}"}))})
    probe = {"serve": {"active": "inactive", "listeners": []}, "files": {}, "accounts": ACCOUNTS,
             "model_files": {"files": {}, "dirs": {}}, "image": {"present": True}}
    plan = serving.build_serve_plan(config, probe, 15, serving.allocate_ids(config, ACCOUNTS))
    assert "Volume=/var/lib/halofleet/models:/models:ro" in plan.unit
    assert "vllm serve /models/qwen" in plan.unit and "--served-model-name qwen" in plan.unit
    assert plan.models.preset is None


def test_probe_asks_for_the_model_files_and_their_directories():
    config = validate("h", {"halo_models": TWO[:1] + [{"name": "p", "path": "/srv/p.gguf"}],
                            "halo_llama_backend": "cpu"})
    assert serving.probe_args(config) == {
        "model_files": ["/var/lib/halofleet/models/alpha/alpha.gguf", "/srv/p.gguf"],
        "model_dirs": ["/var/lib/halofleet/models", "/var/lib/halofleet/models/alpha"]}


def test_single_model_alias_and_metrics_keep_the_old_argument_order():
    config = validate("h", {"halo_model": "/srv/m.gguf", "halo_model_alias": "chat", "halo_metrics": True,
                            "halo_llama_backend": "cpu"})
    probe = {"model": {"kind": "file", "magic": "GGUF"}, "serve": {"listeners": []}, "files": {},
             "accounts": ACCOUNTS}
    plan = serving.build_serve_plan(config, probe, 15, serving.allocate_ids(config, ACCOUNTS))
    assert "--model /srv/m.gguf --host 127.0.0.1 --port 8080 -ngl 999 -fa on -c 8192 -b 2048 -ub 512 -np 1 " \
           "--alias chat --metrics" in plan.unit


# -- the probe's model part -------------------------------------------------------------------------------------

def test_model_files_parser_reads_files_records_and_directories():
    lines = ["@dir halo 750 /m/a", f"@file 10 1700 halo {A} - 47475546 /m/a/a.gguf",
             f"@file 3 1701 halo {B} {'1' * 40} 7b7d0a00 /m/a/config.json", "@missing /m/a/b.gguf",
             "@file garbage", f"@file 1 2 halo {A[:10]} - 00 /m/short"]
    assert parse_model_files(lines) == {
        "files": {"/m/a/a.gguf": {"size": 10, "mtime": 1700, "owner": "halo", "sha256": A, "git_oid": None,
                                  "magic": "GGUF"},
                  "/m/a/config.json": {"size": 3, "mtime": 1701, "owner": "halo", "sha256": B, "git_oid": "1" * 40,
                                       "magic": "{}\n\x00"}},
        "dirs": {"/m/a": "halo 750"}}


def test_model_files_command_quotes_every_path():
    command = ModelFiles().command(["/m/a b.gguf"], ["/m/$(x)"])
    assert command.endswith(" halofleet-models '@dir=/m/$(x)' '/m/a b.gguf'")


def test_probe_output_carries_the_model_files_part_only_when_asked():
    assert "model_files" not in parse_probe([])
    probe = parse_probe(["@@halofleet-probe model_files", f"@file 1 2 halo {A} - 00 /m/x"])
    assert probe["model_files"]["files"]["/m/x"]["sha256"] == A
