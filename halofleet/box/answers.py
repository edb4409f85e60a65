"""
What a served model answers to our fixed prompts, and whether two sets of answers agree: the greedy tokens and
their top-k log-probabilities, compared with a tolerance per backend. Pure; the answers are read on the host by
:class:`halofleet.facts.halo_answers.EngineAnswers` and kept on the control machine by :mod:`.golden`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

N_PREDICT = 8  # greedy tokens per prompt: a wrong kernel shows in the first few
TOP_K = 5  # log-probabilities kept per generated token
MAX_ANSWER_BYTES = 256 * 1024  # one completion response (llama-server adds settings and timings)
MAX_TOKENS = 64

# Written by us for this check (no third-party text): plain words that every tokenizer handles.
SHORT_PROMPTS = {
    "short-1": "The capital of the small country was a quiet town by the river, and every morning the",
    "short-2": "To check a machine after a change, the operator runs the same questions again and compares",
    "short-3": "one two three four five six seven eight nine ten eleven twelve",
}
_LONG_WORDS = ("the fleet of small boxes serves one model and each box must answer the same way after every "
               "change so the operator keeps a record of what the model said before and reads it again later").split()

# Log-probabilities (natural log) two healthy engines may differ by, per backend; a greedy token may differ only
# where the reference itself had a near-tie within this margin. Why these values:
# - cpu: the same build on the same CPU model computes each dot product in one fixed order (llama.cpp splits
#   matrix rows, not sums, across threads), so answers repeat bit for bit; 0.002 leaves room for the other SIMD
#   variant a different CPU loads (f32 accumulation order: relative error ~1e-6 on logits of order 10).
# - vulkan: shaders are deterministic per shape, but the batch shape (and so the reduction order) depends on how
#   the prompt is split into micro-batches and on the driver version: 0.02.
# - hip: rocBLAS/hipBLASLt may pick other kernels per run and some reductions use atomics: 0.05.
# - vllm: bf16 weights and batch-dependent kernels (no batch invariance by default): 0.1.
# The failures this gate is for are far outside these: llama.cpp issue 28211 moved perplexity from 6.81 to 1334
# (mean log-probability per token off by ~5.3 nats); a flipped exponent bit moves a logit by orders of magnitude.
TOLERANCE_NATS = {"cpu": 0.002, "vulkan": 0.02, "hip": 0.05, "vllm": 0.1}


# llama-perplexity (the optional deeper check): our own text, contexts of 128 tokens; the figure is the tool's
# running perplexity after PERPLEXITY_CHUNKS of them (equal to its "Final estimate" of a run of that many chunks).
PERPLEXITY_WORDS = 1000  # every word is at least one token: at least 7 contexts of 128
PERPLEXITY_CTX = 128
PERPLEXITY_CHUNKS = 4
# llama.cpp's log thread is never joined at exit, so a run's last lines are often lost (measured on forky's 0.7.0
# under load: 15 of 20 runs lost the final estimate); the tool computes spare chunks after ours so that our
# figure is never among its last lines (30 of 30 under the same load).
PERPLEXITY_SPARE_CHUNKS = 2
# ``[4]317.2623,``: written once for grep -E on the host and for the parser here; the comma closes the figure, so
# a line cut short is asked again rather than read.
PERPLEXITY_ERE = rf"\[{PERPLEXITY_CHUNKS}\]([0-9]{{1,9}}\.[0-9]{{1,9}}),"
_PERPLEXITY = re.compile(PERPLEXITY_ERE)


def perplexity_text() -> str:
    """The text llama-perplexity reads: ours, plain words (written by us, no third-party text)."""
    return " ".join(_LONG_WORDS[index % len(_LONG_WORDS)] for index in range(PERPLEXITY_WORDS))


def parse_perplexity(text: str) -> float | None:
    """``[1]323.6133,[2]318.3980,[3]316.7094,[4]317.2623,`` -> 317.2623 (after PERPLEXITY_CHUNKS); None when absent."""
    match = _PERPLEXITY.search(text[:4096])
    return float(match.group(1)) if match else None


class AnswerError(ValueError):
    """A response that is not a completion we can read."""


def long_prompt(ubatch: int, ctx: int) -> str | None:
    """
    Words enough for more tokens than ``-ub`` (every word is at least one token), within the context (assuming at
    most 4 tokens per word, as a word of our plain text is for real tokenizers); None: the context is too small.
    """
    words = ubatch + ubatch // 2 + 1
    if words * 4 + N_PREDICT + 8 > ctx:
        words = (ctx - N_PREDICT - 8) // 4
        if words <= ubatch:
            return None
    return " ".join(_LONG_WORDS[index % len(_LONG_WORDS)] for index in range(words))


def prompts(ubatch: int, ctx: int) -> dict[str, str]:
    """The fixed prompts for an engine run with ``-ub ubatch`` and ``-c ctx`` (the long one when it fits)."""
    found = dict(SHORT_PROMPTS)
    text = long_prompt(ubatch, ctx)
    if text is not None:  # named by its length: a golden compares the prompts it shares with the host
        found[f"long-{len(text.split())}w"] = text
    return found


def llama_request(prompt: str) -> str:
    """llama-server's native ``/completion`` body: greedy, top-k log-probabilities, token ids, no prompt cache."""
    return json.dumps({"prompt": prompt, "n_predict": N_PREDICT, "temperature": 0, "n_probs": TOP_K,
                       "return_tokens": True, "cache_prompt": False, "seed": 0}, separators=(",", ":"))


def openai_request(prompt: str, model: str) -> str:
    """The OpenAI ``/v1/completions`` body (vLLM): greedy, ``logprobs`` top-k."""
    return json.dumps({"model": model, "prompt": prompt, "max_tokens": N_PREDICT, "temperature": 0,
                       "logprobs": TOP_K}, separators=(",", ":"))


@dataclass
class Step:
    token: int | str
    logprob: float
    top: dict[int | str, float] = field(default_factory=dict)


@dataclass
class Answer:
    """Greedy ``tokens`` (ids, or strings where the engine gives none), ``steps`` with log-probabilities (llama-server
    leaves out tokens that end inside a UTF-8 character: a subsequence of ``tokens``), ``pieces`` id -> text."""

    prompt_tokens: int
    tokens: list[int | str]
    steps: list[Step]
    pieces: dict[int | str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "tokens": self.tokens,
                "steps": [{"token": s.token, "logprob": s.logprob, "top": [[k, v] for k, v in s.top.items()]}
                          for s in self.steps],
                "pieces": [[k, v] for k, v in self.pieces.items()]}


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnswerError(f"not a finite number: {value!r}")
    return float(value)


def _token(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    if isinstance(value, str) and len(value) <= 256:
        return value
    raise AnswerError(f"not a token: {value!r}")


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    raise AnswerError(f"not a count: {value!r}")


def _load(text: str) -> dict:
    if len(text) > MAX_ANSWER_BYTES:
        raise AnswerError(f"response larger than {MAX_ANSWER_BYTES} bytes")
    try:
        data = json.loads(text)
    except ValueError as error:
        raise AnswerError(f"not JSON ({error})") from None
    if not isinstance(data, dict):
        raise AnswerError("not a JSON object")
    if "error" in data:
        raise AnswerError(f"the engine answered an error: {str(data['error'])[:200]}")
    return data


def parse_llama_completion(text: str) -> Answer:
    """A llama-server ``/completion`` response (``tokens``, ``completion_probabilities``) -> :class:`Answer`."""
    data = _load(text)
    tokens = data.get("tokens")
    probs = data.get("completion_probabilities") or []
    if not isinstance(tokens, list) or not isinstance(probs, list) or len(tokens) > MAX_TOKENS \
            or len(probs) > MAX_TOKENS:
        raise AnswerError("no token list (return_tokens) or an oversized one")
    steps, pieces = [], {}
    for entry in probs:
        if not isinstance(entry, dict) or not isinstance(entry.get("top_logprobs"), list):
            raise AnswerError("a completion_probabilities entry without top_logprobs")
        top = {}
        for item in entry["top_logprobs"][:TOP_K]:
            if not isinstance(item, dict):
                raise AnswerError("a top_logprobs entry that is not an object")
            top[_token(item.get("id"))] = _number(item.get("logprob"))
            if isinstance(item.get("token"), str):
                pieces[item["id"]] = item["token"][:64]
        steps.append(Step(_token(entry.get("id")), _number(entry.get("logprob")), top))
        if isinstance(entry.get("token"), str):
            pieces[entry["id"]] = entry["token"][:64]
    return Answer(_count(data.get("tokens_evaluated", 0)), [_token(t) for t in tokens], steps, pieces)


def parse_openai_completion(text: str) -> Answer:
    """
    An OpenAI ``/v1/completions`` response with ``logprobs`` (vLLM): ``tokens``, ``token_logprobs`` and
    ``top_logprobs`` (token text -> log-probability); tokens are compared by their text.
    """
    data = _load(text)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise AnswerError("no choices")
    logprobs = choices[0].get("logprobs") or {}
    tokens, chosen, tops = (logprobs.get(key) for key in ("tokens", "token_logprobs", "top_logprobs"))
    if not (isinstance(tokens, list) and isinstance(chosen, list) and isinstance(tops, list)) \
            or not len(tokens) == len(chosen) == len(tops) or len(tokens) > MAX_TOKENS:
        raise AnswerError("logprobs without tokens, token_logprobs and top_logprobs of one length")
    steps = []
    for token, logprob, top in zip(tokens, chosen, tops):
        if not isinstance(top, dict):
            raise AnswerError("a top_logprobs entry that is not an object")
        steps.append(Step(_token(token), _number(logprob),
                          {_token(k): _number(v) for k, v in list(top.items())[:TOP_K]}))
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Answer(_count(usage.get("prompt_tokens", 0)), [_token(t) for t in tokens], steps,
                  {t: t for t in tokens if isinstance(t, str)})


def answer_from_json(data: Any) -> Answer:
    """An :class:`Answer` as stored by :meth:`Answer.as_json` (a golden file), validated."""
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list) \
            or not isinstance(data.get("steps"), list):
        raise AnswerError("not a stored answer")
    if len(data["tokens"]) > MAX_TOKENS or len(data["steps"]) > MAX_TOKENS:
        raise AnswerError("a stored answer with too many tokens")
    steps = []
    for step in data["steps"]:
        if not isinstance(step, dict) or not isinstance(step.get("top"), list):
            raise AnswerError("a stored step without top")
        top = {}
        for pair in step["top"][:TOP_K]:
            if not isinstance(pair, list) or len(pair) != 2:
                raise AnswerError("a stored top entry that is not a pair")
            top[_token(pair[0])] = _number(pair[1])
        steps.append(Step(_token(step.get("token")), _number(step.get("logprob")), top))
    pieces = {}
    for pair in (data.get("pieces") or [])[:4 * MAX_TOKENS * TOP_K]:
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str):
            pieces[_token(pair[0])] = pair[1][:64]
    return Answer(_count(data.get("prompt_tokens", 0)), [_token(t) for t in data["tokens"]], steps, pieces)


@dataclass
class Divergence:
    prompt: str
    position: int  # index in the generated tokens
    detail: str
    expected: Answer | None
    observed: Answer | None

    def describe(self, reference: str) -> str:
        """One paragraph: which prompt, the first diverging token, and both outputs."""
        lines = [f"prompt {self.prompt!r}, generated token {self.position}: {self.detail}"]
        for label, answer in ((reference, self.expected), ("this host", self.observed)):
            lines.append(f"  {label}: {show_tokens(answer)}")
        return "\n".join(lines)


def show_tokens(answer: Answer | None) -> str:
    if answer is None:
        return "(no answer)"
    return "[" + ", ".join(name_token(answer, token) for token in answer.tokens) + "]"


def name_token(answer: Answer, token: int | str) -> str:
    piece = answer.pieces.get(token)
    if isinstance(token, str):
        return repr(token)
    return f"{token} {piece!r}" if piece is not None else str(token)


def _aligned_steps(answer: Answer) -> dict[int, Step]:
    """Token position -> its step: the steps are the tokens in order, some left out (llama-server)."""
    aligned, position = {}, 0
    for step in answer.steps:
        while position < len(answer.tokens) and answer.tokens[position] != step.token:
            position += 1
        if position == len(answer.tokens):
            break
        aligned[position] = step
        position += 1
    return aligned


def compare_answer(prompt: str, expected: Answer, observed: Answer, tolerance: float) -> Divergence | None:
    """The first place ``observed`` leaves ``expected`` (None: they agree within ``tolerance`` nats)."""
    ref_steps, obs_steps = _aligned_steps(expected), _aligned_steps(observed)
    for position, (want, got) in enumerate(zip(expected.tokens, observed.tokens)):
        ref, obs = ref_steps.get(position), obs_steps.get(position)
        if want != got:
            # A near-tie in the reference: either token is a correct greedy choice, and what follows differs.
            if ref is not None and got in ref.top and ref.logprob - ref.top[got] <= tolerance:
                return None
            return Divergence(prompt, position, f"expected {name_token(expected, want)}, got "
                                                f"{name_token(observed, got)}", expected, observed)
        if ref is not None and obs is not None:
            for token, logprob in [(want, ref.logprob), *ref.top.items()]:
                other = obs.logprob if token == want else obs.top.get(token)
                if other is not None and abs(other - logprob) > tolerance:
                    return Divergence(prompt, position, f"log-probability of {name_token(expected, token)} is "
                                                        f"{other:.4f}, expected {logprob:.4f} (tolerance "
                                                        f"{tolerance})", expected, observed)
    if len(expected.tokens) != len(observed.tokens):
        position = min(len(expected.tokens), len(observed.tokens))
        return Divergence(prompt, position, f"{len(observed.tokens)} tokens generated, expected "
                                            f"{len(expected.tokens)}", expected, observed)
    return None


def compare(expected: dict[str, Answer], observed: dict[str, Answer], backend: str) -> Divergence | None:
    """
    The prompts both answered (a long prompt is named by its length, which follows -ub) agree within the
    backend's tolerance; the first divergence otherwise.
    """
    tolerance = TOLERANCE_NATS[backend]
    common = sorted(set(expected) & set(observed))
    if not common:
        return Divergence(", ".join(sorted(expected)), 0, "no prompt in common with the reference", None, None)
    for prompt in common:
        divergence = compare_answer(prompt, expected[prompt], observed[prompt], tolerance)
        if divergence:
            return divergence
    return None
