"""
Files on the control machine that host data names (a model to push, the gateway's TLS certificate): where they are
(a relative path means relative to the inventory file's directory, wherever pyinfra or halofleet is started from:
:func:`anchor_local_paths`), and how they are read: opened only when they are regular files (never a FIFO, a device
such as ``/dev/zero``, a directory or a symlink loop), and read up to a bound. Anything else raises
:class:`LocalFileRefused` with a one-line reason (without the path: the caller names it and refuses that host).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from .validators import TRUE_WORDS

CERT_BYTES = 1 << 20  # a PEM chain and its key: a few KiB
MODEL_BYTES = 1 << 42  # 4 TiB: more than any box's memory, so only a file that cannot be served is refused
BLOCK = 1 << 20


class LocalFileRefused(ValueError):
    """A control-machine file that is not a readable regular file, or larger than its bound."""


class LocalFileMissing(LocalFileRefused):
    """No file at all at that path."""


def _path(path: str) -> str:
    try:
        return str(Path(path).expanduser())
    except RuntimeError:  # ~user that does not exist
        return path


def open_regular(path: str) -> BinaryIO:
    """
    ``path`` opened for reading if it is a regular file (symlinks to one are fine). Opened without blocking and
    checked on the open descriptor, so a FIFO never hangs and nothing is swapped in between the check and the read.
    """
    try:
        fd = os.open(_path(path), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LocalFileMissing("no such file on the control machine") from None
    except OSError as error:
        raise LocalFileRefused(f"cannot be opened on the control machine ({error.strerror or type(error).__name__})") \
            from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                    "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "not a regular file")
            raise LocalFileRefused(f"is {kind} on the control machine, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def is_regular(path: str) -> bool:
    """Whether ``path`` opens as a regular file (the check :func:`open_regular` makes, without reading)."""
    try:
        open_regular(path).close()
    except LocalFileRefused:
        return False
    return True


def read_bounded(path: str, limit: int) -> bytes:
    """The whole regular file, refused when it holds more than ``limit`` bytes."""
    with open_regular(path) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise LocalFileRefused(f"cannot be read on the control machine ({error.strerror or type(error).__name__})") from None
    if len(data) > limit:
        raise LocalFileRefused(f"is larger than {limit} bytes (the bound)")
    return data


def read_at(path: str, offset: int, length: int) -> bytes:
    """``length`` bytes of the regular file from ``offset`` (fewer at its end)."""
    with open_regular(path) as handle:
        try:
            handle.seek(offset)
            return handle.read(length)
        except OSError as error:
            raise LocalFileRefused(f"cannot be read on the control machine ({error.strerror or type(error).__name__})") from None


def sha256_of(path: str, limit: int = MODEL_BYTES) -> str:
    """The SHA-256 of a regular file (a model to push), read in 1 MiB blocks, up to ``limit`` bytes."""
    digest, size = hashlib.sha256(), 0
    with open_regular(path) as handle:
        try:
            for block in iter(lambda: handle.read(BLOCK), b""):
                size += len(block)
                if size > limit:
                    raise LocalFileRefused(f"is larger than {limit} bytes (the bound)")
                digest.update(block)
        except OSError as error:
            raise LocalFileRefused(f"cannot be read on the control machine ({error.strerror or type(error).__name__})") from None
    return digest.hexdigest()


# -- where: relative paths anchored at the inventory ------------------------------------------------------------

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
