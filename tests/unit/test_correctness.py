"""
The correctness gate's pure parts: the engine build read from real ``llama-server --version`` output, the builds
refused (HIP before the gfx1151 fix, RPC groups on mixed or advisory builds), the tolerance rules per backend, the
golden store and the judgement against goldens, peers and the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from halofleet.box import answers, engine_build, gate, golden
from halofleet.box.answers import (
    TOLERANCE_NATS,
    Answer,
    AnswerError,
    Step,
    compare,
    compare_answer,
    parse_llama_completion,
    prompts,
)
from halofleet.contract.config import HostRefused
from halofleet.facts.halo_answers import answers_command, parse_answers

CAPTURED = Path(__file__).parent.parent / "fixtures" / "captured"
FORKY = (CAPTURED / "llama-server_version_forky_0.7.0.txt").read_text()  # captured in the nspawn rootfs


def test_the_build_is_read_from_forkys_real_version_output():
    build = engine_build.parse_version_output(FORKY)
    assert build == engine_build.EngineBuild(11669, "0.7.0", "Debian")
    assert str(build) == "0.7.0 (b11669)"


@pytest.mark.parametrize("text, build", [
    ("version: 4589 (1d1e6a90)\nbuilt with cc (GCC) 14.2.0 for x86_64-linux-gnu\n", 4589),  # before semver
    ("load_backend: loaded CPU backend from /usr/lib/libggml-cpu.so\n" + FORKY, 11669),  # loader lines first
    ("", None), ("version: eleven\n", None), ("version: 0.7.0 (build 99999999, commit x)\n", None),
])
def test_version_shapes(text, build):
    found = engine_build.parse_version_output(text)
    assert (found.build if found else None) == build


def test_build_info_of_the_running_engine():
    assert engine_build.parse_build_info("b11669-Debian").build == 11669
    assert engine_build.parse_build_info("11669") is None and engine_build.parse_build_info(None) is None


def test_hip_builds_before_the_gfx1151_fix_are_refused_and_the_source_is_named():
    forky = engine_build.parse_version_output(FORKY)
    assert engine_build.hip_refusal(forky) is None
    reason = engine_build.hip_refusal(engine_build.EngineBuild(11668))
    assert "28211" in reason and "d4389a4d" in reason and "uncertain" in reason
    with pytest.raises(HostRefused, match="wrong logits"):
        engine_build.check_builds("h", "hip", "llama-server", engine_build.EngineBuild(9000))
    # Vulkan and CPU never had the bug: the same old build is not refused there.
    assert engine_build.check_builds("h", "vulkan", "llama-server", engine_build.EngineBuild(9000)) == []


@pytest.mark.parametrize("build, verdict", [(7991, "affected"), (8000, "not known to be fixed"), (8492, None),
                                            (11669, None)])
def test_rpc_advisory_boundaries(build, verdict):
    reason = engine_build.rpc_refusal(engine_build.EngineBuild(build))
    assert (reason is None) if verdict is None else (verdict in reason and "CVE-2026-34159" in reason)


def test_an_rpc_group_runs_one_build():
    same = engine_build.EngineBuild(11669, "0.7.0")
    assert engine_build.check_builds("head", "vulkan", "llama-server", same, {"w1": same}) == []
    with pytest.raises(HostRefused, match="w1 runs llama.cpp b11700, this head 0.7.0"):
        engine_build.check_builds("head", "vulkan", "llama-server", same, {"w1": engine_build.EngineBuild(11700)})
    with pytest.raises(HostRefused, match="RPC worker w1: .*CVE-2026-34159"):
        engine_build.check_builds("head", "vulkan", "llama-server", same, {"w1": engine_build.EngineBuild(7000)})
    with pytest.raises(HostRefused, match="CVE-2026-34159"):  # a worker judges its own build too
        engine_build.check_builds("w1", "cpu", "rpc-worker", engine_build.EngineBuild(7000))
    # Not installed yet (the first deploy installs it): said, not refused.
    warnings = engine_build.check_builds("head", "vulkan", "llama-server", same, {"w1": None})
    assert warnings and "w1" in warnings[0]


def answer(tokens, logprobs, tops=None) -> Answer:
    tops = tops or [{} for _ in tokens]
    return Answer(40, list(tokens), [Step(t, lp, {t: lp, **top}) for t, lp, top in zip(tokens, logprobs, tops)])


def test_tolerance_per_backend_decides_a_logprob_difference():
    expected = answer([5, 6], [-1.0, -2.0])
    drift = answer([5, 6], [-1.0, -2.003])  # 0.003 nats
    assert compare_answer("p", expected, drift, TOLERANCE_NATS["cpu"]) is not None
    assert compare_answer("p", expected, drift, TOLERANCE_NATS["vulkan"]) is None
    assert compare_answer("p", expected, answer([5, 6], [-1.0, -2.001]), TOLERANCE_NATS["cpu"]) is None
    assert TOLERANCE_NATS["cpu"] < TOLERANCE_NATS["vulkan"] < TOLERANCE_NATS["hip"] < TOLERANCE_NATS["vllm"]


def test_another_greedy_token_diverges_unless_the_reference_had_a_near_tie():
    expected = answer([5, 6, 7], [-1.0, -2.0, -1.5], [{}, {9: -2.01}, {}])
    wrong = compare_answer("p", expected, answer([5, 8, 7], [-1.0, -2.0, -1.5]), TOLERANCE_NATS["hip"])
    assert wrong.position == 1 and "expected 6" in wrong.detail and "got 8" in wrong.detail
    # 9 was 0.01 nats behind 6 in the reference: within HIP's 0.05 a tie, beyond CPU's 0.002 a divergence.
    tie = answer([5, 9, 1], [-1.0, -2.01, -0.5])
    assert compare_answer("p", expected, tie, TOLERANCE_NATS["hip"]) is None
    assert compare_answer("p", expected, tie, TOLERANCE_NATS["cpu"]).position == 1


def test_fewer_tokens_and_missing_prompts_diverge():
    expected = {"a": answer([5, 6], [-1.0, -2.0])}
    assert compare(expected, {"a": answer([5], [-1.0])}, "cpu").position == 1
    assert "no prompt in common" in compare(expected, {"b": answer([5, 6], [-1.0, -2.0])}, "cpu").detail


def test_the_long_prompt_is_longer_than_ub_and_fits_the_context():
    found = prompts(32, 512)
    (long_name,) = [name for name in found if name.startswith("long-")]
    assert len(found[long_name].split()) > 32
    assert not any(name.startswith("long-") for name in prompts(512, 1024))  # cannot exceed -ub within ctx


LLAMA_RESPONSE = {  # the shape of llama-server 0.7.0's /completion answer with return_tokens and n_probs
    "tokens": [145, 217, 70], "tokens_evaluated": 11,
    "completion_probabilities": [
        {"id": 145, "token": "\ufffd", "logprob": -5.4069, "top_logprobs": [
            {"id": 145, "token": "\ufffd", "logprob": -5.4069}, {"id": 299, "token": "n", "logprob": -5.4501}]},
        {"id": 70, "token": "C", "logprob": -5.3869, "top_logprobs": [{"id": 70, "token": "C", "logprob": -5.3869}]},
    ]}


def test_llama_server_answers_are_parsed_and_bounded():
    parsed = parse_llama_completion(json.dumps(LLAMA_RESPONSE))
    assert parsed.tokens == [145, 217, 70] and parsed.prompt_tokens == 11 and parsed.pieces[299] == "n"
    for bad in ("[]", "{", json.dumps({"error": {"message": "x"}}), json.dumps({**LLAMA_RESPONSE, "tokens": None}),
                json.dumps({**LLAMA_RESPONSE, "completion_probabilities": [{"id": 1, "logprob": "NaN",
                                                                            "top_logprobs": []}]}),
                " " * (300 * 1024)):
        with pytest.raises(AnswerError):
            parse_llama_completion(bad)


def test_the_host_command_quotes_prompts_and_keeps_the_key_off_the_command_line():
    command = answers_command("http://10.0.0.1:8080", "llama-server", {"p": "it's"})
    assert "/completion" in command and "curl -s -K -" in command and "it'\"'\"'s" in command
    raw = parse_answers(["@@build b11669-Debian", "@@answer p", json.dumps(LLAMA_RESPONSE)])
    assert raw["build"] == "b11669-Debian" and json.loads(raw["answers"]["p"])["tokens"] == [145, 217, 70]


KEY = golden.Key("a" * 64, "b11669", "cpu")


def test_golden_store_round_trip_mode_and_first_writer_wins(tmp_path):
    first = golden.Golden(KEY, "tiny.gguf", "srv1", golden.now(), {"p": answer([5], [-1.0])})
    path = golden.save(first, tmp_path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert golden.load(KEY, tmp_path).answers["p"].tokens == [5]
    assert golden.save(golden.Golden(KEY, "tiny.gguf", "srv2", golden.now(), {"p": answer([6], [-1.0])}),
                       tmp_path) is None
    assert golden.load(KEY, tmp_path).host == "srv1"
    assert golden.load(golden.Key("b" * 64, "b11669", "cpu"), tmp_path) is None


def test_golden_reads_are_bounded_and_regular_files_only(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    os.symlink(target, tmp_path / KEY.filename)
    with pytest.raises(golden.GoldenError):
        golden.load(KEY, tmp_path)
    os.unlink(tmp_path / KEY.filename)
    (tmp_path / KEY.filename).write_text(" " * (golden.MAX_GOLDEN_BYTES + 1))
    with pytest.raises(golden.GoldenError, match="larger"):
        golden.load(KEY, tmp_path)
    with pytest.raises(golden.GoldenError):
        golden.Key("../../etc/passwd", "b1", "cpu")


def raw_for(spec, tokens, build="b11669-Debian") -> dict:
    body = {**LLAMA_RESPONSE, "tokens": tokens, "completion_probabilities": []}
    return {"build": build, "answers": {name: json.dumps(body) for name in spec.prompts}}


def spec(sha="a", peers=None, backend="cpu") -> gate.GateSpec:
    return gate.GateSpec("http://h:8080", "llama-server", backend, "tiny.gguf", sha * 64, 32, 512,
                         peers=lambda: peers or {})


def test_judge_records_then_reproduces_and_fails_a_peer_with_other_bytes(tmp_path):
    first = gate.judge("srv1", spec(), raw_for(spec(), [1, 2]), {}, where=tmp_path)
    assert first.ok and first.recorded and "golden recorded" in first.message
    assert gate.judge("srv1", spec(), raw_for(spec(), [1, 2]), {}, where=tmp_path).ok
    # Same file name, other bytes, no golden of its own: judged by the peers' golden, and not recorded.
    bad = gate.judge("srv2", spec("b", {"a" * 64: ["srv1"]}), raw_for(spec(), [1, 3]), {}, where=tmp_path)
    assert not bad.ok and "generated token 1: expected 2, got 3" in bad.message and "served by srv1" in bad.message
    assert not (tmp_path / golden.Key("b" * 64, "b11669", "cpu").filename).exists()


def test_judge_hosts_of_one_key_in_one_run_must_agree(tmp_path):
    refs: dict = {}
    assert gate.judge("srv1", spec(), raw_for(spec(), [1, 2]), refs, record=False, where=tmp_path).ok
    second = gate.judge("srv2", spec(), raw_for(spec(), [4, 2]), refs, record=False, where=tmp_path)
    assert not second.ok and "srv1 in this run" in second.message


def test_judge_refuses_an_old_hip_build_and_an_unknown_build(tmp_path):
    old = gate.judge("h", spec(backend="hip"), raw_for(spec(), [1], build="b9000-abc"), {}, where=tmp_path)
    assert not old.ok and "known to answer wrongly" in old.message
    silent = gate.judge("h", spec(), raw_for(spec(), [1], build=None), {}, where=tmp_path)
    assert not silent.ok and "did not say its build" in silent.message


def test_verify_deep_rows_show_the_check_and_a_failure_changes_an_ok_status(tmp_path, monkeypatch):
    from halofleet.views import correctness

    monkeypatch.setenv(golden.DIR_ENV, str(tmp_path))
    gate.judge("a", spec(), raw_for(spec(), [1, 2]), {})  # the golden
    probes = {"a": {"answers": {"spec": spec(), "raw": raw_for(spec(), [1, 2])}},
              "b": {"answers": {"spec": spec(), "raw": raw_for(spec(), [1, 9])}},
              "c": {"answers": {"why": "not gated"}}}
    rows = [{"host": name, "status": "ok"} for name in "abc"]
    correctness.judge_rows(rows, probes)
    assert rows[0]["correctness"].startswith("ok: reproduced") and rows[0]["status"] == "ok"
    assert rows[1]["correctness"].startswith("FAILED: answers differ") and rows[1]["status"] == "wrong answers"
    assert "this host: [1, 9]" in rows[1][correctness.DETAIL]
    assert rows[2]["correctness"] == "not gated" and rows[2]["status"] == "ok"


def test_openai_logprobs_are_compared_by_token_text():
    from halofleet.box.answers import parse_openai_completion

    # The legacy OpenAI completions logprobs shape (tokens, token_logprobs, top_logprobs), as vLLM documents it.
    body = {"choices": [{"text": " Paris", "logprobs": {"tokens": [" Paris", "."], "token_logprobs": [-0.1, -0.5],
                                                         "top_logprobs": [{" Paris": -0.1, " Lyon": -3.0},
                                                                          {".": -0.5, ",": -1.2}]}}],
            "usage": {"prompt_tokens": 12}}
    parsed = parse_openai_completion(json.dumps(body))
    assert parsed.tokens == [" Paris", "."] and parsed.prompt_tokens == 12
    other = json.loads(json.dumps(body))
    other["choices"][0]["logprobs"]["tokens"][0] = " Lyon"
    divergence = compare({"p": parsed}, {"p": parse_openai_completion(json.dumps(other))}, "vllm")
    assert divergence.position == 0 and "' Lyon'" in divergence.detail
    with pytest.raises(AnswerError):
        parse_openai_completion(json.dumps({"choices": [{"logprobs": {"tokens": ["a"], "token_logprobs": [],
                                                                       "top_logprobs": []}}]}))


def test_an_unwritable_golden_directory_is_said_not_raised(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(golden, "save", refuse)
    verdict = gate.judge("a", spec(), raw_for(spec(), [1]), {}, where=tmp_path)
    assert verdict.ok and "could not be written" in verdict.message and verdict.recorded is None
    # A directory that cannot be read at all fails the gate: nothing can be compared.
    blocker = tmp_path / "file"
    blocker.write_text("")
    unreadable = gate.judge("a", spec(), raw_for(spec(), [1]), {}, where=blocker)
    assert not unreadable.ok and "cannot read a golden" in unreadable.message


def test_perplexity_figure_and_command():
    from halofleet.box.answers import parse_perplexity, perplexity_text
    from halofleet.facts.halo_answers import perplexity_command

    # llama-perplexity 0.7.0's chunk line (captured on the tiny model in the nspawn rootfs, --chunks 6)
    assert parse_perplexity("[1]323.6133,[2]318.3980,[3]316.7094,[4]317.2623,[5]317.9540,") == 317.2623
    assert parse_perplexity("[1]323.6133,[2]318.3980,[3]316.7094,[4]317.26") is None  # cut short: asked again
    assert parse_perplexity("[14]317.2623,") is None and parse_perplexity("no figure") is None
    assert parse_perplexity("[4]0.0000,") == 0.0  # a figure, even a nonsense one, is shown as such
    command = perplexity_command("/m/it's.gguf", "halo", 999)
    assert "m='/m/it'\"'\"'s.gguf'" in command and "-ngl 999" in command and "runuser -u halo --" in command
    assert "--chunks 6 " in command and "grep -o -m 1 -E " in command
    assert "MemAvailable" in command and len(perplexity_text().split()) == 1000


def test_the_long_prompt_fits_the_context_one_request_gets():
    """-np 3 without --kv-unified gives each request ctx / 3: the gate's long prompt is sized to that, never to the
    whole context (llama-server answered 400 "exceeds the available context size" before)."""
    from halofleet.models.kvcache import EngineFlags

    assert EngineFlags(parallel=3).request_ctx(1536) == 512
    assert EngineFlags(parallel=3, unified=True).request_ctx(1536) == 1536
    assert EngineFlags(parallel=1).request_ctx(2048) == 2048
    assert answers.long_prompt(512, EngineFlags(parallel=3).request_ctx(1536)) is None  # no room above -ub: left out
    text = answers.long_prompt(32, EngineFlags(parallel=3).request_ctx(1536))
    assert text is not None and 32 < len(text.split()) and len(text.split()) * 4 < 512


def test_the_gate_takes_the_slot_context_the_engine_reports():
    """llama-server caps a slot's context at the model's training context: with a tiny model, -c 20000 -np 3 gave
    requests 512 tokens, and a long prompt sized to 6666 was refused with HTTP 400. /props says the real figure."""
    from halofleet.facts.halo_answers import parse_slot_ctx, slot_ctx_command

    spec = gate.GateSpec(url="http://127.0.0.1:8080", engine="llama-server", backend="cpu", model="m.gguf",
                         sha256="a" * 64, ubatch=512, ctx=6666)
    assert any(name.startswith("long-") for name in spec.prompts)
    assert not any(name.startswith("long-") for name in spec.within(512).prompts)  # no room above -ub
    assert spec.within(None) is spec and spec.within(99999) is spec
    assert parse_slot_ctx(["512"]) == 512 and parse_slot_ctx([""]) is None and parse_slot_ctx(["1e9"]) is None
    assert "/props" in slot_ctx_command("http://127.0.0.1:8080") and "API_KEY" in slot_ctx_command("http://x")
