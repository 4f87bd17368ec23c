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
    p = sub.add_parser("scaling", help="fit energy against device-hours (the energy-scaling study)")
    add_common(p)
    p.add_argument("--task", default=None)
    p.add_argument("--campaign", default=None)
    p.set_defaults(func=cmd_scaling)
    p = sub.add_parser("perun-import", help="write a perun JSON report's energy into the rows it covered")
    p.add_argument("report", type=Path, help="perun report written with --format json")
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
    return 0


def _varied(specs) -> set[str]:
    values: dict[str, set] = {}
    for s in specs:
        for k, v in s.method_params.items():
            values.setdefault(k, set()).add(str(v))
    return {k for k, v in values.items() if len(v) > 1}


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from joulebench.cluster.campaign import resource_groups
    from joulebench.cluster.local import run_local

    campaign, runs, store, done = _load(args)
    pending = [(s, r) for s, r in runs if s.run_key not in done]
    todo = [s for s, _ in pending]
    print(f"campaign {campaign.name}: {len(runs)} runs, {len(runs) - len(todo)} already stored, "
          f"{len(todo)} to run", flush=True)
    if not todo:
        return 0
    if args.executor == "sbatch":
        return write_sbatch(campaign, pending, store.root, args.out)
    if args.executor == "local":
        bar = tqdm(total=len(todo), desc=campaign.name, unit="run", file=sys.stderr, disable=None)

        def report(result: dict) -> None:
            bar.write(format_summary(result))
            bar.update(1)

        results = run_local(todo, store.root, args.jobs, args.plugin, args.launcher, report)
        bar.close()
    else:
        from joulebench.cluster.slurm import submitit_run

        cluster = {"slurm": None, "submitit-local": "local", "submitit-debug": "debug"}[args.executor]
        groups = resource_groups(pending)
        results = []
        for i, (res, specs) in enumerate(groups):  # one array per resource set and world size
            label = campaign.name if len(groups) == 1 else f"{campaign.name}-r{i}"
            results += submitit_run(specs, store.root, res, campaign.max_parallel, label, cluster)
        for result in results:
            print(format_summary(result) if "task" in result else f"{result['status']}: {result['error']}")
    failed = [r for r in results if r.get("status") not in ("ok", "skipped")]
    skipped = sum(r.get("status") == "skipped" for r in results)
    print(f"campaign {campaign.name}: {len(results) - len(failed) - skipped} ok, {len(failed)} not ok"
          + (f", {skipped} skipped (claimed by another driver or stored meanwhile)" if skipped else ""))
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from joulebench.cluster.report import cell_labels, markdown_table

    campaign, runs, store, done = _load(args)
    specs = [s for s, _ in runs]
    rows = store.execute("SELECT * FROM runs WHERE run_key IN (SELECT unnest(?))",
                         [[s.run_key for s in specs]]).df()
    print(f"campaign {campaign.name}: {len(done & {s.run_key for s in specs})} of {len(specs)} runs stored ok")
    print(markdown_table(rows, cell_labels(specs)))
    return 0


def cmd_sbatch(args: argparse.Namespace) -> int:
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
    out = out or root / "slurm"
    out.mkdir(parents=True, exist_ok=True)
    groups = resource_groups(pending)
    for i, (res, specs) in enumerate(groups):
        label = campaign.name if len(groups) == 1 else f"{campaign.name}-r{i}"
        for ws, list_file in freeze(specs, root, label).items():
            n = sum(s.world_size == ws for s in specs)
            script = out / f"{label}-ws{ws}.sbatch"
            script.write_text(sbatch_script(list_file, n, ws, root, res, campaign.max_parallel, label))
            print(f"wrote {script} ({n} runs): submit with  sbatch {script}")
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    from joulebench.cluster.scaling import fit_energy_vs_device_hours

    fit = fit_energy_vs_device_hours(results_dir(args), args.task, args.campaign)
    print(fit.describe())
    return 0


def cmd_perun_import(args: argparse.Namespace) -> int:
    from joulebench.cluster.perun import import_report

    entries = import_report(args.report, results_dir(args))
    for e in entries:
        note = "" if e["updated"] else " (not written: compacted store)"
        print(f"{e['run_key']} perun run {e['perun_run']}: {e['energy_j']:.1f} J "
              f"(share {e['share']:.3f}){note}")
    print(f"{sum(e['updated'] for e in entries)} rows updated from {args.report}")
    return 0
