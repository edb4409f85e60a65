"""
Rolling engine restarts (halo_restart_batch) through pyinfra's @fake connector: batches in inventory order, each
engine asked for /health and a completion after its restart, and a failed one stops the rollout.
"""

from __future__ import annotations

from halofleet.testing.fake import probe_output, run_fake

KEY = "s" * 24
SERVES = {"halo_allow_non_strix_halo": True, "halo_reboot": "never", "halo_model": "/srv/models/tiny.gguf",
          "halo_llama_backend": "cpu", "halo_api_key": KEY, "halo_bind": "127.0.0.1"}
RESTART = "systemctl restart halo-serve.service"


def restarts(run, host: str) -> list[str]:
    return [command for command in run.changes(host) if RESTART in command]


def test_without_the_key_engines_still_restart_in_turn():
    # Safe by default: halo_restart_batch is 1 unless the data says otherwise, each restart checked.
    run = run_fake("deploys/serve.py", {"a": (SERVES, probe_output()), "b": (SERVES, probe_output())})
    assert run.errors == [] and run.failed_hosts == set()
    for host in ("a", "b"):
        (command,) = restarts(run, host)
        assert "/v1/completions" in command


def test_each_restarted_engine_must_answer_health_and_a_completion():
    run = run_fake("deploys/serve.py", {"a": ({**SERVES, "halo_restart_batch": 1}, probe_output()),
                                        "b": (SERVES, probe_output())})
    assert run.errors == [] and run.failed_hosts == set()
    for host in ("a", "b"):  # the smallest value in the inventory is the fleet's batch size
        (command,) = restarts(run, host)
        assert "http://127.0.0.1:8080/health" in command or "url=http://127.0.0.1:8080" in command
        assert "/v1/completions" in command and '"max_tokens\\":1' not in command
        # the key is read on the host and handed to curl on stdin, never in the command
        assert KEY not in command and "curl -s -K -" in command
        # the stamp is written only once the completion passed: a failed engine is restarted next run
        assert command.index("/v1/completions") < command.index("serve.stamp")


def failing(batch, delay: float = 0.0) -> dict:
    return {**SERVES, "halo_restart_batch": batch, "fake_delay": delay,
            "fake_responses": {RESTART: {"success": False, "stderr": "halofleet: no completion"}}}


def test_a_failed_restart_stops_the_rollout_before_the_next_batch():
    # Every engine would fail: the first batch (pyinfra picks its order) restarts and fails, no other host restarts.
    run = run_fake("deploys/serve.py", {name: (failing("1"), probe_output()) for name in "abc"})
    restarted = [name for name in "abc" if restarts(run, name)]
    assert len(restarted) == 1 and run.failed_hosts == {"a", "b", "c"}
    halted = [error for error in run.errors
              if f"not restarted: the rollout stopped because @fake/{restarted[0]} was not serving" in error]
    assert len(halted) == 2


def test_a_later_batch_is_not_halted_by_a_success():
    run = run_fake("deploys/serve.py", {name: ({**SERVES, "halo_restart_batch": 1}, probe_output())
                                        for name in "abc"})
    assert run.errors == [] and all(restarts(run, name) for name in "abc")


def test_batches_of_two_restart_together_and_the_failure_stops_the_later_batch():
    # Commands take a moment, as over SSH: the two hosts of a batch restart at the same time, both fail.
    run = run_fake("deploys/serve.py", {name: (failing(2, delay=0.05), probe_output()) for name in "abcd"})
    restarted = [name for name in "abcd" if restarts(run, name)]
    assert len(restarted) == 2 and run.failed_hosts == set("abcd")


def test_a_health_only_restart_check_asks_no_completion():
    """halo_restart_check: health (engines that serve no completions): /health 200 only, never /v1/completions."""
    from halofleet.operations.halo_serve import completion_check

    full = completion_check("http://127.0.0.1:8080", "halo-serve.service")
    health = completion_check("http://127.0.0.1:8080", "halo-serve.service", completion=False)
    assert "/v1/completions" in full and "/health" in full
    assert "/health" in health and "/v1/completions" not in health and "/v1/models" not in health
    assert health.splitlines() == full.splitlines()[:len(health.splitlines())]  # the same /health check, first
