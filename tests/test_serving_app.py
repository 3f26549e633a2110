"""The Gradio page on Triton, driven in a real headless Chromium (Debian's, via Selenium)."""

from __future__ import annotations

import io
import os
import re
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serving_support import xray_like

from cfxray.serving.app import ExplainPage
from cfxray.serving.client import ExplainClient
from cfxray.serving.triton import free_ports

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LIMIT_MB = 0.05
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1400,1200")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    big = np.kron(xray_like(1, 32, seed=5)[0], np.ones((2, 3), np.uint8))  # 64 x 96, any size
    Image.fromarray(big).save(folder / "xray.png")
    (folder / "report.txt").write_text("this is a radiology report, not an image")
    noise = np.random.default_rng(0).integers(0, 256, (400, 400), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "huge.png")  # noise does not compress: ~160 kB
    assert (folder / "huge.png").stat().st_size > LIMIT_MB * 1e6
    return {p.stem: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def page_url(triton_server):
    from cfxray.serving.app import launch

    port = free_ports(1)[0]
    app = launch(triton_server.endpoints["http"], "http", port=port, max_upload_mb=LIMIT_MB,
                 block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("chromium/chromium-driver missing: .ci/run installs them")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _upload(browser, url: str, path: Path, expect: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 90)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(path))
    wait.until(lambda d: expect in d.find_element(By.ID, "status").text)
    return browser.find_element(By.ID, "status").text


def _shown(browser, element_id: str) -> np.ndarray:
    from selenium.webdriver.common.by import By

    src = browser.find_element(By.CSS_SELECTOR, f"#{element_id} img").get_attribute("src")
    with urllib.request.urlopen(src, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())))


def test_page_shows_prediction_counterfactual_heatmap_and_blend(browser, page_url, images,
                                                                 triton_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    status = _upload(browser, page_url, images["xray"], "Prediction:")
    with ExplainClient(triton_server.endpoints["http"]) as client:
        expected = client.explain_files([images["xray"]])[0]
    p_pneumonia = float(re.search(r"P\(PNEUMONIA\) = ([0-9.]+)", status).group(1))
    assert p_pneumonia == pytest.approx(float(expected.probabilities[1]), abs=1e-3)
    assert f"({expected.direction})" in status
    label = browser.find_element(By.ID, "prediction").text
    assert {"NORMAL", "PNEUMONIA"} <= set(label.split()) and "%" in label
    original, counterfactual = _shown(browser, "original"), _shown(browser, "counterfactual")
    heatmap = _shown(browser, "heatmap")
    assert heatmap.ndim == 3 and heatmap.shape[2] >= 3  # coloured overlay
    assert original.shape[:2] == counterfactual.shape[:2]
    assert np.abs(original.astype(int) - counterfactual.astype(int)).max() > 0

    # Slide the blend to 1: the blend becomes the counterfactual.
    number = browser.find_element(By.CSS_SELECTOR, "#blend-slider input[type=number]")
    before = browser.find_element(By.CSS_SELECTOR, "#blend img").get_attribute("src")
    number.send_keys(Keys.CONTROL, "a")
    number.send_keys("1", Keys.TAB)
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#blend img").get_attribute("src") != before)
    blended = _shown(browser, "blend")
    assert np.abs(blended[..., 0].astype(int) - counterfactual[..., 0].astype(int)).max() <= 1


def test_page_rejects_a_non_image_and_an_oversized_upload(browser, page_url, images):
    status = _upload(browser, page_url, images["report"], "Cannot explain")
    assert "not an image" in status
    status = _upload(browser, page_url, images["huge"], "Cannot explain")
    assert "upload limit" in status and f"{LIMIT_MB:g} MB" in status


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_page_callbacks_without_a_browser(triton_server, images, protocol):
    page = ExplainPage(triton_server.endpoints[protocol], protocol, LIMIT_MB)
    assert page.explain(None, "auto")[0].startswith("Upload")
    assert "not an image" in page.explain(str(images["report"]), "auto")[0]
    assert "upload limit" in page.explain(str(images["huge"]), "auto")[0]
    status, before, after, *pictures, state = page.explain(str(images["xray"]),
                                                           "n2p: make it look PNEUMONIA")
    assert "towards **PNEUMONIA** (n2p)" in status
    assert set(before) == set(after) == {"NORMAL", "PNEUMONIA"}
    assert all(p is not None for p in pictures)
    np.testing.assert_array_equal(page.blend(state, 0.0), pictures[0])
    np.testing.assert_array_equal(page.blend(state, 1.0), pictures[1])
    gone = ExplainPage(f"127.0.0.1:{free_ports(1)[0]}", protocol, LIMIT_MB)
    assert "did not answer" in gone.explain(str(images["xray"]), "auto")[0]
