"""The leaderboard in a real browser, read as a person reads it: Debian's Chromium driven by
Playwright (no browser download), one server for every check.

What is checked is what is drawn: the text of the ranking's cells (a DOM table) equals the
store's values formatted, and no cell's text is wider than its cell; the Pareto front's members
carry a ring and a label in the rendered chart, also when the front is one point; the overview
lists every task of the store. A screenshot per page goes to ``$JOULEBENCH_SCREENSHOTS`` (else the
test's temporary folder).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from joulebench.harness.store import Store
from joulebench.leaderboard.units import scale_for
from tests.test_leaderboard import BACKPROP, row

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"{CHROMIUM} missing: scripts/install-browser.sh installs it (root, apt-get)")]

# ltsf/small as the demo showed it: backprop dominates (a one-point front), the others cost more
# joules than fit a narrow column (225.11 J was drawn as "25.1142")
LTSF = {"backprop": [(0.30, 224.0), (0.31, 225.1142), (0.32, 226.5)],
        "f3": [(0.40, 1187.5757), (0.41, 1190.0)],
        "forward_gradient": [(0.45, 2244.5771), (0.47, 2250.0)]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


def fill(results: Path) -> None:
    store = Store(results)
    for method, runs in LTSF.items():
        for seed, (mse, joules) in enumerate(runs):
            store.write_run({**row(f"{method}{seed}", method, seed, mse, joules, params=BACKPROP if method ==
                                   "backprop" else "{}"), "preset": "small", "target": 0.5, "reached_target": True,
                             "energy_to_target_j": joules / 2})
    for seed in range(2):
        store.write_run({**row(f"pet{seed}", "backprop", seed, 0.8 + seed / 100, 30.0 + seed), "task": "pet",
                         "preset": "small", "primary_metric": "f1", "higher_is_better": True})
    store.write_run({**row("era0", "backprop", 0, None, None, status="failed", error="boom"), "task": "era5"})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    results = tmp_path_factory.mktemp("browser") / "results"
    fill(results)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "joulebench.harness.cli", "leaderboard", "--results", str(results),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health")
        yield f"http://127.0.0.1:{port}/", results
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def shot(page, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ["JOULEBENCH_SCREENSHOTS"]) if os.environ.get("JOULEBENCH_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"leaderboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def table_text(page, test_id: str) -> tuple[list[str], list[list[str]]]:
    table = page.locator(f'table[data-testid="{test_id}"]')
    table.wait_for()
    headers = table.locator("thead th").all_inner_texts()
    rows = [r.locator("td").all_inner_texts() for r in table.locator("tbody tr").all()]
    return headers, rows


def clipped_cells(page, test_id: str) -> list[str]:
    """Cells whose text is wider than the cell draws it (what clipping would hide)."""
    return page.eval_on_selector_all(f'table[data-testid="{test_id}"] td',
                                     "cells => cells.filter(c => c.scrollWidth > c.clientWidth + 1)"
                                     ".map(c => c.innerText)")


def fits(page, test_id: str) -> bool:
    """The table is no wider than the page's column (nothing hidden behind a scroll bar)."""
    return page.eval_on_selector(f'table[data-testid="{test_id}"]',
                                 "t => t.parentElement.scrollWidth <= t.parentElement.clientWidth + 1")


def test_overview_lists_every_task_and_links_to_its_page(server, page, tmp_path: Path) -> None:
    url, results = server
    page.goto(url)
    headers, rows = table_text(page, "overview")
    stored = {r[0] for r in duckdb.sql(f"SELECT DISTINCT task FROM read_parquet('{results}/runs/*/*.parquet')")
              .fetchall()}
    assert {r[headers.index("task")] for r in rows} == stored == {"ltsf", "pet", "era5"}
    ltsf = next(r for r in rows if r[0] == "ltsf")
    assert ltsf[headers.index("reached by")].startswith("backprop")
    assert ltsf[headers.index("spent by")].startswith("backprop")
    assert not clipped_cells(page, "overview") and fits(page, "overview")
    shot(page, "overview", tmp_path)
    page.locator('table[data-testid="overview"] a', has_text="ltsf").click()
    page.get_by_text("Task ltsf, preset small").wait_for()
    assert "task=ltsf" in page.url and "preset=small" in page.url


def test_ranking_cells_show_the_stored_medians_formatted_and_unclipped(server, page, tmp_path: Path) -> None:
    url, results = server
    page.goto(url + "?task=ltsf&preset=small")
    headers, rows = table_text(page, "ranking")
    medians = {m: sorted(j for _, j in runs)[len(runs) // 2] if len(runs) % 2 else
               sum(sorted(j for _, j in runs)[len(runs) // 2 - 1:len(runs) // 2 + 1]) / 2 for m, runs in LTSF.items()}
    scale = scale_for(medians.values(), "J")
    column = headers.index(f"train energy ({scale.label})")
    shown = {r[headers.index("method")]: r[column] for r in rows}
    assert shown == {m: scale.show(v) for m, v in medians.items()}
    assert shown["backprop"] == "0.225" and shown["f3"] == "1.19"  # kJ: 225.11 J can no longer read 25.1142
    assert not clipped_cells(page, "ranking"), "a cell's text is wider than its column"
    assert fits(page, "ranking") and fits(page, "ranking-cost"), "the table is cut off at the right"
    title = page.locator('table[data-testid="ranking"] td[title^="225.1142"]')
    assert title.count() == 1  # the full value in the tooltip
    shot(page, "ranking", tmp_path)


def test_pareto_front_members_ringed_and_labelled_also_a_one_point_front(server, page, tmp_path: Path) -> None:
    url, _ = server
    page.goto(url + "?task=ltsf&preset=small&tab=pareto")
    chart = page.get_by_test_id("stVegaLiteChart").first
    chart.locator("g.mark-symbol.role-mark path").first.wait_for()
    groups = chart.locator("g.mark-symbol.role-mark")
    names = [groups.nth(i).get_attribute("class") for i in range(groups.count())]
    ring = next(i for i, n in enumerate(names) if "front_ring" in n)
    points = next(i for i, n in enumerate(names) if "front_ring" not in n)
    rings = groups.nth(ring).locator("path")
    assert rings.count() == 1  # backprop seed 0 dominates every other run
    dots = groups.nth(points).locator("path")
    assert dots.count() == 7
    # the ring sits on a drawn point: the lowest-energy, lowest-MSE run (leftmost and lowest)
    ring_at = translate(rings.first.get_attribute("transform"))
    dot_at = [translate(dots.nth(i).get_attribute("transform")) for i in range(dots.count())]
    assert ring_at in dot_at and ring_at == min(dot_at, key=lambda p: p[0])
    labels = chart.locator("g.mark-text.role-mark text").all_inner_texts()
    assert labels and labels[0].startswith("backprop")
    shot(page, "pareto", tmp_path)


def translate(transform: str | None) -> tuple[float, float]:
    x, y = re.match(r"translate\(([-\d.e]+),\s*([-\d.e]+)\)", transform or "").groups()
    return round(float(x), 1), round(float(y), 1)


def test_run_detail_by_address(server, page, tmp_path: Path) -> None:
    url, _ = server
    page.goto(url + "?task=ltsf&preset=small&tab=run&run=f30")
    page.get_by_text("Energy per phase").wait_for()
    headers, rows = table_text(page, "phases")
    train = next(r for r in rows if r[0] == "train")
    assert headers[2] == "energy (kJ)" and train[2] == "1.19"
    shot(page, "run", tmp_path)
