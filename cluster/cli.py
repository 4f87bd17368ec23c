"""``joulebench campaign plan|run|sbatch FILE``, ``joulebench scaling`` and ``joulebench perun-import``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from joulebench.harness.cli import add_common, format_summary, results_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaign", help="plan, run or submit a campaign file")
    csub = p.add_subparsers(dest="campaign_command", required=True)
    for name, func, text in (("plan", cmd_plan, "list the expanded runs and which are stored"),
                             ("run", cmd_run, "run the missing runs"),
                             ("sbatch", cmd_sbatch, "write sbatch array scripts for the missing runs"),
                             ("report", cmd_report, "a Markdown table of the stored runs, seeds aggregated")):
        c = csub.add_parser(name, help=text)
        c.add_argument("file", type=Path)
        add_common(c)
        c.set_defaults(func=func)
        if name == "run":
            c.add_argument("-j", "--jobs", type=int, default=1, help="worker processes on this machine")
            c.add_argument("--executor", default="local",
                           choices=("local", "submitit-local", "submitit-debug", "slurm", "sbatch"),
                           help="sbatch: write plain sbatch array scripts (as `campaign sbatch`), submit nothing")
            c.add_argument("--launcher", default="torchrun", choices=("torchrun", "mpiexec"),
                           help="how the local executor starts data-parallel runs")
        if name in ("sbatch", "run"):
            c.add_argument("--out", type=Path, default=None, help="directory for the scripts")
        if name == "plan":
            c.add_argument("--estimate", action="store_true",
                           help="forecast train seconds, joules, device-hours and CO2 from stored runs")
            c.add_argument("--validate", action="store_true",
                           help="with --estimate: the leave-one-cell-out error of the forecast on stored runs")
            c.add_argument("--factor-max-error", type=float, default=None, metavar="FRACTION",
                           help="hold back the workload × method factor basis when its leave-one-cell-out "
                                "median error is above this (default 0.5; inf: always use it)")
        if name == "run":
            c.add_argument("--max-energy", default=None, metavar="ENERGY",
                           help="e.g. 500kJ: refuse when the forecast exceeds it, stop launching at it")
    p = sub.add_parser("scaling", help="fit energy against device-hours and J/device-hour against throughput (the energy-scaling study)")
    add_common(p)
    p.add_argument("--task", default=None)
    p.add_argument("--campaign", default=None)
    p.set_defaults(func=cmd_scaling)
    p = sub.add_parser("perun-import", help="write a perun JSON report's energy into the rows it covered")
    p.add_argument("report", type=Path, nargs="+", help="perun reports written with --format json")
    add_common(p)
    p.set_defaults(func=cmd_perun_import)


def _load(args: argparse.Namespace):
    from joulebench.cluster.campaign import Campaign, resolve_runs
    from joulebench.harness.cli import load_plugins
    from joulebench.harness.store import Store

    load_plugins(args)
    campaign = Campaign.load(args.file)
    runs = resolve_runs(campaign)  # (spec, cluster resources) pairs
    store = Store(results_dir(args))
    return campaign, runs, store, store.stored_keys()


def cmd_plan(args: argparse.Namespace) -> int:
    campaign, runs, _, done = _load(args)
    specs = [s for s, _ in runs]
    varied = _varied(specs)  # once: per spec it made plan quadratic (46 s at 2,000 runs)
    for s in specs:
        mark = "stored " if s.run_key in done else "missing"
        params = ",".join(f"{k}={v}" for k, v in {**s.method_params}.items() if k in varied)
        print(f"{mark} {s.run_key} {s.task}/{s.method} {s.preset} seed={s.seed} ws={s.world_size} {params}")
    missing = sum(s.run_key not in done for s in specs)
    print(f"campaign {campaign.name}: {len(specs)} runs, {len(specs) - missing} stored, {missing} to run")
    if args.estimate or args.validate:
        from joulebench.cluster.estimate import print_estimate

        print_estimate([s for s in specs if s.run_key not in done], results_dir(args), args.validate,
                       args.factor_max_error)
    return 0


def _varied(specs) -> set[str]:
    values: dict[str, set] = {}
    for s in specs:
        for k, v in s.method_params.items():
            values.setdefault(k, set()).add(str(v))
    return {k for k, v in values.items() if len(v) > 1}


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from joulebench.cluster.local import WorkerPool, run_local
    from joulebench.harness.cli import positive

    positive(args.jobs, "-j/--jobs")
    pool = None
    if args.executor == "local":  # workers start while the campaign is planned
        pool = WorkerPool(results_dir(args), args.jobs, args.plugin).start()
    try:
        campaign, runs, store, done = _load(args)
    except BaseException:
        if pool:
            pool.close()
        raise
    pending = [(s, r) for s, r in runs if s.run_key not in done]
    todo = [s for s, _ in pending]
    print(f"campaign {campaign.name}: {len(runs)} runs, {len(runs) - len(todo)} already stored, "
          f"{len(todo)} to run", flush=True)
    if pool and not any(s.world_size == 1 for s in todo):
        pool.close()
    if not todo:
        return 0
    cap = None
    if args.max_energy:
        from joulebench.cluster.estimate import EnergyCap

        try:
            cap = EnergyCap.check(args.max_energy, todo, store, args.executor)
        except BaseException:  # refused on the forecast: the early-started workers go too
            if pool:
                pool.close()
            raise
    if args.executor == "sbatch":
        return write_sbatch(campaign, pending, store.root, args.out)
    if args.executor == "local":
        bar = tqdm(total=len(todo), desc=campaign.name, unit="run", file=sys.stderr, disable=None)

        def report(result: dict) -> None:
            bar.write(format_summary(result))
            bar.update(1)
            if cap:
                cap.add(result)

        results = run_local(todo, store.root, args.jobs, args.plugin, args.launcher, report, pool,
                            stop=cap.reached if cap else None)
        bar.close()
        if cap and cap.reached():
            print(cap.stopped_line(len(todo) - len(results)))
    else:
        results = run_submitit(campaign, pending, store.root, args.executor)
    failed = [r for r in results if r.get("status") not in ("ok", "skipped")]
    skipped = sum(r.get("status") == "skipped" for r in results)
    print(f"campaign {campaign.name}: {len(results) - len(failed) - skipped} ok, {len(failed)} not ok"
          + (f", {skipped} skipped (claimed by another driver or stored meanwhile)" if skipped else ""))
    return 1 if failed else 0


def run_submitit(campaign, pending, root: Path, executor: str) -> list[dict]:
    """Every array (one per resource set and world size) is submitted before any is waited on."""
    from joulebench.cluster.campaign import resource_groups
    from joulebench.cluster.slurm import collect, submit

    cluster = {"slurm": None, "submitit-local": "local", "submitit-debug": "debug"}[executor]
    groups = resource_groups(pending)
    submitted = []
    for i, (res, specs) in enumerate(groups):
        label = campaign.name if len(groups) == 1 else f"{campaign.name}-r{i}"
        submitted += submit(specs, root, res, campaign.max_parallel, label, cluster)
    results = collect(submitted)
    for result in results:
        print(format_summary(result) if result.get("task") else
              f"[{result['status']}] key {result['run_key']} | error: {result['error']}", flush=True)
    return results


def cmd_report(args: argparse.Namespace) -> int:
    from joulebench.cluster.report import cell_labels, markdown_table

    campaign, runs, store, done = _load(args)
    specs = [s for s, _ in runs]
    rows = store.execute("SELECT * FROM runs WHERE run_key IN (SELECT unnest(?))",
                         [[s.run_key for s in specs]]).df()
    print(f"campaign {campaign.name}: {len(done & {s.run_key for s in specs})} of {len(specs)} runs stored ok")
    print(markdown_table(rows, cell_labels(specs)))
    return 0


def cmd_sbatch(args: argparse.Namespace) -> int:  # no -j: nothing runs here
    campaign, runs, store, done = _load(args)
    pending = [(s, r) for s, r in runs if s.run_key not in done]
    if not pending:
        print(f"campaign {campaign.name}: nothing to run")
        return 0
    return write_sbatch(campaign, pending, store.root, args.out)


def write_sbatch(campaign, pending, root: Path, out: Path | None) -> int:
    """One sbatch array script per resource set and world size; prints how to submit them."""
    from joulebench.cluster.campaign import resource_groups
    from joulebench.cluster.slurm import freeze, sbatch_script

    root = root.resolve()
    out = (out or root / "slurm").resolve()  # slurmd opens the log files here before the script runs
    out.mkdir(parents=True, exist_ok=True)
    groups = resource_groups(pending)
    for i, (res, specs) in enumerate(groups):
        label = campaign.name if len(groups) == 1 else f"{campaign.name}-r{i}"
        for ws, list_file in freeze(specs, root, label).items():
            n = sum(s.world_size == ws for s in specs)
            script = out / f"{label}-ws{ws}.sbatch"
            script.write_text(sbatch_script(list_file, n, ws, root, res, campaign.max_parallel, label,
                                            log_dir=out))
            print(f"wrote {script} ({n} runs): submit with  sbatch {script}")
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    from joulebench.cluster.scaling import report_for

    print(report_for(results_dir(args), args.task, args.campaign).describe())
    return 0


def cmd_perun_import(args: argparse.Namespace) -> int:
    from joulebench.cluster.perun import describe, import_report

    found = import_report(args.report, results_dir(args))
    for window in found:
        print("\n".join(describe(window)))
    runs = {key for w in found for key in w.seconds}
    print(f"{len(runs)} runs covered by {len(found)} perun windows in {len(args.report)} reports")
    return 0
