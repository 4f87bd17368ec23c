"""AutoPQ-style probabilistic load forecasting: a point forecaster and a probabilistic part,
trained together.

Design: the model is one module (``LoadModel``) holding the point forecaster and, by ``prob``,
a cINN (``cinn``, AutoPQ), quantile-regression widths (``quantile``) or nothing (``gaussian``).
One optimiser loop of the method trains all of it and the harness meters it in the train window.

AutoPQ (``cinn_of=target``, ``center=point``, the defaults): the loss is ``MSE(point) +
cinn_weight · NLL_cINN(y | covariates)``; the cINN learns the target's conditional distribution
and never sees the point forecast while training (in AutoPQ it is fit apart from the forecaster).
At inference the point forecast ŷ is mapped into the latent, z_p = f(ŷ; c), samples are drawn
around it with a spread tuned on validation (``latent_noise=relative``: z_p·(1 + spread·ε), the
authors' code; ``additive``: z_p + spread·ε) and inverted, y = f⁻¹(z; c). ``center=zero`` samples
the cINN's own distribution (z = spread·ε) without the point forecast.
The earlier variant (``cinn_of=residual``): the flow runs on y − ŷ conditioned on the covariates
and the detached point forecast, divided by a fixed per-hour scale (a ridge regression's residual
std on the training split); ``center=zero`` samples p + f⁻¹(spread·ε), ``point`` takes the latent
of a zero residual as the centre.
Flow layers: a conditional elementwise affine and a linear mix (``cinn_head``), then the affine
couplings; identity-initialised.

Baselines, every run: a Gaussian around the same point forecast (``*_gauss``; σ per horizon hour
from the validation residuals times a factor chosen on validation CRPS, the cINN's spread by the
same rule) and split-conformal quantiles of the validation residuals (``*_conformal``). As their
own runs: quantile regression (``prob=quantile``: the point net is the median, pinball loss on 19
levels) and the Gaussian alone (``prob=gaussian``). ``crps`` is the sample CRPS of sample
forecasters; ``crps_q`` (twice the mean pinball loss on the levels 0.05…0.95) is computed the same
way for every forecaster and is the one to compare across families. All sample forecasters of a
run use the same ε draws (common random numbers).
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
from joulebench.tasks.load.models import (
    CINN,
    POINT,
    LoadModel,
    QuantileWidths,
    latent_neighbourhood,
    residual_scale,
)


@lru_cache(maxsize=4)
def _windows(csv: str, time_col: str, target: str, n_rows: int, data_seed: int, n_lags: int,
             country: str, exog: str, mtime: float):
    if csv:
        frame = data.read_csv(csv, time_col, target)
    else:
        frame = data.make_load(n_rows, data_seed, country or "DE")
    return data.build_windows(frame, n_lags, country, exog)


WITH_CINN = {"prob": ("cinn",)}
"""``applies`` of the cINN's own parameters: without it they mean nothing."""
PROB = ("cinn", "gaussian", "quantile")


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
        "prob": Param("cinn", choices=PROB,
                      help="probabilistic part: cinn (AutoPQ), gaussian (around the point forecast "
                           "only), quantile (quantile regression, a baseline of the paper)"),
        "cinn_of": Param("target", choices=("target", "residual"), applies=WITH_CINN,
                         help="target: the cINN learns the target given the covariates (AutoPQ); "
                              "residual: the residual given covariates and point forecast (earlier)"),
        "cinn_blocks": Param(4, low=1, high=16, applies=WITH_CINN),
        "cinn_hidden": Param(64, low=8, high=1024, applies=WITH_CINN),
        "cinn_weight": Param(1.0, low=0.01, high=10.0, log=True, applies=WITH_CINN),
        "cinn_head": Param(True, applies=WITH_CINN,
                           help="conditional elementwise affine + linear mix before the couplings "
                                "(false: couplings only)"),
        "spread": Param(0.0, low=0.0, high=3.0, applies=WITH_CINN,
                        help="std of latent samples around the centre; 0: chosen on validation CRPS"),
        "center": Param("point", choices=("point", "zero"), applies=WITH_CINN,
                        help="latent centre of the samples: point = the point forecast's latent "
                             "(AutoPQ), zero = the cINN's own conditional distribution"),
        "latent_noise": Param("relative", choices=("relative", "additive"),
                              applies={**WITH_CINN, "center": ("point",)},
                              help="relative: z_p·(1 + spread·ε) (the authors' code); "
                                   "additive: z_p + spread·ε"),
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
        "short": Preset(params={"csv": "../shared/data/Load-BW.csv", "n_samples": 50},
                        budget={"steps": 150}, eval_every=10**9, timeout_s=1800,
                        description="Load-BW.csv, 150 steps (about 2 epochs): the seed benchmark's "
                                    "budget, which a search's trials inherit with the preset"),
        "full": Preset(params={"csv": "../shared/data/Load-BW.csv"}, budget={"epochs": 60},
                       eval_every=1540, timeout_s=4 * 3600,
                       description="a user's hourly CSV (default: Load-BW.csv of AutoPQ); "
                                   "Load-BW: about 2 min on one CPU core"),
    }
    metrics = {"crps": False, "crps_q": False, "pinball": False, "coverage80": True,
               "mae_median": False, "mae_point": False, "crps_gauss": False, "crps_q_gauss": False,
               "pinball_gauss": False, "coverage80_gauss": True, "crps_gauss_mle": False,
               "crps_q_conformal": False, "coverage80_conformal": True, "spread": False,
               "sigma_factor": False}
    """Units of the target (unscaled). crps/crps_q/pinball/coverage80/mae_median: the run's own
    forecaster (``prob``; for quantile regression crps = crps_q); *_gauss: a Gaussian around the
    same point forecast, σ per horizon hour from the validation residuals times the chosen factor
    (crps_gauss_mle: factor 1, σ = the validation RMS error); *_conformal: split-conformal
    quantiles around the same point forecast. crps_q: twice the mean pinball loss on 0.05…0.95,
    the same estimator for every family. coverage80: share inside the 10–90 % interval (0.8 is
    calibrated). spread, sigma_factor: the widths chosen on validation (not quality metrics)."""
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
        hp, n_feat = self.hp, self.w["x"].shape[1]
        kw = {"n_lags": hp.n_lags} if hp.model == "nhits" else {}
        point = POINT[hp.model](n_feat, hp.hidden, **kw)
        cinn = widths = None
        if hp.prob == "cinn":
            residual = hp.cinn_of == "residual"
            cinn = CINN(n_feat, hp.cinn_blocks, hp.cinn_hidden, self.res_scale if residual else 1.0,
                        hp.cinn_head, with_point=residual)
        elif hp.prob == "quantile":
            widths = QuantileWidths(n_feat, hp.hidden, metrics.CRPS_LEVELS)
        return LoadModel(point, cinn, widths)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        m, x, y = getattr(model, "module", model), batch["x"], batch["y"]
        point = m.point(x)
        if m.widths is not None:        # quantile regression: the point net is the median
            return metrics.pinball(m.widths(x, point), y, metrics.CRPS_LEVELS)
        loss = nn.functional.mse_loss(point, y)
        if m.cinn is not None:
            c = m.cinn.condition(x, point.detach())
            flow_input = y - point.detach() if m.cinn.with_point else y
            loss = loss + self.hp.cinn_weight * m.cinn.nll(flow_input, c)
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

    def sampler(self, m: LoadModel, x: torch.Tensor, p: torch.Tensor, noise: torch.Tensor):
        """spread ↦ samples (S, N, H) of the cINN for features ``x`` and point forecast ``p``.

        AutoPQ (``cinn_of=target``, ``center=point``): around z_p = f(p; c), inverted; spread 0
        returns the point forecast itself. See the module docstring for the other variants."""
        hp, flow = self.hp, m.cinn
        c = flow.condition(x, p)
        residual = hp.cinn_of == "residual"
        if hp.center == "point":
            z0 = flow(torch.zeros_like(p) if residual else p, c)[0]
            relative = hp.latent_noise == "relative"
        else:
            z0, relative = torch.zeros_like(p), False
        shift = p if residual else 0.0
        return lambda spread: shift + flow.inverse(latent_neighbourhood(z0, noise, spread, relative), c)

    def _spread_range(self) -> tuple[float, float]:
        relative = self.hp.center == "point" and self.hp.latent_noise == "relative"
        return (0.01, 3.0) if relative else (0.2, 3.0)

    def _widths(self, m, xv, yv, pv, sigma, nv) -> tuple[float, float | None]:
        """Gaussian σ factor and cINN spread, both chosen on validation by the same rule; kept for
        the model's current weights, so the test evaluation after the validation one reuses them."""
        key = tuple(float(t.detach().double().sum()) for t in m.parameters())
        if getattr(self, "_width_key", None) != key:
            factor = metrics.select_on_validation(lambda f: pv + f * sigma * nv, yv)
            spread = None
            if m.cinn is not None:
                low, high = self._spread_range()
                spread = float(self.hp.spread) or metrics.select_on_validation(
                    self.sampler(m, xv, pv, nv), yv, low=low, high=high)
            self._width_key, self._width_val = key, (factor, spread)
        return self._width_val

    @staticmethod
    def _quantile_summary(q: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Metrics of a quantile forecast on ``CRPS_LEVELS`` (L, N, H); crps is crps_q here."""
        levels = metrics.CRPS_LEVELS
        crps_q = metrics.crps_quantiles(q, y, levels)
        out = metrics.summary(q[[levels.index(v) for v in metrics.QUANTILES]], y, crps_q)
        return {**out, "crps_q": out["crps"]}

    @staticmethod
    def _crps_q_of_samples(samples: torch.Tensor, y: torch.Tensor) -> float:
        lv = torch.tensor(metrics.CRPS_LEVELS, dtype=samples.dtype, device=samples.device)
        return float(metrics.crps_quantiles(torch.quantile(samples, lv, dim=0), y))

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
        gauss_samples = un(p[None] + factor * sigma * nt)
        gauss = {**metrics.sample_summary(gauss_samples, un(y)),
                 "crps_q": self._crps_q_of_samples(gauss_samples, un(y))}
        out.update({f"{k}_gauss": v for k, v in gauss.items() if k != "mae_median"})
        out["crps_gauss_mle"] = float(metrics.crps_samples(un(p[None] + sigma * nt), un(y)))
        conformal = self._quantile_summary(un(metrics.conformal_quantiles(p, yv - pv)), un(y))
        out.update({f"{k}_conformal": conformal[k] for k in ("crps_q", "coverage80")})
        if m.widths is not None:
            out.update(self._quantile_summary(un(m.widths(x, p)), un(y)))
        elif m.cinn is None:
            out.update(gauss)
        else:
            samples = un(self.sampler(m, x, p, nt)(spread))
            out.update({**metrics.sample_summary(samples, un(y)), "spread": spread,
                        "crps_q": self._crps_q_of_samples(samples, un(y))})
        return out

    def model_name(self) -> str:
        return self.hp.model if self.hp.prob == "gaussian" else f"{self.hp.model}+{self.hp.prob}"
