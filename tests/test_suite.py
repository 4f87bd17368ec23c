"""Suite files: the shipped suites load and name real workloads; bad files are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulebench.harness.cli import main
from joulebench.harness.params import SpecError
from joulebench.harness.suite import available, load_suite

GOOD = """
name = "t"
version = 1
[[workload]]
name = "w"
task = "ltsf"
preset = "tiny"
target = 0.6
budget = { steps = 5 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return path


def test_shipped_suites_resolve_against_the_registry():
    assert {"cpu-v1", "gpu-v1"} <= set(available())
    cpu = load_suite("cpu-v1")
    cpu.check_against_registry()
    assert {w.task for w in cpu.workloads} == {"ltsf", "load", "pet", "imagenet", "era5"}
    assert {w.preset for w in cpu.workloads} == {"small"}
    gpu = load_suite("gpu-v1")
    gpu.check_against_registry()
    assert {w.preset for w in gpu.workloads} == {"full"} and not gpu.run_in_ci


def test_workloads_a_method_cannot_train_are_named_with_the_reason():
    cpu = load_suite("cpu-v1")
    assert cpu.cannot_train("backprop") == {}
    assert set(cpu.cannot_train("f3")) == {"load-mlp", "pet-petnet", "era5-afno"}
    assert cpu.cannot_train("forward_gradient") == {
        "pet-petnet": "forward_gradient cannot train pet: pet does not provide functional"}


def test_run_specs_carry_the_workload_and_the_suite_label(tmp_path):
    suite = load_suite(write(tmp_path, GOOD.replace("version = 1", "version = 1\nseeds = [3, 4]")))
    specs = suite.run_specs("backprop")
    assert [s.seed for _, s in specs] == [3, 4]
    assert all(s.budget.steps == 5 and s.campaign == "suite:t@v1" for _, s in specs)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("target = 0.6\n", ""), "target: Field required"),
    (lambda t: t.replace("budget = { steps = 5 }", "budget = {}"), "budget needs steps, epochs or seconds"),
    (lambda t: t.replace('preset = "tiny"', 'preset = "huge"'), "has no preset 'huge'"),
    (lambda t: t + 'colour = "red"\n', "unknown key 'workloads.0.colour'"),
    (lambda t: t.replace("version = 1", "version = 0"), "version: Input should be greater than or equal to 1"),
    (lambda t: t + "[[workload]]\nname = \"w\"\ntask = \"load\"\npreset = \"tiny\"\ntarget = 1\n"
                   "budget = { steps = 1 }\n", "repeated: w"),
    (lambda t: t.replace("name = \"w\"", "name = \"w\"\ntask_params = { modle = \"mlp\" }"),
     "has no parameter 'modle'"),
    (lambda t: t.replace("version = 1", "version = 1\n[scoring]\ntau_max = 1.0"), "tau_max"),
    (lambda t: t.replace("[[workload]]", "[[workload"), "not valid TOML"),
])
def test_bad_suite_files_are_one_line_errors(tmp_path, capsys, edit, message):
    path = write(tmp_path, edit(GOOD))
    assert main(["suite", "show", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err


def test_unknown_suite_names_the_shipped_ones():
    with pytest.raises(SpecError, match="cpu-v1"):
        load_suite("cpu-v9")
