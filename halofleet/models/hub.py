"""
Resolving ``halo_models`` entries on the control machine, at plan time: the Hugging Face Hub's tree API lists a
repo's files with their digests (``lfs.oid`` is the SHA-256 of an LFS file; small non-LFS files carry their git
blob id), and pushed files are hashed here.

Why here and not on the host: the plan must know every expected digest before the first change (a dry run and
``--diff`` show what will be fetched, and a host whose files already verify gets no command at all), and the host
needs no Python or Hub client for it. The token goes only into this process's request headers, never into argv,
a log line or an error message.
"""

from __future__ import annotations

import fnmatch
import http.client
import re
import urllib.error
from pathlib import PurePosixPath
from typing import Callable
from urllib.parse import quote, urljoin

from ..contract import validators
from ..contract.config import HostRefused
from ..contract.localfiles import LocalFileRefused, sha256_of
from . import http as bounded
from .http import HttpStatus, ReadRefused, may_carry_token, parse_json
from .specs import INCLUDE, SHA256, SHARD, ModelFile, ModelSpec, shard_names

DEFAULT_ENDPOINT = "https://huggingface.co"
# One page of the tree API: (url, headers) -> (body bytes, the Link header or None).
Fetch = Callable[[str, dict], "tuple[bytes, str | None]"]


def page_fetch(reads: bounded.Reads) -> Fetch:
    """The tree API's pages through ``reads`` (bounded; the token never follows a redirect elsewhere)."""
    def fetch(url: str, headers: dict) -> tuple[bytes, str | None]:
        answer = reads.get(url, headers, max_bytes=reads.limits.json_bytes)
        kind = answer.headers.get("Content-Type")
        if kind and "json" not in kind.lower():
            raise ReadRefused(f"{bounded.shown(answer.url)} answered {kind[:60]!r}, not JSON")
        return answer.body, answer.headers.get("Link")
    return fetch


def _next_link(link: str | None) -> str | None:
    """The Hub paginates the tree with an RFC 8288 ``Link: <url>; rel="next"`` header."""
    for part in (link or "")[:8192].split(","):
        match = re.match(r'\s*<([^>]+)>\s*;.*rel="?next"?', part)
        if match:
            return match.group(1)
    return None


def tree_url(endpoint: str, repo: str, revision: str) -> str:
    return f"{endpoint.rstrip('/')}/api/models/{repo}/tree/{quote(revision, safe='')}?recursive=true"


def resolve_url(endpoint: str, repo: str, revision: str, path: str) -> str:
    return f"{endpoint.rstrip('/')}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"


def list_files(host: str, spec: ModelSpec, endpoint: str, token: str | None, fetch: Fetch,
               limits: bounded.Limits | None = None) -> list[dict]:
    """Every file entry of the repo at the revision (the tree API, all pages, within ``limits``)."""
    limits = limits or bounded.LIMITS
    what = f"the Hub's file list of {spec.origin}@{spec.revision}"
    url, entries = tree_url(endpoint, spec.origin, spec.revision), []
    for _ in range(limits.pages):
        headers = {"Accept": "application/json", "User-Agent": "halofleet"}
        if token and may_carry_token(url, endpoint):  # a next link elsewhere goes without it
            headers["Authorization"] = f"Bearer {token}"
        try:
            body, link = fetch(url, headers)
            page = parse_json(body, "the answer", limits)
        except ReadRefused as error:
            raise HostRefused(host, f"model {spec.name}: {what}: {error}; nothing was changed") from None
        except (HttpStatus, urllib.error.HTTPError) as error:
            hint = " (a private or gated repo needs halo_hf_token)" if error.code in (401, 403) else ""
            raise HostRefused(host, f"model {spec.name}: {what} answered HTTP {error.code}{hint}; nothing was "
                                    "changed") from None
        except (OSError, ValueError, http.client.HTTPException) as error:  # unreachable, timeouts, bad JSON
            raise HostRefused(host, f"model {spec.name}: could not list {spec.origin}@{spec.revision} at "
                                    f"{endpoint} ({type(error).__name__}); nothing was changed") from None
        if not isinstance(page, list):
            raise HostRefused(host, f"model {spec.name}: the Hub's tree answer is not a list")
        entries += [entry for entry in page if isinstance(entry, dict) and entry.get("type") == "file"]
        if len(entries) > limits.json_items:
            raise HostRefused(host, f"model {spec.name}: {what} has more than {limits.json_items} files (the bound)")
        following = _next_link(link)
        if not following:
            return entries
        url = urljoin(url, following)
    raise HostRefused(host, f"model {spec.name}: {what} has more than {limits.pages} pages (the bound)")


def _hub_file(host: str, spec: ModelSpec, entry: dict, endpoint: str) -> ModelFile:
    path = entry.get("path")
    size = entry.get("size")
    lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else None
    if not isinstance(path, str) or not INCLUDE.fullmatch(path) or ".." in path.split("/") \
            or any(c in path for c in "*?") or not isinstance(size, int) or size < 0:
        raise HostRefused(host, f"model {spec.name}: the Hub lists a file this host cannot hold as is: "
                                f"{repr(path)[:200]}")
    sha256 = lfs.get("oid") if lfs else None
    git_oid = None if lfs else entry.get("oid")
    if lfs and not (isinstance(sha256, str) and SHA256.fullmatch(sha256)):
        raise HostRefused(host, f"model {spec.name}: the Hub gives no SHA-256 for {path}")
    if not lfs and not (isinstance(git_oid, str) and re.fullmatch(r"[0-9a-f]{40}", git_oid)):
        raise HostRefused(host, f"model {spec.name}: the Hub gives no digest for {path}")
    host_path = f"{spec.directory}/{path}"
    if validators.check_absolute_path(host_path):  # the grammar model_download holds the path to
        raise HostRefused(host, f"model {spec.name}: the Hub lists a file this host cannot hold as is: {path!r} "
                                f"({host_path[:200]!r} {validators.check_absolute_path(host_path)})")
    return ModelFile(name=path, host_path=host_path, sha256=sha256, git_oid=git_oid, size=size,
                     url=resolve_url(endpoint, spec.origin, spec.revision, path))


def _check_gguf_set(host: str, spec: ModelSpec, files: list[ModelFile]) -> None:
    """llama-server gets one GGUF file or one complete split set (given by its first shard)."""
    names = [item.name for item in files]
    if not names or not all(name.endswith(".gguf") for name in names):
        raise HostRefused(host, f"model {spec.name}: include {spec.include!r} must match GGUF files only for "
                                f"llama-server; it matches {names or 'nothing'} in {spec.origin}@{spec.revision}")
    first = sorted(names)[0]
    expected = [str(PurePosixPath(first).parent / name) if "/" in first else name
                for name in shard_names(PurePosixPath(first).name)]
    if sorted(names) != sorted(expected):
        raise HostRefused(host, f"model {spec.name}: include {spec.include!r} must match one GGUF file or one "
                                f"complete split set; it matches {sorted(names)}")


def resolve_hf(host: str, spec: ModelSpec, endpoint: str, token: str | None, gguf: bool,
               fetch: Fetch | None = None, reads: bounded.Reads | None = None) -> ModelSpec:
    """An ``hf`` entry with its files, URLs and digests (the Hub's, checked against any the host data pins)."""
    literal = not any(c in spec.include for c in "*?")
    if gguf and literal and set(spec.sha256_given) == {spec.include} \
            and not SHARD.fullmatch(PurePosixPath(spec.include).name):
        # Pinned by name and digest: no lookup, so reruns work offline.
        path = spec.include
        if validators.check_absolute_path(f"{spec.directory}/{path}"):  # the grammar model_download holds it to
            raise HostRefused(host, f"model {spec.name}: {spec.directory}/{path} "
                                    f"{validators.check_absolute_path(f'{spec.directory}/{path}')}")
        item = ModelFile(name=path, host_path=f"{spec.directory}/{path}", sha256=spec.sha256_given[path],
                         url=resolve_url(endpoint, spec.origin, spec.revision, path))
        return spec.with_files([item])
    reads = reads or bounded.Reads()
    entries = list_files(host, spec, endpoint, token, fetch or page_fetch(reads), reads.limits)
    matched = sorted((entry for entry in entries if fnmatch.fnmatchcase(str(entry.get("path")), spec.include)),
                     key=lambda entry: str(entry.get("path")))
    if len(matched) > reads.limits.matches:
        raise HostRefused(host, f"model {spec.name}: include {spec.include!r} matches more than "
                                f"{reads.limits.matches} files in {spec.origin}@{spec.revision} (the bound)")
    if gguf and literal and len(matched) == 1 and SHARD.fullmatch(PurePosixPath(spec.include).name):
        # The first shard of a split set names the whole set.
        wanted = set(shard_names(PurePosixPath(spec.include).name))
        parent = str(PurePosixPath(spec.include).parent)
        matched = sorted((entry for entry in entries
                          if str(PurePosixPath(str(entry.get("path"))).parent) == parent
                          and PurePosixPath(str(entry.get("path"))).name in wanted),
                         key=lambda entry: str(entry.get("path")))
    files = [_hub_file(host, spec, entry, endpoint) for entry in matched]
    if not files:
        raise HostRefused(host, f"model {spec.name}: include {spec.include!r} matches no file in "
                                f"{spec.origin}@{spec.revision}")
    if gguf:
        _check_gguf_set(host, spec, files)
    by_name = {item.name: item for item in files}
    for name, digest in spec.sha256_given.items():
        if name not in by_name:
            raise HostRefused(host, f"model {spec.name}: sha256 names {name}, which include does not fetch")
        if by_name[name].sha256 != digest:
            raise HostRefused(host, f"model {spec.name}: the Hub's SHA-256 of {name} is {by_name[name].sha256}, "
                                    f"not the pinned {digest}: the repo changed or the pin is wrong")
    return spec.with_files(files)


def resolve_models(host: str, specs: list[ModelSpec], endpoint: str, token: str | None, engine: str,
                   fetch: Fetch | None = None, hasher: Callable[[str], str] | None = None,
                   reads: bounded.Reads | None = None) -> list[ModelSpec]:
    """
    Every spec with its files: hf entries from the Hub (through ``reads``: this host's bounded HTTP reads), pushed
    files hashed here (their digest is the stamp).
    """

    resolved = []
    for spec in specs:
        if spec.source == "hf":
            spec = resolve_hf(host, spec, endpoint, token, gguf=engine == "llama-server", fetch=fetch, reads=reads)
        elif spec.source == "file":
            name = PurePosixPath(spec.origin).name
            try:
                digest = (hasher or sha256_of)(spec.origin)
            except LocalFileRefused as error:
                raise HostRefused(host, f"model {spec.name}: {error}") from None
            pinned = spec.sha256_given.get(name)
            if pinned and pinned != digest:
                raise HostRefused(host, f"model {spec.name}: the local file {spec.origin} has SHA-256 {digest}, "
                                        "not the pinned one: it is corrupt or a different model")
            spec = spec.with_files([ModelFile(name=name, host_path=f"{spec.directory}/{name}", local=spec.origin,
                                              sha256=digest)])
        resolved.append(spec)
    return resolved
