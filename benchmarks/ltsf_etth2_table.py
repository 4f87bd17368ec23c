"""Every LTSF model on the real ETTh2 at horizon 96: test MSE/MAE, seconds and joules, one seed each.

Each model runs through the harness (worker process, meter windows) with the settings below, which
fit a single CPU core in under ~8 minutes per model; the numbers printed are the stored rows. On a
machine without energy sensors the joules are the meter's estimate (the energy-source column says
which). Published references (multivariate, horizon 96): DLinear 0.289 / 0.353 (input 336),
PatchTST/42 0.274 / 0.336 (input 336), Autoformer 0.332 / 0.368 (input 96).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ltsf_etth2_table.py --results /tmp/ltsf_etth2/results

Stored runs are not repeated (same run key), so an interrupted table resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.harness.worker import Worker

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CAP_S = 420.0
"""Training-time cap per model (the budget ends at the first limit reached)."""
TRANSFORMER_PART = {"d_model": 64, "n_heads": 4, "e_layers": 2, "d_layers": 1, "d_ff": 128}
# model → (task parameters, epochs, backprop parameters); preset "full": input 336, horizon 96,
# batch 32, Adam with the learning rate halved every epoch, unless a model says otherwise.
SETTINGS: dict[str, tuple[dict, float, dict]] = {
    "dlinear": ({}, 10, {"lr": 0.05}),                              # DLinear's ETTh2 script
    "patchtst": ({"d_model": 16, "n_heads": 4, "e_layers": 3, "d_ff": 128, "dropout": 0.3,
                  "batch_size": 128}, 3, {"lr": 2e-3}),            # paper's model, 3 epochs
    "transformer": ({"seq_len": 96, **TRANSFORMER_PART}, 2, {"lr": 1e-3}),
    "autoformer": ({"seq_len": 96, **TRANSFORMER_PART}, 2, {"lr": 1e-3}),
    "recycle": ({"cycle_len": 24, "rhp_cycles": 3, **TRANSFORMER_PART}, 3, {"lr": 1e-4}),
    "rhp": ({"cycle_len": 24, "rhp_cycles": 3}, 1, {}),
    "last_value": ({}, 1, {}),
    "seasonal_naive": ({"cycle_len": 24}, 1, {}),
    "mlp": ({"d_ff": 512, "e_layers": 2}, 5, {"lr": 1e-3}),
}


def spec_for(model: str, data_dir: Path, seed: int):
    params, epochs, method = SETTINGS[model]
    task_params = {"dataset": "ETTh2", "data_dir": str(data_dir), "model": model, **params}
    return resolve(RunSpec(task="ltsf", method="backprop", preset="full", seed=seed,
                           task_params=task_params, budget={"epochs": epochs, "seconds": CAP_S},
                           method_params=method, eval_every=10**9, campaign="ltsf-etth2-table"))


def stored_ok(results: Path) -> set[str]:
    if not (results / "runs").exists():
        return set()
    return set(Store(results).execute("SELECT run_key FROM runs WHERE status = 'ok'").df()["run_key"])


def table(results: Path, specs: dict) -> str:
    keys = [s.run_key for s in specs.values()]
    rows = Store(results).execute(
        "SELECT * FROM runs WHERE run_key IN (SELECT unnest(?)) ORDER BY started_at", [keys]).df()
    rows = rows.drop_duplicates("run_key", keep="last").set_index("run_key")
    lines = ["| model | test MSE | test MAE | train s | train J | wall s | total J | energy source | settings |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model, spec in specs.items():
        if spec.run_key not in rows.index:
            lines.append(f"| {model} | (not run) |||||||")
            continue
        r = rows.loc[spec.run_key]
        params, epochs, method = SETTINGS[model]
        note = ", ".join(f"{k}={v}" for k, v in {**params, **method}.items())
        note += f", {r.samples // max(1, spec.task_params['batch_size'])} steps" if r.samples else ""
        lines.append(f"| {model} | {r.metric_mse:.3f} | {r.metric_mae:.3f} | {r.train_s:.1f} | "
                     f"{r.train_energy_j:.0f} | {r.wall_s:.0f} | {r.total_energy_j:.0f} | "
                     f"{r.energy_source} | {note} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--data", type=Path, default=SHARED, help="directory holding ETTh2.csv")
    p.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()
    if not (args.data / "ETTh2.csv").is_file():
        raise SystemExit(f"expected {args.data / 'ETTh2.csv'} (ETDataset, see data_cards/ltsf.md); "
                         "pass --data DIR")
    specs = {m: spec_for(m, args.data, args.seed) for m in args.models}
    if not args.table_only:
        done = stored_ok(args.results)
        worker = Worker(args.results, threads=1)
        try:  # a throw-away run first, so no measured run pays the worker's warm-up
            worker.run(resolve(RunSpec(task="ltsf", preset="tiny", budget={"steps": 2},
                                       campaign="warmup")))
            for model, spec in specs.items():
                if spec.run_key in done:
                    continue
                summary = worker.run(spec)
                print(model, summary.get("status"), summary.get("primary_value"), summary.get("error") or "",
                      flush=True)
        finally:
            worker.close()
    print(table(args.results, specs))


if __name__ == "__main__":
    main()
