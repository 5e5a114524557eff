"""The app in a real browser: Playwright driving Debian's chromium (headless, never a downloaded one).

One server (`python -m app` as `make app` runs it: the shipped model) for the module, and a second one
for the model switch. Opens the page; on the Sample tab sees an ignored
setting flagged and greyed out, typed out-of-range values refused by name (not clamped) and the toasts
closed by the next success, samples a batch of 16 and sees all 16 in the grid and in every frame of the
progressive view (captions under, not over, the frames), the model named and the complete settings JSON
with its `farmer sample` command; on the Likelihood tab (opening on the shipped model, per-pixel map)
uploads an image and sees the heatmap (hovering shows a value), sees a failed upload clear the old
results, compares A and B (one colour scale per map kind, the difference map below the two sides),
changes A and sees the comparison and A's Classify result cleared, switches the model and sees the map
become per patch; classifies; runs the Channels tab's four cases and checks each shown pixel change and
the summary's settings; interpolates at 16 points with every image whole. Screenshots of each step go to
runs/app-screenshots/ (CI artifacts); the readme-*.png ones are docs/app.md's (copied to docs/screenshots/).
"""
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import need_or_skip
from _app_server import REPO, app_process, shipped_copy, tiny_png

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "runs" / "app-screenshots"
MAX_BATCH = 16                    # this test's own server: a full batch of 16 must be visible


@pytest.fixture(scope="module")
def variant(tmp_path_factory) -> Path:
    """The flagship's weights with the DCT moved to the input (the mixing has no weights): a second model
    whose map is per patch, with no card, so no tab opens on it."""
    return shipped_copy(tmp_path_factory.mktemp("models") / "dct-at-input", {"mixing_position": "input"})


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


def set_number(page, elem_id: str, value: float) -> None:
    """Type `value` into the number box #elem_id, as a user would, and wait until the box holds it."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")
    page.wait_for_function("([s, v]) => { const b = document.querySelector(s); return b !== null && "
                           "b.value !== '' && Number(b.value) === v; }",
                           arg=[f"#{elem_id} input[type=number]", float(value)])


def refused(page, message: str) -> None:
    """Wait for an error toast holding `message`; on a timeout, say which messages were on screen instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    try:
        page.wait_for_function("m => [...document.querySelectorAll('.toast-body.error .toast-message-text')]"
                               ".some(t => t.innerText.includes(m))", arg=message)
    except PlaywrightTimeout:
        shown = page.eval_on_selector_all(".toast-body .toast-message-text", "ts => ts.map(t => t.innerText)")
        page.screenshot(path=str(SHOTS / "refused-timeout.png"), full_page=True)
        raise AssertionError(f"no error toast saying {message!r}; toasts on screen: {shown!r} "
                             f"(page at {SHOTS / 'refused-timeout.png'})") from None


def error_toasts(page) -> int:
    """Error messages on screen (Gradio 6 groups the messages of one title in one toast)."""
    return page.locator(".toast-body.error .toast-message-text").count()


def text(page, selector: str) -> str:
    return page.inner_text(selector).strip()


def plot_data(page, selector: str) -> list[dict]:
    """The traces of the plotly figure inside `selector` (zmin, zmax and z of a heatmap)."""
    return page.evaluate("s => document.querySelector(s + ' .js-plotly-plot')._fullData"   # decoded by plotly
                         ".map(t => ({zmin: t.zmin, zmax: t.zmax, z: Array.from(t.z, r => Array.from(r))}))",
                         selector)


def readme_shot(page, name: str, height: int = 1500, clip_from: str | None = None, clip_to: str | None = None):
    """A screenshot for docs/app.md (runs/app-screenshots/readme-NAME.png, copied to docs/screenshots/): the top
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


def test_sample_refuses_typed_values_out_of_range_by_name(page):
    """Issue 26, point 6: what the number boxes used to clamp silently is refused with the control's
    name and range, the box keeps what was typed, and the next success closes the error toasts."""
    page.screenshot(path=str(SHOTS / "01-start.png"), full_page=True)
    assert "FARMER workbench" in page.content()
    page.get_by_role("tab", name="Sample").click()
    assert not page.is_visible("#sample-seconds")                             # nothing to show before a run
    choose(page, "sample-class", "Trouser")
    for elem_id, typed, message in [
            ("sample-t-sigma", 7, "T_σ (t_sigma) must be a number from 0.05 to 3, got 7"),
            ("sample-batch", 99, f"batch size (batch_size) must be a whole number from 1 to {MAX_BATCH}, got 99"),
            ("sample-w", -1, "w (guidance weight) (cfg_scale) must be a number from 0 to 10, got -1")]:
        before = page.input_value(f"#{elem_id} input")
        set_number(page, elem_id, typed)
        page.click("#sample-button")
        refused(page, message)
        assert float(page.input_value(f"#{elem_id} input")) == typed        # kept as typed, not clamped
        set_number(page, elem_id, before)
    assert error_toasts(page) >= 3
    set_number(page, "sample-batch", 1)
    page.click("#sample-button")
    page.wait_for_function("() => (document.querySelector('#sample-report')?.innerText ?? '').includes('farmer sample')")
    page.wait_for_function("() => document.querySelectorAll('.toast-body.error').length === 0")


def test_sample_flags_ignored_settings_and_shows_every_sample(page):
    from app import render
    page.get_by_role("tab", name="Sample").click()
    assert "fmnist" in text(page, "#sample-model-note")                        # the sample model by default
    # an ignored setting is flagged next to the control: unconditional + resample at w = 4
    set_number(page, "sample-w", 4)
    choose(page, "sample-class", "unconditional")
    page.wait_for_function("() => (document.querySelector('#sample-ignored')?.innerText ?? '').includes('ignored: "
                           "guidance resample, w = 4')")
    flag = page.inner_text("#sample-ignored")
    assert "resample" in flag and "w = 4" in flag and "guidance none" in flag
    assert page.is_disabled("#sample-w input") and page.is_disabled("#sample-s-c input")
    # guidance none with a class: w and the candidates are greyed out, and say so
    choose(page, "sample-class", "Trouser")
    page.click("#sample-guidance input[value='none']")
    page.wait_for_function("() => (document.querySelector('#sample-ignored')?.innerText ?? '').includes('not used')")
    assert page.is_disabled("#sample-w input")
    page.click("#sample-guidance input[value='resample']")
    page.wait_for_function("() => (document.querySelector('#sample-ignored')?.innerText ?? '').trim() === ''")
    assert page.is_enabled("#sample-w input") and page.is_enabled("#sample-s-c input")

    set_number(page, "sample-w", 1)                                          # back to the card's setting
    set_number(page, "sample-batch", MAX_BATCH)
    page.click("#sample-button")
    loaded(page, "#sample-grid img")
    page.wait_for_function("n => (document.querySelector('#sample-report')?.innerText ?? '').includes(n + ' samples')",
                           arg=str(MAX_BATCH))
    report = text(page, "#sample-report")
    assert "Model fmnist" in report and "Stale" not in report
    command = page.inner_text("#sample-report pre").strip()
    assert command.startswith("farmer sample checkpoints/fmnist --labels 1 --repeat 16 --guidance resample")
    page.locator("#sample-progress").scroll_into_view_if_needed()           # thumbnails load lazily
    page.wait_for_function("() => document.querySelectorAll('#sample-progress img').length === 8 && "
                           "[...document.querySelectorAll('#sample-progress img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")      # no blank thumbnail
    assert float(page.input_value("#sample-seconds input")) > 0                # a number, shown after the run
    # the settings JSON holds every setting and the command
    page.get_by_text("settings and guidance counts (JSON)").click()
    page.wait_for_function("() => (document.querySelector('#sample-stats')?.innerText ?? '').includes('command')")
    stats = page.inner_text("#sample-stats")
    for key in ("candidates_cond", "candidates_uncond", "t_pi", "t_sigma", "t_pi_verify", "t_sigma_verify",
                "t_select", "seed", "counts_explained", "picked_uncond", "fmnist"):
        assert key in stats, key
    # all 16 samples: the grid is 16 cells, shown whole (not cropped)
    grid = page.eval_on_selector("#sample-grid img", "i => [i.naturalWidth, i.naturalHeight, "
                                 "getComputedStyle(i).objectFit, i.getBoundingClientRect().width, "
                                 "i.getBoundingClientRect().height]")
    want = render.sample_grid(torch.zeros(MAX_BATCH, 1, 28, 28, dtype=torch.uint8)).shape
    assert (grid[1], grid[0]) == want[:2] and grid[2] in ("contain", "scale-down")
    assert grid[3] / grid[4] == pytest.approx(grid[0] / grid[1], rel=0.02)
    # every frame of the progressive view holds the whole batch, fits its thumbnail, and has its
    # caption under it (not over its bottom row); nothing floats over the first row
    frame = render.image_frame(torch.zeros(MAX_BATCH, 1, 28, 28), MAX_BATCH, pixels=True).shape
    thumbs = page.eval_on_selector_all("#sample-progress img", "l => l.map(i => [i.naturalWidth, i.naturalHeight, "
                                       "getComputedStyle(i).objectFit])")
    assert all((h, w) == frame[:2] and fit == "contain" for w, h, fit in thumbs)
    whole_frames(page, "#sample-progress", 8)
    assert "block 1 of 4 undone = the image" in page.inner_text("#sample-progress .gallery-item:last-child")
    assert "Reading the progressive view" in page.inner_text("#sample-progress-help")
    page.screenshot(path=str(SHOTS / "02-sample.png"), full_page=True)
    readme_shot(page, "sample", 1500)
    set_number(page, "sample-seed", 1)                                        # the grid no longer matches
    page.wait_for_function("() => (document.querySelector('#sample-report')?.innerText ?? '').includes('Stale')")


def whole_frames(page, gallery: str, n: int) -> None:
    """Each of the n images of `gallery` lies inside it, whole: below the floating label and toolbar,
    above its caption, with its caption whole."""
    box = page.locator(gallery).bounding_box()
    label = page.locator(f"{gallery} [data-testid=block-label]").bounding_box()
    items = page.eval_on_selector_all(f"{gallery} .thumbnail-item", """l => l.map(e => {
        const i = e.querySelector('img').getBoundingClientRect();
        const c = e.querySelector('.caption-label');
        const r = c ? c.getBoundingClientRect() : null;
        return [i.top, i.bottom, r ? r.top : null, r ? r.bottom : null,
                c ? c.scrollWidth <= c.clientWidth + 1 && c.scrollHeight <= c.clientHeight + 1 : true]; })""")
    assert len(items) == n                                 # both measured from the viewport's top-left
    for img_top, img_bottom, cap_top, cap_bottom, cap_whole in items:
        assert img_top >= label["y"] + label["height"] - 1                        # the label covers no frame
        assert img_bottom <= box["y"] + box["height"] + 1
        if cap_top is not None:
            assert cap_top >= img_bottom - 1 and cap_whole                          # caption below the image
            assert cap_bottom <= box["y"] + box["height"] + 1


def test_upload_on_the_likelihood_tab_shows_the_heatmap(page, tmp_path):
    png = tiny_png(tmp_path / "upload.png", (64, 48))
    page.get_by_role("tab", name="Likelihood").click()
    note = text(page, "#likelihood-model-note")
    assert "fmnist" in note and "per pixel" in note                            # the shipped model by default
    page.set_input_files("#a-upload input[type=file]", str(png))
    page.wait_for_function("() => document.querySelector('#a-source input[value=\"upload\"]').checked")
    page.click("#score-a")
    page.wait_for_selector("#a-heatmap .js-plotly-plot .hm")                  # the heatmap trace is drawn
    summary = page.inner_text("#a-summary")
    assert "bits/dim" in summary and "Converted" in summary and "64×48" in summary
    assert "Model fmnist" in summary and "Map per pixel" in summary and "OOD" in summary
    assert "**" not in summary and "density can exceed" not in summary       # the note is once, at the top
    loaded(page, "#a-image img")
    drag = page.wait_for_selector("#a-heatmap .nsewdrag")                      # plotly's mouse layer
    drag.scroll_into_view_if_needed()
    box = drag.bounding_box()
    page.mouse.move(box["x"] + 3, box["y"] + 3)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
    page.wait_for_selector("#a-heatmap .hoverlayer .hovertext", timeout=15_000)
    hover = page.text_content("#a-heatmap .hoverlayer")                       # e.g. "row 13, col 13 5.996 bits"
    assert "row" in hover and "bits" in hover
    page.get_by_text("where the bits go").first.click()                        # A's charts
    page.wait_for_selector("#a-terms .js-plotly-plot .subplot.x2y2")             # the prior split's own axis
    assert page.evaluate("() => document.querySelector('#a-terms .js-plotly-plot').data.map(t => t.yaxis)") \
        == ["y", "y2"]
    page.screenshot(path=str(SHOTS / "03-likelihood.png"), full_page=True)


def test_a_failed_upload_clears_the_previous_results(page, tmp_path):
    page.get_by_role("tab", name="Likelihood").click()
    page.click("#score-b")
    page.wait_for_function("() => (document.querySelector('#b-summary')?.innerText ?? '').includes('test image #1')")
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    page.set_input_files("#b-upload input[type=file]", str(bad))
    page.wait_for_function("() => document.querySelector('#b-source input[value=\"upload\"]').checked")
    page.wait_for_function("() => (document.querySelector('#b-summary')?.innerText ?? '').trim() === ''")   # stale: gone
    page.click("#score-b")
    page.wait_for_selector("text=not an image")                               # the error toast
    # the toast can arrive before the status tracker ("0.1s") leaves the summary: wait for it to go
    page.wait_for_function("() => (document.querySelector('#b-summary')?.innerText ?? 'x').trim() === ''")
    assert text(page, "#b-summary") == "" and text(page, "#compare-summary") == ""
    page.click("#b-source input[value='test image']")                          # B: test image 1 again


def test_compare_shares_scales_below_the_two_sides(page):
    page.get_by_role("tab", name="Likelihood").click()
    page.click("#a-source input[value='test image']")                          # A: test image 0, B: 1
    page.click("#compare")
    page.wait_for_function("() => (document.querySelector('#compare-summary')?.innerText ?? '').includes('B − A')")
    page.wait_for_selector("#compare-diff .js-plotly-plot .hm")
    page.wait_for_function("() => (document.querySelector('#b-summary')?.innerText ?? '').includes('bits/dim')")
    a, b = (number(r"([0-9.]+) bits/dim", page.inner_text(f"#{k}-summary")) for k in ("a", "b"))
    line = page.inner_text("#compare-summary")
    assert number(r"B - A = ([+\-0-9.]+) bits/dim", line.replace("−", "-")) == pytest.approx(b - a, abs=2e-3)
    assert "Model fmnist" in line and "test image #0" in line and "test image #1" in line
    for kind in ("heatmap", "tokens"):                                         # one scale per kind of map
        (ta,), (tb,) = plot_data(page, f"#a-{kind}"), plot_data(page, f"#b-{kind}")
        assert (ta["zmin"], ta["zmax"]) == (tb["zmin"], tb["zmax"])
        assert ta["zmin"] <= min(np.min(ta["z"]), np.min(tb["z"])) + 1e-9
        assert ta["zmax"] >= max(np.max(ta["z"]), np.max(tb["z"])) - 1e-9
    (diff,) = plot_data(page, "#compare-diff")
    (pa,), (pb,) = plot_data(page, "#a-heatmap"), plot_data(page, "#b-heatmap")
    assert np.allclose(diff["z"], np.asarray(pb["z"]) - np.asarray(pa["z"]), atol=1e-6)
    # top-down as used: pick and score, the two sides' results, compare, classify
    y = lambda sel: page.locator(sel).bounding_box()["y"]                      # noqa: E731
    assert y("#score-a") < y("#a-summary") < y("#compare") < y("#compare-summary") < y("#classify-a")
    assert page.inner_text("body").count("a density can exceed 1") == 1       # why bits can be negative, once
    page.get_by_text("where the bits go").first.click()                        # A's charts folded again
    readme_shot(page, "likelihood-compare", clip_from="#score-a", clip_to="#compare-diff")
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
    assert "Model fmnist" in summary
    page.locator("#b-classify").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "03b-classify.png"), full_page=True)


def test_changing_a_after_a_compare_leaves_nothing_about_the_old_a(page):
    """Issue 26's 'Done when': re-scoring A after a compare leaves no B − A figure or Classify result
    that refers to the old A."""
    page.get_by_role("tab", name="Likelihood").click()
    if not text(page, "#compare-summary"):
        page.click("#compare")
        page.wait_for_function("() => (document.querySelector('#compare-summary')?.innerText ?? '').includes('B − A')")
    if "p(y|x)" not in text(page, "#a-classify-summary"):
        page.click("#classify-a")
        page.wait_for_function("() => (document.querySelector('#a-classify-summary')?.innerText ?? '').includes('p(y|x)')")
    b_before = text(page, "#b-summary")
    set_number(page, "a-test-index", 43)
    for gone in ("#compare-summary", "#a-summary", "#a-classify-summary"):     # cleared the moment A changed
        page.wait_for_function("s => document.querySelector(s).innerText.trim() === ''", arg=gone)
    assert page.locator("#compare-diff .js-plotly-plot .hm").count() == 0
    assert page.locator("#a-classify .js-plotly-plot .barlayer .point").count() == 0
    assert text(page, "#b-summary") == b_before and "test image #1" in b_before   # B untouched
    page.click("#score-a")
    page.wait_for_function("() => (document.querySelector('#a-summary')?.innerText ?? '').includes('test image #43')")
    assert text(page, "#compare-summary") == "" and text(page, "#a-classify-summary") == ""
    assert page.locator("#compare-diff .js-plotly-plot .hm").count() == 0
    set_number(page, "a-test-index", 0)


def test_the_model_switch_changes_the_map_statement_and_clears_the_results(page, variant):
    """A second server with two models, the shipped one and `variant` (per-patch map, no card), in a
    second tab of the module's browser."""
    with app_process(Path(tempfile.mkdtemp(prefix="farmer-browser-")), "--checkpoint",
                     str(REPO / "checkpoints" / "fmnist"), "--checkpoint", str(variant)) as url:
        two = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
        two.set_default_timeout(90_000)
        try:
            two.goto(url, wait_until="networkidle")
            switch_models(two)
        finally:
            two.close()


def switch_models(page):
    page.get_by_role("tab", name="Likelihood").click()
    page.click("#score-a")
    page.wait_for_function("() => (document.querySelector('#a-summary')?.innerText ?? '').includes('Model fmnist (')")
    choose(page, "likelihood-model", "dct-at-input")
    page.wait_for_function("() => (document.querySelector('#likelihood-model-note')?.innerText ?? '').includes('per patch')")
    page.wait_for_function("() => (document.querySelector('#a-summary')?.innerText ?? '').trim() === ''")
    page.click("#score-a")
    page.wait_for_function("() => (document.querySelector('#a-summary')?.innerText ?? '').includes('Model dct-at-input')")
    summary = text(page, "#a-summary")
    assert "Map per patch" in summary and "spread over patches" in page.inner_text("#a-heatmap")
    choose(page, "likelihood-model", "fmnist")
    page.wait_for_function("() => (document.querySelector('#likelihood-model-note')?.innerText ?? '').includes('per pixel')")


CASES = [("keep", "redraw"), ("perturb", "keep"), ("perturb", "redraw"), ("keep", "keep")]   # (Z^I, Z^R)


def test_channels_tab_runs_the_four_cases(page):
    page.get_by_role("tab", name="Channels").click()
    set_number(page, "c-draws", 16)                                            # refused, not clamped to 8
    page.click("#channels-button")
    refused(page, "draws must be a whole number from 1 to 8, got 16")
    set_number(page, "c-draws", 4)
    shown = {}
    for zi, zr in CASES:
        page.click(f"#c-zi-mode input[value='{zi}']")
        page.click(f"#c-zr-mode input[value='{zr}']")
        assert page.is_disabled("#c-zi-noise input") == (zi == "keep")          # unused: greyed out
        want = (f"Z^I {'kept' if zi == 'keep' else '+ 1·std·ε'}, Z^R {'kept' if zr == 'keep' else 'redrawn ×1'}")
        page.click("#channels-button")
        page.wait_for_function("w => (document.querySelector('#channels-summary')?.innerText ?? '').includes('Shown: ' + w)"
                               " && !(document.querySelector('#channels-summary')?.innerText ?? '').includes('Stale')",
                               arg=want)
        n = 2 if (zi, zr) == ("keep", "keep") else 2 + 4                     # input, reconstruction, 4 draws
        page.wait_for_function("n => { const l = [...document.querySelectorAll('#channels-gallery img')]; "
                               "return l.length === n && l.every(i => i.complete && i.naturalWidth > 0); }", arg=n)
        whole_frames(page, "#channels-gallery", n)                             # the third row too
        summary = page.inner_text("#channels-summary")
        shown[(zi, zr)] = number(r"mean \|pixel change\| ([0-9.]+) grey levels", summary)
        row = summary.splitlines()                                            # the four-case table agrees
        assert any("◀ shown" in ln and f"{shown[(zi, zr)]:.1f}" in ln for ln in row)
        assert "In this model Z^I carries the structure" in summary and "Model fmnist" in summary
        case = summary.split("Shown case")[1].split("\n")[0]                  # the settings in use, only
        assert ("perturbed" in case) == (zi == "perturb") and ("redrawn" in case) == (zr == "redraw")
        if (zi, zr) == ("keep", "redraw"):
            page.screenshot(path=str(SHOTS / "04-channels.png"), full_page=True)
            readme_shot(page, "channels", 1400)
    assert shown[("keep", "keep")] == 0.0                                      # the reconstruction itself
    assert 0 < shown[("keep", "redraw")] < shown[("perturb", "keep")]          # Z^I holds the structure
    assert shown[("perturb", "redraw")] > shown[("keep", "redraw")]


def test_interpolate_tab_walks_between_two_images(page):
    page.get_by_role("tab", name="Interpolate").click()
    set_number(page, "interp-steps", 2)                                       # refused, not clamped to 3
    page.click("#interp-button")
    refused(page, "points on the path (steps) must be a whole number from 3 to 16, got 2")
    set_number(page, "interp-steps", 16)
    page.click("#ib-source input[value='model sample']")                      # B: a sample, A: test image 0
    page.click("#interp-button")
    loaded(page, "#interp-linear img")
    loaded(page, "#interp-spherical img")
    page.wait_for_function("() => document.querySelectorAll('#interp-bpd .js-plotly-plot .scatterlayer .trace')"
                           ".length === 2")                                     # linear and spherical curves
    summary = page.inner_text("#interp-summary")
    assert "bits/dim" in summary and "test image #0" in summary and "model sample" in summary
    assert "Model fmnist" in summary
    # 16 points: two rows of 8, each image at least 60 px high, nothing laid over the strip
    for strip in ("#interp-linear", "#interp-spherical"):
        w, h, bw, bh = page.eval_on_selector(f"{strip} img", "i => [i.naturalWidth, i.naturalHeight, "
                                             "i.getBoundingClientRect().width, i.getBoundingClientRect().height]")
        assert w / h == pytest.approx((8 * 30 + 2) / (2 * 30 + 2), rel=0.01) and bh / 2 >= 60
        assert bw / bh == pytest.approx(w / h, rel=0.03)                       # not squeezed
        assert page.locator(f"{strip} [data-testid=block-label]:visible").count() == 0
        assert page.locator(f"{strip} .icon-button:visible").count() == 0
    page.screenshot(path=str(SHOTS / "05-interpolate.png"), full_page=True)
