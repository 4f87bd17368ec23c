"""Launch entry for one run: ``python -m joulebench.cluster.launch SPEC_JSON [RESULTS]``.

SPEC_JSON is a file holding a run spec (as ``RunSpec``: task, method, preset, …, world_size) or a
resolved spec (with its ``run_key``). Start it under any launcher; every rank runs this module::

    torchrun --standalone --nproc_per_node=2 -m joulebench.cluster.launch spec.json results
    mpiexec -n 2 python -m joulebench.cluster.launch spec.json results
    srun --ntasks-per-node=4 python -m joulebench.cluster.launch spec.json results

``harness.distributed.init_distributed`` reads the launcher's variables; rank 0 stores the row.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from joulebench.cluster.array import run_spec
from joulebench.harness.cli import default_results
from joulebench.harness.registry import registry
from joulebench.harness.spec import ResolvedSpec, RunSpec, resolve


def load_spec(path: str | Path) -> ResolvedSpec:
    data = json.loads(Path(path).read_text())
    if "run_key" in data:
        return ResolvedSpec.model_validate(data)
    registry()
    return resolve(RunSpec.parse(data))


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    results = Path(argv[1]) if len(argv) > 1 else default_results()
    return 0 if run_spec(load_spec(argv[0]), results)["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
