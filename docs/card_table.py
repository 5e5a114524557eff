"""The shipped model's headline figures as one markdown table, from its card.json.

The README and docs/models.md carry this table between the markers
<!-- card-table:start --> and <!-- card-table:end -->; each figure is stated
there once, with its card as the source. `tests/test_docs_figures.py` fails
when the committed table differs from what this script makes of the cards.

    python docs/card_table.py            # print the table
    python docs/card_table.py --write    # rewrite it in README.md and docs/models.md
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "checkpoints/fmnist"
START, END = "<!-- card-table:start -->", "<!-- card-table:end -->"
TARGETS = ("README.md", "docs/models.md")


def card(folder: str = MODEL) -> dict:
    return json.loads((ROOT / folder / "card.json").read_text())


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _fd(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def table() -> str:
    """The markdown table. Its card link is relative to the repository root, and resolves the same from
    docs/ pages, which see the checkpoints through the docs/checkpoints link."""
    s = card()
    q_none, q_res, q_naive = s["quality_unguided"], s["quality_guided"], s["quality_naive"]
    bayes, speed = s["bayes_classifier"], s["seconds_per_image"]
    rows = [
        ("test bits/dim, −log p(x\\|c), all 10,000 images: single-sample / K = 8 bound",
         f"{s['bpd_test_k1']['bpd']:.3f} / {s['bpd_test_k8']['bpd']:.3f}"),
        ("test bits/dim under the null class, −log p(x), single-sample", f"{s['bpd_test_null_k1']['bpd']:.3f}"),
        (f"class consistency / FD, {q_none['num_samples']:,} samples, unguided",
         f"{_pct(q_none['class_consistency'])} / {_fd(q_none['fd'])}"),
        (f"class consistency / FD, resampling CFG w = {q_res['cfg_scale']:g}, T_σ = {q_res['t_sigma']:g}, "
         f"exact weights (T_π,v = T_σ,v = T_s = 1), {q_res['candidates_cond']} + {q_res['candidates_uncond']} "
         "candidates",
         f"{_pct(q_res['class_consistency'])} / {_fd(q_res['fd'])}"),
        (f"class consistency / FD, naive CFG w = {q_naive['cfg_scale']:g}",
         f"{_pct(q_naive['class_consistency'])} / {_fd(q_naive['fd'])}"),
        ("Fig. 7 ratio: mean \\|Δpixel\\| with Z^R redrawn / with Z^I perturbed", f"{s['fig7']['ratio']:.2f}"),
        ("per-pixel map: share of its variance inside the 4×4 patches, 64 test images",
         _pct(s["within_patch_share"]["share"])),
        ("Bayes classifier from the exact likelihoods: test accuracy / ECE",
         f"{100 * bayes['accuracy']:.2f}% / {bayes['ece']:.4f}"),
        (f"seconds per image, batch {speed['batch']}, {speed['threads']} CPU threads: sequential / distilled inverse",
         f"{speed['sequential']:.4f} / {speed['distilled']:.4f}"),
        ("weights", f"EMA, step {s['model']['step']:,}"),
    ]
    head = f"| figure | [flagship model]({MODEL}/README.md) (`{MODEL}`) |"
    lines = [head, "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def block() -> str:
    return f"{START}\n{table()}\n{END}"


def current_block(text: str) -> str | None:
    m = re.search(re.escape(START) + r".*?" + re.escape(END), text, flags=re.S)
    return m.group(0) if m else None


def write() -> None:
    for target in TARGETS:
        path = ROOT / target
        text = path.read_text()
        old = current_block(text)
        if old is None:
            raise SystemExit(f"{target}: no {START} … {END} block to rewrite")
        path.write_text(text.replace(old, block()))
        print(f"rewrote the card table in {target}")


if __name__ == "__main__":
    write() if "--write" in sys.argv[1:] else print(table())
