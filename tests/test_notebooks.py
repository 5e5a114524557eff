"""Static checks of the teaching notebooks (issues 5 and 27). Executing them is `make test`'s nbmake step.

Each notebook must exist, say its run time in its first cell, carry the outputs of a full run
(committed after `make notebooks`), stay under 3 MB, use the library instead of re-implementing it,
load the shipped checkpoint, end with exercises (each answer checked by a collapsed cell that ran
with the reference answer), a summary and references, and store a static PNG beside every
interactive (plotly or widget) output so it reads without a kernel.
"""
from __future__ import annotations

import ast
import json
import statistics
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = ["01_flow_inversion", "02_channel_partitioning", "03_autoregressive_mixtures",
            "04_guidance_resampling", "05_one_step_distillation", "06_likelihood_maps"]
MAX_BYTES = 3 * 1024 * 1024


def _load(name: str) -> dict:
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.is_file(), f"missing notebook {path}"
    return json.loads(path.read_text())


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _code(nb: dict) -> list[str]:
    return [_source(c) for c in nb["cells"] if c["cell_type"] == "code"]


def test_the_six_notebooks_exist_and_nothing_else_is_numbered():
    found = sorted(p.stem for p in NOTEBOOKS.glob("0*.ipynb"))
    assert found == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_follows_the_standard(name):
    nb = _load(name)
    cells = nb["cells"]
    first = _source(cells[0])
    assert cells[0]["cell_type"] == "markdown" and "Run time" in first, "first cell must state the run time"
    last = "\n".join(_source(c) for c in cells[-2:] if c["cell_type"] == "markdown")
    assert "## Summary" in last and "## References" in last, "must end with a summary and references"
    code = _code(nb)
    n_md = sum(c["cell_type"] == "markdown" for c in cells)
    assert n_md >= 0.8 * len(code), "about one markdown cell per code cell"
    assert statistics.median(len(s.splitlines()) for s in code) <= 15, "median code cell <= 15 lines"
    joined = "\n".join(code)
    assert "import farmer" in joined and '"checkpoints" / "fmnist"' in joined, "load the shipped checkpoint"
    assert sum("assert " in s for s in code) >= 3, "each concept needs a check cell that asserts"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_does_not_reimplement_the_library(name):
    """No class definitions: models, flows, mixtures and samplers come from `farmer`."""
    for src in _code(_load(name)):
        lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        tree = ast.parse("\n".join(lines))
        assert not any(isinstance(node, ast.ClassDef) for node in ast.walk(tree)), src[:200]


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_has_committed_outputs_and_is_small(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"
    nb = _load(name)
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code_cells]
    assert all(isinstance(n, int) for n in counts), "every code cell must have been executed"
    assert counts == sorted(counts) and counts[0] == 1, "outputs must come from one top-to-bottom run"
    outputs = [o for c in code_cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"], "committed outputs contain an error"
    assert any("image/png" in o.get("data", {}) for o in outputs), "figures missing from the outputs"


# A notebook's reading of its own figure, where a number can check it, is checked by an assertion
# in the cell that computes the number: (notebook, what the cell computes, what must be asserted on).
FIGURE_CLAIMS = [
    ("02_channel_partitioning", "channel_experiment(", ['fig7["ratio"]', 'fig7["perturb_informative"]']),
    ("02_channel_partitioning", "np.histogram(vals", ["counts.sum() == vals.size", "rms"]),
    ("04_guidance_resampling", "sample_quality(", ['["class_consistency"]', '["fd"]']),
    ("04_guidance_resampling", "busy = {", ["busy[", 'moved["naive w=4"]']),
    ("04_guidance_resampling", "plain = farmer.sample(", ["max(share.values())"]),
    ("01_flow_inversion", "lin, sph = ", ["lin[4] > max(", "lin[4] < sph[4]"]),
    ("05_one_step_distillation", "distiller = Distiller(", ["losses[-5:].mean() < losses[:5].mean()"]),
    ("05_one_step_distillation", "dq = {", ['["class_consistency"]', '["fd"]']),
    ("06_likelihood_maps", "border, centre = ", ["border[level > 0] > centre[level > 0]"]),
    ("06_likelihood_maps", "bound = {", ["bound[a_] >= bound[b_]"]),
]


def _asserted(src: str) -> str:
    """The expressions of the cell's assert statements, as source text."""
    return "\n".join(ast.unparse(node.test) for node in ast.walk(ast.parse(src)) if isinstance(node, ast.Assert))


@pytest.mark.parametrize("name, computes, checked", FIGURE_CLAIMS)
def test_claims_about_a_figure_are_asserted_where_the_number_is_computed(name, computes, checked):
    cells = [c for c in _load(name)["cells"] if c["cell_type"] == "code" and computes in _source(c)]
    assert cells, f"{name}: no cell computes {computes!r}"
    asserted = _asserted("\n".join(ln for ln in _source(cells[0]).splitlines() if not ln.lstrip().startswith("%")))
    normalised = asserted.replace("'", '"')
    missing = [c for c in checked if c.replace("'", '"') not in normalised]
    assert not missing, f"{name}: the cell computing {computes!r} asserts nothing about {missing}"
    assert not [o for o in cells[0].get("outputs", []) if o.get("output_type") == "error"]
    assert isinstance(cells[0].get("execution_count"), int), "the asserting cell must have been run"


PLOTLY, WIDGET = "application/vnd.plotly.v1+json", "application/vnd.jupyter.widget-view+json"


@pytest.mark.parametrize("name", EXPECTED)
def test_interactive_outputs_have_a_static_image(name):
    """A plotly figure carries an image/png in its own output; a widget has a PNG snapshot in its cell."""
    for cell in _load(name)["cells"]:
        outputs = cell.get("outputs", []) if cell["cell_type"] == "code" else []
        for o in outputs:
            data = o.get("data", {})
            html = "".join(data.get("text/html", ""))
            if PLOTLY in data or "plotly" in html.lower():
                assert "image/png" in data, f"{name}: a plotly output without a static PNG: {_source(cell)[:120]!r}"
            if WIDGET in data:
                assert any("image/png" in p.get("data", {}) for p in outputs), \
                    f"{name}: a widget without a static snapshot: {_source(cell)[:120]!r}"


@pytest.mark.parametrize("name", EXPECTED)
def test_exercises_with_checked_answers(name):
    """2-4 exercises before the summary: an answer cell (None = the reference answer), a collapsed check cell
    that calls check_answer and ran without error ("right: ..."), then a collapsible solution."""
    cells = _load(name)["cells"]
    heads = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and _source(c).startswith("## Exercises")]
    summary = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "## Summary" in _source(c)]
    assert len(heads) == 1 and heads[0] < summary[0], "one Exercises section, before the summary"
    checks = [i for i, c in enumerate(cells) if "solution" in c.get("metadata", {}).get("tags", [])]
    assert 2 <= len(checks) <= 4, f"{name}: {len(checks)} exercises"
    for n, i in enumerate(checks, start=1):
        cell = cells[i]
        assert cell["cell_type"] == "code" and heads[0] < i < summary[0]
        assert cell["metadata"].get("jupyter", {}).get("source_hidden") is True, "the check cell is collapsed"
        assert f"check_answer(answer_{n}," in _source(cell)
        assert f"answer_{n} = None" in _source(cells[i - 1]), "an answer cell, left empty, precedes the check"
        assert cells[i - 2]["cell_type"] == "markdown" and f"**Exercise {n}.**" in _source(cells[i - 2])
        assert cells[i + 1]["cell_type"] == "markdown" and "<details>" in _source(cells[i + 1])
        outs = cell.get("outputs", [])
        assert isinstance(cell.get("execution_count"), int) and not [o for o in outs if o["output_type"] == "error"]
        assert any("right: the reference answer" in "".join(o.get("text", "")) for o in outs), \
            f"{name}: exercise {n}'s reference answer was not confirmed by its check"
