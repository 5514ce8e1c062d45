"""End to end: `cascade dashboard` on a free port, headless Chromium (Debian's, through Selenium and its
chromedriver; no browser download), Runs -> Run detail -> Token view, with a screenshot of each.

No chromium here: skipped locally, a failure in CI (CI=true), which installs it (.ci/run)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: ./scripts/test.sh runs it, --fast skips it

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)


def _need_browser() -> None:
    if CHROMIUM and DRIVER:
        pytest.importorskip("selenium") if os.environ.get("CI") != "true" else __import__("selenium")
        return
    if os.environ.get("CI") == "true":
        pytest.fail("chromium and chromium-driver are required in CI (apt-get install chromium chromium-driver)")
    pytest.skip("no chromium/chromedriver here (apt-get install chromium chromium-driver)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(filled_store, tmp_path):
    port = free_port()
    cascade = Path(sys.executable).with_name("cascade")
    log = open(tmp_path / "dashboard.log", "w+")
    proc = subprocess.Popen(
        [str(cascade), "dashboard", "--store", filled_store.url, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
        if proc.poll() is not None:
            break
    else:
        proc.kill()
    log.seek(0)
    out = log.read()
    assert proc.poll() is None, out
    assert f"http://localhost:{port}" in out and "read-only" in out
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)
    log.close()


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}",
    ):
        opts.add_argument(arg)
    os.environ.setdefault("SE_OFFLINE", "true")
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def test_runs_to_run_detail_to_token_view(server, filled_store, artifacts):
    _need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    drv = _driver()
    wait = WebDriverWait(drv, 60)

    def text_appears(text: str) -> None:
        wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, '[data-testid="stMain"]'), text))

    def click_button(label: str) -> None:
        xpath = f'//button[.//p[contains(text(), "{label}")]]'
        wait.until(EC.element_to_be_clickable((By.XPATH, xpath))).click()

    try:
        drv.get(server)
        text_appears("Runs")
        text_appears("5 of 5 runs")
        newest = max(filled_store.run_ids.values())
        drv.save_screenshot(str(artifacts / "e2e-1-runs.png"))
        click_button("Open run detail")
        text_appears("Run detail")
        text_appears("ngram-token-v3")  # the newest run's policy in the caption
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="stMetric"]')))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')))
        assert f"run={newest}" in drv.current_url
        drv.save_screenshot(str(artifacts / "e2e-2-run-detail.png"))
        click_button("Open token view")
        text_appears("Token view")
        spans = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "span.tok") or False)
        assert len(spans) > 5
        assert "q(x) = " in spans[0].get_attribute("title")
        assert "seq=" in drv.current_url
        drv.save_screenshot(str(artifacts / "e2e-3-token-view.png"))
        assert (artifacts / "e2e-3-token-view.png").stat().st_size > 10_000
    finally:
        drv.quit()
