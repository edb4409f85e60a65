"""
The exit codes a script or CI job acts on (cli.py: 0 done, 1 a host failed, was refused or is not ok, 2 bad input):
`diff` for every review status, and `verify`, `report` and `bench` when only some hosts are ok (their rows as
collect() returns them: the rows themselves are tested in test_verify.py). `diff` on @fake hosts with a refused one:
test_guards_deploys.py.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from halofleet import cli
from halofleet.testing.fake import probe_output
from halofleet.views import verify

from .test_review import write_inventory

GOOD = {"halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "cpu", "halo_reboot": "never"}


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args))


@pytest.fixture(autouse=True)
def checked_inventories(monkeypatch):
    """`halofleet check` runs first in these commands (its own exit codes: test_check.py); here every inventory
    passes it, so what is tested is what the command does with the rows it collects."""
    monkeypatch.setattr(cli, "require_valid", lambda *args, **kwargs: None)


def rows(*statuses: str) -> list[dict[str, str]]:
    return [{**{column: "-" for column in verify.COLUMNS}, "host": f"h{index}", "status": status, "bench": "-"}
            for index, status in enumerate(statuses)]


@pytest.mark.parametrize("statuses, code", [
    (("ok", "ok"), 0),
    (("ok", "not converged"), 1),
    (("unhealthy", "ok"), 1),
    (("ok", "gpu faults"), 1),
    (("ok", "unreachable"), 1),
    (("ok", "refused: host 'h1': ROCm 7.0.1 is installed and refused"), 1),
])
@pytest.mark.parametrize("command", ["verify", "verify --json", "report", "report --md {tmp}/r.md"])
def test_verify_and_report_exit_1_unless_every_host_is_ok(monkeypatch, tmp_path, statuses, code, command):
    monkeypatch.setattr(verify, "collect", lambda *args, **kwargs: rows(*statuses))
    args = command.format(tmp=tmp_path).split()
    result = invoke(args[0], "inventory.py", *args[1:])
    assert result.exit_code == code, result.output
    assert statuses[-1].split(":")[0] in result.stdout or "--md" in command


@pytest.mark.parametrize("returncode, bench_cells, code", [
    (0, ["512 t/s", "510 t/s"], 0), (1, ["512 t/s", "510 t/s"], 1), (0, ["512 t/s", "-"], 1)])
def test_bench_exits_1_when_pyinfra_failed_or_a_host_has_no_figures(monkeypatch, tmp_path, returncode, bench_cells,
                                                                     code):
    inventory = write_inventory(tmp_path, {"a": (GOOD, probe_output()), "b": (GOOD, probe_output())})
    monkeypatch.setattr(cli, "_run_pyinfra", lambda *args, **kwargs: returncode)
    monkeypatch.setattr(verify, "collect", lambda *args, **kwargs: [{**row, "bench": cell}
                                                         for row, cell in zip(rows("ok", "ok"), bench_cells)])
    result = invoke("bench", inventory)
    assert result.exit_code == code, result.output


def test_bad_input_is_2_and_an_internal_error_is_1(monkeypatch, tmp_path):
    monkeypatch.undo()  # the real check: a missing inventory is bad input
    assert invoke("verify", str(tmp_path / "missing.py")).exit_code == 2
    monkeypatch.setattr(cli, "require_valid", lambda *args, **kwargs: None)
    monkeypatch.setattr(verify, "collect", lambda *args, **kwargs: 1 / 0)
    result = invoke("verify", "inventory.py")
    assert result.exit_code == 1 and "ZeroDivisionError" in result.stderr


@pytest.mark.parametrize("found, code", [(("changes", "converged"), 0), (("converged",), 0),
                                         (("converged", "unreachable"), 1), (("changes", "refused"), 1)])
def test_diff_exit_code_for_every_review_status(monkeypatch, found, code):
    from halofleet.views import review
    from halofleet.views.changes import HostReview

    monkeypatch.setattr(review, "review", lambda inventory, deploy, *rest, **kwargs: [
        HostReview(f"h{index}", status, reason="why") for index, status in enumerate(found)])
    assert invoke("diff", "inventory.py").exit_code == code
