"""The app in a real browser: Playwright driving Debian's chromium (headless, never a downloaded one).

Opens the page, samples and sees the image, uploads an image on the Likelihood tab and sees the
heatmap (hovering shows a value), classifies the upload and a test image (p(y|x) bars), decodes on
the Channels tab, interpolates between two images on the Interpolate tab; screenshots of each step
go to runs/app-screenshots/ (kept as CI artifacts).
"""
import shutil
from pathlib import Path

import pytest

from conftest import need_or_skip
from _app_server import REPO, shared_app, tiny_png

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "runs" / "app-screenshots"


@pytest.fixture(scope="module")
def page():
    need_or_skip(CHROMIUM.exists() or shutil.which("chromium") is not None,
                 "the browser test needs Debian's chromium: sudo apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_or_skip(False, "the browser test needs Playwright's Python package: pip install -e '.[test]'")
    SHOTS.mkdir(parents=True, exist_ok=True)
    url = shared_app()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
                                    headless=True, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(90_000)
        pg.goto(url, wait_until="networkidle")
        yield pg
        browser.close()


def loaded(page, selector: str) -> None:
    """Wait until `selector` is an <img> whose picture has actually arrived."""
    page.wait_for_function("s => { const i = document.querySelector(s); "
                           "return i !== null && i.complete && i.naturalWidth > 0; }", arg=selector)


def test_sample_shows_an_image(page):
    page.screenshot(path=str(SHOTS / "01-start.png"), full_page=True)
    assert "FARMER workbench" in page.content()
    page.get_by_role("tab", name="Sample").click()
    page.click("#sample-button")
    loaded(page, "#sample-grid img")
    page.wait_for_selector("#sample-progress img")                             # the progressive view too
    assert float(page.input_value("#sample-seconds input")) > 0
    page.screenshot(path=str(SHOTS / "02-sample.png"), full_page=True)


def test_upload_on_the_likelihood_tab_shows_the_heatmap(page, tmp_path):
    png = tiny_png(tmp_path / "upload.png", (64, 48))
    page.get_by_role("tab", name="Likelihood").click()
    page.set_input_files("#a-upload input[type=file]", str(png))
    page.wait_for_function("() => document.querySelector('#a-source input[value=\"upload\"]').checked")
    page.click("#score-a")
    page.wait_for_selector("#a-heatmap .js-plotly-plot .hm")                  # the heatmap trace is drawn
    summary = page.inner_text("#a-summary")
    assert "bits/dim" in summary and "Converted" in summary and "64×48" in summary
    loaded(page, "#a-image img")
    drag = page.wait_for_selector("#a-heatmap .nsewdrag")                      # plotly's mouse layer
    drag.scroll_into_view_if_needed()
    box = drag.bounding_box()
    page.mouse.move(box["x"] + 3, box["y"] + 3)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
    page.wait_for_selector("#a-heatmap .hoverlayer .hovertext", timeout=15_000)
    hover = page.text_content("#a-heatmap .hoverlayer")                       # e.g. "row 13, col 13 5.996 bits"
    assert "row" in hover and "bits" in hover
    page.screenshot(path=str(SHOTS / "03-likelihood.png"), full_page=True)


def test_classify_panel_shows_p_y_given_x_as_bars(page):
    """Classify A (the upload of the previous test, or whatever A holds) and B (a test image by default)."""
    page.get_by_role("tab", name="Likelihood").click()
    for key in ("a", "b"):
        page.click(f"#classify-{key}")
        page.wait_for_function("k => document.querySelectorAll(`#${k}-classify .js-plotly-plot .barlayer "
                               ".point`).length === 10", arg=key)               # one bar per class
        page.wait_for_function("k => document.querySelector(`#${k}-classify-summary`).innerText"
                               ".includes('p(y|x)')", arg=key)
    summary = page.inner_text("#b-classify-summary")
    assert "test image #1" in summary and ("right" in summary or "wrong" in summary)
    page.locator("#b-classify").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "03b-classify.png"), full_page=True)


def test_channels_tab_decodes(page):
    page.get_by_role("tab", name="Channels").click()
    page.click("#c-source input[value='model sample']")
    page.click("#channels-button")
    loaded(page, "#channels-gallery img")
    page.screenshot(path=str(SHOTS / "04-channels.png"), full_page=True)


def test_interpolate_tab_walks_between_two_images(page):
    page.get_by_role("tab", name="Interpolate").click()
    page.click("#ib-source input[value='model sample']")                      # B: a sample, A: test image 0
    page.click("#interp-button")
    loaded(page, "#interp-linear img")
    loaded(page, "#interp-spherical img")
    page.wait_for_function("() => document.querySelectorAll('#interp-bpd .js-plotly-plot .scatterlayer .trace')"
                           ".length === 2")                                     # linear and spherical curves
    summary = page.inner_text("#interp-summary")
    assert "bits/dim" in summary and "test image #0" in summary and "model sample" in summary
    page.screenshot(path=str(SHOTS / "05-interpolate.png"), full_page=True)
