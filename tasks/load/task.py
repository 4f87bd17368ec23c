"""AutoPQ-style probabilistic load forecasting: a point forecaster and a cINN, trained together.

Design: the model is one module (``LoadModel``) holding the point forecaster and the cINN. The loss
is ``MSE(point) + cinn_weight · NLL_cINN(y | features, point.detach())``: one optimiser loop of the
method trains both, and the harness meters all of it in the train window. The cINN never pushes
gradients into the point forecaster (the condition is detached), as in AutoPQ where the point
forecaster is fixed before the cINN is fit. The flow runs on the residual y − point (an affine,
invertible shift of y given the condition), divided by a fixed per-hour scale (a ridge regression's
residual std on the training split), then a conditional elementwise affine, a linear mix and the
affine couplings; identity-initialised, it starts as a Gaussian around the point forecast.
Samples: z = z₀ + spread·ε, y = point + f⁻¹(z; c), with z₀ = 0 (``center=zero``: the cINN's own
conditional distribution) or z₀ = f(0; c) (``center=point``: the point forecast's latent, AutoPQ).

Comparison (``*_gauss``): a Gaussian around the same point forecast, σ per horizon hour from the
validation residuals times a factor. The factor and the cINN's spread (``spread=0``) are chosen by
the same rule, lowest validation CRPS (``metrics.select_on_validation``), and both are scored on
the same test windows from the same ε draws (common random numbers) with the same sample CRPS.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from joulebench.harness.params import Param
from joulebench.harness.registry import register_task
from joulebench.harness.task import Batch, Preset, Task
from joulebench.tasks.load import data, metrics
from joulebench.tasks.load.models import CINN, POINT, LoadModel, residual_scale


@lru_cache(maxsize=4)
def _windows(csv: str, time_col: str, target: str, n_rows: int, data_seed: int, n_lags: int,
             country: str, exog: str, mtime: float):
    if csv:
        frame = data.read_csv(csv, time_col, target)
    else:
        frame = data.make_load(n_rows, data_seed, country or "DE")
    return data.build_windows(frame, n_lags, country, exog)


WITH_CINN = {"cinn": (True,)}
"""``applies`` of the cINN's own parameters: without it they mean nothing."""


@register_task
class LoadForecast(Task):
    name = "load"
    description = "Probabilistic 24 h load forecasting (AutoPQ): point forecaster + cINN, CRPS"
    params = {
        "csv": Param("", help="hourly CSV (time + target [+ exogenous] columns); empty: synthetic"),
        "time_col": Param("time"),
        "target": Param("load_power_statistics", help="target column of the CSV"),
        "exog": Param("", help="comma-separated columns known for the target hours (e.g. "
                                "price_day_ahead) used as features; never the measured load itself"),
        "n_rows": Param(2000, low=500, high=10_000_000, help="hours of the synthetic series"),
        "data_seed": Param(0),
        "country": Param("DE", help="holidays package country code for the calendar features"),
        "n_lags": Param(48, low=24, high=336),
        "model": Param("mlp", choices=tuple(POINT)),
        "hidden": Param(64, low=8, high=1024),
        "cinn": Param(True, help="train the cINN beside the point forecaster"),
        "cinn_blocks": Param(4, low=1, high=16, applies=WITH_CINN),
        "cinn_hidden": Param(64, low=8, high=1024, applies=WITH_CINN),
        "cinn_weight": Param(1.0, low=0.01, high=10.0, log=True),
        "cinn_head": Param(True, help="conditional elementwise affine + linear mix before the "
                                      "couplings (false: couplings only)"),
        "spread": Param(0.0, low=0.0, high=3.0, help="std of latent samples around the centre; "
                                                     "0: chosen on validation CRPS"),
        "center": Param("zero", choices=("zero", "point"),
                        help="latent centre of the samples: zero = the cINN's own conditional "
                             "distribution around the point forecast (lower validation CRPS on "
                             "Load-BW), point = the point forecast's latent (AutoPQ)"),
        "n_samples": Param(100, low=10, high=2000),
        "batch_size": Param(64, low=1, high=8192),
    }
    presets = {
        "tiny": Preset(params={"n_rows": 1200, "hidden": 32, "cinn_hidden": 32, "cinn_blocks": 2,
                               "n_samples": 50},
                       budget={"steps": 60}, eval_every=30, timeout_s=120,
                       description="1,200 synthetic hours; seconds on one core"),
        "small": Preset(params={"n_rows": 17520}, budget={"epochs": 5}, timeout_s=1800,
                        description="two synthetic years, 5 epochs; under a minute on one CPU core"),
        "full": Preset(params={"csv": "../shared/data/Load-BW.csv"}, budget={"epochs": 60},
                       eval_every=1540, timeout_s=4 * 3600,
                       description="a user's hourly CSV (default: Load-BW.csv of AutoPQ); "
                                   "Load-BW: about 2 min on one CPU core"),
    }
    metrics = {"crps": False, "pinball": False, "coverage80": True, "mae_median": False,
               "mae_point": False, "crps_gauss": False, "pinball_gauss": False,
               "coverage80_gauss": True, "crps_gauss_mle": False, "spread": False,
               "sigma_factor": False}
    """Units of the target (unscaled). crps/pinball/coverage80/mae_median: the cINN's distribution
    (the Gaussian's when cinn=false); *_gauss: a Gaussian around the same point forecast, σ per
    horizon hour from the validation residuals times the chosen factor (crps_gauss_mle: factor 1,
    σ = the validation RMS error). coverage80: share inside the 10–90 % interval (0.8
    is calibrated). spread, sigma_factor: the widths chosen on validation (not quality metrics)."""
    primary_metric = "crps"
    capabilities = frozenset({"sample_index", "regression", "functional"})

    data_params = ("csv",)

    @classmethod
    def data_files(cls, hp, preset):
        return [Path(hp["csv"]).expanduser()] if hp.get("csv") else []

    def setup(self) -> None:
        hp = self.hp
        mtime = 0.0
        if hp.csv:
            from pathlib import Path
            path = Path(hp.csv)
            if not path.is_file():
                data.read_csv(path, hp.time_col, hp.target)     # raises the explanatory error
            mtime = path.stat().st_mtime
        self.w = _windows(hp.csv, hp.time_col, hp.target, hp.n_rows, hp.data_seed, hp.n_lags,
                          hp.country, hp.exog, mtime)
        self.splits = {k: data.Windows(self.w["x"][a:b], self.w["y"][a:b])
                       for k, (a, b) in self.w["ranges"].items()}
        self.res_scale = residual_scale(self.splits["train"].x, self.splits["train"].y)

    def train_dataset(self) -> Dataset:
        return self.splits["train"]

    def build_model(self) -> nn.Module:
        n_feat = self.w["x"].shape[1]
        kw = {"n_lags": self.hp.n_lags} if self.hp.model == "nhits" else {}
        point = POINT[self.hp.model](n_feat, self.hp.hidden, **kw)
        cinn = CINN(n_feat, self.hp.cinn_blocks, self.hp.cinn_hidden, self.res_scale,
                    self.hp.cinn_head) if self.hp.cinn else None
        return LoadModel(point, cinn)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        m = getattr(model, "module", model)
        point = m.point(batch["x"])
        loss = nn.functional.mse_loss(point, batch["y"])
        if m.cinn is not None:
            c = m.cinn.condition(batch["x"], point.detach())
            loss = loss + self.hp.cinn_weight * m.cinn.nll(batch["y"] - point.detach(), c)
        return loss

    @torch.no_grad()
    def _predict(self, model, split):
        ds = self.splits[split]
        x, y = ds.x.to(self.device), ds.y.to(self.device)
        return x, y, model.point(x)

    def _noise(self, split: str, shape) -> torch.Tensor:
        """Standard normal draws shared by the cINN and the Gaussian (common random numbers), fixed
        per run seed and split, so both are scored on the same draws with the same estimator."""
        g = torch.Generator(device="cpu").manual_seed(2 * self.seed + (split == "test"))
        return torch.randn((int(self.hp.n_samples), *shape), generator=g).to(self.device)

    @staticmethod
    def _sampler(m, x, p, noise, center: str):
        """spread ↦ samples (S, N, H) of the cINN around the point forecast ``p``."""
        c = m.cinn.condition(x, p)
        z0 = m.cinn(torch.zeros_like(p), c)[0] if center == "point" else torch.zeros_like(p)
        return lambda spread: p + m.cinn.inverse(z0 + spread * noise, c)

    def _widths(self, m, xv, yv, pv, sigma, nv) -> tuple[float, float | None]:
        """Gaussian σ factor and cINN spread, both chosen on validation by the same rule; kept for
        the model's current weights, so the test evaluation after the validation one reuses them."""
        key = tuple(float(t.detach().double().sum()) for t in m.parameters())
        if getattr(self, "_width_key", None) != key:
            factor = metrics.select_on_validation(lambda f: pv + f * sigma * nv, yv)
            spread = None
            if m.cinn is not None:
                spread = float(self.hp.spread) or metrics.select_on_validation(
                    self._sampler(m, xv, pv, nv, self.hp.center), yv)
            self._width_key, self._width_val = key, (factor, spread)
        return self._width_val

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        m = getattr(model, "module", model)
        scale, mean = float(self.w["std"]), float(self.w["mean"])
        xv, yv, pv = self._predict(m, "val")
        sigma = (yv - pv).pow(2).mean(0).sqrt().clamp_min(1e-6)     # per horizon hour
        x, y, p = self._predict(m, split)
        nv, nt = self._noise("val", pv.shape), self._noise(split, p.shape)
        un = lambda t: t * scale + mean  # noqa: E731
        factor, spread = self._widths(m, xv, yv, pv, sigma, nv)
        out = {"mae_point": float((un(p) - un(y)).abs().mean()), "sigma_factor": factor}
        gauss = metrics.sample_summary(un(p[None] + factor * sigma * nt), un(y))
        out.update({f"{k}_gauss": v for k, v in gauss.items() if k != "mae_median"})
        out["crps_gauss_mle"] = float(metrics.crps_samples(un(p[None] + sigma * nt), un(y)))
        if m.cinn is None:
            out.update(gauss)
            return out
        out["spread"] = spread
        out.update(metrics.sample_summary(un(self._sampler(m, x, p, nt, self.hp.center)(spread)),
                                          un(y)))
        return out

    def model_name(self) -> str:
        return f"{self.hp.model}+cinn" if self.hp.cinn else self.hp.model
