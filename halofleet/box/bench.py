"""
llama-bench results against the memory roofline: generating one token reads every weight once (of an MoE model,
only the experts in use), so tg tokens/s <= bandwidth / bytes read per token. The bytes per token come from the
model's GGUF header (:func:`halofleet.models.gguf.token_cost`) when the bench stage could read it, else the file size.
Pure functions; the deploy stores llama-bench's JSON on the host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..contract import policy


@dataclass(frozen=True)
class BenchFigures:
    model: str
    model_bytes: int
    pp_tps: float | None  # prompt processing, tokens/s
    tg_tps: float | None  # token generation, tokens/s
    backend: str
    bytes_per_token: int | None = None  # from the GGUF header; None: not read (older bench.json, not GGUF)
    experts: tuple[int, int] | None = None  # MoE: (used, count) experts per token

    @property
    def read_per_token(self) -> int:
        """Bytes one generated token reads: the header's figure, else the whole file (right for dense models)."""
        return self.bytes_per_token or self.model_bytes

    def roofline_tps(self, bandwidth_gbs: float) -> float:
        """Upper bound on tg tokens/s: bytes per second / bytes read per token."""
        return bandwidth_gbs * 1e9 / self.read_per_token

    def percent_of_roofline(self, bandwidth_gbs: float) -> float | None:
        if self.tg_tps is None or self.read_per_token <= 0:
            return None
        return 100.0 * self.tg_tps / self.roofline_tps(bandwidth_gbs)


def parse_bench_result(text: str) -> BenchFigures | None:
    """
    The file the bench stage stores: ``{"model": path, "model_file_bytes": n, "llama_bench": [records]}``, where
    the records are llama-bench's ``-o json`` output -> the pp512 and tg128 averages; with ``"bytes_per_token"``
    and, for an MoE model, ``"experts": [used, count]`` when the model's GGUF header was read.
    """
    try:
        stored = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    records = stored.get("llama_bench") if isinstance(stored, dict) else None
    if not isinstance(records, list) or not records:
        return None
    records = [record for record in records if isinstance(record, dict)]  # a stray value is skipped, not fatal
    if not records:
        return None
    pp = tg = None
    first: dict[str, Any] = records[0]
    for record in records:
        if record.get("n_prompt") == policy.BENCH_PROMPT_TOKENS and not record.get("n_gen"):
            pp = _number(record.get("avg_ts"), float)
        elif record.get("n_gen") == policy.BENCH_GEN_TOKENS and not record.get("n_prompt"):
            tg = _number(record.get("avg_ts"), float)
    per_token = _positive_int(stored.get("bytes_per_token"))
    return BenchFigures(
        model=str(stored.get("model") or first.get("model_filename") or "?"),
        # the file size (llama-bench's model_size as fallback): the roofline's bytes when the header was not read
        model_bytes=_number(stored.get("model_file_bytes") or first.get("model_size"), int) or 0,
        pp_tps=pp, tg_tps=tg, backend=str(first.get("backends") or first.get("backend") or "?"),
        # the MoE note only beside the figure it explains
        bytes_per_token=per_token, experts=_experts(stored.get("experts")) if per_token else None,
    )


def _number(value: Any, kind: type) -> Any:
    """A figure from the stored JSON, or None when it is missing or not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = kind(float(value)) if kind is int else kind(value)
    except (ValueError, OverflowError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _experts(value: Any) -> tuple[int, int] | None:
    if isinstance(value, list) and len(value) == 2:
        used, count = (_positive_int(item) for item in value)
        if used and count and used <= count:
            return used, count
    return None


def bench_cell(figures: BenchFigures | None, theoretical_gbs: float, measured_gbs: float) -> str:
    """The report's 'bench' cell: pp/tg tokens/s and tg as % of the roofline (theoretical and measured)."""
    if figures is None:
        return "-"
    pp = f"{figures.pp_tps:.1f}" if figures.pp_tps is not None else "?"
    tg = f"{figures.tg_tps:.1f}" if figures.tg_tps is not None else "?"
    theoretical = figures.percent_of_roofline(theoretical_gbs)
    measured = figures.percent_of_roofline(measured_gbs)
    roof = (f", tg {theoretical:.0f}% of {theoretical_gbs:g} GB/s roofline ({measured:.0f}% of {measured_gbs:g})"
            if theoretical is not None else "")
    moe = f", MoE: {figures.experts[0]} of {figures.experts[1]} experts active" if figures.experts else ""
    return f"pp512 {pp} t/s, tg128 {tg} t/s{roof}{moe}"
