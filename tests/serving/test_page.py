"""The web page in a real browser: headless Debian Chromium driven by playwright.

Chromium comes from Debian (`make env` installs it where it can); playwright's own browser
download is never used. The test types a query, applies a filter, reads the results and
opens one incident.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian chromium is not installed (make env installs it with apt-get as root)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import tiny_frame
    from deploy_fixtures import make_tiny_model

    from itsm_core.serving.index import build_index

    root = tmp_path_factory.mktemp("page")
    model = make_tiny_model(root / "model")
    df = tiny_frame()
    df["resolution_notes"] = "restarted the " + df["subcategory"].str.lower() + " service"
    df.to_csv(root / "incidents.csv", index=False)
    index = build_index(str(model), root / "incidents.csv", root / "idx").path
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "itsm_core.cli.main", "serve", "--index",
                             str(index), "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "service did not start"
            time.sleep(0.5)
    yield base
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_search_filter_and_open_an_incident(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        page.goto(server)
        page.wait_for_function("document.getElementById('info').textContent.includes('42')")
        assert "42 incidents" in page.inner_text("#info")
        page.fill("#text", "VPN tunnel keeps dropping")
        page.select_option("#category", "Network")
        page.fill("#k", "5")
        page.click("#go")
        page.wait_for_selector("#results tbody tr")
        rows = page.query_selector_all("#results tbody tr")
        assert len(rows) == 5
        cells = [r.query_selector_all("td") for r in rows]
        assert {c[5].inner_text() for c in cells} == {"Network"}
        first = cells[0][1].inner_text()
        rows[0].click()
        page.wait_for_selector("#detail h2")
        assert page.inner_text("#detail h2") == f"Incident {first}"
        assert "restarted the" in page.inner_text("#detail .field-resolution_notes")
        # "similar to incident #": by number, the incident itself is not among the hits
        page.fill("#number", first)
        page.click("#go")
        page.wait_for_function(
            f"[...document.querySelectorAll('#results tbody tr')].length > 0 && "
            f"![...document.querySelectorAll('#results tbody tr')].some("
            f"r => r.dataset.number === '{first}')")
        # a bad request shows the service's message, not a broken page
        page.fill("#number", "")
        page.fill("#text", "")
        page.click("#go")
        page.wait_for_function("document.getElementById('error').textContent.length > 0")
        assert "text" in page.inner_text("#error")
        browser.close()
