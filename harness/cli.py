"""The ``joulebench`` command line. Every user error ends in one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joulebench.harness.params import SpecError, parse_assignments
from joulebench.harness.summary import format_summary  # noqa: F401  (the run line; cluster/cli.py imports it here)

COMMAND_MODULES = ("joulebench.leaderboard.cli", "joulebench.cluster.cli", "joulebench.harness.benchmark_cli")
"""Modules that add sub-commands through ``register(subparsers)``."""


def default_results() -> Path:
    return Path(os.environ.get("JOULEBENCH_RESULTS", "results"))


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", type=Path, default=None,
                   help="result store directory (default: $JOULEBENCH_RESULTS or ./results)")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="load a single-file task or method plugin (repeatable)")


def load_plugins(args: argparse.Namespace):
    """The registry with ``--plugin`` files; a named plugin that fails to load is a one-line error
    (a syntax error used to be ignored silently, and the run went ahead without it)."""
    from joulebench.harness.registry import registry

    reg = registry(args.plugin)
    for plugin in args.plugin:
        why = reg.errors.get(str(Path(plugin).resolve()))
        if why:
            raise SpecError(f"plugin {plugin} did not load: {why}")
    return reg


def results_dir(args: argparse.Namespace) -> Path:
    return args.results or default_results()


def add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True)
    p.add_argument("--method", default="backprop")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task-param", "-T", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--method-param", "-M", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int)
    p.add_argument("--epochs", type=float)
    p.add_argument("--seconds", type=float)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--eval-every", type=int)
    p.add_argument("--timeout", type=float, help="hard limit in seconds (default: the preset's)")
    p.add_argument("--campaign", default="")


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    budget = {k: getattr(args, k) for k in ("steps", "epochs", "seconds") if getattr(args, k) is not None}
    spec = {"task": args.task, "method": args.method, "preset": args.preset, "seed": args.seed,
            "task_params": parse_assignments(args.task_param),
            "method_params": parse_assignments(args.method_param), "device": args.device,
            "campaign": args.campaign, "eval_every": args.eval_every, "timeout_s": args.timeout}
    if budget:
        spec["budget"] = budget
    return spec


# -- commands -----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from joulebench.harness.spec import RunSpec, resolve
    from joulebench.harness.store import Store
    from joulebench.harness.worker import Worker

    validate_region(args.region)
    # the worker's start-up (torch, the meter) overlaps the resolution and the store look-up here
    with Worker(results_dir(args), args.plugin, args.region).start() as worker:
        load_plugins(args)
        spec = resolve(RunSpec.parse(spec_from_args(args)))
        store = Store(results_dir(args))
        if not args.force and store.has_ok(spec.task, spec.run_key):
            worker.kill()
            print(f"already stored: run {spec.run_key} (use --force to run it again)")
            return 0
        with progress_bar(spec.run_key) as bar:
            result = worker.run(spec, on_progress=bar)
        print(format_summary(result), flush=True)  # before the worker's exit
    return 0 if result["status"] == "ok" else 1


def validate_region(region: str | None) -> None:
    """Checked in the driver, so a typo is one line here, not a crashed row from a worker."""
    from joulebench.harness import carbon

    carbon.intensity(region)


def positive(value: int, what: str) -> int:
    if value < 1:
        raise SpecError(f"{what} must be at least 1, got {value}")
    return value


class progress_bar:
    """A tqdm bar on stderr fed by the worker's (done, planned) messages."""

    def __init__(self, label: str) -> None:
        self.label, self.bar = label, None

    def __enter__(self) -> Callable[[int, int | None], None]:
        return self.update

    def update(self, done: int, planned: int | None) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=planned, desc=f"run {self.label[:8]}", unit="step", leave=False,
                            file=sys.stderr, disable=None)
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_list(args: argparse.Namespace) -> int:
    from joulebench.harness.registry import registry

    reg = registry(args.plugin)  # declarations only: no plugin module is imported to list them
    print("TASKS")
    for name, task in sorted(reg.tasks.infos.items()):
        print(f"  {name}: {task.description}")
        direction = "higher" if task.higher_is_better() else "lower"
        print(f"    metrics: {', '.join(task.metrics)} (primary {task.primary_metric}, {direction} is better)")
        for pname, preset in task.presets.items():
            print(f"    preset {pname}: target {task.primary_metric}={preset.target} "
                  f"budget {dict(preset.budget)}  {preset.description}")
        print(f"    params: {_params_line(task.params)}")
    print("METHODS")
    for name, method in sorted(reg.methods.infos.items()):
        print(f"  {name}: {method.description}")
        print(f"    params: {_params_line(method.params)}")
        serves = [t for t in sorted(reg.tasks.infos) if reg.incompatibility(name, t) is None]
        print(f"    tasks: {', '.join(serves) or 'none'}")
    if reg.errors:
        print("NOT LOADED")
        for origin, reason in reg.errors.items():
            print(f"  {origin}: {reason}")
    return 0


def _params_line(params: dict) -> str:
    return "; ".join(f"{k}={p.describe()}" for k, p in params.items()) or "none"


def cmd_check(args: argparse.Namespace) -> int:
    from joulebench.harness.check import check_plugin

    validate_region(args.region)
    return check_plugin(args.file, region=args.region)


def cmd_results(args: argparse.Namespace) -> int:
    from joulebench.harness.query import query_runs

    frame = query_runs(results_dir(args), args.where, args.columns, args.limit, args.table)
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(frame.to_json(orient="records", date_format="iso"))
    else:
        import pandas as pd

        with pd.option_context("display.max_columns", None, "display.width", 200,
                               "display.max_colwidth", 40):
            print(frame.to_string(index=False) if len(frame) else "no runs match")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from joulebench.harness.store import Store

    store = Store(results_dir(args))
    counts = store.compact(grace_s=args.grace)
    for path, why in store.bad_files:
        print(f"skipped {path}: {why}", file=sys.stderr)
    print("compacted: " + ", ".join(f"{k} {v} rows" for k, v in counts.items()))
    if args.cells:
        aggregate_leaderboard(store.root)
    return 0


def aggregate_leaderboard(root: Path) -> None:
    """The leaderboard's cells for the compacted state, computed now: the heavy queries run once
    per snapshot here (in the compaction's cron job), not at a reader's first page (~12 s at 1 M
    runs), and a server started afterwards draws its first page from them."""
    try:
        from joulebench.leaderboard.queries import Board
    except ImportError as exc:  # the leaderboard's extra is not installed: nothing to prepare
        print(f"leaderboard cells not prepared ({exc})", file=sys.stderr)
        return
    Board(root)
    print("leaderboard cells prepared for this state of the store")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="joulebench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run one instrumented training run")
    add_spec_args(p)
    add_common(p)
    p.add_argument("--force", action="store_true", help="run again even if the run_key is stored")
    p.add_argument("--region", default=None, help="ISO alpha-3 code for the carbon intensity")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="list tasks and methods with presets and parameters")
    add_common(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", help="run a method plugin through the contract on every tiny task")
    p.add_argument("file", type=Path)
    p.add_argument("--region", default=None)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("results", help="query stored runs (DuckDB)")
    add_common(p)
    p.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="filter (=, !=, <, <=, >, >=); values are bound, never pasted into SQL")
    p.add_argument("--columns", default=None, help="comma-separated columns to show")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--table", default="runs", choices=("runs", "curves", "leaderboard"))
    p.add_argument("--format", default="table", choices=("table", "csv", "json"))
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("compact", help="merge new per-run files into a new part (incremental)")
    add_common(p)
    p.add_argument("--grace", type=float, default=600.0, metavar="SECONDS",
                   help="merged files are removed by a compaction this long after (readers skip them meanwhile)")
    p.add_argument("--no-cells", dest="cells", action="store_false",
                   help="do not pre-aggregate the leaderboard's cells for the compacted state")
    p.set_defaults(func=cmd_compact)

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse exits before this try; here it is a plugin or task
        print(f"error: the process was told to exit (sys.exit({exc.code!r})) while running "
              f"`{args.command}`, e.g. by a plugin at import; nothing more ran", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: runs already stored are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

