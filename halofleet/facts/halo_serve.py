"""
Facts about what a host serves: the service account's ids, the engine unit's state and listeners, the model file,
the container image, the engine's health and the last benchmark. Each a shell command and a pure ``parse_*``
function; :class:`halofleet.facts.probe.HostProbe` runs them in its one round trip.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shlex
from typing import Any
from urllib.parse import urlsplit

from pyinfra.api import FactBase

from ..box.bench import parse_bench_result
from ..box.engine_build import MAX_VERSION_TEXT, parse_version_output
from ..contract.paths import BENCH_RESULT, SERVE_CACHE, SERVE_CONF, SERVE_ENV, SERVE_SERVICE, SERVE_STAMP
from .halo_models import RECORD_LOOKUP
from .text import ascii_int as _ascii_int


def parse_accounts(lines: list[str]) -> dict[str, Any]:
    """``name:uid:gid`` passwd lines, then ``@group`` and ``name:gid`` group lines."""
    users: dict[str, tuple[int, int]] = {}
    groups: dict[str, int] = {}
    in_groups = False
    for line in lines:
        line = line.strip()
        if line == "@group":
            in_groups = True
            continue
        parts = line.split(":")
        numbers = [_ascii_int(part) for part in parts[1:]]
        if in_groups and len(parts) == 2 and numbers[0] is not None:
            groups[parts[0]] = numbers[0]
        elif not in_groups and len(parts) == 3 and None not in numbers:
            users[parts[0]] = (numbers[0], numbers[1])
    return {"users": users, "groups": groups}


class Accounts(FactBase[dict]):
    """Users (uid, primary gid) and groups (gid): the service user's ids go into container units."""

    def command(self) -> str:
        return "getent passwd | cut -d: -f1,3,4; echo @group; getent group | cut -d: -f1,3"

    def process(self, output):
        return parse_accounts(list(output))


def _hex_address(text: str) -> str:
    """A /proc/net/tcp{,6} address (little-endian hex words) as an IP string."""
    raw = bytes.fromhex(text)
    # each 32-bit word is in host (little-endian) order
    fixed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(fixed))


def parse_serve_state(lines: list[str]) -> dict[str, Any]:
    """Service state, TCP listeners (from /proc/net/tcp*, no ``ss`` needed) and the served-model stamp."""
    state: dict[str, Any] = {"active": "unknown", "enabled": "unknown", "listeners": [], "stamp": None,
                             "cache": None, "port": None, "argv": None}
    for line in lines:
        tag, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if tag == "@active":
            state["active"] = rest or "unknown"
        elif tag == "@url":  # where our engine was last configured to listen
            with contextlib.suppress(ValueError):
                state["port"] = urlsplit(rest).port
        elif tag == "@enabled":
            state["enabled"] = rest or "not-found"
        elif tag == "@stamp":
            state["stamp"] = rest
        elif tag == "@cache":
            state["cache"] = rest
        elif tag == "@argv":  # the running engine's /proc/<MainPID>/cmdline, hex: NUL-separated arguments
            state["argv"] = parse_argv_hex(rest)
        elif tag == "@listen" and ":" in rest:
            address, _, port = rest.rpartition(":")
            try:
                state["listeners"].append([_hex_address(address), int(port, 16)])
            except ValueError:
                continue
    return state


ARGV_MAX_BYTES = 65536  # a command line longer than this is read truncated (and then differs: drift)


def parse_argv_hex(text: str) -> list[str] | None:
    """A process's command line (``/proc/PID/cmdline`` as hex) as its arguments; None if unreadable."""
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        return None
    if not raw:
        return None
    if raw.endswith(b"\0"):  # each argument ends with a NUL; an empty last argument is two
        raw = raw[:-1]
    return raw.decode("utf-8", "replace").split("\0")


class ServeState(FactBase[dict]):
    """
    ``halo-serve.service`` state, listening TCP sockets, the stamp of what the engine last started with verified
    (model and configuration), and the command line its main process really runs.

    .. code:: python

        {"active": "active", "enabled": "enabled", "listeners": [["127.0.0.1", 8080]], "stamp": "...",
         "cache": "halo 755", "port": 8080, "argv": ["/usr/bin/llama-server", "--model", "..."]}
    """

    def command(self) -> str:
        return (
            f'echo "@active $(systemctl is-active {SERVE_SERVICE} 2>/dev/null)"; '
            f'echo "@enabled $(systemctl is-enabled {SERVE_SERVICE} 2>/dev/null)"; '
            "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == \"0A\" { print \"@listen\", $2 }'; "
            f'[ -r {SERVE_STAMP} ] && echo "@stamp $(head -c 4096 {SERVE_STAMP} | head -n 1)"; '
            f'pid=$(systemctl show -p MainPID --value {SERVE_SERVICE} 2>/dev/null); '
            'case "$pid" in ""|0|*[!0-9]*) ;; *) echo "@argv $(head -c ' + str(ARGV_MAX_BYTES)
            + ' /proc/$pid/cmdline | od -An -v -tx1 | tr -d \' \\n\')";; esac; '
            f"[ -r {SERVE_CONF} ] && sed -n 's/^HALO_URL=/@url /p' {SERVE_CONF}; "
            f'[ -d {SERVE_CACHE} ] && echo "@cache $(stat -c \'%U %a\' {SERVE_CACHE})"; true'
        )

    def process(self, output):
        return parse_serve_state(list(output))


def parse_model(lines: list[str]) -> dict[str, Any]:
    """What is at the model path: ``kind`` file | dir | missing | none, with size, mtime, magic, digest."""
    model: dict[str, Any] = {"kind": "none"}
    for line in lines:
        tag, _, rest = line.strip().partition(" ")
        if tag == "@file":
            size, mtime, owner = (rest.split() + ["", "", ""])[:3]
            model.update(kind="file", size=_ascii_int(size) or 0, mtime=_ascii_int(mtime) or 0, owner=owner)
        elif tag == "@magic":
            try:
                model["magic"] = bytes.fromhex(rest.strip()).decode("latin-1")
            except ValueError:
                model["magic"] = ""
        elif tag == "@sha256":
            model["sha256"] = rest.split()[0] if rest.split() else None
        elif tag == "@recorded":
            model["recorded"] = True
        elif tag == "@stat" and len(rest.split()) == 4 and all(_ascii_int(part) is not None for part in rest.split()):
            model["stat"] = " ".join(rest.split())
        elif tag == "@dir":
            model["kind"] = "dir"
        elif tag == "@config":
            model["has_config"] = True
        elif tag == "@missing":
            model["kind"] = "missing"
        elif tag == "@parent" and rest.strip():
            model["parent"] = rest.strip()
    return model


class ModelFile(FactBase[dict]):
    """
    The model a host serves: file (size, mtime, owner, first 4 bytes, optionally SHA-256), directory, or missing.
    """

    def command(self, path: str, hash_file: bool = False) -> str:
        # Hashed in full only without a matching verified record of halofleet's (a multi-GB model: one stat).
        hash_part = (RECORD_LOOKUP + '; if [ -n "$rec" ]; then echo "@sha256 $rec"; echo @recorded; '
                     'else sha256sum "$f" | sed "s/^/@sha256 /"; fi; echo "@stat $st"; ') if hash_file else ""
        return (
            f"f={shlex.quote(path)}; "
            'echo "@parent $(stat -c \'%U %a\' "$(dirname "$f")")"; '
            'if [ -f "$f" ]; then echo "@file $(stat -L -c \'%s %Y %U\' "$f")"; '
            'echo "@magic $(head -c 4 "$f" | od -An -tx1 | tr -d \' \\n\')"; '
            f"{hash_part}"
            'elif [ -d "$f" ]; then echo @dir; [ -e "$f/config.json" ] && echo @config; '
            "else echo @missing; fi; true"
        )

    def process(self, output):
        return parse_model(list(output))


def parse_container_image(lines: list[str]) -> dict[str, Any]:
    tags = {line.strip() for line in lines}
    return {"runtime": "@noruntime" not in tags, "present": "@present" in tags}


class ContainerImage(FactBase[dict]):
    """
    Is the engine's image in podman's local storage already? (No podman yet: not present.)

    .. code:: python

        {"runtime": True, "present": False}
    """

    def command(self, image: str) -> str:
        return ("command -v podman >/dev/null 2>&1 || { echo @noruntime; exit 0; }; "
                f"if podman image exists {shlex.quote(image)}; then echo @present; else echo @absent; fi")

    def process(self, output):
        return parse_container_image(list(output))


# The engine's key is read on the host and handed to curl on stdin (-K -): never on a command line or in output.
# serve.conf is parsed, never sourced: whatever it holds is data, not a script run as root.
SERVE_HEALTH_COMMAND = f"""
[ -r {SERVE_CONF} ] || {{ echo @none; exit 0; }}
conf() {{ sed -n "s/^$1=//p" {SERVE_CONF} | head -n 1; }}
HALO_ENGINE=$(conf HALO_ENGINE); HALO_FLAVOUR=$(conf HALO_FLAVOUR); HALO_URL=$(conf HALO_URL)
HALO_SERVICE=$(conf HALO_SERVICE)
case "$HALO_URL" in http://*) ;; *) echo @none; exit 0;; esac
case "$HALO_SERVICE" in ''|-*|*[!A-Za-z0-9_.@-]*) HALO_SERVICE={SERVE_SERVICE};; esac
echo "@engine $HALO_ENGINE $HALO_FLAVOUR"
echo "@active $(systemctl is-active "$HALO_SERVICE" 2>/dev/null)"
command -v curl >/dev/null 2>&1 || {{ echo @nocurl; exit 0; }}
key=$(sed -n 's/^[A-Z_]*API_KEY=//p' {SERVE_ENV} 2>/dev/null | head -n 1)
auth() {{ [ -z "$key" ] || printf 'header = "Authorization: Bearer %s"\\n' "$key"; }}
echo "@health $(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 "$HALO_URL/health")"
m=$(auth | curl -s -K - --max-time 10 -w '\\n%{{http_code}}' "$HALO_URL/v1/models")
echo "@models $(printf '%s' "$m" | tail -n 1)"
echo "@ids $(printf '%s' "$m" | grep -o '"id" *: *"[^"]*"' | head -n 64 | sed 's/.*: *"//; s/"$//' | tr '\n' ' ')"
id=$(printf '%s' "$m" | grep -o '"id" *: *"[^"]*"' | head -n 1 | sed 's/.*: *"//; s/"$//')
body=$(printf '{{"model":"%s","prompt":"Hello","max_tokens":2,"temperature":0}}' "$id")
r=$(auth | curl -s -K - --max-time 300 -H 'Content-Type: application/json' -d "$body" \\
    -w '\\n%{{http_code}} %{{time_total}}' "$HALO_URL/v1/completions")
echo "@completion $(printf '%s' "$r" | tail -n 1)"
echo "@tokens $(printf '%s' "$r" | grep -o '"completion_tokens" *: *[0-9]*' | head -n 1 | grep -o '[0-9]*$')"
"""


SERVED_ID = re.compile(r"[A-Za-z0-9._:/@+-]{1,200}")  # a model id of /v1/models shown in verify (others dropped)


def _int(text: str) -> int | None:
    number = _ascii_int(text)
    return number if number is not None and number >= 0 else None


def parse_serve_health(lines: list[str]) -> dict[str, Any]:
    """Engine, unit state, HTTP codes of /health, /v1/models and a 2-token completion, its latency and tokens."""
    health: dict[str, Any] = {"configured": True, "engine": None, "flavour": None, "active": None, "health": None,
                              "models": None, "completion": None, "latency_s": None, "tokens": None}
    for line in lines:
        tag, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if tag == "@none":
            health["configured"] = False
        elif tag == "@nocurl":
            health["error"] = "curl is missing on the host"
        elif tag == "@engine":
            health["engine"], _, health["flavour"] = rest.partition(" ")
        elif tag == "@active":
            health["active"] = rest or "unknown"
        elif tag in ("@health", "@models"):
            health[tag[1:]] = _int(rest)
        elif tag == "@completion":
            code, _, seconds = rest.partition(" ")
            health["completion"] = _int(code)
            with contextlib.suppress(ValueError, OverflowError):
                health["latency_s"] = float(seconds)
        elif tag == "@tokens":
            health["tokens"] = _int(rest)
        elif tag == "@ids":  # what the engine says it serves (/v1/models), as far as the name grammar allows
            health["ids"] = [name for name in rest.split() if SERVED_ID.fullmatch(name)][:64]
    health["healthy"] = bool(
        health["configured"] and health["active"] == "active" and health["health"] == 200
        and health["completion"] == 200 and (health["tokens"] or 0) > 0
    )
    return health


class ServeHealth(FactBase[dict]):
    """
    Is the engine serving? Unit active, ``/health`` and ``/v1/models`` answer, and one short real completion
    returns tokens. Read-only; uses the API key from the host's own environment file.

    .. code:: python

        {"configured": True, "engine": "llama-server", "active": "active", "health": 200, "models": 200,
         "completion": 200, "latency_s": 0.41, "tokens": 2, "healthy": True}
    """

    def command(self) -> str:
        return SERVE_HEALTH_COMMAND

    def process(self, output):
        return parse_serve_health(list(output))


class LlamaBuild(FactBase):
    """
    The llama.cpp build installed on the host, as ``llama-server --version`` prints it (an RPC worker's
    llama.cpp-tools-extra depends on llama.cpp-tools, so workers have it too): ``{"build": 11669, "version":
    "0.7.0", "commit": "Debian"}``, or None where llama-server is absent or printed nothing known.
    """

    def command(self) -> str:
        return f"command -v llama-server >/dev/null 2>&1 && llama-server --version 2>&1 | head -c {MAX_VERSION_TEXT}; true"

    def process(self, output):
        build = parse_version_output("\n".join(output))
        return None if build is None else {"build": build.build, "version": build.version, "commit": build.commit}


class BenchResult(FactBase):
    """The last llama-bench run the bench stage stored (pp512/tg128 tokens/s, model bytes), or None."""

    def command(self) -> str:
        return f"cat {BENCH_RESULT} 2>/dev/null; true"

    def process(self, output):
        return parse_bench_result("\n".join(output))


# -- the one wide fact the deploys read -----------------------------------------------------------------------
