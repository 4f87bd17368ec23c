"""ReCycle against the vanilla Transformer: training time and energy at equal horizon, data and budget.

The ReCycle paper (Weyrauch et al.) reports more than 10× less training time and energy than the
Transformer it builds on. Both models run here through the harness (worker process, meter windows),
with the same hyper-parameters of the Transformer part, the same optimiser and the same number of
epochs; the figures printed are the stored rows' ``train_s`` and ``train_energy_j``, i.e. the same
measurement as any other run, and the test errors are the stored test metrics.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recycle_vs_transformer.py --results /tmp/rvt

``--data DIR`` reads ``DIR/ETTh2.csv`` (default: ``../shared/data`` when it holds the file);
``--data synthetic`` uses the ETTh-sized generated hourly series of preset ``small``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from joulebench.harness.spec import RunSpec, resolve
from joulebench.harness.store import Store
from joulebench.harness.worker import Worker

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
COMMON = {"label_len": 48, "pred_len": 96, "batch_size": 32, "d_model": 64,
          "n_heads": 4, "e_layers": 2, "d_layers": 1, "d_ff": 128, "dropout": 0.05}
RECYCLE = {"cycle_len": 24, "rhp_cycles": 3}
MODELS = ("transformer", "recycle")


def data_params(data: str) -> tuple[str, dict]:
    """(preset, task parameters) for ``--data``: a directory with ETTh2.csv, or "synthetic"."""
    if data == "synthetic":
        return "small", {}
    path = Path(data).expanduser() / "ETTh2.csv"
    if not path.is_file():
        raise SystemExit(f"--data {data}: expected {path} (the ETDataset file), or pass --data synthetic")
    return "full", {"dataset": "ETTh2", "data_dir": str(path.parent)}


def specs(args) -> dict[str, object]:
    preset, data = data_params(args.data)
    out = {}
    for model in MODELS:
        params = {**data, **COMMON, "seq_len": args.seq_len, "model": model, **(RECYCLE if model == "recycle" else {})}
        out[model] = resolve(RunSpec(task="ltsf", method="backprop", preset=preset, seed=args.seed,
                                     task_params=params, budget={"epochs": args.epochs},
                                     method_params={"lr": args.lr, "schedule": "halve_per_epoch"},
                                     eval_every=10**9, campaign="recycle-vs-transformer"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--data", default=str(SHARED) if (SHARED / "ETTh2.csv").is_file() else "synthetic")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seq-len", type=int, default=96, help="input rows (a multiple of 24 for ReCycle)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    todo = specs(args)
    worker = Worker(args.results, threads=1)
    try:  # a throw-away run first, so neither measured run pays the worker's warm-up
        worker.run(resolve(RunSpec(task="ltsf", preset="tiny", budget={"steps": 2}, campaign="warmup",
                                   task_params={"model": "recycle"})))
        for model, spec in todo.items():
            summary = worker.run(spec)
            if summary.get("status") != "ok":
                raise SystemExit(f"{model}: {summary.get('status')}: {summary.get('error')}")
    finally:
        worker.close()
    keys = [spec.run_key for spec in todo.values()]
    rows = Store(args.results).execute(
        "SELECT * FROM runs WHERE run_key IN (SELECT unnest(?)) ORDER BY started_at", [keys]).df()
    rows = rows.drop_duplicates("run_key", keep="last").set_index("model")
    print(f"data: {args.data}; seq_len {args.seq_len}, {COMMON}; epochs {args.epochs}, Adam lr {args.lr}, seed {args.seed}")
    print("| model | train s | train J | energy source | test MSE | test MAE |")
    print("|---|---|---|---|---|---|")
    for model in MODELS:
        r = rows.loc[model]
        print(f"| {model} | {r.train_s:.1f} | {r.train_energy_j:.0f} | {r.energy_source} | "
              f"{r.metric_mse:.3f} | {r.metric_mae:.3f} |")
    t, c = rows.loc["transformer"], rows.loc["recycle"]
    print(f"Transformer / ReCycle: time {t.train_s / c.train_s:.1f}x, "
          f"energy {t.train_energy_j / c.train_energy_j:.1f}x, "
          f"test MSE {t.metric_mse:.3f} vs {c.metric_mse:.3f}")


if __name__ == "__main__":
    main()
