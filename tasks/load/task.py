"""AutoPQ-style probabilistic load forecasting: a point forecaster and a cINN, trained together.

Design: the model is one module (``LoadModel``) holding the point forecaster and the cINN. The loss
is ``MSE(point) + cinn_weight · NLL_cINN(y | features, point.detach())``: one optimiser loop of the
method trains both, and the harness meters all of it in the train window. The cINN never pushes
gradients into the point forecaster (the condition is detached), as in AutoPQ where the point
forecaster is fixed before the cINN is fit. The flow runs on the residual y − point (an affine,
invertible shift of y given the condition), so the identity-initialised flow starts as a Gaussian
around the point forecast. Quantiles: z* = f(0; c) (the point forecast's latent), samples
z = z* + spread·N(0, I), y = point + f⁻¹(z; c) (``spread`` is a task parameter for search methods; it
changes only evaluation, never training). Baseline for comparison: a Gaussian around the same point
forecast with a per-hour σ from the validation residuals (``*_gauss`` metrics).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn
from torch.utils.data import Dataset

from joulebench.harness.params import Param
from joulebench.harness.registry import register_task
from joulebench.harness.task import Batch, Preset, Task
from joulebench.tasks.load import data, metrics
from joulebench.tasks.load.models import CINN, POINT, LoadModel


@lru_cache(maxsize=4)
def _windows(csv: str, time_col: str, target: str, n_rows: int, data_seed: int, n_lags: int,
             country: str, exog: str, mtime: float):
    if csv:
        frame = data.read_csv(csv, time_col, target)
    else:
        frame = data.make_load(n_rows, data_seed, country or "DE")
    return data.build_windows(frame, n_lags, country, exog)


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
        "cinn_blocks": Param(4, low=1, high=16),
        "cinn_hidden": Param(64, low=8, high=1024),
        "cinn_weight": Param(1.0, low=0.01, high=10.0, log=True),
        "spread": Param(1.0, low=0.05, high=3.0, help="std of latent samples around f(point)"),
        "center": Param("point", choices=("point", "zero"),
                        help="latent centre of the samples: point = the point forecast's latent "
                             "(AutoPQ), zero = the cINN's own conditional distribution"),
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
        "full": Preset(params={"csv": "../shared/data/Load-BW.csv"}, budget={"epochs": 20},
                       timeout_s=4 * 3600,
                       description="a user's hourly CSV (default: Load-BW.csv of AutoPQ)"),
    }
    metrics = {"crps": False, "pinball": False, "coverage80": True, "mae_median": False,
               "mae_point": False, "crps_gauss": False, "pinball_gauss": False,
               "coverage80_gauss": True}
    """Units of the target (unscaled). crps/pinball/coverage80/mae_median: the cINN's distribution
    (point forecast's samples when cinn=false: then they equal the Gaussian's); *_gauss: a Gaussian
    around the same point forecast, σ per horizon hour from the validation residuals.
    coverage80: share inside the 10–90 % interval (0.8 is calibrated)."""
    primary_metric = "crps"
    capabilities = frozenset({"sample_index", "regression", "functional"})

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

    def train_dataset(self) -> Dataset:
        return self.splits["train"]

    def build_model(self) -> nn.Module:
        n_feat = self.w["x"].shape[1]
        kw = {"n_lags": self.hp.n_lags} if self.hp.model == "nhits" else {}
        point = POINT[self.hp.model](n_feat, self.hp.hidden, **kw)
        cinn = CINN(n_feat, self.hp.cinn_blocks, self.hp.cinn_hidden) if self.hp.cinn else None
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

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        m = getattr(model, "module", model)
        scale, mean = float(self.w["std"]), float(self.w["mean"])
        _, yv, pv = self._predict(m, "val")
        sigma = (yv - pv).pow(2).mean(0).sqrt().clamp_min(1e-6)     # per horizon hour
        x, y, p = self._predict(m, split)
        un = lambda t: t * scale + mean  # noqa: E731
        levels = torch.tensor(metrics.QUANTILES, device=y.device)
        normal = torch.distributions.Normal(0.0, 1.0)
        qg = un(p[None] + sigma[None, None] * normal.icdf(levels)[:, None, None])
        yu, pu = un(y), un(p)
        gauss = metrics.summary(qg, yu, metrics.crps_gaussian(pu, sigma * scale, yu))
        out = {"mae_point": float((pu - yu).abs().mean())}
        out.update({f"{k}_gauss": v for k, v in gauss.items() if k != "mae_median"})
        if m.cinn is None:
            out.update({k: v for k, v in gauss.items()})
            return out
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        c = m.cinn.condition(x, p)
        z0, _ = m.cinn(torch.zeros_like(p), c)      # the point forecast's latent (residual 0)
        if self.hp.center == "zero":
            z0 = torch.zeros_like(z0)
        samples = []
        for _ in range(int(self.hp.n_samples)):
            noise = torch.randn(z0.shape, generator=g).to(z0.device)
            samples.append(p + m.cinn.inverse(z0 + self.hp.spread * noise, c))
        s = un(torch.stack(samples))
        q = torch.quantile(s, levels, dim=0)
        out.update(metrics.summary(q, yu, metrics.crps_samples(s, yu)))
        return out

    def model_name(self) -> str:
        return f"{self.hp.model}+cinn" if self.hp.cinn else self.hp.model
