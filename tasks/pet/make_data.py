"""Write simulated PET data files (the format of ``data_cards/pet-sim.md``).

``python -m joulebench.tasks.pet.make_data --out DIR [--geometry clinical] [--activity 0.1] ...``
"""

from __future__ import annotations

from joulebench.tasks.pet.simulate import GEOMETRIES, DetectorConfig, simulate


def main(argv: list[str] | None = None) -> int:
    """Write simulated train/val/test files: ``python -m joulebench.tasks.pet.make_data --out DIR``."""
    import argparse
    from pathlib import Path

    from joulebench.tasks.pet.data import write_npz

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--geometry", default="small", choices=tuple(GEOMETRIES))
    p.add_argument("--sizes", default="4000,500,1000", help="samples of train,val,test")
    p.add_argument("--seed", type=int, default=0)
    for name, field in DetectorConfig.__dataclass_fields__.items():
        if name not in GEOMETRIES["small"]:
            p.add_argument(f"--{name.replace('_', '-')}", type=type(field.default), default=None)
    args = p.parse_args(argv)
    overrides = {k: getattr(args, k) for k in DetectorConfig.__dataclass_fields__
                 if k not in GEOMETRIES["small"] and getattr(args, k) is not None}
    cfg = DetectorConfig(**GEOMETRIES[args.geometry], **overrides)
    sizes = [int(x) for x in args.sizes.split(",")]
    for split, n, offset in zip(("train", "val", "test"), sizes, (0, 1, 2), strict=True):
        data = simulate(cfg, n, seed=args.seed * 1000 + offset)
        path = write_npz(args.out / f"{split}.npz", data)
        print(f"{path}: {n} samples, {len(data.hits)} hits, {len(data.pairs)} true pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
