"""
What the engine answers to our fixed prompts (the correctness gate's input): its build as the running engine
reports it (llama-server ``/props`` ``build_info``, vLLM ``/version``) and one raw completion per prompt, each
bounded on the host. Read-only; the API key is read on the host and handed to curl on stdin.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase

from ..box.answers import MAX_ANSWER_BYTES, llama_request, openai_request
from ..contract.paths import SERVE_ENV

ANSWER_MARK = "@@answer "
BUILD_MARK = "@@build "
MODEL_PLACEHOLDER = "@HALOFLEET_MODEL@"
REQUEST_TIMEOUT_S = 300


def answers_command(url: str, engine: str, prompts: dict[str, str]) -> str:
    """Shell: the build line, then each prompt's raw response after its marker (names and bodies are ours)."""
    lines = [
        f"url={shlex.quote(url)}",
        f"key=$(sed -n 's/^[A-Z_]*API_KEY=//p' {SERVE_ENV} 2>/dev/null | head -n 1)",
        "auth() { [ -z \"$key\" ] || printf 'header = \"Authorization: Bearer %s\"\\n' \"$key\"; }",
    ]
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
