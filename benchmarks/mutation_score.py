"""
Mutation score of halofleet's pure core, per module: how many of mutmut's mutants the unit tests kill.

    python3 benchmarks/mutation_score.py              # run mutmut (incremental), retest survivors, print the table
    python3 benchmarks/mutation_score.py --fresh      # from scratch (deletes mutants/): the full run
    python3 benchmarks/mutation_score.py --no-run     # only print the last results
    python3 benchmarks/mutation_score.py --survivors  # also list the surviving mutants (see: mutmut show NAME)
    python3 benchmarks/mutation_score.py --templates  # the templates instead (mutmut mutates Python only): our own
                                                      # mutator, benchmarks/template_mutation.py, with its own score

What is mutated, and which tests run (tests/unit only), is ``[tool.mutmut]`` in pyproject.toml; mutmut keeps its
results in ``mutants/<path>.meta``, which this script reads. At most 2 mutmut workers (``--max-children``).
Score = (killed + timeout) / all mutants; "no tests" (no unit test reaches the code) counts as not killed.
Exit 0 unless mutmut itself fails, or the score is below ``--fail-under``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# mutmut's exit-code meanings (mutmut/__main__.py status_by_exit_code, 3.7): the worker's pytest exit code.
KILLED_CODES = {1, 3}
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}
TIMEOUT_CODES = {24, -24, 36, 152, 255}
SKIPPED_CODES = {34, 37}


def status(code: int | None) -> str:
    if code is None:
        return "not checked"
    if code in KILLED_CODES:
        return "killed"
    if code in SURVIVED_CODES:
        return "survived"
    if code in NO_TESTS_CODES:
        return "no tests"
    if code in TIMEOUT_CODES:
        return "timeout"
    if code in SKIPPED_CODES:
        return "skipped"
    return "suspicious"


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def results(paths: list[str]) -> dict[str, dict[str, str]]:
    """{module path: {mutant name: status}} from mutmut's meta files (missing file: not generated yet)."""
    found = {}
    for path in paths:
        meta = ROOT / "mutants" / f"{path}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        found[path] = {name: status(code) for name, code in codes.items()}
    return found


def mutmut(args: list[str]) -> int:
    command = [sys.executable, "-c", "import sys; from mutmut.__main__ import cli; sys.exit(cli())", *args]
    return subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--no-run", action="store_true", help="print the last results without running mutmut")
    parser.add_argument("--fresh", action="store_true", help="delete mutants/ first: every mutant is tested again")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutmut workers (default 2)")
    parser.add_argument("--survivors", action="store_true", help="list the mutants that survived")
    parser.add_argument("--fail-under", type=float, default=None, help="exit 1 below this score (percent)")
    parser.add_argument("--templates", action="store_true",
                        help="mutate halofleet/templates/ with benchmarks/template_mutation.py instead of mutmut")
    parser.add_argument("--progress", action="store_true", help="with --templates: a line per mutant judged")
    parser.add_argument("--extra", action="store_true", help="with --templates: the slow tests too")
    args = parser.parse_args()
    if args.templates:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import template_mutation

        forwarded = [flag for flag, given in (("--no-run", args.no_run), ("--survivors", args.survivors),
                                              ("--progress", args.progress), ("--extra", args.extra)) if given]
        forwarded += ["--workers", str(args.max_children)]
        if args.fail_under is not None:
            forwarded += ["--fail-under", str(args.fail_under)]
        return template_mutation.main(forwarded)

    paths = modules()
    elapsed = None
    if not args.no_run:
        if args.fresh:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        start = time.monotonic()
        code = mutmut(["run", "--max-children", str(args.max_children)])
        # mutmut keeps verdicts across runs; new or changed tests may kill earlier survivors: test those again.
        survivors = [name for found in results(paths).values() for name, verdict in found.items()
                     if verdict in ("survived", "no tests", "suspicious")]
        if code == 0 and survivors:
            code = mutmut(["run", "--max-children", str(args.max_children), *survivors])
        elapsed = time.monotonic() - start
        if code != 0:
            print(f"mutmut run failed (exit {code}); run `mutmut run --max-children 2` to see why", file=sys.stderr)
            return 1

    found = results(paths)
    columns = ("killed", "timeout", "survived", "no tests", "other")
    print(f"{'module':<26}" + "".join(f"{c:>10}" for c in columns) + f"{'total':>8}{'score':>9}")
    totals = dict.fromkeys(columns, 0)
    for path, verdicts in found.items():
        counts = dict.fromkeys(columns, 0)
        for verdict in verdicts.values():
            counts[verdict if verdict in counts else "other"] += 1
        for column in columns:
            totals[column] += counts[column]
        print(_row(path.removeprefix("halofleet/"), counts, len(verdicts)))
    total = sum(totals.values())
    print(_row("overall", totals, total))
    if elapsed is not None:
        print(f"mutmut took {elapsed:.0f} s with {args.max_children} workers")
    if args.survivors:
        for path, verdicts in found.items():
            for name, verdict in sorted(verdicts.items()):
                if verdict not in ("killed", "timeout"):
                    print(f"  {verdict:<12} {name}")
    score = 100 * (totals["killed"] + totals["timeout"]) / total if total else 0.0
    if args.fail_under is not None and score < args.fail_under:
        print(f"mutation score {score:.1f} % is below {args.fail_under} %", file=sys.stderr)
        return 1
    return 0


def _row(name: str, counts: dict[str, int], total: int) -> str:
    score = f"{100 * (counts['killed'] + counts['timeout']) / total:.1f} %" if total else "-"
    return f"{name:<26}" + "".join(f"{counts[c]:>10}" for c in counts) + f"{total:>8}{score:>9}"


if __name__ == "__main__":
    sys.exit(main())
