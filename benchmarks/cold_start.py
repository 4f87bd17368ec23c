"""Cold start: wall time of a fresh ``joulebench run --task ltsf --preset tiny`` and of
``joulebench list``, each in a new process (the OS file cache warm, the plugin manifest built by
a first, unmeasured call). Trees are interleaved (A, B, A, B, ...) so machine noise hits both;
on a shared machine quote the ratio within one invocation, and the load printed beside it.

    .venv/bin/python benchmarks/cold_start.py [--repeats 5] [--tree before=/path/to/old/tree]

``--tree NAME=DIR`` runs the same commands with ``PYTHONPATH=DIR`` (a tree holding ``joulebench/``
with an older checkout); the current checkout is always measured as ``now``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {"run": ["run", "--task", "ltsf", "--preset", "tiny", "--force"], "list": ["list"]}


def once(args: list[str], env: dict[str, str], results: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of the largest process of the tree) of one fresh CLI call."""
    cmd = [sys.executable, "-m", "joulebench.harness.cli", *args]
    if args[0] == "run":
        cmd += ["--results", results]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.read()[-500:]}")
    return wall, usage.ru_maxrss / 1024


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR")
    args = parser.parse_args()
    trees = {"now": os.environ.get("PYTHONPATH", "")}
    for item in args.tree:
        name, _, path = item.partition("=")
        trees[name] = path
    base = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        envs = {n: {**base, "PYTHONPATH": p, "JOULEBENCH_CACHE": str(Path(tmp) / f"cache-{n}")}
                for n, p in trees.items()}
        for name, env in envs.items():  # builds the manifest / generated data; not measured
            once(COMMANDS["run"], env, str(Path(tmp) / f"r-{name}"))
        print(f"load before: {load()}")
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for rep in range(args.repeats):
            order = list(envs) if rep % 2 == 0 else list(reversed(envs))
            for name in order:
                for what, command in COMMANDS.items():
                    times.setdefault((name, what), []).append(
                        once(command, envs[name], str(Path(tmp) / f"r-{name}")))
        print(f"load after:  {load()}")
    for (name, what), values in sorted(times.items()):
        walls = [w for w, _ in values]
        print(f"{name:>8} {what:<5} wall median {statistics.median(walls):6.2f} s "
              f"(range {min(walls):.2f}-{max(walls):.2f}, n={len(walls)})   "
              f"peak RSS {max(m for _, m in values):6.0f} MB")
    for what in COMMANDS:
        for name in envs:
            if name != "now":
                ratio = statistics.median(a / b for (a, _), (b, _) in
                                          zip(times[("now", what)], times[(name, what)], strict=True))
                print(f"{what}: now / {name} = {ratio:.2f} (median of paired ratios)")


if __name__ == "__main__":
    main()
