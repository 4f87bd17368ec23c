"""Submission bundles: ``submit`` writes one, ``verify`` re-runs a sample of it, ``import`` merges it.

A bundle is a directory that others can check without trusting its author::

    method.py        the method file, as run
    suite.toml       the suite it was run on
    runs.parquet     its rows (one per run key, schema as stored)
    curves.parquet   their evaluation points (what time- and energy-to-target are read from)
    provenance.json  hardware class, CPU/GPU, packages, code hashes of the runs
    check.txt        the ``joulebench check`` report
    manifest.json    sha256 of each file above, the suite, the methods, the origin
    verifications/   one JSON per ``verify`` (who re-ran what, and the verdict; not in the manifest)
    .work/           the campaign's own store, so that ``submit`` again resumes (not in the manifest)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import shutil
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from joulebench.harness.cells import hardware_class
from joulebench.harness.params import SpecError

FILES = ("method.py", "suite.toml", "runs.parquet", "curves.parquet", "provenance.json", "check.txt")
FORMAT = 1


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Tee(io.TextIOBase):
    """Print to the terminal and keep a copy (the check report goes into the bundle)."""

    def __init__(self, out) -> None:
        self.out, self.copy = out, io.StringIO()

    def write(self, text: str) -> int:
        self.out.write(text)
        return self.copy.write(text)


# -- submit ---------------------------------------------------------------------------------------
def submit(method_file: Path, suite_name: str, out: Path, jobs: int = 1, region: str | None = None) -> int:
    from joulebench.harness.check import check_plugin
    from joulebench.harness.method import Method
    from joulebench.harness.registry import registry
    from joulebench.harness.suite import available, load_suite, run_suite

    suite = load_suite(suite_name)
    method_file = Path(method_file).resolve()
    if not method_file.is_file():
        raise SpecError(f"method file {method_file} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    # the bundle's copy is what is checked and run: a plugin file's name and content are part of
    # the code hash, so `verify` re-running `method.py` reproduces the same run keys
    name, copy = method_file.name, (out / "method.py").resolve()
    if copy != method_file:
        shutil.copyfile(method_file, copy)
    method_file = copy
    tee = Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        checked = check_plugin(method_file, region=region)
    (out / "check.txt").write_text(tee.copy.getvalue())
    if checked != 0:
        print(f"submit: {name} fails `joulebench check` (report in {out / 'check.txt'}); no bundle")
        return 1
    reg = registry([str(method_file)])
    methods = sorted(c.name for c, o in reg.origins.items() if o == str(method_file) and issubclass(c, Method))
    store_dir = out / ".work"
    for method in methods:
        run_suite(suite, method, store_dir, jobs, [str(method_file)])
    suite_path = available().get(suite_name) or Path(suite_name)
    shutil.copyfile(suite_path, out / "suite.toml")
    keys = suite_keys(suite, methods)
    n = write_rows(store_dir, keys, out)
    manifest = write_manifest(out, suite.label, methods)
    print(f"bundle {out}: {n} runs of {', '.join(methods)} on {suite.label}; manifest {manifest['id'][:12]}")
    return 0


def suite_keys(suite, methods: list[str]) -> list[str]:
    from joulebench.harness.spec import resolve

    return sorted({resolve(spec).run_key for m in methods for _, spec in suite.run_specs(m)})


def write_rows(store_dir: Path, keys: list[str], out: Path) -> int:
    from joulebench.harness.provenance import static_provenance
    from joulebench.harness.store import Store

    store = Store(store_dir)
    # the attempt each key shows, as stored: the view's own counters are not columns of a row
    runs = store.execute("SELECT * EXCLUDE (attempts, failed_attempts) FROM runs "
                         "WHERE run_key IN (SELECT unnest(?))", [keys]).to_arrow_table()
    curves = store.execute("SELECT * FROM curves WHERE run_key IN (SELECT unnest(?))", [keys]).to_arrow_table()
    from joulebench.harness.schema import CURVES, RUNS

    runs, curves = conform(runs, RUNS), conform(curves, CURVES)
    pq.write_table(runs, out / "runs.parquet")
    pq.write_table(curves, out / "curves.parquet")
    rows = runs.to_pylist()
    provenance = {
        "hardware_classes": sorted({hardware_class(r) for r in rows}),
        "code_hashes": sorted({json.loads(r["spec_json"]).get("source_hash", "") for r in rows}),
        "statuses": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
        "energy_sources": sorted({str(r.get("energy_source")) for r in rows}),
        "bundled_on": static_provenance(),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True, default=str))
    return len(rows)


def write_manifest(out: Path, suite_label: str, methods: list[str]) -> dict[str, Any]:
    from joulebench.harness.provenance import static_provenance

    files = {name: sha256(out / name) for name in FILES}
    body = {"format": FORMAT, "suite": suite_label, "methods": methods, "files": files,
            "created_at": datetime.now(UTC).isoformat(), "origin_host": static_provenance().get("host")}
    body["id"] = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(body, indent=2, sort_keys=True))
    return body


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The manifest, after checking every listed file against its checksum (one-line error)."""
    path = Path(bundle) / "manifest.json"
    if not path.is_file():
        raise SpecError(f"{bundle} is not a bundle: no manifest.json")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise SpecError(f"bundle {bundle}: format {manifest.get('format')} is not {FORMAT}")
    for name, digest in manifest["files"].items():
        file = Path(bundle) / name
        if not file.is_file():
            raise SpecError(f"bundle {bundle}: {name} is missing")
        if sha256(file) != digest:
            raise SpecError(f"bundle {bundle}: {name} does not match its checksum (changed after submit)")
    return manifest


# -- verify ---------------------------------------------------------------------------------------
def verify(bundle: Path, sample: int) -> int:
    from joulebench.harness.drift import drift, provenance_diff, rerun

    if sample < 1:
        raise SpecError("--sample must be at least 1")
    manifest = read_manifest(bundle)
    rows = [r for r in pq.read_table(Path(bundle) / "runs.parquet").to_pylist() if r["status"] == "ok"]
    if not rows:
        raise SpecError(f"bundle {bundle} has no ok runs to verify")
    rng = random.Random(manifest["id"])  # the same bundle samples the same runs everywhere
    picked = sorted(rng.sample(rows, min(sample, len(rows))), key=lambda r: r["run_key"])
    plugin = [str((Path(bundle) / "method.py").resolve())]
    verdicts = []
    for old in picked:
        print(f"\nre-running {old['run_key']}: {old['task']}/{old['method']} {old['preset']} seed={old['seed']}",
              flush=True)
        new = rerun(old, plugin)
        result = drift(old, new)
        print("\n".join(result.lines))
        print("\n".join(provenance_diff(old, new)))
        verdicts.append({"run_key": old["run_key"], "passed": result.passed,
                         "hardware_here": hardware_class(new), "hardware_bundle": hardware_class(old),
                         "quality": [old.get("primary_value"), new.get("primary_value")],
                         "train_s": [old.get("train_s"), new.get("train_s")],
                         "train_energy_j": [old.get("train_energy_j"), new.get("train_energy_j")]})
    passed = all(v["passed"] for v in verdicts)
    record = {"bundle_id": manifest["id"], "passed": passed, "sample": len(verdicts), "runs": verdicts,
              "at": datetime.now(UTC).isoformat()}
    folder = Path(bundle) / "verifications"
    folder.mkdir(exist_ok=True)
    (folder / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}.json").write_text(
        json.dumps(record, indent=2, default=str))
    print(f"\nverify {bundle}: {'PASS' if passed else 'FAIL'} ({sum(v['passed'] for v in verdicts)} of "
          f"{len(verdicts)} re-runs within tolerance)")
    return 0 if passed else 1


def verified(bundle: Path, bundle_id: str) -> bool:
    folder = Path(bundle) / "verifications"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        record = json.loads(path.read_text())
        if record.get("bundle_id") == bundle_id and record.get("passed"):
            return True
    return False


# -- import ---------------------------------------------------------------------------------------
UTC_NAMES = {"UTC", "Etc/UTC", "+00:00"}


def same_type(have: pa.DataType, want: pa.DataType) -> bool:
    """Equal types; timestamps of one unit count as equal across the names of UTC (DuckDB writes
    ``Etc/UTC`` where the runner writes ``UTC``)."""
    if have == want or pa.types.is_null(have):
        return True
    return (pa.types.is_timestamp(have) and pa.types.is_timestamp(want) and have.unit == want.unit
            and have.tz in UTC_NAMES and want.tz in UTC_NAMES)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast core columns to the store's exact types (after ``check_schema`` said they agree)."""
    for i, field in enumerate(table.schema):
        if field.name in schema.names and field.type != schema.field(field.name).type:
            want = schema.field(field.name)
            table = table.set_column(i, want, table.column(i).cast(want.type))
    return table


def check_schema(table: pa.Table, schema: pa.Schema, what: str,
                 required: tuple[str, ...] = ("run_key", "task", "status", "finished_at")) -> None:
    """Core columns must have the store's types; anything else must be a prefixed column."""
    from joulebench.harness.schema import PREFIXES

    for field in table.schema:
        if field.name in schema.names:
            want = schema.field(field.name).type
            if not same_type(field.type, want):
                raise SpecError(f"{what}: column {field.name!r} is {field.type}, the store needs {want}")
        elif not field.name.startswith(PREFIXES):
            raise SpecError(f"{what}: column {field.name!r} is not in the store's schema")
    missing = [n for n in required if n not in table.schema.names]
    if missing:
        raise SpecError(f"{what}: missing columns {missing}")


def import_bundle(bundle: Path, results: Path, allow_unverified: bool = False) -> tuple[int, int]:
    """Merge a bundle's rows into a store: each (run key, attempt start) once, with the bundle's
    id in ``x_submission`` so the origin stays visible. Returns (rows added, rows already there)."""
    import pyarrow.compute as pc

    from joulebench.harness.schema import CURVES, RUNS
    from joulebench.harness.store import Store, write_atomic

    manifest = read_manifest(bundle)
    if not allow_unverified and not verified(bundle, manifest["id"]):
        raise SpecError(f"bundle {bundle} has no passing verification: run `joulebench verify {bundle}` "
                        "first (or import with --unverified)")
    runs = pq.read_table(Path(bundle) / "runs.parquet")
    curves = pq.read_table(Path(bundle) / "curves.parquet")
    check_schema(runs, RUNS, f"bundle {bundle} runs.parquet")
    check_schema(curves, CURVES, f"bundle {bundle} curves.parquet", ("run_key", "task", "step"))
    runs, curves = conform(runs, RUNS), conform(curves, CURVES)
    store = Store(results)
    have = {(k, str(t)) for k, t in store.execute("SELECT run_key, started_at FROM runs_all").fetchall()}
    fresh = [i for i, (k, t) in enumerate(zip(runs["run_key"].to_pylist(), runs["started_at"].to_pylist()))
             if (k, str(t)) not in have]
    if fresh:
        part = runs.take(fresh)
        origin = f"{manifest['suite']}:{manifest['id'][:16]}"
        part = part.append_column("x_submission", pa.array([origin] * part.num_rows, pa.string())) \
            if "x_submission" not in part.schema.names else part
        name = f"bundle-{manifest['id'][:12]}-{uuid.uuid4().hex[:6]}.parquet"
        keys = pa.array(part["run_key"].to_pylist())
        wanted = pc.is_in(curves["run_key"], value_set=keys)
        write_atomic(curves.filter(wanted), Path(results) / "curves" / "imported" / name)
        write_atomic(part, Path(results) / "runs" / "imported" / name)
    return len(fresh), runs.num_rows - len(fresh)
