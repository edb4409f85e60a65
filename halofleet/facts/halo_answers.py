"""
What the engine answers to our fixed prompts (the correctness gate's input): its build as the running engine
reports it (llama-server ``/props`` ``build_info``, vLLM ``/version``) and one raw completion per prompt, each
bounded on the host. Read-only; the API key is read on the host and handed to curl on stdin.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase

from ..box.answers import (
    MAX_ANSWER_BYTES,
    PERPLEXITY_CHUNKS,
    PERPLEXITY_CTX,
    PERPLEXITY_ERE,
    PERPLEXITY_SPARE_CHUNKS,
    llama_request,
    openai_request,
    perplexity_text,
)
from ..contract.paths import SERVE_ENV

ANSWER_MARK = "@@answer "
BUILD_MARK = "@@build "
MODEL_PLACEHOLDER = "@HALOFLEET_MODEL@"
REQUEST_TIMEOUT_S = 300


def _auth_lines(url: str) -> list[str]:
    """Shell: ``$url`` and an ``auth`` function handing the API key (read on the host) to curl on stdin."""
    return [
        f"url={shlex.quote(url)}",
        f"key=$(sed -n 's/^[A-Z_]*API_KEY=//p' {SERVE_ENV} 2>/dev/null | head -n 1)",
        "auth() { [ -z \"$key\" ] || printf 'header = \"Authorization: Bearer %s\"\\n' \"$key\"; }",
    ]


def slot_ctx_command(url: str) -> str:
    """Shell: the context one request gets, as llama-server itself says (``/props``: the slots' ``n_ctx``, which
    ``-np`` divides and the model's training context caps)."""
    return "\n".join([*_auth_lines(url), "auth | curl -s -K - --max-time 10 \"$url/props\" | head -c 1048576 | "
                      "grep -o '\"n_ctx\" *: *[0-9]*' | head -n 1 | tr -cd '0-9'; echo"])


def parse_slot_ctx(lines: list[str]) -> int | None:
    """The number :func:`slot_ctx_command` printed (None: none, or not a sane one)."""
    text = "".join(lines).strip()
    return int(text) if text.isdigit() and 0 < len(text) <= 9 else None


def answers_command(url: str, engine: str, prompts: dict[str, str]) -> str:
    """Shell: the build line, then each prompt's raw response after its marker (names and bodies are ours)."""
    lines = _auth_lines(url)
    if engine == "vllm":
        lines += [
            (f"echo \"{BUILD_MARK}$(auth | curl -s -K - --max-time 10 \"$url/version\" | head -c 512 | "
             "grep -o '\"version\" *: *\"[^\"]*\"' | head -n 1 | sed 's/.*: *\"//; s/\"$//')\""),
            ("id=$(auth | curl -s -K - --max-time 10 \"$url/v1/models\" | head -c 65536 | "
             "grep -o '\"id\" *: *\"[^\"]*\"' | head -n 1 | sed 's/.*: *\"//; s/\"$//' | tr -cd 'A-Za-z0-9._/:-')"),
        ]
        endpoint = "/v1/completions"
    else:
        lines.append(f"echo \"{BUILD_MARK}$(auth | curl -s -K - --max-time 10 \"$url/props\" | head -c 1048576 | "
                     "grep -o '\"build_info\" *: *\"[^\"]*\"' | head -n 1 | sed 's/.*: *\"//; s/\"$//')\"")
        endpoint = "/completion"
    for name, prompt in sorted(prompts.items()):
        body = openai_request(prompt, MODEL_PLACEHOLDER) if engine == "vllm" else llama_request(prompt)
        data = shlex.quote(body)
        if engine == "vllm":
            data = f"\"$(printf '%s' {data} | sed \"s|{MODEL_PLACEHOLDER}|$id|\")\""
        lines += [
            f"echo {shlex.quote(ANSWER_MARK + name)}",
            (f"auth | curl -s -K - --max-time {REQUEST_TIMEOUT_S} -H 'Content-Type: application/json' "
             f"--data-binary {data} \"$url{endpoint}\" | head -c {MAX_ANSWER_BYTES + 1}; echo"),
        ]
    return "\n".join(lines)


PERPLEXITY_TIMEOUT_S = 900
SKIP_MARK = "@skip "


def perplexity_command(model: str, user: str, gpu_layers: int) -> str:
    """
    Shell: llama-perplexity on the served model over our text, as the service user; skipped (with the reason)
    where the tool is missing, the model unreadable, or the model larger than half the available memory (the
    engine keeps serving beside it).
    """
    return "\n".join([
        f"m={shlex.quote(model)}",
        f"command -v llama-perplexity >/dev/null 2>&1 || {{ echo '{SKIP_MARK}llama-perplexity is not installed'; "
        "exit 0; }",
        f"[ -f \"$m\" ] && [ -r \"$m\" ] || {{ echo '{SKIP_MARK}the model file is not readable'; exit 0; }}",
        "avail=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo); size=$(( $(stat -c %s \"$m\") / 1024 ))",
        f"[ \"$size\" -lt $(( avail / 2 )) ] || {{ echo '{SKIP_MARK}the model is larger than half the available "
        "memory'; exit 0; }",
        "t=$(mktemp) && trap 'rm -f \"$t\"' EXIT && chmod 0644 \"$t\"",
        f"printf '%s' {shlex.quote(perplexity_text())} > \"$t\"",
        f"run=; [ \"$(id -u)\" = 0 ] && run=\"runuser -u {shlex.quote(user)} --\"",
        # spare chunks keep our figure out of the lines the tool may lose at exit; asked up to 3 times all the same
        f"for i in 1 2 3; do out=$(timeout {PERPLEXITY_TIMEOUT_S} $run llama-perplexity -m \"$m\" -f \"$t\" "
        f"-c {PERPLEXITY_CTX} --chunks {PERPLEXITY_CHUNKS + PERPLEXITY_SPARE_CHUNKS} -b {PERPLEXITY_CTX} "
        f"-ngl {int(gpu_layers)} 2>&1 | tail -c 65536)",
        f"printf '%s\\n' \"$out\" | grep -o -m 1 -E {shlex.quote(PERPLEXITY_ERE)} && exit 0; done",
        # no figure: the tool's last words say why
        f"printf '{SKIP_MARK}%s\\n' \"$(printf '%s' \"$out\" | tail -n 2 | tr '\\n' ' ' | head -c 300)\"",
    ])


class Perplexity(FactBase[str]):
    """llama-perplexity's running figure after our chunks over our text (``[4]317.2623,``), or ``@skip <why>``."""

    def command(self, model: str, user: str, gpu_layers: int) -> str:  # pragma: no mutate block
        return perplexity_command(model, user, gpu_layers)

    def process(self, output):
        return "\n".join(output)[:4096]


def parse_answers(lines: list[str]) -> dict[str, Any]:
    """``{"build": text or None, "answers": {prompt: raw response text}}``."""
    result: dict[str, Any] = {"build": None, "answers": {}}
    current = None
    for line in lines:
        if line.startswith(BUILD_MARK):
            result["build"] = line[len(BUILD_MARK):].strip()[:80] or None
            current = None
        elif line.startswith(ANSWER_MARK):
            current = line[len(ANSWER_MARK):].strip()
            result["answers"][current] = ""
        elif current is not None and len(result["answers"][current]) <= MAX_ANSWER_BYTES:
            result["answers"][current] += line
    return result


class EngineAnswers(FactBase[dict]):
    """
    The engine's build and its raw answers to the prompts given (see :mod:`halofleet.box.answers`).

    .. code:: python

        {"build": "b11669-Debian", "answers": {"short-1": "{\\"tokens\\": [...], ...}", ...}}
    """

    def command(self, url: str, engine: str, prompts: dict[str, str]) -> str:  # pragma: no mutate block
        return answers_command(url, engine, prompts)

    def process(self, output):
        return parse_answers(list(output))


class SlotContext(FactBase):
    """The context one request gets on a llama-server at ``url`` (its /props; None: not said)."""

    def command(self, url: str) -> str:  # pragma: no mutate block
        return slot_ctx_command(url)

    def process(self, output):
        return parse_slot_ctx(list(output))
