"""The documentation: design citations resolve, the site builds strictly, and a browser reads it.

- Every "DESIGN §n" the project cites (code, app, benchmarks, tests, notebooks, cards, README, docs)
  names a section of docs/design.md, which says that the code cites it that way.
- The site builds with `mkdocs build --strict` (`make docs`; `make test` builds it first, and this
  test reuses that build while it is newer than every source, else builds it again); the notebooks'
  exercise check cells (tagged `solution`) show their output there but not their source.
- Playwright driving Debian's chromium (never a downloaded browser) opens the built site over http
  on 127.0.0.1, follows every link of the navigation, sees a notebook page's figures loaded, and
  finds every argument of `farmer.sample` on the API page.
"""
from __future__ import annotations

import functools
import html
import http.server
import inspect
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import need_or_skip

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
SITE = ROOT / "build" / "site"
CHROMIUM = Path("/usr/bin/chromium")

# "DESIGN §1.5", "DESIGN §1.2–1.3", "DESIGN §1.5, §5", "DESIGN §1.4 and §3", "DESIGN 1.8", "§1.6 of DESIGN"
_NUM = r"\d+(?:\.\d+)?"
CITE_AFTER = re.compile(rf"DESIGN(?:\.md)?\s*§?\s*({_NUM})((?:\s*(?:[–-]|,|and)\s*§?\s*{_NUM}(?![\d.]))*)")
CITE_BEFORE = re.compile(rf"§\s*({_NUM}) of DESIGN")
CITED_IN = ["farmer", "app", "benchmarks", "tests", "notebooks", "checkpoints/fmnist",
            "checkpoints/fmnist-classifier", "docs", "README.md", "Makefile", "mkdocs.yml", "pyproject.toml"]


def design_sections() -> set[str]:
    """Section numbers of docs/design.md: '## 1. The method' -> '1', '### 1.6 Exact likelihood' -> '1.6'."""
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", DESIGN.read_text(), flags=re.M))


def _text(path: Path) -> str:
    if path.suffix == ".ipynb":                        # the cells' sources, not their (image) outputs
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(c["source"]) for c in cells)
    if path.suffix == ".json":                         # "\u00a7" -> "§"
        return json.dumps(json.loads(path.read_text()), ensure_ascii=False)
    return path.read_text(errors="replace")


def citations() -> list[tuple[str, str]]:
    """(file, section) for every DESIGN citation in the project's own files."""
    found = []
    for entry in CITED_IN:
        base = ROOT / entry
        files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file() and
                                                p.suffix in (".py", ".md", ".ipynb", ".json", ".yml", ".toml")]
        for path in files:
            if path.resolve() == DESIGN.resolve() or not path.resolve().is_relative_to(base.resolve()):
                continue                               # the design itself; docs/'s links to other folders
            text = _text(path)
            for m in CITE_AFTER.finditer(text):
                nums = [m.group(1)] + re.findall(_NUM, m.group(2))
                found += [(str(path.relative_to(ROOT)), n) for n in nums]
            found += [(str(path.relative_to(ROOT)), n) for n in CITE_BEFORE.findall(text)]
    return found


def test_the_citation_finder_reads_every_form():
    text = ("(DESIGN §1.7, the paper's §3.5) (DESIGN §1.2–1.3) (DESIGN §1.5, §5) (DESIGN §1.4 and §3) "
            "DESIGN 1.8 (§1.6 of DESIGN) (DESIGN §1.8, TARFlow §2.4)")
    nums = [n for m in CITE_AFTER.finditer(text) for n in [m.group(1)] + re.findall(_NUM, m.group(2))]
    assert nums + CITE_BEFORE.findall(text) == ["1.7", "1.2", "1.3", "1.5", "5", "1.4", "3", "1.8", "1.8", "1.6"]


def test_every_design_citation_names_a_section_of_docs_design_md():
    sections = design_sections()
    assert {"1", "1.1", "1.5", "1.6", "1.8", "2", "3", "4", "5", "6"} <= sections
    cited = citations()
    assert len(cited) >= 40, f"only {len(cited)} DESIGN citations found: the finder is broken"
    missing = sorted({f"{f}: DESIGN §{n}" for f, n in cited if n not in sections})
    assert not missing, "DESIGN citations with no such section in docs/design.md:\n" + "\n".join(missing)


def test_the_design_document_says_how_the_code_cites_it():
    text = DESIGN.read_text()
    assert re.search(r'cites it as "DESIGN §n"', text)
    assert "docs/design.md" in (ROOT / "README.md").read_text()


# ----------------------------------------------------------------------------------------------- the site
def _sources() -> list[Path]:
    globs = ["mkdocs.yml", "docs/*.md", "docs/screenshots/*", "notebooks/*.ipynb", "notebooks/README.md",
             "checkpoints/*/README.md", "checkpoints/fmnist/*.png", "benchmarks/*.png", "farmer/*.py",
             "docs/*.py"]
    return [p for g in globs for p in ROOT.glob(g)]


def built_site() -> Path:
    """build/site, built strictly now unless `make docs` left one newer than every source."""
    need_or_skip(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is not None or _importable("mkdocs"),
                 "the documentation tests need MkDocs: pip install -e '.[docs]' (make install does)")
    index = SITE / "index.html"
    if not index.exists() or index.stat().st_mtime < max(p.stat().st_mtime for p in _sources()):
        run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"], cwd=ROOT,
                             capture_output=True, text=True, timeout=600, env={**_env(), "NO_MKDOCS_2_WARNING": "1"})
        assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    return SITE


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def _env() -> dict[str, str]:
    import os
    return dict(os.environ, OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_the_site_builds_strictly_with_every_page():
    site = built_site()
    for page in ["index.html", "design.html", "app.html", "cli.html", "training.html", "figures.html",
                 "studies.html", "reliability.html", "models.html", "api.html", "notebooks/index.html",
                 "checkpoints/fmnist/index.html"]:
        assert (site / page).exists(), f"the site has no {page}"
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("0*.ipynb"))
    assert len(notebooks) == 6
    for nb in notebooks:
        assert (site / "notebooks" / f"{nb}.html").exists(), f"notebook {nb} is not rendered"
    assert not list(site.rglob("*.safetensors")), "the site must not carry model weights"


@pytest.mark.slow
def test_the_notebooks_solution_cells_show_only_their_output():
    """mkdocs.yml's remove_tag_config: a check cell tagged `solution` holds the exercise's answer, so its
    source is left off the site (its check_answer line is not there) while its output ("right: ...") is."""
    site = built_site()
    for nb in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        page = html.unescape(re.sub(r"<[^>]+>", "", (site / "notebooks" / f"{nb.stem}.html").read_text()))
        cells = [c for c in json.loads(nb.read_text())["cells"] if "solution" in c["metadata"].get("tags", [])]
        assert cells, f"{nb.name} has no check cell tagged solution"
        for cell in cells:
            call = next(ln.strip() for ln in "".join(cell["source"]).splitlines() if "check_answer(" in ln)
            assert call not in page, f"{nb.name}: a solution cell's source is on the site: {call}"
            said = "".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                           for o in cell["outputs"] if o.get("output_type") == "stream")
            assert said.splitlines()[0].strip() in page, f"{nb.name}: a solution cell's output is missing"


@pytest.fixture(scope="module")
def site_url():
    site = built_site()
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page(site_url):
    need_or_skip(CHROMIUM.exists() or shutil.which("chromium") is not None,
                 "the browser test needs Debian's chromium: sudo apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_or_skip(False, "the browser test needs Playwright's Python package: pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
                                    headless=True, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(60_000)
        pg.goto(site_url + "index.html", wait_until="load")
        yield pg
        browser.close()


@pytest.mark.slow
def test_the_navigation_reaches_every_page(page, site_url):
    page.goto(site_url + "index.html", wait_until="load")
    assert "FARMER workbench" in page.title()
    links = page.eval_on_selector_all(
        "nav.md-nav--primary a.md-nav__link[href]", "els => els.map(e => [e.innerText.trim(), e.href])")
    hrefs = sorted({h.split("#")[0] for _, h in links if h.startswith(site_url)})
    assert len(hrefs) >= 18, f"the navigation has only {len(hrefs)} pages: {hrefs}"
    for href in hrefs:
        response = page.goto(href, wait_until="domcontentloaded")
        assert response is not None and response.status == 200, f"{href}: {response and response.status}"
        assert len(page.inner_text("article")) > 200, f"{href} is (nearly) empty"
    # and by clicking, as a reader does: home -> Method and design -> API reference
    page.goto(site_url + "index.html", wait_until="load")
    page.locator("nav.md-nav--primary a.md-nav__link", has_text="Method and design").first.click()
    page.wait_for_url(re.compile(r"design\.html"))
    assert "DESIGN §n" in page.inner_text("article")
    page.locator("nav.md-nav--primary a.md-nav__link", has_text="API reference").first.click()
    page.wait_for_url(re.compile(r"api\.html"))


@pytest.mark.slow
def test_a_notebook_page_shows_its_figures(page, site_url):
    page.goto(site_url + "notebooks/02_channel_partitioning.html", wait_until="load")
    images = page.locator("article img")
    assert images.count() >= 3, f"only {images.count()} images on the notebook page"
    page.wait_for_function("() => Array.from(document.querySelectorAll('article img'))"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    sizes = page.eval_on_selector_all("article img", "els => els.map(i => [i.naturalWidth, i.naturalHeight])")
    assert all(w > 50 and h > 50 for w, h in sizes), sizes
    assert "Fig. 7" in page.inner_text("article")       # the notebook's text came along with its figures
    # its LaTeX typeset by the MathJax the site carries (docs/hooks.py), with no network
    page.wait_for_selector("article .MathJax, article .MathJax_Display", state="attached")


@pytest.mark.slow
def test_the_api_page_lists_every_argument_of_farmer_sample(page, site_url):
    import farmer
    page.goto(site_url + "api.html", wait_until="load")
    heading = page.locator('[id="farmer.sample"]')
    assert heading.count() == 1
    signature = page.locator('[id="farmer.sample"] + .doc-signature').inner_text()
    wanted = list(inspect.signature(farmer.sample).parameters)
    assert len(wanted) >= 20
    missing = [name for name in wanted if not re.search(rf"\b{name}\b", signature)]
    assert not missing, f"farmer.sample's arguments missing from the API page: {missing}"
    # and described one by one: the docstring's "name: meaning" lines as a list (docs/griffe_params.py)
    described = page.eval_on_selector_all('[id="farmer.sample"] ~ .doc-contents li > code:first-child',
                                          "els => els.map(e => e.innerText)")
    assert len(set(described) & set(wanted)) >= 15, described
    assert "Draw images from a FARMER model" in page.inner_text("article")


def test_every_farmer_command_in_the_docs_parses():
    """The `farmer …` (and `torchrun … -m farmer …`) lines of the README and the docs pages are valid
    command lines for today's CLI: a renamed or removed flag fails here, not in a reader's shell."""
    import shlex
    from farmer.cli import build_parser
    parser = build_parser()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "notebooks" / "README.md"]
    commands = []
    for page in pages:
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", page.read_text(), flags=re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.split(" #")[0].strip()
                m = re.match(r"^(?:torchrun .*?-m farmer|farmer|python -m farmer) (.+)$", line)
                if m:
                    commands.append((page.name, m.group(1)))
    assert len(commands) >= 15, commands
    for page, args in commands:
        try:
            parser.parse_args(shlex.split(args))
        except SystemExit:
            pytest.fail(f"{page}: `farmer {args}` is not a valid command line")


def test_the_design_lists_every_module_of_the_library():
    """Design §2 names every file of farmer/: a new module is described where readers look for it."""
    text = DESIGN.read_text()
    layout = text[text.index("## 2. Code layout"):text.index("## 3. Data")]
    missing = [p.name for p in sorted((ROOT / "farmer").glob("*.py"))
               if not p.name.startswith("__") and f"farmer/{p.name}" not in layout]
    assert not missing, f"docs/design.md §2 does not list: {missing}"
