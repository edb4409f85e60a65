"""
``halofleet verify --deep`` and ``halofleet qualify``: every serving host asked our fixed prompts, each judged by
the correctness gate (:mod:`halofleet.box.gate`) against its model's golden, its peers' goldens and the first host
of the run with the same model, build and backend. Reading changes nothing on the hosts; qualify writes goldens.
"""

from __future__ import annotations

from typing import Any

from ..box import gate
from ..box.answers import parse_perplexity
from ..box.cmdline import ParamConflict
from ..box.plan import build_plan
from ..contract.config import PARSE_FAILURES, ConfigError, HostRefused
from ..facts.halo_answers import SKIP_MARK

PERPLEXITY = "perplexity"  # `qualify --perplexity`: llama-perplexity over our text (lower is better)
DETAIL = "correctness detail"  # the full verdict (both outputs), beside the one-line cell


def ask(state, host, probe: dict[str, Any], fleet: dict[str, dict], perplexity: bool = False) -> dict[str, Any]:
    """
    The gate's spec for ``host`` and its engine's raw answers (``why`` instead where there is no gate); with
    ``perplexity``, llama-perplexity's figure too (the distro's llama-server only: the tool is on the host).
    """
    from pyinfra.api.facts import get_fact

    from ..facts.halo_answers import EngineAnswers, Perplexity, SlotContext

    try:
        plan = build_plan(host.name, host.data.dict(), probe, fleet=fleet)
    except (ConfigError, HostRefused, ParamConflict, *PARSE_FAILURES) as error:
        return {"why": f"no plan ({type(error).__name__})"}
    spec = gate.spec_for(plan)
    if spec is None:
        return {"why": "not gated (no single model of known SHA-256, or halo_correctness_gate off)"}
    if spec.engine == "llama-server":
        spec = spec.within(get_fact(state, host, SlotContext, kwargs={"url": spec.url}))
    raw = get_fact(state, host, EngineAnswers, kwargs={"url": spec.url, "engine": spec.engine,
                                                       "prompts": spec.prompts})
    found = {"spec": spec, "raw": raw}
    if perplexity:
        if plan.serve.flavour != "distro":
            found["ppl"] = "-: llama-perplexity runs for the distro's llama-server only"
        else:
            output = get_fact(state, host, Perplexity, kwargs={
                "model": plan.serve.model_host_path, "user": plan.config.service_user,
                "gpu_layers": 0 if spec.backend == "cpu" else 999})
            figure = parse_perplexity(output or "")
            found["ppl"] = f"{figure:.4f}" if figure is not None else \
                (output or "").removeprefix(SKIP_MARK)[:200] or "no figure"
    return found


def judge_rows(rows: list[dict[str, str]], probes: dict[str, dict | None], record: bool = False,
               replace: bool = False) -> None:
    """Add the ``correctness`` cell (and its detail) to each row; a failed check makes the status say so."""
    asked = {name: (probe or {}).get("answers") or {} for name, probe in probes.items()}
    specs = {name: found["spec"] for name, found in asked.items() if found.get("spec")}
    identities = {name: (spec.model, spec.backend, spec.sha256) for name, spec in specs.items()}
    run_refs: dict = {}
    for row in rows:
        name = row["host"]
        found = asked.get(name) or {}
        if "spec" not in found:
            row["correctness"] = found.get("why", "-")
            continue
        if "ppl" in found:
            row[PERPLEXITY] = found["ppl"]
        spec = found["spec"]
        spec.peers = lambda name=name: gate.peers_of(identities, name)
        verdict = gate.judge(name, spec, found["raw"], run_refs, record=record, replace=replace)
        first_line = verdict.message.splitlines()[0]
        row["correctness"] = ("ok: " if verdict.ok else "FAILED: ") + first_line
        row[DETAIL] = verdict.message
        if not verdict.ok and row["status"] == "ok":
            row["status"] = "wrong answers"
