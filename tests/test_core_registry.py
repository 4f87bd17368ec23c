"""The registry: plugins by file, broken plugins reported by name, the `check` gate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from joulebench.harness.params import Param, SpecError, parse_assignments, resolve_params
from joulebench.harness.registry import Registry, registry

PLUGINS = Path(__file__).parent / "plugins"


def test_builtin_tasks_and_methods_load_without_errors() -> None:
    reg = registry()
    assert "ltsf" in reg.tasks and "backprop" in reg.methods
    assert not reg.errors, reg.errors


def test_broken_plugins_are_reported_and_the_rest_keeps_working() -> None:
    reg = Registry()
    assert reg.load_file(PLUGINS / "broken_import.py") == []
    found = reg.load_file(PLUGINS / "broken_contract.py")
    assert [c.name for c in found] == ["fine"]
    reasons = " | ".join(reg.errors.values())
    assert "ModuleNotFoundError: No module named 'joulebench_no_such_module'" in reasons
    assert "does not implement train(self, ctx)" in reasons


def test_list_shows_tasks_methods_and_what_failed() -> None:
    out = subprocess.run([sys.executable, "-m", "joulebench.harness.cli", "list",
                          "--plugin", str(PLUGINS / "broken_import.py")],
                         capture_output=True, text=True, timeout=120).stdout
    assert "preset tiny: target mse=" in out and "lr=0.001 [1e-06, 1.0] log" in out
    assert "NOT LOADED" in out and "broken_import.py" in out


def test_check_passes_a_good_method_and_fails_a_bad_one() -> None:
    good = subprocess.run([sys.executable, "-m", "joulebench.harness.cli", "check",
                           str(PLUGINS / "broken_contract.py")], capture_output=True, text=True,
                          timeout=300)
    assert "PASS fine on ltsf" in good.stdout
    assert "FAIL load" in good.stdout and good.returncode == 1  # the broken class beside it fails
    lazy = subprocess.run([sys.executable, "-m", "joulebench.harness.cli", "check",
                           str(PLUGINS / "lazy_method.py")], capture_output=True, text=True, timeout=300)
    assert lazy.returncode == 1 and "FAIL lazy on ltsf" in lazy.stdout and "never called ctx.step" in lazy.stdout


def test_params_coerce_and_validate() -> None:
    declared = {"lr": Param(1e-3, low=1e-6, high=1.0), "opt": Param("adam", choices=("sgd", "adam")),
                "steps": Param(10, low=1, high=100), "flag": Param(False)}
    hp = resolve_params("m", declared, {"lr": "0.01"}, parse_assignments(["flag=yes", "steps=7"]))
    assert hp == {"lr": 0.01, "opt": "adam", "steps": 7, "flag": True}
    with pytest.raises(SpecError, match="outside"):
        resolve_params("m", declared, {"lr": 5})
    with pytest.raises(SpecError, match="not a valid int"):
        resolve_params("m", declared, {"steps": "2.5"})


def test_installed_packages_register_through_entry_points(monkeypatch) -> None:
    from joulebench.harness.registry import reset_registry

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "entrypoint_pkg"))
    reset_registry()
    try:
        reg = registry()
        assert "external_sgd" in reg.methods and not reg.errors, reg.errors
        assert reg.origins[reg.methods["external_sgd"]].startswith("entry point external_sgd")
    finally:
        reset_registry()


def test_cache_root_prefers_override_then_environment(tmp_path, monkeypatch) -> None:
    from joulebench.harness.cache import cache_root

    monkeypatch.setenv("JOULEBENCH_CACHE", str(tmp_path / "env"))
    assert cache_root("era5", tmp_path / "mine") == tmp_path / "mine" / "era5"
    assert cache_root("era5") == tmp_path / "env" / "era5"
    monkeypatch.delenv("JOULEBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root("imagenet-gen") == tmp_path / "xdg" / "joulebench" / "imagenet-gen"
