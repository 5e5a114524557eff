"""The app in a real browser: Playwright driving Debian's chromium (headless, never a downloaded one).

Opens the page; on the Sample tab sees an ignored setting flagged and greyed out, samples a batch of 16
and sees all 16 in the grid and in every frame of the progressive view (captions whole); on the
Likelihood tab uploads an image and sees the heatmap (hovering shows a value), sees a failed upload clear
the old summary, compares A and B (the B − A line at the top, one colour scale per map kind, the
difference map); classifies; runs the Channels tab's four cases (keep/redraw Z^R × keep/perturb Z^I) and
checks each shown pixel change; interpolates. Screenshots of each step go to runs/app-screenshots/ (CI
artifacts); the readme-*.png ones are the README's (docs/screenshots/, see README "The app").
"""
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import need_or_skip
from _app_server import REPO, app_process, tiny_png

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "runs" / "app-screenshots"
MAX_BATCH = 16                    # this test's own server: a full batch of 16 must be visible


@pytest.fixture(scope="module")
def page():
    need_or_skip(CHROMIUM.exists() or shutil.which("chromium") is not None,
                 "the browser test needs Debian's chromium: sudo apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_or_skip(False, "the browser test needs Playwright's Python package: pip install -e '.[test]'")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with app_process(Path(tempfile.mkdtemp(prefix="farmer-browser-")), "--max-batch", str(MAX_BATCH)) as url, \
            sync_playwright() as p:
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


def choose(page, elem_id: str, option: str) -> None:
    """Pick `option` in the Gradio dropdown #elem_id."""
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def set_slider(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def plot_data(page, selector: str) -> list[dict]:
    """The traces of the plotly figure inside `selector` (zmin, zmax and z of a heatmap)."""
    return page.evaluate("s => document.querySelector(s + ' .js-plotly-plot')._fullData"   # decoded by plotly
                         ".map(t => ({zmin: t.zmin, zmax: t.zmax, z: Array.from(t.z, r => Array.from(r))}))",
                         selector)


def readme_shot(page, name: str, height: int = 1500, clip_from: str | None = None, clip_to: str | None = None):
    """A README screenshot (runs/app-screenshots/readme-NAME.png, copied to docs/screenshots/): the top
    `height` px of the page, or the full-page strip from `clip_from`'s top to the lowest bottom of the
    elements `clip_to` selects; notification toasts hidden."""
    hide = page.add_style_tag(content=".toast-wrap { display: none !important; }")
    path = str(SHOTS / f"readme-{name}.png")
    if clip_from:
        page.evaluate("() => window.scrollTo(0, 0)")
        top = page.locator(clip_from).bounding_box()["y"] - 12
        bottom = max(b["y"] + b["height"] + 12 for b in (e.bounding_box() for e in page.locator(clip_to).all()))
        page.screenshot(path=path, full_page=True, clip=dict(x=0, y=top, width=1400, height=bottom - top))
    else:
        page.set_viewport_size({"width": 1400, "height": height})
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=path)
        page.set_viewport_size({"width": 1400, "height": 1000})
    hide.evaluate("el => el.remove()")                                        # errors show again


def number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in {text!r}"
    return float(m.group(1))


def test_sample_flags_ignored_settings_and_shows_every_sample(page):
    from app import render
    page.screenshot(path=str(SHOTS / "01-start.png"), full_page=True)
    assert "FARMER workbench" in page.content()
    page.get_by_role("tab", name="Sample").click()
    assert page.input_value("#sample-seconds textarea, #sample-seconds input") == ""    # empty before a run
    # an ignored setting is flagged next to the control: unconditional + resample at w = 4
    choose(page, "sample-class", "unconditional")
    set_slider(page, "sample-w", 4)
    page.wait_for_function("() => document.querySelector('#sample-ignored').innerText.includes('ignored: "
                           "guidance resample, w = 4')")
    flag = page.inner_text("#sample-ignored")
    assert "resample" in flag and "w = 4" in flag and "guidance none" in flag
    assert page.is_disabled("#sample-w input[type=range]") and page.is_disabled("#sample-s-c input[type=range]")
    # guidance none with a class: w and the candidates are greyed out, and say so
    choose(page, "sample-class", "Trouser")
    page.click("#sample-guidance input[value='none']")
    page.wait_for_function("() => document.querySelector('#sample-ignored').innerText.includes('not used')")
    assert page.is_disabled("#sample-w input[type=range]")
    page.click("#sample-guidance input[value='resample']")
    page.wait_for_function("() => document.querySelector('#sample-ignored').innerText.trim() === ''")
    assert page.is_enabled("#sample-w input[type=range]") and page.is_enabled("#sample-s-c input[type=range]")

    set_slider(page, "sample-w", 1)                                         # back to the card's setting
    set_slider(page, "sample-batch", MAX_BATCH)
    page.click("#sample-button")
    loaded(page, "#sample-grid img")
    page.locator("#sample-progress").scroll_into_view_if_needed()           # thumbnails load lazily
    page.wait_for_function("() => document.querySelectorAll('#sample-progress img').length === 8 && "
                           "[...document.querySelectorAll('#sample-progress img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")      # no blank thumbnail
    assert float(page.input_value("#sample-seconds textarea, #sample-seconds input")) > 0
    # all 16 samples: the grid is 16 cells, shown whole (not cropped)
    grid = page.eval_on_selector("#sample-grid img", "i => [i.naturalWidth, i.naturalHeight, "
                                 "getComputedStyle(i).objectFit, i.getBoundingClientRect().width, "
                                 "i.getBoundingClientRect().height]")
    want = render.sample_grid(torch.zeros(MAX_BATCH, 1, 28, 28, dtype=torch.uint8)).shape
    assert (grid[1], grid[0]) == want[:2] and grid[2] in ("contain", "scale-down")
    assert grid[3] / grid[4] == pytest.approx(grid[0] / grid[1], rel=0.02)
    # every frame of the progressive view holds the whole batch, fits its thumbnail, and the
    # gallery shows both rows with whole captions
    frame = render.image_frame(torch.zeros(MAX_BATCH, 1, 28, 28), MAX_BATCH, pixels=True).shape
    thumbs = page.eval_on_selector_all("#sample-progress img", "l => l.map(i => [i.naturalWidth, i.naturalHeight, "
                                       "getComputedStyle(i).objectFit])")
    assert all((h, w) == frame[:2] and fit == "contain" for w, h, fit in thumbs)
    gallery = page.locator("#sample-progress").bounding_box()
    for box in page.locator("#sample-progress img").all():
        b = box.bounding_box()
        assert b["y"] >= gallery["y"] - 1 and b["y"] + b["height"] <= gallery["y"] + gallery["height"] + 1
    captions = page.eval_on_selector_all("#sample-progress .caption-label",
                                         "l => l.map(c => [c.innerText, c.scrollWidth <= c.clientWidth + 1, "
                                         "c.scrollHeight <= c.clientHeight + 1])")
    assert len(captions) == 8 and all(w and h for _, w, h in captions), captions
    assert "block 1 of 4 undone = the image" in captions[-1][0]
    assert "Reading the progressive view" in page.inner_text("#sample-progress-help")
    page.screenshot(path=str(SHOTS / "02-sample.png"), full_page=True)
    readme_shot(page, "sample", 1500)


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
    page.wait_for_selector("#a-terms .js-plotly-plot .subplot.x2y2")             # the prior split's own axis
    assert page.evaluate("() => document.querySelector('#a-terms .js-plotly-plot').data.map(t => t.yaxis)") \
        == ["y", "y2"]
    page.screenshot(path=str(SHOTS / "03-likelihood.png"), full_page=True)


def test_a_failed_upload_clears_the_previous_summary(page, tmp_path):
    page.get_by_role("tab", name="Likelihood").click()
    page.click("#score-b")
    page.wait_for_function("() => document.querySelector('#b-summary').innerText.includes('test image #1')")
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    page.set_input_files("#b-upload input[type=file]", str(bad))
    page.wait_for_function("() => document.querySelector('#b-source input[value=\"upload\"]').checked")
    page.click("#score-b")
    page.wait_for_selector("text=not an image")                               # the error toast
    page.wait_for_function("() => document.querySelector('#b-summary').innerText.trim() === ''")
    page.click("#b-source input[value='test image']")                          # B: test image 1 again


def test_compare_shares_scales_and_shows_the_difference_first(page):
    page.get_by_role("tab", name="Likelihood").click()
    page.click("#a-source input[value='test image']")                          # A: test image 0, B: 1
    page.click("#compare")
    page.wait_for_function("() => document.querySelector('#compare-summary').innerText.includes('B − A')")
    page.wait_for_selector("#compare-diff .js-plotly-plot .hm")
    page.wait_for_function("() => document.querySelector('#b-summary').innerText.includes('bits/dim')")
    a, b = (number(r"([0-9.]+) bits/dim", page.inner_text(f"#{k}-summary")) for k in ("a", "b"))
    line = page.inner_text("#compare-summary")
    assert number(r"B - A = ([+\-0-9.]+) bits/dim", line.replace("−", "-")) == pytest.approx(b - a, abs=2e-3)
    for kind in ("heatmap", "tokens"):                                         # one scale per kind of map
        (ta,), (tb,) = plot_data(page, f"#a-{kind}"), plot_data(page, f"#b-{kind}")
        assert (ta["zmin"], ta["zmax"]) == (tb["zmin"], tb["zmax"])
        assert ta["zmin"] <= min(np.min(ta["z"]), np.min(tb["z"])) + 1e-9
        assert ta["zmax"] >= max(np.max(ta["z"]), np.max(tb["z"])) - 1e-9
    (diff,) = plot_data(page, "#compare-diff")
    (pa,), (pb,) = plot_data(page, "#a-heatmap"), plot_data(page, "#b-heatmap")
    assert np.allclose(diff["z"], np.asarray(pb["z"]) - np.asarray(pa["z"]), atol=1e-6)
    top = page.locator("#compare-summary").bounding_box()["y"]                 # near the top of the tab
    assert top < page.locator("#a-summary").bounding_box()["y"] and top < 600
    assert "a density can exceed 1" in page.inner_text("body")                # why bits can be negative
    readme_shot(page, "likelihood-compare", clip_from="#compare", clip_to="#a-tokens, #b-tokens")
    page.screenshot(path=str(SHOTS / "03c-compare.png"), full_page=True)


def test_classify_panel_shows_p_y_given_x_as_bars(page):
    """Classify A and B (test images 0 and 1 by default)."""
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


CASES = [("keep", "redraw"), ("perturb", "keep"), ("perturb", "redraw"), ("keep", "keep")]   # (Z^I, Z^R)


def test_channels_tab_runs_the_four_cases(page):
    page.get_by_role("tab", name="Channels").click()
    shown = {}
    for zi, zr in CASES:
        page.click(f"#c-zi-mode input[value='{zi}']")
        page.click(f"#c-zr-mode input[value='{zr}']")
        assert page.is_disabled("#c-zi-noise input[type=range]") == (zi == "keep")   # unused: greyed out
        want = (f"Z^I {'kept' if zi == 'keep' else '+ 1·std·ε'}, Z^R {'kept' if zr == 'keep' else 'redrawn ×1'}")
        page.click("#channels-button")
        page.wait_for_function("w => document.querySelector('#channels-summary').innerText.includes('Shown: ' + w)",
                               arg=want)
        n = 2 if (zi, zr) == ("keep", "keep") else 2 + 4                     # input, reconstruction, 4 draws
        page.wait_for_function("n => { const l = [...document.querySelectorAll('#channels-gallery img')]; "
                               "return l.length === n && l.every(i => i.complete && i.naturalWidth > 0); }", arg=n)
        gallery = page.locator("#channels-gallery").bounding_box()            # every draw visible, none hidden
        for img in page.locator("#channels-gallery img").all():
            b = img.bounding_box()
            assert b["y"] + b["height"] <= gallery["y"] + gallery["height"] + 1
        text = page.inner_text("#channels-summary")
        shown[(zi, zr)] = number(r"mean \|pixel change\| ([0-9.]+) grey levels", text)
        row = text.splitlines()                                               # the four-case table agrees
        assert any("◀ shown" in ln and f"{shown[(zi, zr)]:.1f}" in ln for ln in row)
        assert "In this model Z^I carries the structure" in text
        if (zi, zr) == ("keep", "redraw"):
            page.screenshot(path=str(SHOTS / "04-channels.png"), full_page=True)
            readme_shot(page, "channels", 1400)
    assert shown[("keep", "keep")] == 0.0                                      # the reconstruction itself
    assert 0 < shown[("keep", "redraw")] < shown[("perturb", "keep")]          # Z^I holds the structure
    assert shown[("perturb", "redraw")] > shown[("keep", "redraw")]


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
