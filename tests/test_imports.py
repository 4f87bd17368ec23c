"""Import what a run needs: the registry lists plugins from their manifest, the driver resolves
specs without torch, and a run's worker imports only its own task and method."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from joulebench.harness import identity, manifest
from joulebench.harness.registry import Registry, registry

PLUGINS = Path(__file__).parent / "plugins"
HEAVY = ("torch", "torchvision", "xarray")


def _python(code: str, cache: Path) -> dict:
    """Run ``code`` in a fresh interpreter with its own cache; it prints one JSON object."""
    env = {**os.environ, "JOULEBENCH_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


LIST = """
import json, sys
from joulebench.harness.registry import registry
reg = registry()
print(json.dumps({"tasks": sorted(reg.tasks), "methods": sorted(reg.methods), "errors": reg.errors,
                  "loaded": sorted(m for m in sys.modules if m.startswith(("joulebench.tasks.",
                                   "joulebench.methods.")) or m in HEAVY)}))
""".replace("HEAVY", repr(HEAVY))


def test_registry_lists_every_plugin_without_importing_it(tmp_path) -> None:
    first = _python(LIST, tmp_path)   # builds the manifest: imports every plugin once
    second = _python(LIST, tmp_path)  # reads it
    assert first["loaded"] and not first["errors"]
    assert (second["tasks"], second["methods"]) == (first["tasks"], first["methods"])
    assert {"ltsf", "era5", "imagenet", "load", "pet"} <= set(second["tasks"])
    assert second["loaded"] == [], second["loaded"]


def test_every_builtin_plugin_is_kept_in_the_manifest() -> None:
    """A plugin whose declarations do not survive the JSON round trip is imported at every start."""
    reg = registry()
    origins = {info.origin for table in (reg.tasks, reg.methods) for info in table.infos.values()}
    for origin in sorted(origins):
        infos = [i for t in (reg.tasks, reg.methods) for i in t.infos.values() if i.origin == origin]
        assert manifest.dump_infos(infos, {}) is not None, origin


def test_manifest_key_follows_the_import_closure() -> None:
    files = {str(p) for p in manifest.plugin_files("joulebench.tasks.ltsf").values()}
    assert any(f.endswith("ltsf/task.py") for f in files) and any(f.endswith("ltsf/patchtst.py") for f in files)
    closure = set()
    todo = list(manifest.plugin_files("joulebench.methods.backprop").items())
    while todo:
        name, path = todo.pop()
        if name not in closure:
            closure.add(name)
            todo += [(m, manifest.locate(m)[0]) for m in identity.imported_names(path, name)
                     if m.startswith("joulebench.") and manifest.locate(m)]
    # backprop's parameters come from the shared optimiser module: editing it must rebuild the entry
    assert {"joulebench.methods.optim", "joulebench.harness.params"} <= closure


def test_a_stale_or_broken_entry_is_rebuilt(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("JOULEBENCH_CACHE", str(tmp_path))
    reg = Registry()
    name = "joulebench.methods.backprop"
    reg.load_cached(name, name, lambda: reg.load_module(name))
    key = manifest.entry_key(name, name)
    assert manifest.cached_entry(name, key) is not None
    (manifest.manifest_dir() / f"{name}-{key}.json").write_text("{not json")
    assert manifest.cached_entry(name, key) is None  # unreadable: the plugin is imported again
    assert manifest.cached_entry(name, key.split("-")[0] + "-0000") is None  # another source


RESOLVE = """
import json, sys
from joulebench.harness.spec import RunSpec, resolve
spec = resolve(RunSpec(task="ltsf", method="backprop", preset="tiny"))
print(json.dumps({"key": spec.run_key, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def test_the_driver_resolves_an_ltsf_spec_without_torch(tmp_path) -> None:
    _python(LIST, tmp_path)
    out = _python(RESOLVE, tmp_path)
    assert out["heavy"] == []
    from joulebench.harness.spec import RunSpec, resolve

    assert out["key"] == resolve(RunSpec(task="ltsf", method="backprop", preset="tiny")).run_key


def test_the_worker_of_an_ltsf_run_imports_no_other_task(tmp_path, monkeypatch) -> None:
    from joulebench.harness.spec import RunSpec, resolve
    from joulebench.harness.worker import Worker

    probe = tmp_path / "modules.json"
    monkeypatch.setenv("JOULEBENCH_PROBE", str(probe))
    plugin = str(PLUGINS / "module_probe.py")
    registry([plugin])
    spec = resolve(RunSpec(task="ltsf", method="module_probe", preset="tiny", budget={"steps": 3},
                           timeout_s=900))  # a loaded shared machine, not a hang
    with Worker(tmp_path / "results", [plugin]) as worker:
        result = worker.run(spec)
    assert result["status"] == "ok", result["error"]
    modules = set(json.loads(probe.read_text()))
    assert "joulebench.tasks.ltsf" in modules and "torch" in modules
    assert not {"torchvision", "xarray", "joulebench.tasks.imagenet", "joulebench.tasks.era5"} & modules
    assert not any(m.startswith("joulebench.methods.f3") for m in modules)


DRIVER = """
import json, sys
from joulebench.harness import cli
rc = cli.main(["run", "--task", "ltsf", "--preset", "tiny", "--steps", "2", "--results", RESULTS])
print(json.dumps({"rc": rc, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def test_the_driver_of_a_run_never_imports_torch(tmp_path) -> None:
    """The whole ``joulebench run`` driver (resolve, store check, worker, summary line) stays light:
    torch is imported once, in the worker (the summary line once imported the method to learn its
    defaults: 3-4 s of the cold start)."""
    _python(LIST, tmp_path)
    out = _python(DRIVER.replace("RESULTS", repr(str(tmp_path / "results"))), tmp_path)
    assert out["rc"] == 0
    assert out["heavy"] == [], out["heavy"]


def test_two_checkouts_sharing_a_cache_keep_an_entry_each(tmp_path, monkeypatch) -> None:
    """The same plugin in two places (two worktrees, two virtualenvs) must not evict each other's
    manifest entry: each eviction re-imported every plugin at the next start of the other."""
    import importlib

    monkeypatch.setenv("JOULEBENCH_CACHE", str(tmp_path / "cache"))
    keys = {}
    for place in ("a", "b", "a"):
        root = tmp_path / place
        (root / "jb_twin_plugin").mkdir(parents=True, exist_ok=True)
        (root / "jb_twin_plugin" / "__init__.py").write_text("X = 1\n")
        monkeypatch.setattr(sys, "path", [str(root), *[p for p in sys.path if "jb_twin" not in p
                                                       and not p.startswith(str(tmp_path))]])
        importlib.invalidate_caches()
        keys[place] = manifest.entry_key("jb_twin_plugin", "jb_twin_plugin")
        if manifest.cached_entry("jb_twin_plugin", keys[place]) is None:
            assert place != "a" or len(keys) == 1, "checkout a's entry was evicted by checkout b's"
            assert manifest.store_entry("jb_twin_plugin", keys[place], [], {})
    assert keys["a"] != keys["b"]


CAMPAIGN_DRIVER = """
import json, sys
from joulebench.harness import cli
rc = cli.main(["campaign", "run", CAMPAIGN, "--results", RESULTS])
print(json.dumps({"rc": rc, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def test_the_campaign_driver_never_imports_torch(tmp_path) -> None:
    """A campaign's driver plans, claims, hands runs to workers and writes failure rows; torch in
    it cost ~1.5 s and ~700 MB at start, on the cores its workers were importing torch on."""
    campaign = tmp_path / "c.toml"
    campaign.write_text('name = "light"\n[defaults]\nseeds = [0, 1]\nbudget = {steps = 2}\n'
                        '[[grid]]\ntask = "ltsf"\nmethods = ["backprop"]\npreset = "tiny"\n')
    _python(LIST, tmp_path)
    code = CAMPAIGN_DRIVER.replace("CAMPAIGN", repr(str(campaign))).replace(
        "RESULTS", repr(str(tmp_path / "results")))
    out = _python(code, tmp_path)
    assert out["rc"] == 0
    assert out["heavy"] == [], out["heavy"]
