"""The benchmark's commands: ``suite list|show``, ``score``, ``submit``, ``verify``, ``import``, ``reproduce``.

Registered into ``joulebench`` by ``harness.cli``; each command's work lives in its own module
(``suite``, ``scoring``, ``submission``, ``drift``), this file only parses and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from joulebench.harness.cli import add_common, results_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("suite", help="list or show the benchmark suites")
    ssub = p.add_subparsers(dest="suite_command", required=True)
    c = ssub.add_parser("list", help="the shipped suites")
    c.set_defaults(func=cmd_suite_list)
    c = ssub.add_parser("show", help="a suite's workloads, targets, caps and scoring rule")
    c.add_argument("suite", help="a shipped suite name (cpu-v1) or a suite file")
    c.add_argument("--plugin", action="append", default=[], metavar="FILE.py")
    c.set_defaults(func=cmd_suite_show)

    c = ssub.add_parser("run", help="run a suite's missing runs for one method (resumable)")
    c.add_argument("suite")
    c.add_argument("--method", required=True)
    c.add_argument("-j", "--jobs", type=int, default=1)
    add_common(c)
    c.set_defaults(func=cmd_suite_run)

    c = ssub.add_parser("calibrate", help="measure a suite's targets from the baseline's stored runs")
    c.add_argument("suite")
    c.add_argument("--method", required=True, help="the baseline whose runs set the targets (backprop)")
    c.add_argument("--write", type=Path, default=None,
                   help="write the suite file with its targets filled in (a file without targets only)")
    add_common(c)
    c.set_defaults(func=cmd_suite_calibrate)

    p = sub.add_parser("score", help="score stored runs on a suite: energy/time-to-target profiles")
    p.add_argument("suite")
    add_common(p)
    p.add_argument("--plot", type=Path, default=None,
                   help="path stem of the profile plot (default: RESULTS/scores/<suite>); .png and .svg")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("submit", help="check a method file, run a suite with it, write a bundle")
    p.add_argument("method_file", type=Path)
    p.add_argument("--suite", required=True)
    p.add_argument("--out", type=Path, required=True, help="bundle directory (re-running resumes)")
    p.add_argument("-j", "--jobs", type=int, default=1)
    p.add_argument("--region", default=None)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("verify", help="re-run a sample of a bundle's runs here and print the drift")
    p.add_argument("bundle", type=Path)
    p.add_argument("--sample", type=int, default=2, help="how many runs to re-run")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("import", help="merge a verified bundle's rows into a result store")
    p.add_argument("bundle", type=Path)
    add_common(p)
    p.add_argument("--unverified", action="store_true", help="import a bundle no verify has passed")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("reproduce", help="re-run a stored row from its spec and print the drift")
    p.add_argument("run_key")
    add_common(p)
    p.set_defaults(func=cmd_reproduce)


def cmd_suite_list(args: argparse.Namespace) -> int:
    from joulebench.harness.suite import available, load_suite

    for name in available():
        suite = load_suite(name)
        ci = "" if suite.run_in_ci else "  [real data, GPUs; not run in CI]"
        print(f"{suite.label}: {len(suite.workloads)} workloads on {suite.device} — {suite.description}{ci}")
    return 0


def cmd_suite_show(args: argparse.Namespace) -> int:
    from joulebench.harness.registry import registry
    from joulebench.harness.suite import describe, load_suite

    suite = load_suite(args.suite)
    registry(args.plugin)
    suite.check_against_registry()
    print(describe(suite))
    return 0


def cmd_suite_run(args: argparse.Namespace) -> int:
    from joulebench.harness.cli import format_summary
    from joulebench.harness.registry import registry
    from joulebench.harness.suite import load_suite, run_suite

    suite = load_suite(args.suite)
    registry(args.plugin)
    suite.check_against_registry()
    results = run_suite(suite, args.method, results_dir(args), args.jobs, args.plugin,
                        report=lambda r: print(format_summary(r), flush=True))
    failed = [r for r in results if r.get("status") != "ok"]
    print(f"suite {suite.label} for {args.method}: {len(results) - len(failed)} ok, {len(failed)} not ok now")
    return 1 if failed else 0


def cmd_suite_calibrate(args: argparse.Namespace) -> int:
    from joulebench.harness.registry import registry
    from joulebench.harness.scoring import calibrate, format_calibration, write_targets
    from joulebench.harness.store import Store
    from joulebench.harness.suite import load_suite, parse_suite, suite_path

    suite = load_suite(args.suite)
    registry(args.plugin)
    calibrations = calibrate(Store(results_dir(args)), suite, args.method)
    print(format_calibration(suite, calibrations))
    if args.write:
        text = write_targets(suite_path(args.suite).read_text(), calibrations)
        parse_suite(text, args.write)  # what is written loads and follows its rule
        args.write.write_text(text)
        print(f"wrote {args.write}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from joulebench.harness.registry import registry
    from joulebench.harness.scoring import format_scores, plot_profiles, score_suite
    from joulebench.harness.store import Store
    from joulebench.harness.suite import load_suite

    registry(args.plugin)
    suite = load_suite(args.suite)
    root = results_dir(args)
    trials, results = score_suite(Store(root), suite)
    print(format_scores(suite, results, trials))
    if results:
        stem = args.plot or root / "scores" / suite.name
        paths = plot_profiles(results, stem)
        print("profiles: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from joulebench.harness.submission import submit

    return submit(args.method_file, args.suite, args.out, jobs=args.jobs, region=args.region)


def cmd_verify(args: argparse.Namespace) -> int:
    from joulebench.harness.submission import verify

    return verify(args.bundle, args.sample)


def cmd_import(args: argparse.Namespace) -> int:
    from joulebench.harness.submission import import_bundle

    added, skipped = import_bundle(args.bundle, results_dir(args), allow_unverified=args.unverified)
    print(f"imported {added} runs from {args.bundle} into {results_dir(args)} ({skipped} already stored)")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from joulebench.harness.drift import reproduce

    return reproduce(args.run_key, results_dir(args), args.plugin)
