"""Low-rank methods against backprop: quality, trainable parameters, joules, time, bytes.

Runs backprop (1 rank, and DDP at each ``--ranks``), OIALR (1 rank) and AB-training (each
``--ranks``, real processes through the local torchrun launcher, or ``--simulate`` for one-process
simulated ranks) for several seeds, then prints a Markdown table of medians with min–max spread.

    .venv/bin/python benchmarks/lowrank_table.py --results /tmp/lowrank --steps 150

Energy is whatever the meter reports (an estimate on machines without sensors: the table says so).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from joulebench.cluster.local import run_parallel
from joulebench.cluster.report import cell_labels, markdown_table
from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.harness.worker import Worker

SHRUNK = {"model": "transformer", "seq_len": 96, "label_len": 48, "pred_len": 24, "d_model": 32,
          "d_ff": 64, "e_layers": 1}


def specs(args) -> list:
    out = []
    common = dict(task=args.task, preset=args.preset, budget={"steps": args.steps},
                  task_params=json.loads(args.task_params), campaign=args.campaign)
    for seed in args.seeds:
        out.append(RunSpec(**common, method="backprop", seed=seed))
        out.append(RunSpec(**common, method="oialr", seed=seed))
        for n in args.ranks:
            if args.simulate:
                out.append(RunSpec(**common, method="ab_training", seed=seed,
                                   method_params={"simulate_ranks": n}))
            else:
                out.append(RunSpec(**common, method="ab_training", seed=seed, world_size=n))
                if not args.skip_ddp:
                    out.append(RunSpec(**common, method="backprop", seed=seed, world_size=n))
    return [resolve(s) for s in out]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--task", default="ltsf")
    p.add_argument("--preset", default="small")
    p.add_argument("--task-params", default=json.dumps(SHRUNK))
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    p.add_argument("--simulate", action="store_true")
    p.add_argument("--skip-ddp", action="store_true")
    p.add_argument("--campaign", default="lowrank-table")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()
    todo = specs(args)
    if not args.table_only:
        stored = set(Store(args.results).execute(
            "SELECT run_key FROM runs WHERE status = 'ok'").df()["run_key"]) if (args.results / "runs").exists() else set()
        # one thread per rank everywhere (torchrun sets OMP_NUM_THREADS=1), one run at a time
        worker = Worker(args.results, threads=1)
        try:  # a short throw-away run first, so no measured run pays the worker's warm-up
            worker.run(resolve(RunSpec(task=args.task, preset=args.preset, budget={"steps": 2},
                                       task_params=json.loads(args.task_params), method="backprop",
                                       campaign="warmup", seed=99)))
            for spec in todo:
                if spec.run_key in stored:
                    continue
                r = worker.run(spec) if spec.world_size == 1 else run_parallel(spec, args.results, "torchrun")
                print(spec.method, spec.world_size, spec.seed, r.get("status"), r.get("error"), flush=True)
        finally:
            worker.close()
    keys = [s.run_key for s in todo]
    rows = Store(args.results).execute("SELECT * FROM runs WHERE run_key IN (SELECT unnest(?))", [keys]).df()
    rows = rows.sort_values("started_at").drop_duplicates("run_key", keep="last")
    print(markdown_table(rows, cell_labels(todo)))


if __name__ == "__main__":
    main()
