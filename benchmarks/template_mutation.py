"""
Mutation testing of halofleet/templates/ (mutmut mutates Python only): each template is changed one small way at a
time -- a line dropped, a setting emptied, a value swapped, a word of a list dropped, a variable left out, a
condition turned round -- and the unit tests that render it (through the real code paths: the mutant replaces the
template in ``halofleet.contract.templating.ENVIRONMENT``) must fail.

    python3 benchmarks/mutation_score.py --templates                 # run, print the score per template
    python3 benchmarks/mutation_score.py --templates --survivors     # and every surviving mutant
    python3 benchmarks/template_mutation.py --only haproxy.cfg.j2    # one template (or several: --only a --only b)

Comment lines without a variable, units' Description= and the report's stylesheet are not mutated (text and
presentation for people, read by no program); a mutant that is no longer valid jinja is counted as
"invalid" and left out of the score. The tests (``TESTS`` per template; ``--extra`` adds the slow ``EXTRA``) are
collected once in one pytest session; each mutant then runs in a forked child of it, its template's tests in order,
the first failure ending the child (no pytest start-up per mutant; 2 children at a time). Their unmutated run must
pass first. Score = (killed + timeout) / (killed + timeout + survived).
Results: benchmarks/results/template_mutants.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "halofleet" / "templates"
RESULTS = ROOT / "benchmarks" / "results" / "template_mutants.json"

_SERVE = ["test_guards_units.py", "test_mutants_serving.py", "test_serving.py", "test_models.py"]
_RPC = ["test_guards_units.py", "test_mutants_rpc.py", "test_rpc.py", "test_guards_rollout.py"]
_ROCM = ["test_guards_files.py", "test_operation_fixtures.py", "test_rocm_streams.py", "test_mutants_rocmplan.py"]
_REPORT = ["test_guards_report.py", "test_rpc.py", "test_verify.py"]
# The unit tests that render each template, the most specific and fastest first (a mutant's run stops at its first
# failing test).
TESTS: dict[str, list[str]] = {
    "halo-serve.service.j2": [*_SERVE, "test_rpc.py"],
    "halo-serve.container.j2": [*_SERVE, "test_amdgpu.py"],
    "serve.env.j2": _SERVE,
    "serve.conf.j2": [*_SERVE, "test_verify.py"],
    "halo-rpc.service.j2": _RPC,
    "halo-rpc-firewall.service.j2": _RPC,
    "rpc.nft.j2": _RPC,
    "haproxy.cfg.j2": ["test_guards_haproxy.py", "test_mutants_gateway.py", "test_gateway.py"],
    "grub-dropin.cfg.j2": ["test_cmdline.py", "test_mutants_cmdline.py", "test_operation_fixtures.py"],
    "modprobe.conf.j2": ["test_guards_files.py", "test_operation_fixtures.py", "test_mutants_plan.py", "test_facts.py"],
    "rocm.list.j2": _ROCM,
    "rocm.sources.j2": _ROCM,
    "rocm-pin.pref.j2": _ROCM,
    "report.html.j2": _REPORT,
    "report.md.j2": _REPORT,
}
# Slower files, with --extra: hostile values through every template (hypothesis), whole @fake deploys.
EXTRA: dict[str, list[str]] = {name: ["test_hostile.py", "test_stages.py", "test_guards_deploys.py"] for name in TESTS}


# Values swapped for another of their kind (a setting weakened or changed); numbers become another number.
SWAPS = {"yes": "no", "no": "yes", "true": "false", "false": "true", "strict": "full", "full": "strict",
         "on-failure": "no", "exec": "simple", "oneshot": "simple", "control-group": "process", "native": "",
         "infinity": "0", "host": "private", "GET": "HEAD", "http": "tcp", "accept": "drop", "drop": "accept",
         "ip": "ip6", "ip6": "ip", "input": "output", "filter": "nat", "deb": "deb-src", "main": "contrib",
         "admin": "user", "600": "666", "local0": "local1", "leastconn": "roundrobin", "unconfined": "default"}
COMMENT = re.compile(r"^\s*(#|;)")
JINJA_BLOCK = re.compile(r"^\s*{%-?\s*(.*?)\s*-?%}\s*$")
EXPRESSION = re.compile(r"{{.*?}}")
NUMBER = re.compile(r"(\d{1,9})([a-z]{0,2})")


@dataclass
class Mutant:
    template: str
    line: int  # 1-based
    kind: str  # drop | empty | swap | number | word | expression | condition
    before: str
    after: str  # the line as mutated ("" for a dropped line)
    text: str  # the whole mutated template
    verdict: str = ""  # killed | survived | invalid | timeout
    seconds: float = 0.0

    @property
    def label(self) -> str:
        shown = self.after if self.kind != "drop" else "(line dropped)"
        return f"{self.template}:{self.line} {self.kind}: {self.before.strip()!r} -> {shown.strip()!r}"


def _words(text: str) -> list[str]:
    """Space-separated words, each {{ expression }} kept whole (its inner spaces are not word breaks)."""
    masked = EXPRESSION.sub(lambda match: match.group(0).replace(" ", "\0"), text)
    return [word.replace("\0", " ") for word in masked.split()]


def _static_comment(line: str) -> bool:
    """A comment without a variable, or a unit's Description=: text for people, read by no program."""
    if line.strip().startswith("Description="):
        return True
    return bool(COMMENT.match(line)) and "{{" not in line and "{%" not in line


def line_mutations(line: str) -> list[tuple[str, str | None]]:
    """(kind, mutated line or None to drop it) for one template line."""
    if not line.strip() or _static_comment(line):
        return []
    block = JINJA_BLOCK.match(line)
    if block:
        statement = block.group(1)
        if statement.startswith("if "):
            condition = statement[3:]
            return [("condition", line.replace(statement, f"if not ({condition})", 1))]
        return []  # for/endif/endfor/else: dropping one is no longer a template
    found: list[tuple[str, str | None]] = [("drop", None)]
    indent = line[: len(line) - len(line.lstrip())]
    body = line.strip()
    key, sep, value = body.partition("=")
    is_setting = bool(sep) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", key) is not None
    if is_setting and value:
        found.append(("empty", f"{indent}{key}="))
    # One word replaced or dropped at a time (a setting's value, or a directive's arguments), up to the first
    # quote (messages and formats are text) and never inside an inline loop or markup; {{ }} stays one word.
    rest = value if is_setting else body
    prefix = f"{indent}{key}=" if is_setting else indent
    masked = EXPRESSION.sub(lambda match: "x" * len(match.group(0)), rest)  # a quote inside {{ }} is jinja's
    quoted = min([at for at in (masked.find("'"), masked.find('"')) if at >= 0], default=len(rest))
    words, tail = _words(rest[:quoted]), rest[quoted:]
    comment = bool(COMMENT.match(line))  # with a variable in it: dropped, or the variable left out, only
    if "{%" not in body and not body.startswith(("<", "|")) and not comment and key != "Description":
        def join(changed: list[str]) -> str:
            return prefix + " ".join(changed) + (" " + tail if tail and changed else tail)

        for index, word in enumerate(words):
            number = NUMBER.fullmatch(word)
            if word in SWAPS:
                found.append(("swap", join([*words[:index], SWAPS[word], *words[index + 1:]])))
            elif number:
                changed = str(int(number.group(1)) + 1) if int(number.group(1)) else "1"
                found.append(("number", join([*words[:index], changed + number.group(2), *words[index + 1:]])))
            if len(words) > 1 and index > 0 and "{{" not in word:
                found.append(("word", join([*words[:index], *words[index + 1:]])))
    for match in EXPRESSION.finditer(line):
        found.append(("expression", line[: match.start()] + line[match.end():]))
    return found


def mutants_of(name: str) -> list[Mutant]:
    text = (TEMPLATES / name).read_text()
    lines = text.split("\n")
    found, seen = [], set()
    style = False
    for index, line in enumerate(lines):
        # The report's stylesheet is presentation (colours, spacing), seen in the VM tier's screenshot: not mutated.
        style = (style or line.strip() == "<style>") and line.strip() != "</style>"
        if style:
            continue
        for kind, after in line_mutations(line):
            changed = lines[:index] + ([] if after is None else [after]) + lines[index + 1:]
            mutated = "\n".join(changed)
            if mutated == text or mutated in seen:
                continue
            seen.add(mutated)
            found.append(Mutant(name, index + 1, kind, line, after or "", mutated))
    return found


class MutationLoop:
    """
    A pytest plugin that replaces the test loop: the tests are collected once, then each mutant runs in a forked
    child (the mutant in place of its template) against its template's tests, the first failure ending the child.
    No pytest start-up or collection per mutant.
    """

    def __init__(self, mutants: list[Mutant], workers: int, timeout: float, extra: bool, progress: bool):
        self.mutants, self.workers, self.timeout = mutants, workers, timeout
        self.extra, self.progress = extra, progress
        self.baseline_failures: list[str] = []

    def items_for(self, template: str, items: list) -> list:
        files = TESTS[template] + (EXTRA[template] if self.extra else [])
        return sorted((item for item in items if item.path.name in files),
                      key=lambda item: files.index(item.path.name))  # stable: file order, then test order

    @staticmethod
    def _child(mutant: Mutant | None, items: list) -> None:
        from _pytest.runner import runtestprotocol

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        code = 3
        try:
            if mutant is not None:
                from halofleet.contract import templating

                templating.ENVIRONMENT.loader.mapping[mutant.template] = mutant.text
                templating.ENVIRONMENT.cache.clear()
            code = 0
            for index, item in enumerate(items):
                following = items[index + 1] if index + 1 < len(items) else None
                reports = runtestprotocol(item, nextitem=following, log=False)
                if any(report.failed for report in reports):
                    code = 1
                    if mutant is not None:
                        break
                    print(item.nodeid, file=sys.__stderr__)
        finally:
            os._exit(code)

    def _fork(self, mutant: Mutant | None, items: list) -> int:
        pid = os.fork()
        if pid == 0:
            self._child(mutant, items)
        return pid

    def pytest_runtestloop(self, session) -> bool:
        import jinja2

        from halofleet.contract import templating

        items = list(session.items)
        templates = sorted({mutant.template for mutant in self.mutants})
        # Unmutated, every template's tests pass (else no verdict means anything); their time sets the timeout.
        started = time.monotonic()
        union = [item for item in items if any(item in self.items_for(name, items) for name in templates)]
        _, status = os.waitpid(self._fork(None, union), 0)
        if os.waitstatus_to_exitcode(status) != 0:
            self.baseline_failures.append(f"exit {os.waitstatus_to_exitcode(status)}")
            return True
        timeout = max(self.timeout, 4 * (time.monotonic() - started))
        queue = []
        for mutant in self.mutants:
            try:
                templating.ENVIRONMENT.parse(mutant.text)
            except jinja2.TemplateSyntaxError:
                mutant.verdict = "invalid"
                continue
            queue.append(mutant)
        selected = {name: self.items_for(name, items) for name in templates}
        running: dict[int, tuple[Mutant, float]] = {}
        done, began = 0, time.monotonic()
        while queue or running:
            while queue and len(running) < self.workers:
                mutant = queue.pop(0)
                running[self._fork(mutant, selected[mutant.template])] = (mutant, time.monotonic())
            pid = status = 0
            for child in running:  # our own children only
                pid, status = os.waitpid(child, os.WNOHANG)
                if pid:
                    break
            if pid == 0:
                for child, (mutant, started) in list(running.items()):
                    if time.monotonic() - started > timeout:
                        os.kill(child, signal.SIGKILL)  # our own child: reaped on a later pass
                time.sleep(0.01)
                continue
            mutant, started = running.pop(pid)
            mutant.seconds = round(time.monotonic() - started, 2)
            done += 1
            code = os.waitstatus_to_exitcode(status)
            mutant.verdict = {0: "survived", 1: "killed", -signal.SIGKILL: "timeout"}.get(code, f"error {code}")
            if self.progress:
                print(f"[{time.monotonic() - began:5.0f} s] {done}/{done + len(queue) + len(running)} "
                      f"{mutant.verdict:<8} {mutant.label[:110]}", file=sys.stderr, flush=True)
        return True


def run(mutants: list[Mutant], workers: int, timeout: float, extra: bool, progress: bool = False) -> None:
    """Collect the tests of the mutants' templates once and judge every mutant (see :class:`MutationLoop`)."""
    import pytest

    names = sorted({mutant.template for mutant in mutants})
    files = sorted({f for name in names for f in TESTS[name] + (EXTRA[name] if extra else [])})
    loop = MutationLoop(mutants, workers, timeout, extra, progress)
    pytest.main(["-q", "-p", "no:cacheprovider", "--no-header", "-W", "ignore",
                 *(str(ROOT / "tests" / "unit" / f) for f in files)], plugins=[loop])
    if loop.baseline_failures:
        raise SystemExit("the unmutated tests fail (run them: they must pass before mutants mean anything)")


def score_table(mutants: list[Mutant]) -> tuple[list[str], float]:
    columns = ("killed", "survived", "timeout", "invalid")
    lines = [f"{'template':<30}" + "".join(f"{c:>10}" for c in columns) + f"{'score':>9}"]
    totals = dict.fromkeys(columns, 0)
    for name in TESTS:
        counts = dict.fromkeys(columns, 0)
        for mutant in mutants:
            if mutant.template == name:
                counts[mutant.verdict if mutant.verdict in counts else "survived"] += 1
        if not sum(counts.values()):
            continue
        for column in columns:
            totals[column] += counts[column]
        lines.append(_row(name, counts))
    lines.append(_row("overall", totals))
    judged = totals["killed"] + totals["timeout"] + totals["survived"]
    return lines, 100 * (totals["killed"] + totals["timeout"]) / judged if judged else 0.0


def _row(name: str, counts: dict[str, int]) -> str:
    judged = counts["killed"] + counts["timeout"] + counts["survived"]
    score = f"{100 * (counts['killed'] + counts['timeout']) / judged:.1f} %" if judged else "-"
    return f"{name:<30}" + "".join(f"{counts[c]:>10}" for c in counts) + f"{score:>9}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--only", action="append", help="this template only (repeatable)")
    parser.add_argument("--workers", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--extra", action="store_true", help="run the slow EXTRA tests too (hostile values, stages)")
    parser.add_argument("--survivors", action="store_true", help="list the mutants that survived")
    parser.add_argument("--progress", action="store_true", help="a line on stderr per mutant judged")
    parser.add_argument("--no-run", action="store_true", help="print the last results without running")
    parser.add_argument("--fail-under", type=float, default=None, help="exit 1 below this score (percent)")
    args = parser.parse_args(argv)

    if args.no_run:
        mutants = [Mutant(**item, text="") for item in json.loads(RESULTS.read_text())["mutants"]]
        elapsed = None
    else:
        names = args.only or list(TESTS)
        unknown = sorted(set(names) - set(TESTS))
        if unknown:
            parser.error(f"no such template: {', '.join(unknown)}")
        missing = sorted(p.name for p in TEMPLATES.glob("*.j2") if p.name not in TESTS)
        if missing:
            raise SystemExit(f"templates without tests in TESTS: {', '.join(missing)}")
        os.chdir(ROOT)  # the tests read deploys/ and fixtures relative to the checkout
        started = time.monotonic()
        mutants = [mutant for name in names for mutant in mutants_of(name)]
        run(mutants, args.workers, timeout=60.0, extra=args.extra, progress=args.progress)
        elapsed = time.monotonic() - started
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"seconds": round(elapsed), "mutants": [
            {key: value for key, value in asdict(m).items() if key != "text"} for m in mutants]}, indent=1) + "\n")

    lines, score = score_table(mutants)
    print("\n".join(lines))
    if elapsed is not None:
        print(f"template mutants: {len(mutants)} in {elapsed:.0f} s with {args.workers} workers")
    if args.survivors:
        for mutant in mutants:
            if mutant.verdict not in ("killed", "timeout", "invalid"):
                print(f"  {mutant.verdict:<9} {mutant.label}")
    if args.fail_under is not None and score < args.fail_under:
        print(f"template mutation score {score:.1f} % is below {args.fail_under} %", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
