"""
The correctness gate, pure: a host's answers (read by :class:`halofleet.facts.halo_answers.EngineAnswers`) judged
against its model's golden, the goldens of the other hosts serving a file of the same name on the same backend and
build, and the first host of this run with the same key. No reference at all: the answers become the golden.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..models.kvcache import EngineFlags
from . import golden
from .answers import Answer, AnswerError, compare, parse_llama_completion, parse_openai_completion, prompts
from .engine_build import hip_refusal, parse_build_info


@dataclass
class GateSpec:
    """What the gate needs about one host's engine, from its plan."""

    url: str
    engine: str  # llama-server | vllm
    backend: str  # cpu | vulkan | hip | vllm
    model: str  # the model file's name (hosts serving the same name are peers)
    sha256: str
    ubatch: int
    ctx: int
    # At judgement time: {sha256: [hosts]} of the peers' models (same name and backend), other hosts of the run.
    peers: Callable[[], dict[str, list[str]]] = field(default=dict, repr=False)

    def within(self, slot_ctx: int | None) -> "GateSpec":
        """This spec for an engine whose requests get ``slot_ctx`` tokens (its own word, llama-server's /props):
        the long prompt must fit the slot, which the model's training context may cap below ctx / -np."""
        if slot_ctx is None or slot_ctx >= self.ctx:
            return self
        return dataclasses.replace(self, ctx=slot_ctx)

    @property
    def prompts(self) -> dict[str, str]:
        # vLLM has no -ub; its long prompt is sized like llama-server's default (512) within its context.
        return prompts(self.ubatch if self.engine == "llama-server" else 512, self.ctx)


@dataclass
class Verdict:
    ok: bool
    message: str
    key: golden.Key | None = None
    recorded: str | None = None  # path of a golden written now
    answers: dict[str, Answer] | None = None
    long_prompt_tokens: int | None = None


def observed_answers(spec: GateSpec, raw: dict[str, Any]) -> tuple[golden.Key | None, dict[str, Answer], str | None]:
    """(key, answers, problem) from the fact; a problem (unreadable build or answer) fails the gate."""
    build_text = raw.get("build")
    if spec.engine == "vllm":
        build = build_text if build_text else None
    else:
        parsed = parse_build_info(build_text or "")
        build = f"b{parsed.build}" if parsed else None
        reason = hip_refusal(parsed) if spec.backend == "hip" else None
        if reason:
            return None, {}, f"the running engine is a build known to answer wrongly: {reason}"
    if build is None:
        return None, {}, f"the engine did not say its build ({'/version' if spec.engine == 'vllm' else '/props'})"
    try:
        key = golden.Key(spec.sha256, build, spec.backend)
    except golden.GoldenError as error:
        return None, {}, str(error)
    parse = parse_openai_completion if spec.engine == "vllm" else parse_llama_completion
    answers = {}
    for name in spec.prompts:
        text = (raw.get("answers") or {}).get(name)
        if not text:
            return key, {}, f"no answer to prompt {name!r}"
        try:
            answers[name] = parse(text)
        except AnswerError as error:
            return key, {}, f"prompt {name!r}: {error}"
    return key, answers, None


def judge(host: str, spec: GateSpec, raw: dict[str, Any], run_refs: dict | None = None, record: bool = True,
          where=None, replace: bool = False) -> Verdict:
    """
    The gate for ``host``: every reference must be reproduced (same greedy tokens; log-probabilities within the
    backend's tolerance); ``run_refs`` ({key: (host, answers)}, shared by the run) holds the first answers per key.
    With no reference, ``record`` writes the golden; ``replace`` (``halofleet qualify --replace``) ignores the
    stored goldens and records this run's answers instead (hosts of one key must still agree with each other).
    """
    key, answers, problem = observed_answers(spec, raw)
    if problem:
        return Verdict(False, problem, key)
    long_tokens = next((answer.prompt_tokens for name, answer in answers.items() if name.startswith("long-")), None)
    references: list[tuple[str, dict[str, Answer]]] = []
    try:
        own = None if replace else golden.load(key, where)
        if own:
            references.append((f"golden recorded on {own.host} at {own.recorded}", own.answers))
        for sha256, hosts in sorted(spec.peers().items()):
            if sha256 == spec.sha256 or replace:
                continue
            other = golden.load(golden.Key(sha256, key.build, key.backend), where)
            if other:
                references.append((f"golden of {spec.model} sha256 {sha256[:12]} served by {', '.join(hosts)}",
                                   other.answers))
    except golden.GoldenError as error:
        return Verdict(False, f"cannot read a golden: {error} (remove it and run halofleet qualify)", key, None,
                       answers)
    if run_refs is not None and key in run_refs and run_refs[key][0] != host:
        references.append((f"{run_refs[key][0]} in this run", run_refs[key][1]))
    for label, expected in references:
        divergence = compare(expected, answers, spec.backend)
        if divergence:
            return Verdict(False, f"answers differ from the {label} ({spec.model}, {key.build}, {key.backend}); "
                                  + divergence.describe(label), key, None, answers, long_tokens)
    if run_refs is not None:
        run_refs.setdefault(key, (host, answers))
    recorded = None
    if not any(label.startswith("golden recorded") for label, _ in references) and record:
        first = run_refs is None or run_refs[key][0] == host
        try:
            path = golden.save(golden.Golden(key, spec.model, host, golden.now(), answers), where,
                               replace=replace and first)
        except (OSError, golden.GoldenError) as error:  # the answers passed; only the record is missing
            return Verdict(True, f"no reference yet and the golden could not be written ({error})", key, None,
                           answers, long_tokens)
        recorded = str(path) if path else None
    what = f"{len(answers)} prompts" + (f" (the long one {long_tokens} tokens > -ub {spec.ubatch})"
                                         if long_tokens and long_tokens > spec.ubatch else "")
    if recorded:
        return Verdict(True, f"golden recorded: {what}, {key.build} {key.backend}", key, recorded, answers,
                       long_tokens)
    return Verdict(True, f"reproduced {len(references)} reference(s): {what}", key, None, answers, long_tokens)


def gate_identity(plan) -> tuple[str, str, str] | None:
    """(model file name, backend, SHA-256) of a host serving one model file of known digest; else None."""
    engine, config = plan.serve, plan.config
    if engine is None:
        return None
    sha256 = engine.model_push_sha256 or config.model_sha256
    if engine.models or not engine.model_host_path or not sha256:
        return None
    backend = "vllm" if engine.engine == "vllm" else config.llama_backend
    return engine.model_host_path.rsplit("/", 1)[-1], backend, sha256


def spec_for(plan, peers: Callable[[], dict[str, list[str]]] = dict) -> GateSpec | None:
    """The gate of a host's plan (None: halo_correctness_gate off, or no single model of known SHA-256)."""
    identity = gate_identity(plan)
    if identity is None or not plan.config.correctness_gate:
        return None
    name, backend, sha256 = identity
    return GateSpec(url=plan.serve.url, engine=plan.serve.engine, backend=backend, model=name, sha256=sha256,
                    ubatch=plan.config.llama_ubatch,
                    ctx=EngineFlags.of(plan.config).request_ctx(plan.config.ctx), peers=peers)


def peers_of(identities: dict[str, tuple[str, str, str] | None], host: str) -> dict[str, list[str]]:
    """From every host's :func:`gate_identity`: the others serving ``host``'s file name on its backend, by digest."""
    own = identities.get(host)
    found: dict[str, list[str]] = {}
    for name, identity in sorted(identities.items()):
        if own and identity and name != host and identity[:2] == own[:2]:
            found.setdefault(identity[2], []).append(name)
    return found
