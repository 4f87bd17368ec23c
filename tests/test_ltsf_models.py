"""The LTSF models' own checks: PatchTST, Autoformer, ReCycle and its recent historic profile, the
parameter-free baselines, and the MAPE/MASE metrics, each against shapes or hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from joulebench.harness.context import evaluate_model
from joulebench.harness.spec import RunSpec, resolve
from joulebench.tasks.ltsf import calendar
from joulebench.tasks.ltsf.autoformer import AutoCorrelation, Autoformer, Decomposition
from joulebench.tasks.ltsf.baselines import RepeatLast, SeasonalNaive
from joulebench.tasks.ltsf.patchtst import PatchTST
from joulebench.tasks.ltsf.recycle import ReCycle, RHPForecast, SeriesProfiles, rhp_table, rolling_profiles
from joulebench.tasks.ltsf.task import LTSF


def _marks(b: int, length: int) -> torch.Tensor:
    return torch.zeros(b, length, 4)


def _task(**task_params) -> LTSF:
    spec = resolve(RunSpec(task="ltsf", preset="tiny", task_params=task_params))
    task = LTSF(spec.task_params, spec.preset, 0, torch.device("cpu"))
    task.setup()
    return task


# -- PatchTST ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("seq_len", "n_patches"), [(336, 42), (512, 64)])
def test_patchtst_cuts_the_published_number_of_patches(seq_len: int, n_patches: int) -> None:
    torch.manual_seed(0)
    model = PatchTST(seq_len, 24, 3, patch_len=16, stride=8, d_model=16, n_heads=4, e_layers=1)
    seen = []
    model.embed.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape))
    out = model(torch.randn(2, seq_len, 3))
    assert model.n_patches == n_patches
    assert seen == [torch.Size([2 * 3, n_patches, 16])]   # one univariate series per channel
    assert out.shape == (2, 24, 3)


def test_patchtst_treats_channels_independently() -> None:
    torch.manual_seed(0)
    model = PatchTST(48, 12, 4, patch_len=8, stride=4, d_model=16, n_heads=2, e_layers=2).eval()
    x = torch.randn(3, 48, 4)
    changed = x.clone()
    changed[..., 2] = torch.randn(3, 48) * 5
    with torch.no_grad():
        a, b = model(x), model(changed)
        permuted = model(x[..., [3, 1, 0, 2]])
    keep = [0, 1, 3]
    torch.testing.assert_close(a[..., keep], b[..., keep])
    assert not torch.allclose(a[..., 2], b[..., 2])
    torch.testing.assert_close(permuted, a[..., [3, 1, 0, 2]])


def test_patchtst_revin_restores_each_channels_scale_and_level() -> None:
    """Normalise → forecast → denormalise: scaling and shifting the input does the same to the output."""
    torch.manual_seed(0)
    model = PatchTST(48, 12, 2, patch_len=8, stride=4, d_model=16, n_heads=2, e_layers=1).eval()
    x = torch.randn(2, 48, 2)
    scale, shift = torch.tensor([3.0, 0.5]), torch.tensor([100.0, -7.0])
    with torch.no_grad():
        y, y_moved = model(x), model(x * scale + shift)
        plain = PatchTST(48, 12, 2, patch_len=8, stride=4, d_model=16, n_heads=2, e_layers=1,
                         revin=False).eval()
        plain.load_state_dict(model.state_dict())
        no_revin = plain(x * scale + shift)
    torch.testing.assert_close(y_moved, y * scale + shift, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(no_revin, y * scale + shift, atol=1e-1)


# -- Autoformer -------------------------------------------------------------------------------

def test_decomposition_splits_a_series_into_trend_and_seasonal_parts() -> None:
    t = torch.arange(96, dtype=torch.float32)
    line = (0.5 * t + 2).reshape(1, 96, 1)
    wave = torch.sin(2 * torch.pi * t / 24).reshape(1, 96, 1)
    seasonal, trend = Decomposition(25)(line + wave)
    assert seasonal.shape == trend.shape == (1, 96, 1)
    torch.testing.assert_close(seasonal + trend, line + wave)
    inner = slice(12, 84)   # away from the padded ends, a 25-row average keeps a line and damps the wave
    torch.testing.assert_close(trend[:, inner], line[:, inner], atol=0.1, rtol=0)
    assert seasonal[:, inner].abs().max() > 0.9


def _identity_autocorrelation(d_model: int, factor: float) -> AutoCorrelation:
    ac = AutoCorrelation(d_model, 2, factor, dropout=0.0)
    with torch.no_grad():
        for layer in (ac.q, ac.k, ac.v, ac.o):
            layer.weight.copy_(torch.eye(d_model))
            layer.bias.zero_()
    return ac


def test_autocorrelation_finds_the_period_and_aggregates_by_its_delays() -> None:
    """A series of period 24 over 96 rows: the top ln(96)≈4 lags are 0, 24, 48 and 72, and rolling
    the values by any of them gives the series back."""
    t = torch.arange(96, dtype=torch.float32)
    x = torch.stack([torch.sin(2 * torch.pi * t / 24), torch.cos(2 * torch.pi * t / 24) + 0.3,
                     torch.sin(4 * torch.pi * t / 24), torch.cos(4 * torch.pi * t / 24)], dim=-1)
    x = x.unsqueeze(0).repeat(2, 1, 1)
    ac = _identity_autocorrelation(4, factor=1.0)
    with torch.no_grad():
        out = ac(x, x, x)
    torch.testing.assert_close(out, x, atol=1e-4, rtol=0)
    shifted = torch.roll(x, 5, dims=1) + 0.1 * torch.randn_like(x)
    with torch.no_grad():
        short = ac(x, shifted[:, :60], shifted[:, :60])   # cross-correlation with a shorter memory
    assert short.shape == x.shape


def test_autoformer_forecasts_the_horizon_for_every_channel() -> None:
    torch.manual_seed(0)
    model = Autoformer(96, 48, 24, 3, d_model=16, n_heads=2, e_layers=2, d_layers=1, d_ff=32)
    out = model(torch.randn(2, 96, 3), _marks(2, 96), _marks(2, 48 + 24))
    assert out.shape == (2, 24, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


# -- ReCycle and the recent historic profile --------------------------------------------------

def _five_cycles() -> tuple[torch.Tensor, torch.Tensor]:
    """Five cycles of two rows; day types per cycle workday, Saturday, workday, workday, Sunday."""
    values = [[1, 2], [10, 20], [3, 4], [5, 6], [100, 200]]
    types = [0, 1, 0, 0, 2]
    x = torch.tensor(values, dtype=torch.float32).reshape(1, 10, 1)
    days = torch.tensor(types).repeat_interleave(2).reshape(1, 10)
    return x, days


def test_rolling_rhp_matches_a_hand_computed_profile() -> None:
    """The authors' RHP: after each cycle, per type, the mean of its last two cycles (that cycle
    included); types not yet seen take the mean of the last two cycles of any type."""
    x, days = _five_cycles()
    tables = rolling_profiles(x[0].numpy(), days[0, ::2].numpy(), cycle=2, n_ref=2)[..., 0]
    assert tables.shape == (5, 3, 2)
    assert tables[0].tolist() == [[1, 2], [1, 2], [1, 2]]              # only a workday seen
    assert tables[1].tolist() == [[1, 2], [10, 20], [5.5, 11]]         # Sunday: any type, last two
    assert tables[3].tolist() == [[4, 5], [10, 20], [4, 5]]            # workdays 3-4 and 5-6
    assert tables[4].tolist() == [[4, 5], [10, 20], [100, 200]]


def test_rolling_rhp_window_lookup_uses_only_the_past() -> None:
    """Historic rows: the table of their own cycle; forecast rows and a partial last input cycle:
    the table of the last complete input cycle, looked up by each row's day type."""
    x, days = _five_cycles()
    profiles = SeriesProfiles(x[0].numpy(), days[0].numpy(), cycle=2, n_ref=2)
    hist, fut = profiles.window(start=2, seq_len=6, pred_len=2)        # input: cycles 1-3
    assert hist[:, 0].tolist() == [10, 20, 2, 3, 4, 5]                 # tables 1, 2, 3 by own type
    assert fut[:, 0].tolist() == [4, 5]                 # Sunday after table 3: no Sunday yet, any type
    hist, fut = profiles.window(start=1, seq_len=6, pred_len=3)        # ends inside cycle 3
    assert hist[-1, 0].item() == 2.0                    # row 6 (cycle 3): table 2, workdays 1-2 and 3-4
    assert fut[:, 0].tolist() == [3.0, 6.5, 12.0]       # table 2: row 7 (workday), 8-9 (Sunday: any type)


def test_task_items_carry_the_rolling_profile_of_the_whole_series() -> None:
    task = _task(model="rhp")
    train, val = task.splits["train"], task.splits["val"]
    offset = len(train.values) - train.seq_len
    assert torch.equal(val[0]["x"], train.values[offset:offset + train.seq_len])  # the same rows
    hist, fut = val.profiles.window(offset + 5, val.seq_len, val.pred_len)
    assert torch.equal(val[5]["x_rhp"], hist) and torch.equal(val[5]["y_rhp"], fut)
    model = task.build_model()
    batch = next(iter(task.train_loader()))
    assert torch.equal(task.forward(model, batch), batch["y_rhp"])
    window = _task(model="rhp", rhp="window")
    assert "x_rhp" not in window.splits["train"][0]


def test_rhp_window_variant_is_the_mean_of_the_last_n_cycles_of_the_same_day_type() -> None:
    x, days = _five_cycles()
    table = rhp_table(x, days, cycle=2, n_cycles=2)[0, :, :, 0]
    assert table.tolist() == [[4.0, 5.0], [10.0, 20.0], [100.0, 200.0]]   # workday: (3+5)/2, (4+6)/2
    any_type = rhp_table(x, None, cycle=2, n_cycles=2)[0, :, :, 0]
    assert any_type.tolist() == [[52.5, 103.0]] * 3                      # last two cycles, any type
    no_saturday = days.clone()
    no_saturday[0, 2:4] = 0
    fallback = rhp_table(x, no_saturday, cycle=2, n_cycles=2)[0, 1, :, 0]
    assert fallback.tolist() == [52.5, 103.0]                            # no Saturday seen: any type


def test_rhp_forecaster_follows_the_calendar_of_the_horizon() -> None:
    x, days = _five_cycles()
    model = RHPForecast(seq_len=10, pred_len=5, cycle_len=2, rhp_cycles=2, use_day_types=True,
                        profile="window")
    y_day = torch.tensor([[2, 2, 0, 0, 1]])
    out = model(x, _marks(1, 10), _marks(1, 5), x_day=days, y_day=y_day)
    assert out[0, :, 0].tolist() == [100.0, 200.0, 4.0, 5.0, 10.0]
    assert not list(model.parameters())   # a fallback with nothing to train
    with pytest.raises(ValueError, match="rolling profiles"):
        RHPForecast(10, 5, 2, 2, True)(x, _marks(1, 10), _marks(1, 5), x_day=days, y_day=y_day)


def test_rhp_on_a_real_calendar_week() -> None:
    """Hourly data from Sunday 2016-07-03: forecast Sunday (one Sunday seen) and Monday (mean of the
    last three workdays, Wednesday to Friday); DE holidays make Monday 2016-10-03 a Sunday type."""
    dates = pd.date_range("2016-07-03", periods=9 * 24, freq="h")
    days = torch.from_numpy(calendar.day_types(dates)).unsqueeze(0)
    rng = np.random.default_rng(0)
    daily = rng.normal(size=(9, 24))
    x = torch.tensor(daily[:7].reshape(1, 7 * 24, 1), dtype=torch.float32)
    model = RHPForecast(seq_len=7 * 24, pred_len=48, cycle_len=24, rhp_cycles=3, use_day_types=True,
                        profile="window")
    out = model(x, _marks(1, 168), _marks(1, 48), x_day=days[:, :168], y_day=days[:, 168:])[0, :, 0]
    np.testing.assert_allclose(out[:24], daily[0], rtol=1e-6)
    np.testing.assert_allclose(out[24:], daily[3:6].mean(axis=0), rtol=1e-5)
    rolling = SeriesProfiles(daily.reshape(-1, 1), days[0].numpy(), cycle=24, n_ref=3)
    _, fut = rolling.window(0, 7 * 24, 48)                              # the same days, rolled
    np.testing.assert_allclose(fut[:, 0], out, rtol=1e-5)
    unity_day = calendar.day_types(pd.DatetimeIndex(["2016-10-03", "2016-10-04"]), "DE")
    assert unity_day.tolist() == [calendar.SUNDAY_HOLIDAY, calendar.WORKDAY]


def test_recycle_compresses_each_cycle_of_each_series_into_one_token() -> None:
    torch.manual_seed(0)
    x, profiles = torch.randn(2, 96, 3), {"x_rhp": torch.randn(2, 96, 3), "y_rhp": torch.randn(2, 30, 3)}
    for tokens, src, tgt, width in (("per_series", (6, 4, 16), (6, 2, 16), 24), ("flat", (2, 4, 16), (2, 2, 16), 72)):
        model = ReCycle(seq_len=96, pred_len=30, channels=3, cycle_len=24, d_model=16, n_heads=2,
                        e_layers=1, d_layers=1, d_ff=32, tokens=tokens)
        seen = {}
        model.transformer.register_forward_hook(
            lambda _m, args, _out, seen=seen: seen.update(src=args[0].shape, tgt=args[1].shape))
        out = model(x, _marks(2, 96), _marks(2, 30), **profiles)
        assert out.shape == (2, 30, 3)
        assert seen == {"src": src, "tgt": tgt}       # 96 rows → 4 tokens; 30 → 2 (padded)
        assert model.enc_in.in_features == width + calendar.N_DAY_TYPES + 4


def test_recycle_series_are_independent_and_the_residual_adds_to_the_profile() -> None:
    torch.manual_seed(0)
    model = ReCycle(seq_len=48, pred_len=24, channels=2, cycle_len=24, d_model=16, n_heads=2,
                    e_layers=1, d_layers=1, d_ff=32, dropout=0.0).eval()
    x, x_rhp, y_rhp = torch.randn(1, 48, 2), torch.randn(1, 48, 2), torch.randn(1, 24, 2)
    with torch.no_grad():
        out = model(x, _marks(1, 48), _marks(1, 24), x_rhp=x_rhp, y_rhp=y_rhp)
        x2 = x.clone()
        x2[..., 1] += 5.0                                               # change series 1 only
        out2 = model(x2, _marks(1, 48), _marks(1, 24), x_rhp=x_rhp, y_rhp=y_rhp)
        torch.nn.init.zeros_(model.out.weight)
        torch.nn.init.zeros_(model.out.bias)
        flat = model(x, _marks(1, 48), _marks(1, 24), x_rhp=x_rhp, y_rhp=y_rhp)
    torch.testing.assert_close(out2[..., 0], out[..., 0])               # series 0 untouched
    assert not torch.allclose(out2[..., 1], out[..., 1])
    torch.testing.assert_close(flat, y_rhp)                             # residual 0: the profile


def test_recycle_variants_window_norm_and_zero_init() -> None:
    torch.manual_seed(0)
    kwargs = {"seq_len": 96, "pred_len": 24, "cycle_len": 24, "rhp_cycles": 2, "use_day_types": True,
              "profile": "window"}
    model = ReCycle(channels=2, d_model=16, n_heads=2, e_layers=1, d_layers=1, d_ff=32, tokens="flat",
                    window_norm=True, zero_init=True, **kwargs)
    rhp = RHPForecast(**kwargs)
    x, marks = torch.randn(3, 96, 2), _marks(3, 96)
    dow = torch.tensor([[0.5], [-0.5], [1 / 6 - 0.5]]).expand(3, 96)   # Sunday, Monday, Tuesday
    marks[..., 1] = dow
    y_mark = marks[:, :24]
    profile = rhp(x, marks, y_mark)
    torch.testing.assert_close(model(x, marks, y_mark), profile)   # untrained: the profile itself
    with torch.no_grad():
        model.out.bias.fill_(0.25)   # a residual of 0.25 window spreads on every row
    spread = x.var(1, keepdim=True, unbiased=False).add(1e-5).sqrt()
    torch.testing.assert_close(model(x, marks, y_mark), profile + 0.25 * spread)
    with torch.no_grad():   # normalised tokens: a trained residual scales with the input, whatever its level
        torch.nn.init.normal_(model.out.weight)
        model.eval()
        residual = model(x, marks, y_mark) - profile
        moved = model(x * 2 + 50, marks, y_mark) - rhp(x * 2 + 50, marks, y_mark)
    assert residual.abs().mean() > 0.1
    torch.testing.assert_close(moved, 2 * residual, rtol=1e-3, atol=1e-3)


def test_recycle_training_beats_its_profile_on_the_tiny_series() -> None:
    task = _task(model="recycle")
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step, batch in enumerate(task.train_loader()):
        if step == 40:
            break
        opt.zero_grad()
        task.loss(model, batch).backward()
        opt.step()
    after = evaluate_model(task, model, "val")["mse"]
    profile = evaluate_model(task, _task(model="rhp").build_model(), "val")["mse"]
    assert after < 0.9 * profile


# -- parameter-free baselines -----------------------------------------------------------------

def test_last_value_and_seasonal_naive_against_hand_values() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).reshape(1, 5, 1)
    assert RepeatLast(4)(x)[0, :, 0].tolist() == [5.0, 5.0, 5.0, 5.0]
    assert SeasonalNaive(5, 5, 2)(x)[0, :, 0].tolist() == [4.0, 5.0, 4.0, 5.0, 4.0]
    assert SeasonalNaive(5, 3, 5)(x)[0, :, 0].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="cycle_len"):
        SeasonalNaive(5, 3, 6)


# -- metrics ----------------------------------------------------------------------------------

def _hand_file(directory: Path) -> None:
    """20 weekly rows (ILI layout). The 14 training rows make the scaler mean 0 / std 1 for X (seven
    -1s, then seven 1s: one jump of 2 in 13 steps) and mean 10 / std 2 for OT (alternating 8, 12:
    13 jumps of 2 in scaled units); the last six rows are chosen for the hand computation."""
    x = [-1.0] * 7 + [1.0] * 7 + [0.0, 1.0, 3.0, 2.0, 2.0, 2.0]
    ot = [8.0, 12.0] * 7 + [10.0, 12.0, 11.0, 14.0, 10.0, 12.0]
    dates = pd.date_range("2010-01-03", periods=20, freq="7D")
    pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "X": x, "OT": ot}).to_csv(
        directory / "national_illness.csv", index=False)


def test_mse_mae_mape_mase_against_hand_values(tmp_path: Path) -> None:
    """Last-value forecasts of the 4 test windows (rows 16-19 from rows 15-18), errors in scaled units
    X: -2, 1, 0, 0 and OT: 0.5, -1.5, 2, -1. MAPE on OT unscaled (×2): 1/11, 3/14, 4/10, 2/12.
    MASE: per-channel MAE 0.75 and 1.25 over the in-sample naive MAE (cycle 1) of 2/13 and 2."""
    _hand_file(tmp_path)
    task = _task(dataset="ili", data_dir=str(tmp_path), seq_len=8, label_len=0, pred_len=1,
                 model="last_value", cycle_len=1)
    metrics = evaluate_model(task, task.build_model(), "test")
    assert len(task.splits["test"]) == 4
    assert metrics["mse"] == pytest.approx((4 + 1 + 0.25 + 2.25 + 4 + 1) / 8)
    assert metrics["mae"] == pytest.approx((2 + 1 + 0.5 + 1.5 + 2 + 1) / 8)
    assert metrics["mape"] == pytest.approx(100 * (1 / 11 + 3 / 14 + 4 / 10 + 2 / 12) / 4, rel=1e-5)
    assert metrics["mase"] == pytest.approx((0.75 / (2 / 13) + 1.25 / 2) / 2, rel=1e-5)
