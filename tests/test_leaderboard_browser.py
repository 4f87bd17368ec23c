"""The leaderboard in a real browser: Debian's Chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from joulebench.harness.store import Store
from tests.test_leaderboard import row

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SHOTS = Path(os.environ.get("JOULEBENCH_SCREENSHOTS", "")) if os.environ.get("JOULEBENCH_SCREENSHOTS") else None

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"{CHROMIUM} missing: scripts/install-browser.sh installs it (root, apt-get)")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


def test_select_a_task_and_take_a_screenshot(results: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    store = Store(results)
    for seed, (mse, joules) in enumerate([(0.3, 10.0), (0.4, 20.0), (0.5, 30.0)]):
        store.write_run(row(f"bp{seed}", "backprop", seed, mse, joules))
        store.write_run({**row(f"pet{seed}", "backprop", seed, 0.8 + seed / 100, joules), "task": "pet",
                         "primary_metric": "f1", "higher_is_better": True})
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "joulebench.harness.cli", "leaderboard",
                               "--results", str(results), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_text("joulebench leaderboard").first.wait_for(timeout=60_000)
            page.get_by_text("Task ltsf, preset tiny").wait_for(timeout=60_000)
            # choose the other task in the sidebar's select box
            page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
            page.get_by_role("option", name="pet", exact=True).click()
            page.get_by_text("Task pet, preset tiny").wait_for(timeout=60_000)
            page.get_by_text("Energy marked estimated").wait_for(timeout=60_000)
            page.get_by_test_id("stDataFrame").locator("canvas").first.wait_for(timeout=60_000)
            shot = (SHOTS or tmp_path) / "leaderboard.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            page.get_by_role("tab", name="Pareto front").click()
            page.get_by_text("pet / tiny: f1 against training energy").wait_for(timeout=60_000)
            points = page.get_by_test_id("stVegaLiteChart").first.locator("g.mark-symbol.role-mark path")
            points.first.wait_for(timeout=60_000)  # drawn by Vega in the browser: one symbol per run
            assert points.count() == 3
            pareto = shot.with_name("leaderboard-pareto.png")
            page.screenshot(path=str(pareto), full_page=True)
            browser.close()
        assert shot.stat().st_size > 10_000 and pareto.stat().st_size > 10_000
    finally:
        os.killpg(server.pid, 9)
        server.wait()
