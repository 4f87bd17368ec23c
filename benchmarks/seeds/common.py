"""The convention every seed benchmark follows (issues 18 and 19), in one place.

A seed benchmark reproduces one paper's headline as a ratio at CPU scale. It builds its run specs,
runs them through the harness into a results directory (so the leaderboard shows the same rows),
skips specs whose run key is already stored there (resumable: rerun the command after a crash
or a timeout and only the missing runs execute), then prints a Markdown table and one line per
headline::

    headline <name> <value> [<lo> <hi>]

where value is the median over seeds and lo/hi their range. ``--quick`` must finish in under five
minutes on two cores with two seeds; the full mode uses three seeds or more.

Usage from a benchmark module::

    args = common.parser(__doc__, "f3").parse_args()
    specs = [...]                       # ResolvedSpec list, built for common.seeds(args)
    rows = common.run_specs(specs, args)
    print(common.table(rows, specs))
    print(common.headline("gap_closed_drtp", values))
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from joulebench.cluster.report import cell_labels, markdown_table
from joulebench.harness.spec import ResolvedSpec
from joulebench.harness.store import Store
from joulebench.harness.worker import Worker

TIMEOUT_S = 1800.0
"""Per-run limit of the seed benchmarks: the tiny preset's two minutes assume an idle core."""
QUICK_SEEDS = (0, 1)
FULL_SEEDS = (0, 1, 2)


def parser(doc: str | None, name: str) -> argparse.ArgumentParser:
    """The shared command line: ``--results``, ``--quick``, ``--seeds``, ``--table-only``."""
    p = argparse.ArgumentParser(description=(doc or name).strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    default = Path(tempfile.gettempdir()) / f"joulebench-seeds-{name}"
    p.add_argument("--results", type=Path, default=default,
                   help=f"results directory (default {default}); stored runs are not rerun")
    p.add_argument("--quick", action="store_true", help="small budget, two seeds, under 5 minutes")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help=f"seeds (default {list(QUICK_SEEDS)} quick, {list(FULL_SEEDS)} full)")
    p.add_argument("--table-only", action="store_true", help="run nothing; report what is stored")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the worker")
    return p


def seeds(args: argparse.Namespace) -> list[int]:
    if args.seeds:
        return list(args.seeds)
    return list(QUICK_SEEDS if args.quick else FULL_SEEDS)


def run_specs(specs: Sequence[ResolvedSpec], args: argparse.Namespace) -> pd.DataFrame:
    """Run every spec not yet stored with status ok (one process at a time), return their rows.

    Single-process specs go through one long-lived :class:`Worker`; multi-rank specs through the
    local torchrun launcher. Each finished run prints one progress line to stderr.
    """
    results = Path(args.results)
    if not args.table_only:
        done = Store(results).stored_keys() if (results / "runs").exists() else set()
        todo = [s for s in specs if s.run_key not in done]
        worker = Worker(results, threads=args.threads)
        try:
            for i, spec in enumerate(todo, 1):
                summary = run_one(spec, results, worker)
                print(f"[{i}/{len(todo)}] {spec.method} seed={spec.seed} ranks={spec.world_size}: "
                      f"{summary.get('status')} {summary.get('error') or ''}".rstrip(),
                      file=sys.stderr, flush=True)
        finally:
            worker.close()
    return stored_rows(results, specs)


def run_one(spec: ResolvedSpec, results: Path, worker: Worker) -> dict:
    if spec.world_size == 1:
        return worker.run(spec)
    from joulebench.cluster.local import run_parallel

    return run_parallel(spec, results, "torchrun")


def stored_rows(results: Path, specs: Sequence[ResolvedSpec]) -> pd.DataFrame:
    """The latest stored row of each spec's run key (rank 0's row for multi-rank runs)."""
    if not (Path(results) / "runs").exists():
        return pd.DataFrame()
    keys = [s.run_key for s in specs]
    rows = Store(results).execute("SELECT * FROM runs WHERE run_key IN (SELECT unnest(?))",
                                  [keys]).df()
    if rows.empty:
        return rows
    return rows.sort_values("started_at").drop_duplicates("run_key", keep="last")


def table(rows: pd.DataFrame, specs: Sequence[ResolvedSpec]) -> str:
    """The project's campaign table (medians and ranges over seeds) for these specs."""
    return markdown_table(rows, cell_labels(specs))


def ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"] if not rows.empty else rows


def median_range(values: Iterable[float]) -> tuple[float, float, float]:
    """Median, min and max of the finite values (NaN, NaN, NaN when there are none)."""
    clean = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if not clean:
        return math.nan, math.nan, math.nan
    return float(pd.Series(clean).median()), clean[0], clean[-1]


def headline(name: str, values: Iterable[float] | float, fmt: str = ".4g") -> str:
    """``headline <name> <median> <lo> <hi>`` over seeds; a single value prints alone."""
    if isinstance(values, (int, float)):
        return f"headline {name} {format(float(values), fmt)}"
    mid, lo, hi = median_range(values)
    return f"headline {name} {format(mid, fmt)} {format(lo, fmt)} {format(hi, fmt)}"


def shared_data() -> Path:
    """The real data: ``$JOULEBENCH_SHARED_DATA``, else the nearest ``shared/data`` above the
    checkout (the brief's ``../shared/data``). A git worktree nested a folder deeper
    (``/work/wt/NAME``) finds the one the main checkout does instead of silently skipping it."""
    if os.environ.get("JOULEBENCH_SHARED_DATA"):
        return Path(os.environ["JOULEBENCH_SHARED_DATA"])
    root = Path(__file__).resolve().parents[2]
    found = [p / "shared" / "data" for p in root.parents if (p / "shared" / "data").is_dir()]
    return found[0] if found else root.parent / "shared" / "data"


def scored(rows: pd.DataFrame, columns: Sequence[str], worst: float) -> pd.DataFrame:
    """The ok rows plus the diverged ones (a non-finite loss, or a non-finite evaluation metric),
    those with ``worst`` in ``columns``: a learning rate at which a method diverges is worse than
    any it trains at, so a grid whose top rate diverges holds the best rate inside it. Rows that
    failed otherwise (a crash, a timeout) say nothing about the rate and are left out."""
    if rows.empty:
        return rows
    error = rows["error"].fillna("").astype(str) if "error" in rows else pd.Series("", index=rows.index)
    bad = (rows["status"] == "diverged") | ((rows["status"] == "failed") & error.str.startswith("NonFiniteMetric"))
    out = pd.concat([rows[rows["status"] == "ok"], rows[bad].assign(**{c: worst for c in columns})])
    return out
