"""Mutation testing of one module against chosen tests (not part of the suite).

Usage, from the repository root::

    python tools/mutation.py src/dfx/metrics.py tests/test_metrics.py \
        [--preload torch sklearn.metrics] [--sample 40] [--seed 0] [--lines 86,109-119] \
        [-- PYTEST_ARGS]

The mutants are mutmut 2.x's (``pip install "mutmut<3"``); only its mutation engine is
used. Running ``mutmut run`` starts a new Python per mutant, and importing torch there
costs more than most of the tests it runs; here one parent process imports the heavy
libraries once (``--preload``, never dfx itself) and forks a child per mutant, which
imports the mutated module afresh and runs pytest. The mutants are written into a
temporary copy of the repository's tracked files, so the working tree is never changed.
A mutant is killed when the tests fail or pass their deadline (3 × the unmutated run
+ 20 s). ``--sample N`` checks N mutants drawn with ``--seed``, for modules with many;
``--lines`` keeps the mutants of some lines, to recheck survivors after adding tests.
Prints one line per surviving mutant (line number, original and mutated line) and a
summary; exit status 0 whatever the score.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _mutants(path: Path) -> tuple[str, list[tuple[int, str]]]:
    from mutmut import Context, list_mutations, mutate

    source = path.read_text()
    ids = list_mutations(Context(source=source, filename=str(path)))
    mutants = []
    for mutation_id in ids:
        mutated, count = mutate(Context(source=source, mutation_id=mutation_id, filename=str(path)))
        if count:
            mutants.append((mutation_id.line_number + 1, mutated))
    return source, mutants


def _copy_tree(root: Path, into: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=root, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    for name in files:
        if (root / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, into / name)


def _run_tests(pytest_args: list[str], deadline: float) -> tuple[bool, float]:
    """(tests passed, seconds) in a forked child, which sees the module as it is on disk."""
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: quiet, and never back into the parent's code
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        import pytest

        try:
            code = pytest.main(pytest_args)
        except BaseException:
            code = 99
        os._exit(int(code))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0, time.perf_counter() - started
        if time.perf_counter() - started > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return False, time.perf_counter() - started
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", type=Path)
    parser.add_argument("tests", nargs="+")
    parser.add_argument("--preload", nargs="*", default=["numpy"])
    parser.add_argument("--sample", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lines", help="only mutants on these lines, e.g. 86,109-119 (rechecks)")
    args, extra = parser.parse_known_args()
    sys.stdout.reconfigure(line_buffering=True)  # survivors show while a long run goes on
    extra = [a for a in extra if a != "--"]

    root = Path.cwd()
    # Stopped with SIGTERM, still remove the temporary copy (the finally clause below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    source, mutants = _mutants(args.module)
    if args.lines:
        ranges = [[int(n) for n in part.split("-")] for part in args.lines.split(",")]
        mutants = [(n, m) for n, m in mutants if any(r[0] <= n <= r[-1] for r in ranges)]
    total = len(mutants)
    if args.sample and args.sample < total:
        chosen = sorted(random.Random(args.seed).sample(range(total), args.sample))
        mutants = [mutants[i] for i in chosen]

    work = Path(tempfile.mkdtemp(prefix="dfx-mutation-"))
    try:
        _copy_tree(root, work)
        os.chdir(work)
        sys.path.insert(0, str(work / "src"))
        sys.dont_write_bytecode = True  # a stale .pyc of the same size and second would win
        for name in args.preload:
            importlib.import_module(name)
        target = work / args.module
        pytest_args = ["-x", "-q", "-p", "no:cacheprovider", *extra, *args.tests]
        passed, seconds = _run_tests(pytest_args, deadline=3600)
        if not passed:
            print("the tests fail without mutation; nothing to measure", file=sys.stderr)
            return 1
        deadline = 3 * seconds + 20
        print(f"{args.module}: {len(mutants)} of {total} mutants; unmutated run {seconds:.1f} s")
        original_lines = source.splitlines()
        killed = 0
        for number, (line, mutated) in enumerate(mutants, 1):
            target.write_text(mutated)
            survived, took = _run_tests(pytest_args, deadline)
            if survived:
                new = mutated.splitlines()
                changed = next(
                    (n for n, (a, b) in enumerate(zip(original_lines, new)) if a != b), line - 1
                )
                print(f"  survived line {changed + 1}: {original_lines[changed].strip()}")
                print(f"                -> {new[changed].strip()}")
            else:
                killed += 1
            print(f"  [{number}/{len(mutants)}] {took:.1f} s", file=sys.stderr)
        target.write_text(source)
        checked = len(mutants)
        print(
            f"{args.module}: {checked} checked, {killed} killed, {checked - killed} survived, "
            f"score {killed / checked:.0%}"
            if checked
            else f"{args.module}: no mutants"
        )
        return 0
    finally:
        os.chdir(root)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
