"""One source for the shipped model's figures: its card.json.

- The README's and docs/models.md's figure table is what docs/card_table.py makes of the cards.
- Nowhere in the README, the docs pages, the notebooks' README or the cards' READMEs does a statement
  about a shipped model give it a figure that its card does not hold.

A "statement" is a sentence, a list item or a table row (with its table's header). It is about a
shipped model when it names it: `checkpoints/fmnist`, "the flagship model" or "the shipped model".
Every decimal number in it (bits/dim, percentages, FD, ratios, seconds, settings) must then round from
a number in its card at the precision written, e.g. 3.222 from 3.2222197…, 95.6% from
0.95609…. Left out, as figures of something else: code spans, bounds and targets (≤ 3.60, ≥ 90%),
and statements about another measurement of the model — another training step ("at step 9,500"),
another sample count ("1,000 samples"), another test subset ("the first 2,000 test images"), pairs of
images (interpolation) — or
about a version that is marked "since replaced" or "superseded".
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import card_table  # noqa: E402  (docs/card_table.py)

MODEL = card_table.MODEL
NAMES = {MODEL: [r"checkpoints/fmnist(?![-\w])", r"(?i)\bflagship model\b", r"(?i)\bshipped model\b"]}
HISTORICAL = re.compile(r"(?i)since replaced|superseded|earlier version")
NUMBER = re.compile(r"(?<![\w.])[−-]?\d+\.\d+(?:e[−-]?\d+)?")


def pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "notebooks" / "README.md",
            *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "checkpoints").glob("*/README.md"))]


def _leaves(obj) -> list[float]:
    if isinstance(obj, bool) or obj is None:
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _leaves(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in _leaves(x)]
    return []


def card_numbers(folder: str) -> dict:
    card = json.loads((ROOT / folder / "card.json").read_text())
    values = _leaves(card)
    step = card.get("step", card.get("model", {}).get("step"))
    # what a card's figures are measured on: 10,000 samples; all, the first 1,000 or 100 test images
    return {"values": values, "step": step, "samples": {10_000}, "images": {10_000, 1_000, 100}}


def _as_int(text: str) -> int:
    return int(text.replace(",", ""))


def _other_measurement(statement: str, cards: list[dict]) -> bool:
    if HISTORICAL.search(statement):
        return True
    steps = {c["step"] for c in cards}
    for m in re.finditer(r"(?i)\bsteps? (\d[\d,]*)", statement):
        if _as_int(m.group(1)) not in steps and _as_int(m.group(1)) >= 100:
            return True
    if re.search(r"(?i)\b\d[\d,]* (?:random )?(?:test )?pairs\b", statement):
        return True                                    # interpolation between pairs: no card figure
    for kind, pattern in (("samples", r"(\d[\d,]*) samples"), ("images", r"(\d[\d,]*) test images")):
        sizes = set().union(*(c[kind] for c in cards))
        for m in re.finditer(pattern, statement):
            if _as_int(m.group(1)) not in sizes:
                return True
    return False


def _clean(statement: str) -> str:
    s = re.sub(r"`[^`]*`", " ", statement)                         # code spans: commands and settings
    s = re.sub(r"\]\([^)]*\)", "]", s)                              # link targets
    s = re.sub(r"[≤≥<>]\s*[−-]?\d+(?:\.\d+)?%?", " ", s)            # bounds and targets
    s = re.sub(r"(?i)arxiv:? ?\d+\.\d+", " ", s)                    # paper ids
    s = re.sub(r"(?i)\b(?:Eq|Table|Fig|Algorithm|App|§)\.? ?\d+(?:\.\d+)*", " ", s)   # references
    return s


def _matches(stated: str, values: list[float]) -> bool:
    stated = stated.replace("−", "-")
    x = float(stated)
    mantissa, _, exponent = stated.partition("e")
    decimals = len(mantissa.split(".")[1])
    tol = 0.5 * 10 ** (int(exponent or 0) - decimals) + 1e-12
    for v in values:
        for c in (v, 100 * v, v / 1e6):
            if abs(c - x) <= tol or abs(abs(c) - abs(x)) <= tol:
                return True
    return False


def statements(text: str) -> list[str]:
    """Sentences, list items and table rows (each row with its header) of a markdown text, code blocks left out."""
    text = re.sub(r"```.*?```", "\n\n", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        rows = [ln for ln in lines if ln.lstrip().startswith("|")]
        if rows and len(rows) == len(lines):
            header = rows[0]
            out += [header] + [f"{header} {row}" for row in rows[2:]]
            continue
        items: list[str] = []
        for ln in lines:
            if re.match(r"^\s*(?:[-*]|\d+\.)\s", ln) or not items:
                items.append(ln.strip())
            else:
                items[-1] += " " + ln.strip()
        for item in items:
            out += re.split(r"(?<=[.!?])\s+(?=[A-Z*(])", item)
    return out


def wrong_figures(text: str, cards: dict[str, dict]) -> list[tuple[str, str]]:
    """(number, statement) for every number in a statement about a shipped model that its card lacks."""
    bad = []
    for st in statements(text):
        named = [m for m, pats in NAMES.items() if any(re.search(p, st) for p in pats)]
        if not named:
            continue
        about = [cards[m] for m in named]
        if _other_measurement(st, about):
            continue
        values = [v for c in about for v in c["values"]]
        for num in NUMBER.findall(_clean(st)):
            if not _matches(num, values):
                bad.append((num, st))
    return bad


CARDS = {m: card_numbers(m) for m in NAMES}


def test_the_figure_table_is_generated_from_the_cards():
    for target in card_table.TARGETS:
        text = (ROOT / target).read_text()
        assert card_table.current_block(text) == card_table.block(), (
            f"{target}: the card table differs from the cards; run `python docs/card_table.py --write`")
    assert card_table.current_block((ROOT / "README.md").read_text()).count("\n") >= 8


def test_no_page_gives_a_shipped_model_a_figure_its_card_does_not_hold():
    problems = []
    for page in pages():
        for num, st in wrong_figures(page.read_text(), CARDS):
            problems.append(f"{page.relative_to(ROOT)}: {num} in: {st[:200]}")
    assert not problems, "figures that differ from the cards:\n" + "\n".join(problems)


def absent(x: float, decimals: int) -> str:
    """A figure near x, written with `decimals` decimals, that no number in the card rounds to."""
    values = CARDS[MODEL]["values"]
    for k in range(1, 200):
        text = f"{x + 0.37 * k:.{decimals}f}"
        if not _matches(text, values):
            return text
    raise AssertionError("every nearby figure is in the card")


def test_the_check_finds_a_wrong_figure_and_passes_the_right_ones():
    c = card_table.card()
    bpd, k8, null = (c[k]["bpd"] for k in ("bpd_test_k1", "bpd_test_k8", "bpd_test_null_k1"))
    off = absent(bpd, 2)
    wrong = f"| `checkpoints/fmnist/` | the shipped model ({off} test bits/dim) with its card |"
    assert [n for n, _ in wrong_figures(wrong, CARDS)] == [off]
    right = f"The flagship model scores {bpd:.3f} test bits/dim single-sample, {k8:.3f} with K = 8 and {null:.3f} unconditionally."
    assert wrong_figures(right, CARDS) == []
    g, u = c["quality_guided"], c["quality_unguided"]
    stated = f"{100 * g['class_consistency']:.1f}"
    guided = (f"The shipped model reaches {stated}% class consistency at FD {g['fd']:.2f} "
              f"guided, {100 * u['class_consistency']:.1f}% / {u['fd']:.1f} unguided.")
    assert wrong_figures(guided, CARDS) == []
    off = absent(100 * g["class_consistency"], 1)
    assert [n for n, _ in wrong_figures(guided.replace(stated + "%", off + "%"), CARDS)] == [off]
    off = absent(c["fig7"]["ratio"], 2)
    assert [n for n, _ in wrong_figures(f"The flagship model's Fig. 7 ratio is {off}.", CARDS)] == [off]
    # another measurement of the model is not its card figure
    assert wrong_figures(f"The flagship model scored {off} at step 9,500.", CARDS) == []
    assert wrong_figures(f"On the flagship model at w = 2, FD is {off} (1,000 samples).", CARDS) == []
