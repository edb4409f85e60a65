"""
halo_models, the Hub lookup and the models plan at their edges (mutation-tested): every refusal's exact text, the
bounds of ctx, shard counts and Hub sizes, the exact preset and URLs, and the plan's actions and stamp. The expected
texts are written out by hand from the rules the modules state; none is computed by the code under test.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
from types import SimpleNamespace

import pytest

from halofleet.contract.config import ConfigError, HostRefused
from halofleet.models import files as modelplan
from halofleet.models import hub as hfhub
from halofleet.models import specs as models
from halofleet.models.specs import ModelFile, ModelSpec

A, B = "a" * 64, "b" * 64
URL = "https://models.example/tiny/alpha.gguf"
ENTRY_KEYS = "file, path, url, hf, name, include, revision, sha256, ctx, keep_loaded"
DIR = "/var/lib/halofleet/models"


def refusal(value, host="h") -> str:
    with pytest.raises(ConfigError) as error:
        models.parse_models(host, value)
    return str(error.value)


def one(**entry) -> ModelSpec:
    (spec,) = models.parse_models("h", [entry])
    return spec


# -- parse_models: refusals, word for word ----------------------------------------------------------------------

@pytest.mark.parametrize("entry, message", [
    ({"name": "a", "url": URL, "sha256": A, "keep_loaded": "maybe"},
     "halo_models[0].keep_loaded='maybe' is invalid: must be true or false"),
    ({"name": "a", "url": URL, "sha256": A, "ctx": 255},
     "halo_models[0].ctx=255 is invalid: must be a whole number between 256 and 1048576"),
    ({"name": "a", "url": URL, "sha256": A, "ctx": 1048577},
     "halo_models[0].ctx=1048577 is invalid: must be a whole number between 256 and 1048576"),
    ({"name": "a", "url": URL, "sha256": "A" * 64},
     f"halo_models[0].sha256='{'A' * 64}' is invalid: must be 64 lower-case hex digits (or a mapping file -> digest)"),
    ({"name": "a", "url": URL, "sha256": {}},
     "halo_models[0].sha256={} is invalid: must be 64 lower-case hex digits or a mapping file name -> digest"),
    ({"name": "a", "url": URL, "sha256": 5},
     "halo_models[0].sha256=5 is invalid: must be 64 lower-case hex digits or a mapping file name -> digest"),
    ({"name": "a", "url": URL, "sha256": {"a*.gguf": A}},
     "halo_models[0].sha256='a*.gguf' is invalid: keys must be file names (a path inside a repo for hf)"),
    ({"name": "a", "url": URL, "sha256": {"a?.gguf": A}},
     "halo_models[0].sha256='a?.gguf' is invalid: keys must be file names (a path inside a repo for hf)"),
    ({"name": "a", "url": URL, "sha256": {"x/../a.gguf": A}},
     "halo_models[0].sha256='x/../a.gguf' is invalid: keys must be file names (a path inside a repo for hf)"),
    ({"name": "a", "url": URL, "sha256": {"a b.gguf": A}},
     "halo_models[0].sha256='a b.gguf' is invalid: keys must be file names (a path inside a repo for hf)"),
    ({"name": "a", "url": URL, "sha256": {3: A}},
     "halo_models[0].sha256=3 is invalid: keys must be file names (a path inside a repo for hf)"),
    ({"name": "a", "url": URL, "sha256": {"alpha.gguf": "x"}},
     "halo_models[0].sha256={'alpha.gguf': 'x'} is invalid: values must be 64 lower-case hex digits"),
    ({"name": "a", "url": URL, "sha256": {"alpha.gguf": 7}},
     "halo_models[0].sha256={'alpha.gguf': 7} is invalid: values must be 64 lower-case hex digits"),
    ({"name": "a", "url": ""}, "halo_models[0].url='' is invalid: must be a non-empty single-line string"),
    ({"name": "a", "url": 5}, "halo_models[0].url=5 is invalid: must be a non-empty single-line string"),
    ({"name": "a", "path": "/srv/a\rb.gguf"},
     "halo_models[0].path='/srv/a\\rb.gguf' is invalid: must be a non-empty single-line string"),
    ({"name": "a", "url": "ftp://x.test/m.gguf", "sha256": A},
     "halo_models[0].url='ftp://x.test/m.gguf' is invalid: must be an http://, https:// or file:/ URL (letters, "
     "digits and -._~:/?#[]@!&()*+,;=%; no spaces, quotes, '$' or backslashes)"),
    ({"name": "a", "url": "file:/srv/m.gguf", "sha256": A},
     "halo_models[0].url='file:/srv/m.gguf' is invalid: must be an http:// or https:// URL"),
    ({"name": "a", "url": "http://x.test/model.bin", "sha256": A},
     "halo_models[0].url='http://x.test/model.bin' is invalid: must end in a GGUF file name (letters, digits, "
     ". _ + @ -, '.gguf')"),
    ({"name": "a", "url": "http://x.test/m-00002-of-00003.gguf", "sha256": A},
     "halo_models[0].url='http://x.test/m-00002-of-00003.gguf' is invalid: a split set is named by its first "
     "shard, -00001-of-0000N.gguf (N at most 999)"),
    ({"name": "a", "url": "http://x.test/m-00001-of-01000.gguf", "sha256": A},
     "halo_models[0].url='http://x.test/m-00001-of-01000.gguf' is invalid: a split set is named by its first "
     "shard, -00001-of-0000N.gguf (N at most 999)"),
    ({"name": "a", "url": URL},
     "halo_models[0].sha256=None is invalid: is required for a url source (the download is verified with it)"),
    ({"name": "a", "url": "http://x.test/m-00001-of-00002.gguf", "sha256": A},
     f"halo_models[0].sha256='{A}' is invalid: a split set of 2 files needs a mapping file name -> digest for "
     "every shard"),
    ({"name": "a", "url": "http://x.test/m-00001-of-00002.gguf", "sha256": {"x.gguf": A, "m.gguf": B}},
     "halo_models[0].sha256=['m.gguf', 'x.gguf'] is invalid: must name exactly the files fetched: "
     "m-00001-of-00002.gguf, m-00002-of-00002.gguf"),
    ("a.gguf", "halo_models[0]='a.gguf' is invalid: each entry must be a mapping with name and one source (file, "
               "path, url or hf)"),
    ({"name": "a", "url": URL, "sha256": A, "sha265": "secret"},
     f"halo_models[0].sha265 is invalid: unknown key (did you mean 'sha256'?); allowed: {ENTRY_KEYS}"),
    ({"name": "a", "url": URL, "sha256": A, "zzz": 1}, f"halo_models[0].zzz is invalid: unknown key; allowed: "
                                                      f"{ENTRY_KEYS}"),
    ({"name": "-x", "url": URL, "sha256": A},
     "halo_models[0].name='-x' is invalid: is required: 1-64 characters from A-Z a-z 0-9 . _ - starting with a "
     "letter or digit (the served model name)"),
    ({"name": "a", "url": URL, "path": "/m.gguf"},
     "halo_models[0]=['path', 'url'] is invalid: needs exactly one source: file, path, url or hf"),
    ({"name": "a", "url": URL, "sha256": A, "include": "alpha.gguf"},
     "halo_models[0].include='alpha.gguf' is invalid: belongs to an hf source only"),
    ({"name": "a", "path": "/m.gguf", "revision": "v1"},
     "halo_models[0].revision='v1' is invalid: belongs to an hf source only"),
    ({"name": "a", "hf": "o/" + "r" * 199},
     f"halo_models[0].hf='o/{'r' * 199}' is invalid: must be a Hugging Face repo id, owner/name"),
    ({"name": "a", "hf": "o/r", "include": "../x.gguf"},
     "halo_models[0].include='../x.gguf' is invalid: must be a file name or glob inside the repo (A-Z a-z 0-9 "
     ". _ + @ - / and the wildcards * ?)"),
    ({"name": "a", "hf": "o/r", "include": 5},
     "halo_models[0].include=5 is invalid: must be a file name or glob inside the repo (A-Z a-z 0-9 . _ + @ - / "
     "and the wildcards * ?)"),
    ({"name": "a", "hf": "o/r", "revision": "v..1"},
     "halo_models[0].revision='v..1' is invalid: must be a branch, tag or commit (A-Z a-z 0-9 . _ - /)"),
    ({"name": "a", "hf": "o/r", "revision": 3},
     "halo_models[0].revision=3 is invalid: must be a branch, tag or commit (A-Z a-z 0-9 . _ - /)"),
    ({"name": "a", "hf": "o/r", "include": "q?.gguf", "sha256": A},
     f"halo_models[0].sha256='{A}' is invalid: with a glob in include, give a mapping file -> digest"),
    ({"name": "a", "path": "/srv/../m.gguf"},
     "halo_models[0].path='/srv/../m.gguf' is invalid: must be an absolute path of components made of A-Z a-z "
     "0-9 ._+@- (no spaces, quotes, '$', '%', ':', '..' or empty components)"),
    ({"name": "a", "path": "/srv/m.gguf", "sha256": {"o.gguf": A}},
     "halo_models[0].sha256=['o.gguf'] is invalid: must name the file m.gguf"),
    ({"name": "a", "file": "/srv/-m.gguf"},
     "halo_models[0].file='/srv/-m.gguf' is invalid: the file's name on the host must be a file name made of A-Z "
     "a-z 0-9 ._+@- not starting with '-'"),
    ({"name": "a", "file": "/nonexistent/m.gguf"},
     "halo_models[0].file='/nonexistent/m.gguf' is invalid: no such file on the control machine"),
    ({"name": "a", "file": "~no_such_user_halofleet/m.gguf"},
     "halo_models[0].file='~no_such_user_halofleet/m.gguf' is invalid: no such file on the control machine"),
])
def test_each_refusal_word_for_word(entry, message):
    assert refusal([entry], host="h7") == f"host 'h7': {message}"


def test_the_list_itself_and_duplicate_names():
    assert refusal("a.gguf") == "host 'h': halo_models='a.gguf' is invalid: must be a list of model entries (mappings)"
    assert refusal([{"name": "a", "url": URL, "sha256": A}, {"name": "a", "path": "/m.gguf"}]) == \
        "host 'h': halo_models[1].name='a' is invalid: must be unique on the host"
    assert models.parse_models("h", None) == []


def test_pushed_files_are_refused_by_content_and_pin(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"NOPE" + bytes(4))
    path = str(tmp_path / "m.gguf")
    assert refusal([{"name": "a", "file": path}]) == \
        f"host 'h': halo_models[0].file='{path}' is invalid: not a GGUF file (it does not start with 'GGUF')"
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + bytes(4))
    assert refusal([{"name": "a", "file": path, "sha256": {"o.gguf": A}}]) == \
        "host 'h': halo_models[0].sha256=['o.gguf'] is invalid: must name the file m.gguf"
    spec = one(name="a", file=path, sha256={"m.gguf": A})
    assert (spec.directory, spec.sha256_given, spec.files) == (f"{DIR}/a", {"m.gguf": A}, ())
    assert one(name="a", file=path).sha256_given == {}


# -- parse_models: accepted values at their bounds --------------------------------------------------------------

def test_keep_loaded_words_in_any_case_and_ctx_at_both_ends():
    assert one(name="a", url=URL, sha256=A, keep_loaded="Yes").keep_loaded is True
    assert one(name="a", url=URL, sha256=A, keep_loaded="OFF").keep_loaded is False
    assert one(name="a", url=URL, sha256=A, ctx=256).ctx == 256
    assert one(name="a", url=URL, sha256=A, ctx=1048576).ctx == 1048576


def test_a_url_spec_has_its_digest_given_and_one_file():
    spec = one(name="a", url=URL, sha256=A)
    assert (spec.directory, spec.sha256_given) == (f"{DIR}/a", {"alpha.gguf": A})
    assert spec.files == (ModelFile(name="alpha.gguf", host_path=f"{DIR}/a/alpha.gguf", url=URL, sha256=A),)


def test_a_single_file_keeps_its_url_with_the_query_even_with_a_slash_in_it():
    url = "http://x.test/d/m.gguf?sig=a/b"
    assert one(name="a", url=url, sha256=A).files[0].url == url


def test_a_one_shard_set_and_a_two_shard_set_get_each_shards_url():
    (only,) = one(name="a", url="http://x.test/m-00001-of-00001.gguf", sha256=A).files
    assert (only.name, only.url) == ("m-00001-of-00001.gguf", "http://x.test/m-00001-of-00001.gguf")
    spec = one(name="a", url="http://x.test/d/m-00001-of-00002.gguf?t=1",
               sha256={"m-00001-of-00002.gguf": A, "m-00002-of-00002.gguf": B})
    assert [(item.url, item.sha256) for item in spec.files] == [
        ("http://x.test/d/m-00001-of-00002.gguf?t=1", A), ("http://x.test/d/m-00002-of-00002.gguf?t=1", B)]


def test_the_largest_split_set_is_999_shards():
    digests = {f"m-{index:05d}-of-00999.gguf": A for index in range(1, 1000)}
    spec = one(name="a", url="http://x.test/m-00001-of-00999.gguf", sha256=digests)
    assert len(spec.files) == 999 and spec.files[-1].url == "http://x.test/m-00999-of-00999.gguf"


def test_hf_entries_defaults_and_bounds():
    spec = one(name="a", hf="o/" + "r" * 198)
    assert (spec.origin, spec.include, spec.revision, spec.sha256_given) == ("o/" + "r" * 198, "*", "main", {})
    assert one(name="a", hf="o/r", include="X8.gguf", sha256=A).sha256_given == {"X8.gguf": A}


def test_a_path_spec_lives_where_it_is():
    spec = one(name="a", path="/srv/m/x.gguf", sha256={"x.gguf": A})
    assert (spec.directory, spec.sha256_given) == ("/srv/m", {"x.gguf": A})
    assert spec.files == (ModelFile(name="x.gguf", host_path="/srv/m/x.gguf", sha256=A),)
    bare = one(name="a", path="/srv/m/x.gguf")
    assert (bare.sha256_given, bare.files[0].sha256) == ({}, None)


# -- the router preset ------------------------------------------------------------------------------------------

def test_the_preset_word_for_word():
    spec = one(name="a", path="/srv/x.gguf")
    assert models.render_preset("h", [spec], 512) == (
        "; Managed by halofleet: the models llama-server's router serves (one section per model).\n"
        "\n"
        "[a]\n"
        "model = /srv/x.gguf\n"
        "ctx-size = 512\n"
        "load-on-startup = true\n")


def test_preset_refusals_word_for_word():
    bad_name = ModelSpec(name="a b", source="path", origin="/srv/x.gguf", directory="/srv", ctx=None)
    with pytest.raises(ConfigError) as error:
        models.render_preset("h", [bad_name], 512)
    assert str(error.value) == "host 'h': halo_models='a b' is invalid: a model name must be a valid INI section name"
    bad_path = ModelSpec(name="a", source="path", origin="/srv/m;x.gguf", directory="/srv", ctx=None,
                         files=(ModelFile(name="m;x.gguf", host_path="/srv/m;x.gguf"),))
    with pytest.raises(ConfigError) as error:
        models.render_preset("h", [bad_path], 512)
    assert str(error.value) == ("host 'h': halo_models[a]='/srv/m;x.gguf' is invalid: '/srv/m;x.gguf' cannot be "
                                "written into the router preset (one line; no [ ] ; # = quotes, or surrounding spaces)")


# -- the Hub ----------------------------------------------------------------------------------------------------

def hub_spec(include="*", sha256=None, revision=None, name="q") -> ModelSpec:
    entry = {"name": name, "hf": "acme/tiny", "include": include}
    if sha256 is not None:
        entry["sha256"] = sha256
    if revision is not None:
        entry["revision"] = revision
    return one(**entry)


class Pages:
    """A Hub that answers with the given pages (a list of bodies), each but the last pointing to the next."""

    def __init__(self, *pages, error=None):
        self.pages, self.error, self.calls = list(pages), error, []

    def __call__(self, url, headers):
        self.calls.append((url, dict(headers)))
        if self.error:
            raise self.error
        index = len(self.calls) - 1
        body = self.pages[index] if isinstance(self.pages[index], bytes) else json.dumps(self.pages[index]).encode()
        more = index + 1 < len(self.pages)
        return body, f'<https://hub.test/prev>; rel="prev", <https://hub.test/p{index + 1}>; rel="next"' \
            if more else None


def lfs(path, digest=A, size=3):
    return {"type": "file", "path": path, "size": size, "oid": "1" * 40, "lfs": {"oid": digest, "size": size}}


def hub_refusal(spec, fetch, gguf=True, token=None) -> str:
    with pytest.raises(HostRefused) as error:
        hfhub.resolve_hf("h", spec, "https://hub.test", token, gguf, fetch=fetch)
    return str(error.value)


def test_urls_strip_the_endpoints_slash_and_quote_the_revision():
    assert hfhub.tree_url("https://hub.test/", "o/r", "refs/pr/1") == \
        "https://hub.test/api/models/o/r/tree/refs%2Fpr%2F1?recursive=true"
    assert hfhub.resolve_url("https://hub.test/", "o/r", "refs/pr/1", "m/q 8.gguf") == \
        "https://hub.test/o/r/resolve/refs%2Fpr%2F1/m/q%208.gguf"


def test_next_link_is_the_part_marked_next():
    assert hfhub._next_link('<https://a/1>; rel="prev", <https://a/2>; rel="next"') == "https://a/2"
    assert hfhub._next_link(None) is None


def test_list_files_sends_plain_headers_and_follows_pages():
    fetch = Pages([lfs("a.gguf")], [{"type": "directory", "path": "d"}, lfs("b.gguf"), "junk"])
    entries = hfhub.list_files("h", hub_spec(), "https://hub.test", None, fetch)
    assert [entry["path"] for entry in entries] == ["a.gguf", "b.gguf"]
    assert fetch.calls == [
        ("https://hub.test/api/models/acme/tiny/tree/main?recursive=true",
         {"Accept": "application/json", "User-Agent": "halofleet"}),
        ("https://hub.test/p1", {"Accept": "application/json", "User-Agent": "halofleet"})]


@pytest.mark.parametrize("error, message", [
    (urllib.error.HTTPError("u", 403, "no", {}, None),
     "the Hub's file list of acme/tiny@main answered HTTP 403 (a private or gated repo needs halo_hf_token); "
     "nothing was changed"),
    (urllib.error.HTTPError("u", 404, "no", {}, None),
     "the Hub's file list of acme/tiny@main answered HTTP 404; nothing was changed"),
    (TimeoutError("slow"), "could not list acme/tiny@main at https://hub.test (TimeoutError); nothing was changed"),
])
def test_hub_errors_word_for_word(error, message):
    assert hub_refusal(hub_spec(), Pages(error=error)) == f"host 'h': model q: {message}"


def test_bad_answers_and_endless_pages_word_for_word():
    assert hub_refusal(hub_spec(), Pages(b"not json")) == \
        "host 'h': model q: could not list acme/tiny@main at https://hub.test (JSONDecodeError); nothing was changed"
    assert hub_refusal(hub_spec(), Pages({"files": []})) == "host 'h': model q: the Hub's tree answer is not a list"
    endless = Pages(*([[]] * 101))
    assert hub_refusal(hub_spec(), endless) == \
        "host 'h': model q: the Hub's file list of acme/tiny@main has more than 100 pages (the bound)"
    assert len(endless.calls) == 100


@pytest.mark.parametrize("entry, message", [
    ({**lfs("x.gguf"), "size": -1}, "the Hub lists a file this host cannot hold as is: 'x.gguf'"),
    ({**lfs("x.gguf"), "size": "3"}, "the Hub lists a file this host cannot hold as is: 'x.gguf'"),
    (lfs("d/../x.gguf"), "the Hub lists a file this host cannot hold as is: 'd/../x.gguf'"),
    (lfs("x*.gguf"), "the Hub lists a file this host cannot hold as is: 'x*.gguf'"),
    (lfs("x?.gguf"), "the Hub lists a file this host cannot hold as is: 'x?.gguf'"),
    (lfs("x.gguf", digest="x"), "the Hub gives no SHA-256 for x.gguf"),
    (lfs("x.gguf", digest=5), "the Hub gives no SHA-256 for x.gguf"),
    ({"type": "file", "path": "x.gguf", "size": 1, "oid": "z" * 40}, "the Hub gives no digest for x.gguf"),
    ({"type": "file", "path": "x.gguf", "size": 1, "oid": 5}, "the Hub gives no digest for x.gguf"),
])
def test_hub_entries_that_cannot_be_held_word_for_word(entry, message):
    assert hub_refusal(hub_spec("*"), Pages([entry]), gguf=False) == f"host 'h': model q: {message}"


def test_an_empty_file_is_fine_and_its_size_is_kept():
    spec = hfhub.resolve_hf("h", hub_spec(), "https://hub.test", None, False, fetch=Pages([lfs("e.gguf", size=0)]))
    assert spec.files == (ModelFile(name="e.gguf", host_path=f"{DIR}/q/e.gguf", sha256=A, size=0,
                                    url="https://hub.test/acme/tiny/resolve/main/e.gguf"),)


def test_files_come_sorted_by_path_whatever_the_hubs_order():
    fetch = Pages([lfs("c.json"), lfs("b.json"), lfs("a.json")])
    spec = hfhub.resolve_hf("h", hub_spec(), "https://hub.test", None, False, fetch=fetch)
    assert [item.name for item in spec.files] == ["a.json", "b.json", "c.json"]


def test_a_first_shard_in_a_folder_brings_its_set_sorted():
    fetch = Pages([lfs("m/q-00002-of-00002.gguf", B), lfs("m/q-00001-of-00002.gguf"), lfs("q-00002-of-00002.gguf")])
    spec = hfhub.resolve_hf("h", hub_spec("m/q-00001-of-00002.gguf"), "https://hub.test", None, True, fetch=fetch)
    assert [(item.name, item.sha256) for item in spec.files] == [("m/q-00001-of-00002.gguf", A),
                                                                  ("m/q-00002-of-00002.gguf", B)]


def test_vllm_takes_a_first_shard_by_name_alone():
    fetch = Pages([lfs("q-00001-of-00002.gguf"), lfs("q-00002-of-00002.gguf")])
    spec = hfhub.resolve_hf("h", hub_spec("q-00001-of-00002.gguf"), "https://hub.test", None, False, fetch=fetch)
    assert [item.name for item in spec.files] == ["q-00001-of-00002.gguf"]


def test_a_missing_first_shard_matches_nothing_even_if_the_second_is_there():
    fetch = Pages([lfs("q-00002-of-00002.gguf")])
    assert hub_refusal(hub_spec("q-00001-of-00002.gguf"), fetch) == \
        "host 'h': model q: include 'q-00001-of-00002.gguf' matches no file in acme/tiny@main"


def test_gguf_set_refusals_word_for_word():
    assert hub_refusal(hub_spec("*", revision="v2"), Pages([lfs("README.md")])) == \
        "host 'h': model q: include '*' must match GGUF files only for llama-server; it matches ['README.md'] in " \
        "acme/tiny@v2"
    assert hub_refusal(hub_spec("*.gguf"), Pages([lfs("b.gguf"), lfs("a.gguf")])) == \
        "host 'h': model q: include '*.gguf' must match one GGUF file or one complete split set; it matches " \
        "['a.gguf', 'b.gguf']"


def test_pins_against_the_hub_word_for_word():
    assert hub_refusal(hub_spec("*.gguf", sha256={"o.gguf": A}), Pages([lfs("a.gguf")])) == \
        "host 'h': model q: sha256 names o.gguf, which include does not fetch"
    assert hub_refusal(hub_spec("*.gguf", sha256={"a.gguf": B}), Pages([lfs("a.gguf")])) == \
        f"host 'h': model q: the Hub's SHA-256 of a.gguf is {A}, not the pinned {B}: the repo changed or the pin " \
        "is wrong"


def test_a_pinned_name_with_an_x_needs_no_lookup():
    spec = hfhub.resolve_hf("h", hub_spec("X8.gguf", sha256=A), "https://hub.test/", None, True,
                            fetch=Pages(error=AssertionError("no lookup expected")))
    assert spec.files == (ModelFile(name="X8.gguf", host_path=f"{DIR}/q/X8.gguf", sha256=A,
                                    url="https://hub.test/acme/tiny/resolve/main/X8.gguf"),)


def test_resolve_models_passes_its_host_and_hashes_pushed_files(tmp_path):
    with pytest.raises(HostRefused) as error:
        hfhub.resolve_models("h9", [hub_spec("*.gguf")], "https://hub.test", None, "llama-server",
                             fetch=Pages([lfs("README.md")]))
    assert str(error.value).startswith("host 'h9': model q: include '*.gguf' matches no file")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    pushed = one(name="p", file=str(tmp_path / "m.gguf"), sha256=A)
    (spec,) = hfhub.resolve_models("h", [pushed], "https://hub.test", None, "llama-server", hasher=lambda path: A)
    assert spec.files == (ModelFile(name="m.gguf", host_path=f"{DIR}/p/m.gguf", local=str(tmp_path / "m.gguf"),
                                    sha256=A),)
    with pytest.raises(HostRefused) as error:
        hfhub.resolve_models("h9", [pushed], "https://hub.test", None, "llama-server", hasher=lambda path: B)
    assert str(error.value) == (f"host 'h9': model p: the local file {tmp_path / 'm.gguf'} has SHA-256 {B}, not "
                                "the pinned one: it is corrupt or a different model")


def test_the_page_fetch_reads_through_the_hosts_bounded_reads():
    from types import SimpleNamespace

    from halofleet.models import http as bounded

    seen = []

    class Reads:
        limits = bounded.Limits(json_bytes=123)

        def get(self, url, headers, max_bytes):
            seen.append((url, headers, max_bytes))
            kind = "text/html" if url.endswith("html") else "application/json; charset=utf-8"
            return SimpleNamespace(url=url, body=b"[]", headers={"Link": "<https://hub.test/p1>; rel=\"next\"",
                                                                   "Content-Type": kind})

    fetch = hfhub.page_fetch(Reads())
    assert fetch("https://hub.test/x", {"Accept": "application/json"}) == (b"[]", "<https://hub.test/p1>; rel=\"next\"")
    assert seen == [("https://hub.test/x", {"Accept": "application/json"}, 123)]
    with pytest.raises(bounded.ReadRefused, match="https://hub.test/html answered 'text/html', not JSON"):
        fetch("https://hub.test/html", {})


# -- the models plan --------------------------------------------------------------------------------------------

def config_of(specs, serve="llama-server", ctx=8192, models_max=None, host="h"):
    return SimpleNamespace(host=host, models=specs, serve=serve, ctx=ctx, models_max=models_max)


def stamp_of(identity) -> str:
    return "models:" + hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def test_the_plan_sorts_files_into_pushes_downloads_and_checks():
    hub_file = ModelFile(name="h.gguf", host_path=f"{DIR}/hub/h.gguf", url="https://hub.test/h.gguf", sha256=B)
    hub = ModelSpec(name="hub", source="hf", origin="o/r", directory=f"{DIR}/hub", ctx=None, files=(hub_file,))
    small = ModelFile(name="c.json", host_path=f"{DIR}/hub2/c.json", url="https://hub.test/c.json", git_oid="1" * 40)
    hub2 = ModelSpec(name="hub2", source="hf", origin="o/r", directory=f"{DIR}/hub2", ctx=1024, files=(small,))
    pushed_file = ModelFile(name="p.gguf", host_path=f"{DIR}/push/p.gguf", local="/tmp/p.gguf", sha256=A)
    pushed = ModelSpec(name="push", source="file", origin="/tmp/p.gguf", directory=f"{DIR}/push", ctx=None,
                       keep_loaded=False, files=(pushed_file,))
    there = one(name="there", path="/srv/t.gguf")
    url = one(name="u", url=URL, sha256=A)
    on_host = {f"{DIR}/push/p.gguf": {"size": 4, "mtime": 9, "sha256": "0" * 64},
               "/srv/t.gguf": {"size": 7, "mtime": 70, "magic": "GGUF"}}
    specs = [hub, hub2, pushed, there, url]
    plan = modelplan.plan_models(config_of(specs, ctx=2048), {"model_files": {"files": on_host}})
    assert plan.specs == specs
    assert plan.directories == [f"{DIR}/hub", f"{DIR}/hub2", f"{DIR}/push", f"{DIR}/u"]
    assert plan.token_needed is True
    assert plan.pushes == [modelplan.FileAction("push", pushed_file, on_host[f"{DIR}/push/p.gguf"])]
    assert plan.downloads == [modelplan.FileAction("hub", hub_file, None, hub=True),
                              modelplan.FileAction("hub2", small, None, hub=True),
                              modelplan.FileAction("u", url.files[0], None, hub=False)]
    assert plan.preset.splitlines()[2:6] == ["[hub]", f"model = {DIR}/hub/h.gguf", "ctx-size = 2048",
                                             "load-on-startup = true"]
    assert plan.models_max == 5 and plan.serve_path == f"{DIR}/hub/h.gguf"
    assert plan.stamp == stamp_of([
        ["hub", 2048, True, [[f"{DIR}/hub/h.gguf", B]]],
        ["hub2", 1024, True, [[f"{DIR}/hub2/c.json", "1" * 40]]],
        ["push", 2048, False, [[f"{DIR}/push/p.gguf", A]]],
        ["there", 2048, True, [["/srv/t.gguf", "7:70"]]],
        ["u", 2048, True, [[f"{DIR}/u/alpha.gguf", A]]]])


def test_the_token_is_needed_only_for_hub_sources_and_vllm_serves_the_directory():
    plan = modelplan.plan_models(config_of([one(name="u", url=URL, sha256=A)], serve="vllm", models_max=3), {})
    assert (plan.token_needed, plan.preset, plan.models_max, plan.serve_path) == (False, None, 1, f"{DIR}/u")
    assert plan.stamp == stamp_of([["u", 8192, True, [[f"{DIR}/u/alpha.gguf", A]]]])
    assert modelplan.plan_models(config_of([one(name="u", url=URL, sha256=A)], models_max=3), {}).models_max == 3


def test_plan_refusals_word_for_word():
    unresolved = hub_spec()
    with pytest.raises(HostRefused) as error:
        modelplan.plan_models(config_of([unresolved], host="h3"), {})
    assert str(error.value) == ("host 'h3': model q: its hf source is resolved when a deploy plans the host "
                                "(hfhub.resolve_models: the Hub asked, pushed files hashed)")
    pinned = one(name="p", path="/srv/p.gguf", sha256=A)
    cases = [({}, "host 'h3': model p: /srv/p.gguf does not exist on the host (halo_models path source)"),
             ({"magic": "NOPE", "sha256": A}, "host 'h3': model p: /srv/p.gguf is not a GGUF file"),
             ({"magic": "GGUF", "sha256": B}, f"host 'h3': model p: /srv/p.gguf has SHA-256 {B}, not the pinned one: "
                                              "corrupt or replaced")]
    for current, message in cases:
        probe = {"model_files": {"files": {"/srv/p.gguf": current} if current else {}}}
        with pytest.raises(HostRefused) as error:
            modelplan.plan_models(config_of([pinned], host="h3"), probe)
        assert str(error.value) == message
    bad = ModelSpec(name="a b", source="path", origin="/srv/x.gguf", directory="/srv", ctx=None,
                    files=(ModelFile(name="x.gguf", host_path="/srv/x.gguf"),))
    with pytest.raises(ConfigError) as error:
        modelplan.plan_models(config_of([bad], host="h3"), {"model_files": {"files": {"/srv/x.gguf": {
            "magic": "GGUF", "size": 1, "mtime": 2}}}})
    assert str(error.value) == "host 'h3': halo_models='a b' is invalid: a model name must be a valid INI section name"


def test_an_x_is_an_ordinary_character_in_paths_hub_files_and_endpoints():
    assert one(name="a", path="/srv/X.gguf").files[0].host_path == "/srv/X.gguf"
    spec = hfhub.resolve_hf("h", hub_spec("*"), "https://mirror.boX/", None, True, fetch=Pages([lfs("X.gguf")]))
    assert [(item.name, item.url) for item in spec.files] == [("X.gguf",
                                                               "https://mirror.boX/acme/tiny/resolve/main/X.gguf")]
    assert hfhub.tree_url("https://mirror.boX/", "o/r", "main") == \
        "https://mirror.boX/api/models/o/r/tree/main?recursive=true"


def test_a_download_carries_the_probes_view_of_its_file():
    url = one(name="u", url=URL, sha256=A)
    current = {"size": 3, "mtime": 4, "sha256": B}
    plan = modelplan.plan_models(config_of([url]), {"model_files": {"files": {f"{DIR}/u/alpha.gguf": current}}})
    assert plan.downloads == [modelplan.FileAction("u", url.files[0], current, hub=False)]
