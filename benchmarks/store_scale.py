"""How the store scales with runs: store checks, compaction memory and campaign plan.

    .venv/bin/python benchmarks/store_scale.py [--files 10000 100000] [--rows 1000000] [--plan 10000]
    .venv/bin/python benchmarks/store_scale.py --files 1000 10000 --store-module /tmp/old_store.py

Per-run files are one real, full-width row written by ``Store.write_run`` and copied under
distinct attempt names (writing 100 k files through the writer would take hours on 2 cores). The
1 M-row compaction reads 100 loose files of 10 k distinct rows each. After the first
compaction of per-run files a second one merges its small parts into larger ones (tiers). Each measurement runs in a
fresh process, so its peak RSS (``ru_maxrss``) is its own. ``--store-module`` measures another
``store.py`` (e.g. ``git show main~N:harness/store.py``) for the before column.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from joulebench.harness.schema import RUNS

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "JOULEBENCH_THREADS": "1", "TQDM_DISABLE": "1"}


def wide_row(key: str, i: int = 0) -> dict:
    """A row as wide as a real one: every core column set, plus prefixed parameter/metric columns."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    out = {}
    for f in RUNS:
        if pa.types.is_timestamp(f.type):
            out[f.name] = now
        elif pa.types.is_floating(f.type):
            out[f.name] = 1.0 + i % 97
        elif pa.types.is_integer(f.type):
            out[f.name] = i % 1000
        elif pa.types.is_boolean(f.type):
            out[f.name] = True
        else:
            out[f.name] = f"{f.name}-{i % 50}"
    out.update(run_key=key, task="ltsf", status="ok", attempt_id=f"a{i:08d}", spec_json="{" + "x" * 400 + "}",
               packages="torch==2.5 " * 30, **{f"p_{k}": 0.1 for k in "abcdef"},
               **{f"metric_{k}": 0.5 for k in ("mse", "mae", "mape", "mase")},
               **{f"val_{k}": 0.5 for k in ("mse", "mae")})
    return out


def load_store(module: str | None):
    if not module:
        from joulebench.harness.store import Store
        return Store
    spec = importlib.util.spec_from_file_location("store_under_test", module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Store


def make_files(root: Path, n: int, module: str | None) -> None:
    """n per-run files: one written by the store, copied under the names the store would use."""
    template = load_store(module)(root).write_run(wide_row("k0000000"))
    data, folder = template.read_bytes(), template.parent
    new_layout = template.name.count(".") == 3
    for i in range(1, n):
        key = f"k{i:07d}"
        name = f"{key}.a{i:08d}.ok.parquet" if new_layout else f"{key}.parquet"
        (folder / name).write_bytes(data)


def make_rows(root: Path, rows: int, per_file: int = 10_000) -> None:
    """``rows`` distinct runs in loose files of ``per_file`` rows (named like attempt files)."""
    from joulebench.harness.schema import to_table
    from joulebench.harness.store_guard import tag

    folder = root / "runs" / "task=ltsf"
    folder.mkdir(parents=True, exist_ok=True)
    block = tag(to_table([wide_row(f"k{i:07d}", i) for i in range(per_file)], RUNS))
    for f in range(rows // per_file):
        keys = pa.array([f"k{f * per_file + i:07d}" for i in range(per_file)])
        table = block.set_column(block.schema.get_field_index("run_key"), "run_key", keys)
        pq.write_table(table, folder / f"chunk{f:05d}.a{f:08d}.ok.parquet", compression="zstd")


def measure(what: str, root: str, module: str | None) -> dict:
    """Runs in a child process: the timing and peak memory of one store operation."""
    store = load_store(module)(Path(root))
    t0 = time.perf_counter()
    if what == "stored_keys":
        n = len(store.stored_keys())
    elif what == "run_check":  # what `joulebench run` asks before running
        has_ok = getattr(store, "has_ok", None)
        n = int(has_ok("ltsf", "k0000001")) if has_ok else int("k0000001" in store.stored_keys())
    elif what == "compact":
        n = sum(store.compact().values())
    elif what == "results":
        n = len(store.execute("SELECT run_key, status, primary_value FROM runs LIMIT 50").fetchall())
    else:
        raise ValueError(what)
    seconds = time.perf_counter() - t0
    return {"s": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n": n}


def child(what: str, root: Path, module: str | None, timeout: float = 1200) -> dict:
    cmd = [sys.executable, __file__, "--measure", what, str(root)] + (["--store-module", module] if module else [])
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"s": float("inf"), "peak_mb": float("nan"), "n": -1}
    if done.returncode:
        return {"s": float("nan"), "peak_mb": float("nan"), "n": -1, "error": done.stderr.strip()[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def parts(root: Path) -> int:
    """Parts readers use (merged ones excluded)."""
    from joulebench.harness.store import Store
    return len(Store(root).parts("runs"))


def line(label: str, m: dict) -> str:
    err = f"  {m['error']}" if "error" in m else ""
    return f"| {label} | {m['s']:.3f} s | {m['peak_mb']:.0f} MB | {m['n']} |{err}"


def plan_seconds(n: int, tmp: Path) -> float:
    seeds = n // 2
    path = tmp / "plan.toml"
    path.write_text(f'name = "scale"\n[defaults]\npreset = "tiny"\nseeds = {list(range(seeds))}\n'
                    '[[grid]]\ntask = "ltsf"\nmethods = ["backprop"]\ntask_params = { batch_size = [16, 32] }\n')
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "joulebench.harness.cli", "campaign", "plan", str(path),
                           "--results", str(tmp / "plan-results")], capture_output=True, text=True, env=ENV)
    if done.returncode:
        raise RuntimeError(done.stderr[-500:])
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, nargs="*", default=[10_000, 100_000])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--plan", type=int, default=10_000)
    p.add_argument("--ops", nargs="*", default=["stored_keys", "run_check", "results", "compact"])
    p.add_argument("--store-module", default=None)
    p.add_argument("--measure", nargs=2, metavar=("WHAT", "ROOT"))
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.store_module)))
        return
    print(f"load: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; store: {args.store_module or 'this tree'}")
    print("| measurement | time | peak RSS | result |\n|---|---|---|---|")
    for n in args.files:
        with tempfile.TemporaryDirectory(prefix="joulebench-scale-") as tmp:
            make_files(Path(tmp), n, args.store_module)
            for what in args.ops:
                print(line(f"{what}, {n} per-run files", child(what, Path(tmp), args.store_module)), flush=True)
            for what in [o for o in args.ops if o != "compact"] if "compact" in args.ops else []:
                print(line(f"{what}, {n} runs compacted", child(what, Path(tmp), args.store_module)), flush=True)
            if "compact" in args.ops and not args.store_module:  # the parts of the first are small
                print(line(f"compact again, {n} runs (parts before: {parts(Path(tmp))})",
                           child("compact", Path(tmp), None)), flush=True)
                print(line(f"stored_keys, {n} runs, parts merged (parts after: {parts(Path(tmp))})",
                           child("stored_keys", Path(tmp), None)), flush=True)
    if args.rows:
        with tempfile.TemporaryDirectory(prefix="joulebench-scale-") as tmp:
            make_rows(Path(tmp), args.rows)
            print(line(f"compact {args.rows} rows", child("compact", Path(tmp), args.store_module)), flush=True)
            for what in ("stored_keys", "run_check", "results"):
                print(line(f"{what}, {args.rows} runs compacted", child(what, Path(tmp), args.store_module)),
                      flush=True)
    if args.plan:
        with tempfile.TemporaryDirectory(prefix="joulebench-scale-") as tmp:
            print(f"| campaign plan, {args.plan} runs | {plan_seconds(args.plan, Path(tmp)):.2f} s | | |")


if __name__ == "__main__":
    main()
