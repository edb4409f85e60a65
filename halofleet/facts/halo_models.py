"""
The files of ``halo_models`` on a host, read by the preflight probe (:class:`~halofleet.facts.probe.HostProbe`)
in its one round trip: present or not, owner, size, and the digest a verified record beside each file keeps.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from typing import Any

from pyinfra.api import FactBase

from ..contract.paths import VERIFIED_DIR


def _ascii_int(text: str) -> int | None:
    text = text.strip()
    return int(text) if re.fullmatch(r"-?[0-9]{1,30}", text) else None


def verified_record_path(path: str) -> str:
    """Where halofleet keeps the verified record of a model file it does not own the directory of (a ``path``
    model, a pushed one): ``VERIFIED_DIR/<sha256 of the path>``."""
    return f"{VERIFIED_DIR}/{hashlib.sha256(path.encode()).hexdigest()}"


# Shell, with the file in "$f": "$rec" set to the digest of halofleet's verified record of it when size, mtime,
# ctime and inode all still match (ctime cannot be set back by whoever writes the file), else empty.
RECORD_LOOKUP = (
    'rec=; r=' + VERIFIED_DIR + '/$(printf \'%s\' "$f" | sha256sum | cut -c1-64); '
    'st=$(stat -L -c \'%s %Y %Z %i\' "$f"); '
    '[ -r "$r" ] && read -r rd rs rm rc ri < "$r" && [ "$rs $rm $rc $ri" = "$st" ] && rec=$rd'
)


def sidecar_path(path: str) -> str:
    """Where a verified model file's record lives: ``.<name>.sha256`` beside it (digest, size, mtime)."""
    directory, _, name = path.rpartition("/")
    return f"{directory}/.{name}.sha256"


# The record: "<sha256> <size> <mtime> <git blob id or ->". A file whose record still matches its size and mtime
# is not hashed again: a verified multi-GB model costs one
# stat per run. Anything else present is hashed (and reported with its digest), so a replaced file is caught.
MODEL_FILES_SCRIPT = (
    'for f in "$@"; do case "$f" in @dir=*) d=${f#@dir=}; '
    '[ -d "$d" ] && echo "@dir $(stat -c \'%U %a\' "$d") $d"; continue;; esac; '
    'if [ -f "$f" ]; then set -- $(stat -L -c \'%s %Y %U\' "$f") ; '
    's="${f%/*}/.${f##*/}.sha256"; d=; '
    '[ -r "$s" ] && read -r sd ss sm so < "$s" && [ "$ss" = "$1" ] && [ "$sm" = "$2" ] && d=$sd; '
    'if [ -z "$d" ]; then so=-; ' + RECORD_LOOKUP + '; '
    '[ -n "$rec" ] && d=$rec && echo "@recorded $f"; echo "@stat $st $f"; fi; '
    '[ -n "$d" ] || d=$(sha256sum < "$f" | cut -c1-64); '
    'echo "@file $1 $2 $3 $d ${so:--} $(head -c 4 "$f" | od -An -tx1 | tr -d \' \\n\') $f"; '
    'else echo "@missing $f"; fi; done'
)


def parse_model_files(lines: list[str]) -> dict[str, dict[str, Any]]:
    """``files``: {path: {size, mtime, owner, sha256, git_oid, magic}} for present files (missing ones are
    absent); ``dirs``: {path: "<owner> <mode>"} for present directories."""
    files: dict[str, dict[str, Any]] = {}
    dirs: dict[str, str] = {}
    recorded: set[str] = set()
    stats: dict[str, str] = {}
    for line in lines:
        tag, _, rest = line.strip().partition(" ")
        if tag == "@recorded":
            recorded.add(rest.strip())
            continue
        if tag == "@stat":
            parts = rest.split(" ", 4)
            if len(parts) == 5 and all(_ascii_int(part) is not None for part in parts[:4]):
                stats[parts[4]] = " ".join(parts[:4])
            continue
        if tag == "@dir":
            parts = rest.split(" ", 2)
            if len(parts) == 3:
                dirs[parts[2]] = f"{parts[0]} {parts[1]}"
            continue
        if tag != "@file":
            continue
        parts = rest.split(" ", 6)
        if len(parts) != 7 or not re.fullmatch(r"[0-9a-f]{64}", parts[3]):
            continue
        try:
            magic = bytes.fromhex(parts[5]).decode("latin-1")
        except ValueError:
            magic = ""
        git_oid = parts[4] if re.fullmatch(r"[0-9a-f]{40}", parts[4]) else None
        files[parts[6]] = {"size": _ascii_int(parts[0]), "mtime": _ascii_int(parts[1]), "owner": parts[2],
                           "sha256": parts[3], "git_oid": git_oid, "magic": magic}
    for path in recorded & set(files):  # the digest came from halofleet's verified record, not a full read
        files[path]["recorded"] = True
    for path in stats.keys() & set(files):  # size mtime ctime inode, for the record written once it is verified
        files[path]["stat"] = stats[path]
    return {"files": files, "dirs": dirs}


class ModelFiles(FactBase[dict]):
    """
    The files of ``halo_models`` on the host: size, mtime, owner, SHA-256 (from the verified record beside the
    file while size and mtime match it, else computed), the git blob id the record holds for a small non-LFS Hub
    file, and the first 4 bytes.

    .. code:: python

        {"files": {"/var/lib/halofleet/models/a/a.gguf": {"size": 497440, "mtime": 1764110000, "owner": "halo",
                                                          "sha256": "...", "git_oid": None, "magic": "GGUF"}},
         "dirs": {"/var/lib/halofleet/models/a": "halo 750"}}
    """

    default = dict

    def command(self, paths: list[str], directories: list[str] = ()) -> str:
        words = [f"@dir={path}" for path in directories] + list(paths)
        return "sh -c " + shlex.quote(MODEL_FILES_SCRIPT) + " halofleet-models " + " ".join(
            shlex.quote(word) for word in words
        )

    def process(self, output):
        return parse_model_files(list(output))
