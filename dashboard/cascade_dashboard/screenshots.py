"""Screenshots of every page (docs/dashboard/*.png) with a real browser: Debian's headless chromium
driven by Selenium (the test extra), against `cascade dashboard` on a free port.

    python -m cascade_dashboard.screenshots --store sqlite:////tmp/shots.db --out docs/dashboard --run 4
"""

from __future__ import annotations

import argparse
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

SHOTS = [  # (file, url path and query, text to wait for)
    ("runs.png", "/", "Open run detail"),
    ("run_detail.png", "/run?run={run}", "Sequences"),
    ("token_view.png", "/tokens?run={run}&seq={seq}", "Decisions"),
    ("tradeoff.png", "/tradeoff", "Pareto"),
    ("whatif.png", "/whatif?run={run}", "First-order estimate"),
    ("calibrate.png", "/calibrate?run={run}", "proposed α"),
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def take(store: str, out: Path, run: int, seq: int, width: int = 1500, height: int = 1300) -> list[Path]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    port = _port()
    cascade = Path(sys.executable).with_name("cascade")
    proc = subprocess.Popen(
        [str(cascade), "dashboard", "--store", store, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if urllib.request.urlopen(base + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for a in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--window-size={width},{height}",
            f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}",
        ):
            opts.add_argument(a)
        drv = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        try:
            for name, path, text in SHOTS:
                drv.get(base + path.format(run=run, seq=seq))
                WebDriverWait(drv, 120).until(
                    EC.text_to_be_present_in_element((By.CSS_SELECTOR, '[data-testid="stMain"]'), text)
                )
                time.sleep(2.5)  # charts finish drawing
                drv.save_screenshot(str(out / name))
                written.append(out / name)
        finally:
            drv.quit()
        return written
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cascade_dashboard.screenshots", description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/dashboard"))
    ap.add_argument("--run", type=int, required=True, help="run shown in the detail pages")
    ap.add_argument("--seq", type=int, help="sequence of the token view (default: the run's first)")
    args = ap.parse_args(argv)
    seq = args.seq
    if seq is None:
        from cascade.store.queries import list_sequences
        from cascade.store.readonly import open_readonly

        seq = list_sequences(open_readonly(args.store), args.run)[0]["id"]
    for p in take(args.store, args.out, args.run, seq):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
