"""Submissions: submit → verify --sample 2 → import on a tiny suite stores each row once;
reproduce of a deterministic tiny run prints zero quality drift."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from joulebench.harness.cli import main
from joulebench.harness.store import Store

PLUGIN = Path(__file__).parent / "plugins" / "forecast_sgd.py"
TINY_SUITE = """
name = "tiny-test"
version = 1
description = "two LTSF workloads at the tiny preset (tests)"
seeds = [0, 1]
[[workload]]
name = "ltsf-dlinear"
task = "ltsf"
preset = "tiny"
task_params = { model = "dlinear" }
target = 0.9
budget = { steps = 20 }
eval_every = 10
[[workload]]
name = "ltsf-mlp"
task = "ltsf"
preset = "tiny"
task_params = { model = "mlp" }
target = 0.9
budget = { steps = 20 }
eval_every = 10
"""


@pytest.mark.slow
def test_submit_verify_import_round_trip(tmp_path, results, capsys):
    suite = tmp_path / "tiny-test.toml"
    suite.write_text(TINY_SUITE)
    bundle = tmp_path / "bundle"
    assert main(["submit", str(PLUGIN), "--suite", str(suite), "--out", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "PASS forecast_sgd on ltsf" in out and "4 runs of forecast_sgd on tiny-test@v1" in out
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == {"method.py", "suite.toml", "runs.parquet", "curves.parquet",
                                      "provenance.json", "check.txt"}
    assert pq.read_table(bundle / "runs.parquet").num_rows == 4
    assert "PASS forecast_sgd on ltsf" in (bundle / "check.txt").read_text()

    # submitting again resumes: no run re-runs (the check does, so its timings give a new id)
    assert main(["submit", str(PLUGIN), "--suite", str(suite), "--out", str(bundle)]) == 0
    assert "4 runs, 0 to run" in capsys.readouterr().out
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert pq.read_table(bundle / "runs.parquet").num_rows == 4

    # an unverified bundle is not imported
    assert main(["import", str(bundle), "--results", str(results)]) == 2
    assert "no passing verification" in capsys.readouterr().err

    assert main(["verify", str(bundle), "--sample", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("re-running") == 2 and "PASS (2 of 2 re-runs within tolerance)" in out
    assert "code:" not in out  # the bundle's method.py is the file the runs were keyed with
    quality = [[c.strip() for c in row.strip("|").split("|")] for row in out.splitlines()
               if row.startswith("| mse (test)")]
    assert len(quality) == 2 and all(q[3] == "0.00%" and q[5] == "yes" for q in quality), quality

    assert main(["import", str(bundle), "--results", str(results)]) == 0
    assert "imported 4 runs" in capsys.readouterr().out
    assert main(["import", str(bundle), "--results", str(results)]) == 0
    assert "imported 0 runs" in capsys.readouterr().out
    store = Store(results)
    assert store.execute("SELECT count(*) FROM runs_all").fetchone()[0] == 4
    origins = {r[0] for r in store.execute("SELECT DISTINCT x_submission FROM runs").fetchall()}
    assert origins == {f"tiny-test@v1:{manifest['id'][:16]}"}
    assert store.execute("SELECT count(DISTINCT run_key) FROM curves").fetchone()[0] == 4

    # the imported rows score like local ones
    assert main(["score", str(suite), "--results", str(results), "--plot", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "| forecast_sgd |" in out and (tmp_path / "p.png").is_file()

    # a changed file fails the checksum: one line, exit 2
    with open(bundle / "runs.parquet", "ab") as fh:
        fh.write(b"x")
    assert main(["verify", str(bundle)]) == 2
    err = capsys.readouterr().err.strip()
    assert "runs.parquet does not match its checksum" in err and "\n" not in err


@pytest.mark.slow
def test_reproduce_a_deterministic_tiny_run_has_zero_quality_drift(results, capsys):
    args = ["--task", "ltsf", "--preset", "tiny", "--steps", "10", "-T", "model=dlinear", "--results", str(results)]
    assert main(["run", *args]) == 0
    key = capsys.readouterr().out.strip().rsplit("key ", 1)[1].split()[0]
    assert main(["reproduce", key[:10], "--results", str(results)]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("| mse (test)"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == cells[2] and cells[3] == "0.00%" and cells[5] == "yes", line
    assert "provenance: same code, packages and hardware" in out or "host" not in out
    assert main(["reproduce", "ffffffffff", "--results", str(results)]) == 2
