"""
Goldens: what a model answered to our fixed prompts when it was first verified, kept on the control machine and
keyed by the model file's SHA-256, the engine build and the backend (answers are compared only under the same
three). One JSON file per key, mode 0600 in a 0700 directory; read back bounded, regular files only.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .answers import Answer, AnswerError, answer_from_json

DIR_ENV = "HALOFLEET_GOLDEN_DIR"
MAX_GOLDEN_BYTES = 1024 * 1024
BACKENDS = ("cpu", "vulkan", "hip", "vllm")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BUILD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class GoldenError(ValueError):
    """A golden file that cannot be used (unreadable, too large, not ours)."""


@dataclass(frozen=True)
class Key:
    sha256: str  # the model file's
    build: str  # "b11669" for llama.cpp, vLLM's version
    backend: str  # cpu | vulkan | hip | vllm

    def __post_init__(self) -> None:
        if not _SHA256.fullmatch(self.sha256) or not _BUILD.fullmatch(self.build) or self.backend not in BACKENDS:
            raise GoldenError(f"not a golden key: {self.sha256!r} {self.build!r} {self.backend!r}")

    @property
    def filename(self) -> str:
        return f"{self.sha256}.{self.backend}.{self.build}.json"


@dataclass
class Golden:
    key: Key
    model: str  # the file's name, for people reading the directory
    host: str  # where it was recorded
    recorded: str  # UTC, ISO 8601
    answers: dict[str, Answer]


def directory() -> Path:
    """``$HALOFLEET_GOLDEN_DIR``, else ``$XDG_STATE_HOME/halofleet/golden`` (``~/.local/state/...``)."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV])
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "halofleet" / "golden"


def load(key: Key, where: Path | None = None) -> Golden | None:
    """The golden for ``key`` (None: none recorded); :class:`GoldenError` for a file that cannot be trusted."""
    path = (where or directory()) / key.filename
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError as error:
        raise GoldenError(f"{path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise GoldenError(f"{path}: not a regular file")
        if info.st_size > MAX_GOLDEN_BYTES:
            raise GoldenError(f"{path}: larger than {MAX_GOLDEN_BYTES} bytes")
        raw = handle.read(MAX_GOLDEN_BYTES + 1)
    try:
        data = json.loads(raw)
        answers = {str(name): answer_from_json(value) for name, value in data["answers"].items()}
        stored = Key(data["sha256"], data["build"], data["backend"])
        if stored != key:
            raise GoldenError(f"{path}: holds {stored}, not {key}")
        return Golden(key, str(data["model"])[:255], str(data["host"])[:255], str(data["recorded"])[:64], answers)
    except (ValueError, KeyError, TypeError, AttributeError, AnswerError) as error:
        raise GoldenError(f"{path}: not a golden ({type(error).__name__}: {error})") from None


def save(golden: Golden, where: Path | None = None, replace: bool = False) -> Path | None:
    """Write ``golden`` (0600, atomically); an existing one is kept unless ``replace`` (returns None then)."""
    folder = where or directory()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / golden.key.filename
    data = {"sha256": golden.key.sha256, "build": golden.key.build, "backend": golden.key.backend,
            "model": golden.model, "host": golden.host, "recorded": golden.recorded,
            "answers": {name: answer.as_json() for name, answer in sorted(golden.answers.items())}}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if len(text) > MAX_GOLDEN_BYTES:
        raise GoldenError(f"golden for {golden.model} would be larger than {MAX_GOLDEN_BYTES} bytes")
    fd, temporary = tempfile.mkstemp(prefix=".golden-", dir=folder)  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # fails if another host recorded it first: the first one stays
            except FileExistsError:
                return None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
