"""Cost-forecast error on a stored demo campaign: leave-one-cell-out, by run order.

Runs the campaign (default: the README's demo) into a fresh store per repeat and order, then
``joulebench campaign plan --validate`` on it, and reports the median absolute error of train
seconds and joules over the cells with a basis. Orders alternate within each repeat, so both see
the same stretch of the machine's time; ``cell`` (all seeds of a cell back to back) is the
baseline the default ``interleaved`` order is compared with. The error is a property of the
measurement as much as of the model: identical sub-5 s runs on two shared cores drift by
1.2-1.8x, and the forecast cannot be closer than the stored medians repeat.

    .venv/bin/python benchmarks/forecast_error.py [--repeats 3] [--orders interleaved cell] [-j 2]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOULEBENCH = [sys.executable, "-m", "joulebench.harness.cli"]
MEDIAN = re.compile(r"median absolute error: train seconds ([\d.]+)%, joules ([\d.]+)% over (\d+) cells")


def with_order(campaign: Path, order: str, out: Path) -> Path:
    """The campaign file with its top-level ``order`` set (top-level keys precede tables)."""
    lines = [ln for ln in campaign.read_text().splitlines() if not ln.startswith("order")]
    out.write_text(f'order = "{order}"\n' + "\n".join(lines) + "\n")
    return out


def one(campaign: Path, order: str, jobs: int, work: Path) -> dict:
    results = work / "results"
    spec = with_order(campaign, order, work / "campaign.toml")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    ran = subprocess.run([*JOULEBENCH, "campaign", "run", str(spec), "-j", str(jobs), "--results", str(results)],
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if ran.returncode != 0:
        sys.exit(f"campaign run failed ({order}): {ran.stderr.strip().splitlines()[-1:]}")
    check = subprocess.run([*JOULEBENCH, "campaign", "plan", str(spec), "--validate", "--results", str(results)],
                           capture_output=True, text=True, check=True)
    found = MEDIAN.search(check.stdout)
    if not found:
        sys.exit(f"no validation line in the plan's output ({order}): no cell had a basis?")
    ok = re.search(r"(\d+) ok, (\d+) not ok", ran.stdout)
    return {"order": order, "load": load, "wall": wall, "err_s": float(found[1]), "err_j": float(found[2]),
            "cells": int(found[3]), "ok": ok[0] if ok else "?"}


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):5.1f} (range {min(values):.1f}-{max(values):.1f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--campaign", type=Path, default=ROOT / "examples" / "campaigns" / "demo.toml")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--orders", nargs="+", default=["interleaved", "cell"], choices=["interleaved", "cell"])
    p.add_argument("-j", "--jobs", type=int, default=2)
    args = p.parse_args()
    print(f"{args.campaign.name}, -j {args.jobs}, {os.cpu_count()} cores, load before {os.getloadavg()[0]:.2f}")
    rows = []
    for repeat in range(args.repeats):
        for order in args.orders:
            with tempfile.TemporaryDirectory(prefix="jb-forecast-") as tmp:
                r = one(args.campaign, order, args.jobs, Path(tmp))
            rows.append(r)
            print(f"repeat {repeat} {order:11s} load {r['load']:.2f} wall {r['wall']:5.1f} s {r['ok']}: "
                  f"train seconds {r['err_s']:.1f} %, joules {r['err_j']:.1f} % over {r['cells']} cells", flush=True)
    for order in args.orders:
        mine = [r for r in rows if r["order"] == order]
        print(f"{order:11s} train seconds {summary([r['err_s'] for r in mine])} %, joules "
              f"{summary([r['err_j'] for r in mine])} %, wall {summary([r['wall'] for r in mine])} s")
    if "cell" in args.orders and len(args.orders) > 1:
        base = statistics.median(r["err_s"] for r in rows if r["order"] == "cell")
        for order in (o for o in args.orders if o != "cell"):
            med = statistics.median(r["err_s"] for r in rows if r["order"] == order)
            print(f"{order} / cell, median train-seconds error: {med / base:.2f}")


if __name__ == "__main__":
    main()
