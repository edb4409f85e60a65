"""
Paths on the control machine in host data (a pushed model, a TLS certificate): a relative one means relative to the
inventory file's directory, wherever pyinfra or halofleet is started from, so a site directory works from anywhere.
"""

from __future__ import annotations

import os
from typing import Any

from .validators import TRUE_WORDS

# Keys whose value is always a file on the control machine.
LOCAL_FILE_KEYS = ("halo_gateway_tls_cert",)


def _pushes(value: Any) -> bool:
    return value is True or isinstance(value, str) and value.lower() in TRUE_WORDS


def _anchored(value: Any, base: str) -> Any:
    """``value`` joined to ``base`` when it is a relative path text; anything else (absolute, ``~``, bad) as is."""
    if not isinstance(value, str) or not value or value.startswith("~") or os.path.isabs(value) or "\0" in value:
        return value
    return os.path.normpath(os.path.join(base, value))


def anchor_local_paths(data: dict[str, Any], base: str | None) -> dict[str, Any]:
    """
    One host's data with every control-machine path made absolute against ``base`` (the inventory file's
    directory; None: left relative to the current directory). Validation then judges the anchored value.
    """
    if not base:
        return data
    result = dict(data)
    for key in LOCAL_FILE_KEYS:
        if key in result:
            result[key] = _anchored(result[key], base)
    if "halo_model" in result and _pushes(result.get("halo_model_push")):
        result["halo_model"] = _anchored(result["halo_model"], base)
    entries = result.get("halo_models")
    if isinstance(entries, (list, tuple)):
        result["halo_models"] = [
            {**entry, "file": _anchored(entry["file"], base)} if isinstance(entry, dict) and "file" in entry
            else entry for entry in entries
        ]
    return result
