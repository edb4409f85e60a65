"""
The GGUF header of the model a host serves, read where the model is (the bench stage runs on the host) and parsed
on the controller: bounded slices of the file's start, base64'd, so no Python or gguf tooling is needed on the host.
"""

from __future__ import annotations

import base64
import binascii
import shlex
from typing import Any, Callable

from pyinfra.api import FactBase

from ..models.gguf import GGUFError, TokenCost, read_header_in_chunks, token_cost
from ..models.kvcache import Need, need_from_reader

DATA_MARK = "@data"


class ModelBytes(FactBase[bytes | None]):
    """
    ``length`` bytes of the file at ``path`` from ``offset`` (fewer at its end), or None when it is not a
    readable regular file. ``tail -c +N`` seeks on a regular file, so a later slice does not reread the first.
    """

    def command(self, path: str, offset: int, length: int) -> str:
        read = (f"tail -c +{int(offset) + 1} \"$f\" | head -c {int(length)}" if offset
                else f"head -c {int(length)} \"$f\"")
        return f"f={shlex.quote(path)}; [ -f \"$f\" ] && [ -r \"$f\" ] || exit 0; echo {DATA_MARK}; {read} | base64"

    def process(self, output) -> bytes | None:
        return parse_model_bytes(list(output))


def parse_model_bytes(lines: list[str]) -> bytes | None:
    if not lines or lines[0].strip() != DATA_MARK:
        return None
    try:
        return base64.b64decode("".join(line.strip() for line in lines[1:]), validate=True)
    except (binascii.Error, ValueError):
        return None


def model_token_cost(read: Callable[[int, int], bytes | None]) -> tuple[TokenCost | None, str]:
    """The token cost of the model behind ``read(offset, length)``, or None and why not."""
    try:
        cost = token_cost(read_header_in_chunks(read))
    except GGUFError as error:  # a ValueError: unreadable, not GGUF, truncated, hostile
        return None, str(error)
    return (cost, "") if cost.bytes_per_token is not None else (None, cost.reason)


def host_model_token_cost(host: Any, path: str) -> tuple[TokenCost | None, str]:
    """:func:`model_token_cost` of ``path`` on ``host``, one fact per slice read."""
    return model_token_cost(host_reader(host)(path))


def host_reader(host: Any) -> Callable[[str], Callable[[int, int], bytes | None]]:
    """``reader(path)(offset, length)`` of files on a pyinfra ``host``: bounded slices, one fact each."""
    def for_path(path: str) -> Callable[[int, int], bytes | None]:
        return lambda offset, length: host.get_fact(ModelBytes, path=path, offset=offset, length=length)
    return for_path


def need_on_host(host: Any, path: str, ctx: int, kv_type: str = "f16", **options: Any) -> Need:
    """:func:`halofleet.models.kvcache.need_of_file` of ``path`` on a pyinfra ``host``; ``options`` as there."""
    return need_from_reader(host_reader(host), path, ctx, kv_type, **options)
