"""Ship a likelihood model: copy a run checkpoint's EMA weights and write its model card.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/likelihood_card.py \
        checkpoints/fmnist-likelihood-run checkpoints/fmnist-likelihood

Copies config.json and model.safetensors (the EMA weights; no training state)
from SOURCE (a checkpoint, or a `farmer train` run folder: its newest) to
DEST, then measures on the Fashion-MNIST test split, uniform dequantisation,
seed 0: single-sample bits/dim on all 10,000 images and on the first 1,000
(the figure tests re-measure), the K = 8 importance-weighted bound, and the
null-class (unconditional) single-sample figure. Writes DEST/card.json and
DEST/README.md. The sample model's card is benchmarks/model_card.py.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import farmer  # noqa: E402
from farmer.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_config, resolve  # noqa: E402
from farmer.data import load_fashion_mnist  # noqa: E402
from farmer.likelihood import evaluate_split  # noqa: E402

PUBLISHED = [("Hierarchical VAE", 3.28), ("Probabilistic circuit (HCLT)", 3.34),
             ("IDF (integer discrete flow)", 3.47), ("PixelVAE", 3.66)]   # unconditional, as in model_card.py


def measure(model: farmer.Farmer, say=print) -> dict:
    test = load_fashion_mnist("test")
    x, y = test.images, test.labels
    out = {}
    for key, kw in (("bpd_first_1000", dict(data=x[:1000], labels=y[:1000])),
                    ("bpd_test_k1", dict(data=x, labels=y)),
                    ("bpd_test_null_k1", dict(data=x, labels=y, conditional=False)),
                    ("bpd_test_k8", dict(data=x, labels=y, k=8))):
        r = evaluate_split(model, seed=0, **kw)
        out[key] = {k: v for k, v in r.items() if not isinstance(v, list)}
        say(f"  {key}: {r['bpd']:.4f} bits/dim ({r['estimator']}, {r['images']} images, {r['conditioning']})")
    return out


def render(card: dict) -> str:
    k1, k8, null, first = (card[k] for k in ("bpd_test_k1", "bpd_test_k8", "bpd_test_null_k1", "bpd_first_1000"))
    c, tr = card["config"], card.get("train", {})
    rows = sorted(PUBLISHED + [("**FARMER likelihood model, unconditional −log p(x) (null class)**", null["bpd"]),
                               ("FARMER likelihood model, class-conditional −log p(x\\|c), K = 8", k8["bpd"])],
                  key=lambda r: r[1])
    return "\n".join([
        "# FARMER on Fashion-MNIST: the likelihood model",
        "",
        "The same architecture as the sample model (`checkpoints/fmnist`) trained for likelihood: the paper's "
        f"plain channel slice (channel_mixing = {c['channel_mixing']!r}), redundant_mode = {c['redundant_mode']!r} "
        f"(all {c['channels'] * c['patch_size'] ** 2} channels of every token to the AR), uniform dequantisation only "
        f"(noise = {tr.get('noise')!r}), lr {tr.get('lr')}, batch {tr.get('batch_size')}.",
        f"These weights are the EMA at step {card['step']:,} of a {tr.get('steps', 0):,}-step run that is still "
        "training (`checkpoints/fmnist-likelihood-run`, resumable with `farmer train --resume --out "
        "checkpoints/fmnist-likelihood-run`); a later session replaces them with the finished run.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| test bits/dim, all 10,000 images, −log p(x\\|c), single-sample | **{k1['bpd']:.4f}** |",
        f"| the same, K = 8 importance-weighted bound | **{k8['bpd']:.4f}** |",
        f"| under the null class, −log p(x), single-sample | {null['bpd']:.4f} |",
        f"| first 1,000 test images, single-sample (re-measured by the tests) | {first['bpd']:.4f} |",
        "",
        "Discrete-data bounds with uniform dequantisation, seed 0 (DESIGN §5); measured by "
        "`python benchmarks/likelihood_card.py`.",
        "",
        "## Beside published Fashion-MNIST results (test bits/dim, lower is better)",
        "",
        "| model | bits/dim |",
        "| --- | --- |",
        *[f"| {name} | {bpd:.2f} |" for name, bpd in rows],
        "",
        "The published figures are unconditional; compare them with the null-class row.",
        "",
        "## Which model for what",
        "",
        "Use this model for bits/dim and per-pixel likelihood maps (`python -m app --checkpoint "
        "checkpoints/fmnist-likelihood`). Its samples are not what it is for: without the Gaussian noise "
        "curriculum and channel mixing they are noise-textured (see docs/studies.md, sample quality). For samples, "
        "guidance and the informative/redundant experiment use the sample model, `checkpoints/fmnist`. This "
        "checkpoint has no distilled student.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="a checkpoint, or a `farmer train` run folder (its newest checkpoint)")
    p.add_argument("dest", help="where to write the shipped likelihood model")
    p.add_argument("--render-only", action="store_true", help="re-render README.md from DEST/card.json")
    args = p.parse_args(argv)
    dest = Path(args.dest)
    if not args.render_only:
        src = resolve(args.source)
        meta, cfg = read_config(src)
        dest.mkdir(parents=True, exist_ok=True)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copy2(src / name, dest / name)
        model = farmer.load(dest).eval()
        print(f"likelihood model from {src} (step {meta.get('step')}):")
        card = {"source": str(src), "step": meta.get("step"), "weights": meta["weights"], "config": cfg.to_dict(),
                "train": meta.get("train", {}), **measure(model)}
        (dest / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    card = json.loads((dest / "card.json").read_text())
    (dest / "README.md").write_text(render(card))
    print(f"wrote {dest / 'card.json'} and {dest / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
