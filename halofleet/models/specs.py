"""
``halo_models``: several models per host as managed artifacts. Each entry names one model and exactly one source
(a file on the control machine, a path on the host, an http(s) URL, or a Hugging Face repo); this module turns the
host data into :class:`ModelSpec` values (validated, refused with a ConfigError naming the entry and the rule) and
renders llama-server's router preset from them.

Files land under ``halo_model_dir/<name>/``, owned by the service user. ``url`` and ``hf`` files are fetched on
the host by curl and verified by SHA-256 before they are moved into place (:mod:`halofleet.operations.halo_models`);
the Hub's digests come from its tree API at plan time (:mod:`halofleet.models.hub`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from ..contract import localfiles, validators
from ..contract.config import GGUF_MAGIC, HF_MODEL_ID, HIDDEN, ConfigError, HaloConfig, check_rules, coerce_keys

KEY = "halo_models"
SOURCES = ("file", "path", "url", "hf")
ENTRY_KEYS = (*SOURCES, "name", "include", "revision", "sha256", "ctx", "keep_loaded")
# The served model name: the router preset's section, the id in /v1/models, the per-model directory.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# llama.cpp's split naming (llama-gguf-split): <prefix>-00001-of-00003.gguf; the first shard is what it loads.
SHARD = re.compile(r"(?P<prefix>.+)-(?P<index>[0-9]{5})-of-(?P<count>[0-9]{5})\.gguf")
MAX_SHARDS = 999
# A file name or glob inside a repo: path components of the path grammar plus '*' and '?' (no '[': a plain
# subset of fnmatch that needs no escaping anywhere).
INCLUDE = re.compile(r"[A-Za-z0-9._+@*?-]{1,255}(?:/[A-Za-z0-9._+@*?-]{1,255}){0,7}")
REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,3}")
SHA256 = re.compile(r"[0-9a-f]{64}")
CTX_RANGE = (256, 1048576)  # as halo_ctx


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: where it comes from, where it lives on the host, and what it must hash to."""

    name: str  # relative path inside the model's directory (or the file name of a 'path' source)
    host_path: str
    url: str | None = None  # fetched on the host ('url', 'hf')
    local: str | None = None  # pushed from the control machine ('file')
    sha256: str | None = None  # expected digest (None: a 'path' without one, or a small non-LFS Hub file)
    git_oid: str | None = None  # a non-LFS Hub file: its git blob id (SHA-1 of "blob <size>\0" + content)
    size: int | None = None  # from the Hub; None when unknown


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # file | path | url | hf
    origin: str  # the value of the source key
    directory: str  # halo_model_dir/<name> (for 'path': the file's own directory)
    ctx: int | None  # None: halo_ctx
    keep_loaded: bool = True
    include: str | None = None  # hf
    revision: str = "main"  # hf
    sha256_given: dict[str, str] = field(default_factory=dict)  # file name -> hex, as the host data says
    files: tuple[ModelFile, ...] = ()  # empty for 'hf' and 'file' until resolved (hfhub.resolve_models)

    @property
    def resolved(self) -> bool:
        return bool(self.files)

    @property
    def host_path(self) -> str:
        """What llama-server is given: the GGUF file, or a split set's first shard (unresolved: the directory)."""
        if not self.files:
            return self.directory
        for item in sorted(self.files, key=lambda each: each.name):
            shard = SHARD.fullmatch(PurePosixPath(item.name).name)
            if item.name.endswith(".gguf") and (not shard or shard.group("index") == "00001"):
                return item.host_path
        return self.files[0].host_path

    @property
    def host_paths(self) -> list[str]:
        return [item.host_path for item in self.files]

    @property
    def sha256(self) -> dict[str, str | None]:
        """Expected SHA-256 per file (relative name -> hex, None where only a git blob id is known)."""
        return {item.name: item.sha256 for item in self.files}

    def with_files(self, files: list[ModelFile]) -> ModelSpec:
        return dataclasses.replace(self, files=tuple(files))


def _fail(host: str, index: int, key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(host, f"{KEY}[{index}].{key}" if key else f"{KEY}[{index}]", value, allowed)


def _bool(host: str, index: int, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in validators.TRUE_WORDS | validators.FALSE_WORDS:
        return value.lower() in validators.TRUE_WORDS
    raise _fail(host, index, "keep_loaded", value, "must be true or false")


def _ctx(host: str, index: int, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and validators.check_int_text(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not CTX_RANGE[0] <= value <= CTX_RANGE[1]:
        raise _fail(host, index, "ctx", value, f"must be a whole number between {CTX_RANGE[0]} and {CTX_RANGE[1]}")
    return value


def _text(host: str, index: int, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "\n\r\0"):
        raise _fail(host, index, key, value, "must be a non-empty single-line string")
    return value


def _digests(host: str, index: int, value: Any) -> dict[str, str] | str | None:
    """``sha256``: 64 hex digits, or a mapping file name -> 64 hex digits."""
    if value is None:
        return None
    if isinstance(value, str):
        if not SHA256.fullmatch(value):
            raise _fail(host, index, "sha256", value, "must be 64 lower-case hex digits (or a mapping file -> digest)")
        return value
    if not isinstance(value, dict) or not value:
        raise _fail(host, index, "sha256", value, "must be 64 lower-case hex digits or a mapping file name -> digest")
    for name, digest in value.items():
        if not isinstance(name, str) or INCLUDE.fullmatch(name) is None or "*" in name or "?" in name \
                or any(part in (".", "..") for part in name.split("/")):
            raise _fail(host, index, "sha256", name, "keys must be file names (a path inside a repo for hf)")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise _fail(host, index, "sha256", {name: digest}, "values must be 64 lower-case hex digits")
    return dict(value)


def shard_names(file_name: str) -> list[str]:
    """All shard names of a split set given its first shard, or just the file itself."""
    match = SHARD.fullmatch(file_name)
    if not match:
        return [file_name]
    count = int(match.group("count"))
    return [f"{match.group('prefix')}-{index:05d}-of-{count:05d}.gguf" for index in range(1, count + 1)]


def _url_files(host: str, index: int, url: str, directory: str, digests: Any) -> list[ModelFile]:
    problem = validators.check_url(url)
    if problem or not url.startswith(("http://", "https://")):
        raise _fail(host, index, "url", url, problem or "must be an http:// or https:// URL")
    parts = urlsplit(url)
    file_name = unquote(PurePosixPath(parts.path).name)
    if validators.check_file_name(file_name) or not file_name.endswith(".gguf"):
        raise _fail(host, index, "url", url, "must end in a GGUF file name (letters, digits, . _ + @ -, '.gguf')")
    match = SHARD.fullmatch(file_name)
    if match and (match.group("index") != "00001" or not 1 <= int(match.group("count")) <= MAX_SHARDS):
        raise _fail(host, index, "url", url, "a split set is named by its first shard, -00001-of-0000N.gguf "
                                             f"(N at most {MAX_SHARDS})")
    names = shard_names(file_name)
    if digests is None:
        raise _fail(host, index, "sha256", None, "is required for a url source (the download is verified with it)")
    if isinstance(digests, str):
        if len(names) != 1:
            raise _fail(host, index, "sha256", digests, f"a split set of {len(names)} files needs a mapping "
                                                        "file name -> digest for every shard")
        digests = {names[0]: digests}
    if set(digests) != set(names):
        raise _fail(host, index, "sha256", sorted(digests), f"must name exactly the files fetched: {', '.join(names)}")
    for name in names:  # the grammar model_download holds each file's path to
        problem = validators.check_absolute_path(f"{directory}/{name}")
        if problem:
            raise _fail(host, index, "url", url, f"gives the path {directory}/{name} on the host, which {problem}")
    base = url[: url.rindex("/") + 1]
    query = f"?{parts.query}" if parts.query else ""
    return [ModelFile(name=name, host_path=f"{directory}/{name}",
                      url=base + name + query if len(names) > 1 else url, sha256=digests[name]) for name in names]


def _entry(host: str, index: int, entry: Any, model_dir: str) -> ModelSpec:
    if not isinstance(entry, dict):
        raise _fail(host, index, "", entry, "each entry must be a mapping with name and one source "
                                            "(file, path, url or hf)")
    for key in entry:
        if key not in ENTRY_KEYS:
            hint = difflib.get_close_matches(str(key), ENTRY_KEYS, n=1)
            hint_text = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise _fail(host, index, str(key), HIDDEN, f"unknown key{hint_text}; allowed: {', '.join(ENTRY_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise _fail(host, index, "name", name, "is required: 1-64 characters from A-Z a-z 0-9 . _ - starting with a "
                                               "letter or digit (the served model name)")
    sources = [key for key in SOURCES if entry.get(key) is not None]
    if len(sources) != 1:
        raise _fail(host, index, "", sorted(sources), "needs exactly one source: file, path, url or hf")
    source = sources[0]
    origin = _text(host, index, source, entry[source])
    directory = f"{model_dir}/{name}"
    digests = _digests(host, index, entry.get("sha256"))
    ctx = _ctx(host, index, entry.get("ctx"))
    keep = _bool(host, index, entry.get("keep_loaded", True))
    for key in ("include", "revision"):
        if source != "hf" and entry.get(key) is not None:
            raise _fail(host, index, key, entry[key], "belongs to an hf source only")
    common = dict(name=name, source=source, origin=origin, ctx=ctx, keep_loaded=keep)
    if source == "url":
        files = _url_files(host, index, origin, directory, digests)
        return ModelSpec(directory=directory, sha256_given={f.name: f.sha256 for f in files}, files=tuple(files),
                         **common)
    if source == "hf":
        if not HF_MODEL_ID.fullmatch(origin) or len(origin) > 200:
            raise _fail(host, index, "hf", origin, "must be a Hugging Face repo id, owner/name")
        include = entry.get("include", "*")
        if not isinstance(include, str) or not INCLUDE.fullmatch(include) \
                or any(part in (".", "..") for part in include.split("/")):
            raise _fail(host, index, "include", include, "must be a file name or glob inside the repo (A-Z a-z 0-9 "
                                                         ". _ + @ - / and the wildcards * ?)")
        revision = entry.get("revision", "main")
        if not isinstance(revision, str) or not REVISION.fullmatch(revision) or ".." in revision:
            raise _fail(host, index, "revision", revision, "must be a branch, tag or commit (A-Z a-z 0-9 . _ - /)")
        if isinstance(digests, str):
            literal = not any(c in include for c in "*?")
            if not literal:
                raise _fail(host, index, "sha256", digests, "with a glob in include, give a mapping file -> digest")
            digests = {include: digests}
        return ModelSpec(directory=directory, include=include, revision=revision, sha256_given=digests or {},
                         **common)
    if source == "path":
        problem = validators.check_absolute_path(origin)
        if problem:
            raise _fail(host, index, "path", origin, problem)
        file_name = PurePosixPath(origin).name
        if isinstance(digests, dict):
            if set(digests) != {file_name}:
                raise _fail(host, index, "sha256", sorted(digests), f"must name the file {file_name}")
            digests = digests[file_name]
        files = [ModelFile(name=file_name, host_path=origin, sha256=digests)]
        return ModelSpec(directory=str(PurePosixPath(origin).parent), files=tuple(files),
                         sha256_given={file_name: digests} if digests else {}, **common)
    # file: pushed from the control machine; hashed when resolved (hfhub.resolve_models), checked now
    file_name = PurePosixPath(origin).name
    if validators.check_file_name(file_name):
        raise _fail(host, index, "file", origin, f"the file's name on the host {validators.check_file_name(file_name)}")
    try:
        magic = localfiles.read_at(origin, 0, 4)
    except localfiles.LocalFileRefused as error:
        raise _fail(host, index, "file", origin, str(error)) from None
    if magic != GGUF_MAGIC:
        raise _fail(host, index, "file", origin, "not a GGUF file (it does not start with 'GGUF')")
    if isinstance(digests, dict):
        if set(digests) != {file_name}:
            raise _fail(host, index, "sha256", sorted(digests), f"must name the file {file_name}")
        digests = digests[file_name]
    return ModelSpec(directory=directory, sha256_given={file_name: digests} if digests else {}, **common)


def parse_models(host: str, value: Any, model_dir: str = "/var/lib/halofleet/models") -> list[ModelSpec]:
    """``halo_models`` as validated specs; ConfigError naming the entry, key and rule for anything else."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ConfigError(host, KEY, value, "must be a list of model entries (mappings)")
    specs, seen = [], set()
    for index, entry in enumerate(value):
        spec = _entry(host, index, entry, model_dir)
        if spec.name in seen:
            raise _fail(host, index, "name", spec.name, "must be unique on the host")
        seen.add(spec.name)
        specs.append(spec)
    return specs



def validate(host: str, data: dict[str, Any], serving: bool = True) -> HaloConfig:
    """
    One host's data through the whole contract: every key (:func:`halofleet.contract.config.coerce_keys`), the
    ``halo_models`` entries, then the rules between keys. ``serving=False`` skips the models and the serving
    rules (undoing a deploy needs no model: a pushed file gone from this machine must not block it).
    """
    values = coerce_keys(host, data)
    if serving:
        values["halo_models"] = parse_models(host, values["halo_models"], values["halo_model_dir"])
    return check_rules(host, values, serving)

# -- llama-server router preset -------------------------------------------------------------------------------
# Keys checked against forky's llama-server 0.7.0 (build 11669) by running it: a section per model, 'model',
# 'ctx-size' and the preset-only 'load-on-startup'; the section name becomes the model's --alias and its id in
# /v1/models. Arguments on the router's own command line override a preset's value (measured: a router started
# with -c 384 ran a model whose section said ctx-size = 256 at 384), so the context is set per section only.
INI_SECTION = MODEL_NAME
INI_KEY = re.compile(r"[a-z][a-z0-9-]{0,63}")


def check_ini_value(value: str) -> str | None:
    """A value an INI line holds as given: one line, no leading comment or section syntax, no inline comment."""
    if not value or value != value.strip() or any(c in value for c in "\n\r\0[];#=\"'") or not value.isprintable():
        return (f"{value!r} cannot be written into the router preset (one line; no [ ] ; # = quotes, or "
                "surrounding spaces)")
    return None


def render_preset(host: str, specs: list[ModelSpec], default_ctx: int) -> str:
    """The router's ``--models-preset`` INI: one section per model; every value checked against the INI grammar."""
    lines = ["; Managed by halofleet: the models llama-server's router serves (one section per model).", ""]
    for spec in specs:
        if not INI_SECTION.fullmatch(spec.name):
            raise ConfigError(host, KEY, spec.name, "a model name must be a valid INI section name")
        lines.append(f"[{spec.name}]")
        settings = {"model": spec.host_path, "ctx-size": str(spec.ctx or default_ctx),
                    "load-on-startup": "true" if spec.keep_loaded else "false"}
        for key, value in settings.items():
            problem = check_ini_value(value) if INI_KEY.fullmatch(key) else f"bad key {key!r}"
            if problem:
                raise ConfigError(host, f"{KEY}[{spec.name}]", value, problem)
            lines.append(f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)
