"""
The correctness gate and the build refusals inside real pyinfra runs (the @fake connector): the probe's
``llama-server --version`` refuses a host in preflight, and after a restart the engine's answers decide.
"""

from __future__ import annotations

import json

from halofleet.box import golden
from halofleet.testing.fake import probe_output, run_fake

SHA = "c" * 64
SERVES = {"halo_allow_non_strix_halo": True, "halo_reboot": "never", "halo_model": "/srv/models/tiny.gguf",
          "halo_model_sha256": SHA, "halo_llama_backend": "cpu", "halo_api_key": "k" * 24,
          "halo_bind": "127.0.0.1", "halo_restart_batch": 1}
MODEL = ["@parent root 755", "@file 497440 1795442225 root", "@magic 47475546", f"@sha256 {SHA}"]
VERSION = "version: 0.7.0 (build 11669, commit Debian)"  # forky's, captured


def probe(version: str = VERSION) -> list[str]:
    return probe_output(model=MODEL, sections={"llama_build": [version]})


def answers(tokens: list[int], build: str = "b11669-Debian") -> list[str]:
    body = json.dumps({"tokens": tokens, "tokens_evaluated": 60, "completion_probabilities": []})
    lines = [f"@@build {build}"]
    for name in ("long-49w", "short-1", "short-2", "short-3"):
        lines += [f"@@answer {name}", body]
    return lines


def test_a_hip_build_before_the_gfx1151_fix_is_refused_before_any_change():
    data = {**SERVES, "halo_llama_backend": "hip", "halo_correctness_gate": False}
    run = run_fake("deploys/serve.py", {"old": (data, probe("version: 0.6.0 (build 9000, commit abc)")),
                                        "new": (data, probe())})
    assert run.failed_hosts == {"old"} and run.changes("old") == []
    assert any("issue 28211" in error for error in run.errors)


def test_the_gate_records_then_fails_a_host_whose_answers_differ(tmp_path, monkeypatch):
    monkeypatch.setenv(golden.DIR_ENV, str(tmp_path))
    serving = {**SERVES, "halo_ctx": 512, "halo_llama_ubatch": 32, "halo_llama_batch": 64}
    good = {**serving, "fake_responses": {"@@answer": {"stdout": answers([1, 2, 3])}}}
    run = run_fake("deploys/serve.py", {"a": (good, probe())})
    assert run.failed_hosts == set(), run.errors
    assert [path.name for path in tmp_path.iterdir()] == [f"{SHA}.cpu.b11669.json"]

    bad = {**serving, "fake_responses": {"@@answer": {"stdout": answers([1, 7, 3])}}}
    run = run_fake("deploys/serve.py", {"a": (bad, probe())})
    assert run.failed_hosts == {"a"}
    (error,) = [error for error in run.errors if "correctness gate failed" in error]
    assert "generated token 1: expected 2, got 7" in error
    # the stamp is removed so the next run restarts and checks again
    assert any("rm -f /var/lib/halofleet/serve.stamp" in command for command in run.changes("a"))
