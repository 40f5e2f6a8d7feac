"""``hilovit app`` in a real browser: the command serves its page on 127.0.0.1, headless Chromium (driven by
Selenium through Debian's chromedriver) uploads a Fashion-MNIST image, and the label the page shows is
``hilovit predict``'s top-1 for the same image and checkpoint; a file that is not an image shows an error text,
no traceback.

The checkpoint is a litv2_nano run trained here for one epoch on a small Fashion-MNIST-like IDX folder (the
class names of Fashion-MNIST); ``HILOVIT_APP_CHECKPOINT=RUN`` serves another run instead (the committed
screenshot shows the README's classifier, ``runs/backbone``). ``HILOVIT_SCREENSHOT=docs/app.png`` saves the page
after the prediction. Skips, saying what is missing, without gradio, selenium, chromium or chromedriver
(``make browser`` installs the last two).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import make_idx_dataset
from hilovit.cli import main

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "docs" / "fashion-mnist-test-0.png"  # the first Fashion-MNIST test image (an ankle boot)
WAIT_S = 60  # the longest wait for the server or the page; a healthy run takes a few seconds


def _tools():
    """``(chromium, chromedriver)`` paths, or a skip naming what is missing."""
    missing = [name for name in ("gradio", "selenium") if importlib.util.find_spec(name) is None]
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    missing += [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if path is None]
    if missing:
        pytest.skip(f"the browser test needs {', '.join(missing)}: pip install 'hilovit[app]' selenium; "
                    "make browser (apt-get install chromium chromium-driver)")
    return chromium, driver


@pytest.fixture(scope="module")
def tools():
    return _tools()


@pytest.fixture(scope="module")
def run(tools, tmp_path_factory) -> Path:
    """A classification run as ``hilovit train`` writes it (or ``HILOVIT_APP_CHECKPOINT``)."""
    given = os.environ.get("HILOVIT_APP_CHECKPOINT")
    if given:
        return Path(given)
    from hilovit.train import train

    root = tmp_path_factory.mktemp("app_run")
    data = make_idx_dataset(root / "fashion-mnist-like", n_train=64, n_test=16)  # "fashion": its class names
    train(output=str(root / "run"), data="fashion-mnist", data_dir=str(data), model="litv2_nano", epochs=1,
          batch_size=32, eval_subset=16, augment="none", progress="off", threads=1, seed=0)
    return root / "run"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    """``hilovit app --checkpoint RUN`` on a free port of 127.0.0.1, stopped after the tests."""
    port = _free_port()
    log = tmp_path_factory.mktemp("app_server") / "server.log"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(log.parent / "uploads"), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hilovit", "app", "--checkpoint", str(run), "--port",
                                 str(port), "--hilo-size", "112"], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"hilovit app exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as page:
                    if page.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"hilovit app did not answer on {url} in {WAIT_S} s:\n{log.read_text()}")
                time.sleep(0.3)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser(tools):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = tools
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1120"):
        options.add_argument(arg)
    page = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield page
    finally:
        page.quit()


def _upload(browser, url: str, path: Path) -> str:
    """Open the page, drop ``path`` on its file input, and return the status text once it changes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, WAIT_S)
    field = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#upload input[type=file]"))
    field.send_keys(str(path.resolve()))
    return wait.until(lambda b: _changed(b.find_element(By.ID, "status").text))


def _changed(text: str):
    return text if text.strip() and "Drop an image" not in text else False


def test_page_shows_the_label_hilovit_predict_gives(server, browser, run, capsys):
    from selenium.webdriver.common.by import By

    url, log = server
    status = _upload(browser, url, IMAGE)
    shown = re.search(r"Predicted: (.+) \((\d+\.\d)%\)", status)
    assert shown, f"no prediction on the page: {status!r}\n{log.read_text()}"
    heading = browser.find_element(By.CSS_SELECTOR, "#top [data-testid=label-output-value]").text
    capsys.readouterr()
    assert main(["predict", str(IMAGE), "--checkpoint", str(run), "--json"]) == 0
    top1 = json.loads(capsys.readouterr().out)[0]["predictions"][0]
    assert shown.group(1) == top1["label"] and heading == top1["label"]
    assert float(shown.group(2)) == pytest.approx(100 * top1["probability"], abs=0.051)
    assert browser.find_element(By.CSS_SELECTOR, "#hilo img").get_attribute("src")  # HiLo's branches, pictured
    target = os.environ.get("HILOVIT_SCREENSHOT")
    if target:
        target = Path(target)
        partial = target.with_name(f".part-{target.name}")  # written whole, then renamed
        target.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(partial))
        os.replace(partial, target)


def test_a_file_that_is_not_an_image_shows_an_error(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, _ = server
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    status = _upload(browser, url, notes)
    assert status.startswith("Error:") and "notes.txt" in status, status
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "Traceback" not in page and "Predicted" not in page
