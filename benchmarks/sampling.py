"""Sampling speed and quality by decoder: one run, same batch and device (DESIGN §6, issue 15).

    .venv/bin/python benchmarks/sampling.py [--checkpoint DIR] [--batch 8 64] [--fd-samples 1000]

Stages: AF forward; AF inverse without KV cache, with it, by Jacobi (with
its mean iterations per block), by Gauss–Seidel–Jacobi, distilled, and
hybrid (Jacobi from the student's output); the AR without CFG, with naive
CFG, with resampling CFG; end to end (resampling CFG) with each decoder.
Then, on the same --fd-samples unguided latents (the same seeds), class
consistency and FD (Fashion-MNIST classifier features, farmer.quality) of
the images from each decoder, and the largest difference between the
Jacobi and sequential images. Prints tables and the ratios the paper
reports (Table 4/5) for each batch size, and writes JSON next to this file
(benchmarks/sampling.json).

Why two batch sizes: on a CPU the ratios pull in opposite directions. A
small batch leaves the N·n single-token steps of the sequential inverse
bound by per-step overhead (so the one-pass student and Jacobi's few
parallel passes win, and the O(N²) uncached inverse loses little); a large
batch makes every variant bound by arithmetic (the cache saves the O(N²)
recomputation, but the sequential and one-pass inverses do the same
arithmetic, and every Jacobi iteration redoes a whole pass). A GPU sits at
the small-batch end for much larger batches.

The shipped checkpoint is the default: Jacobi's iteration counts and the FD
rows depend on the trained weights. Without a checkpoint the model is the
preset, untrained, with its flow output projections randomised, which
times every fixed-cost stage but not Jacobi's convergence or quality. Each
time is the median of --repeats runs after one warm-up; absolute times
drift on shared machines, ratios much less.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import farmer  # noqa: E402
from farmer.checkpoint import load  # noqa: E402
from farmer.decoders import Jacobi, invert  # noqa: E402
from farmer.sampling import sample_latents  # noqa: E402
from farmer.student import make_student  # noqa: E402

CFG_W = 2.0    # guidance weight for the CFG rows (paper range 1.5–3.5)
JACOBI_TOL = 1e-4
GS_CHUNK = 16  # Gauss–Seidel–Jacobi chunk (tokens)


def timed(fn, repeats: int, device: torch.device, slow: float = 2.0) -> float:
    """Median wall-clock seconds of fn() over `repeats` runs after one warm-up run
    (a single run when the warm-up took over `slow` seconds, to keep the benchmark short)."""
    def once() -> float:
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t
    first = once()
    return statistics.median(once() for _ in range(1 if first > slow else repeats))


def build_model(args, device: torch.device) -> tuple[farmer.Farmer, str]:
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    if ckpt is not None and ckpt.exists():
        model = load(ckpt, device=device)
        source = f"checkpoint {ckpt}"
    else:
        torch.manual_seed(0)
        model = farmer.Farmer(farmer.presets[args.preset])
        with torch.no_grad():
            for block in model.flow.blocks:
                block.proj_out.weight.normal_(std=0.02)
        model = model.to(device).eval()
        source = f"preset {args.preset!r}, untrained, flow proj_out randomised"
    if model.student is None:
        model.student = make_student(model)
        source += "; student = undistilled copy (same cost as a distilled one)"
    return model, source


def bench(model: farmer.Farmer, B: int, R: int, device: torch.device,
          rows_extra: dict) -> tuple[dict, dict]:
    """All stages at batch B: (seconds per image by stage, ratios); Jacobi facts go into rows_extra."""
    cfg = model.cfg
    labels = torch.arange(B, device=device) % cfg.num_classes if cfg.num_classes else None
    kw = dict(num_samples=B, seed=0)
    with torch.inference_mode():
        z = sample_latents(model, labels, **kw)                                # (B, N, d) latents
        tokens = model.flow.reverse(z)                                         # (B, N, d) their images
    rows: dict[str, float] = {}

    def run(name: str, fn) -> None:
        with torch.inference_mode():
            rows[name] = timed(fn, R, device) / B
        print(f"  B={B:<4d} {name:<46s} {rows[name]:.6f} s/img", flush=True)

    u = model.unmix_latent(z)                                                  # the AF's output
    jac = {"jacobi": Jacobi(JACOBI_TOL), "GS-Jacobi": Jacobi(JACOBI_TOL, chunk=GS_CHUNK),
           "hybrid": Jacobi(JACOBI_TOL)}
    iters: dict[str, float] = {}
    run("AF forward", lambda: model.flow(tokens))
    run("AF inverse, no KV cache", lambda: invert(model, u, "sequential_nocache"))
    run("AF inverse, KV cache", lambda: invert(model, u, "sequential"))
    for name, dec in (("jacobi", "jacobi"), ("GS-Jacobi", "jacobi"), ("hybrid", "hybrid")):
        st: dict = {}
        with torch.inference_mode():
            invert(model, u, dec, jac[name], st)
        iters[name] = st["jacobi_mean_iterations"]
        run(f"AF inverse, {name}", lambda dec=dec, name=name: invert(model, u, dec, jac[name]))
    run("AF inverse, distilled", lambda: invert(model, u, "distilled"))
    run("AR, no CFG", lambda: sample_latents(model, labels, guidance="none", **kw))
    run("AR, naive CFG", lambda: sample_latents(model, labels, guidance="naive", cfg_scale=CFG_W, **kw))
    run("AR, resampling CFG", lambda: sample_latents(model, labels, guidance="resample", cfg_scale=CFG_W, **kw))
    for dec in ("sequential_nocache", "sequential", "jacobi", "distilled", "hybrid"):
        run(f"end to end (resampling CFG), {dec}",
            lambda dec=dec: farmer.sample(model, labels, guidance="resample", cfg_scale=CFG_W, decoder=dec,
                                          jacobi_tol=JACOBI_TOL, **kw))
    with torch.inference_mode():
        exact = model.tokens_to_image(invert(model, u, "sequential")[0])
        jacobi_err = (model.tokens_to_image(invert(model, u, "jacobi", jac["jacobi"])[0]) - exact).abs().max()
    e2e = "end to end (resampling CFG), "
    ratios = {
        "distilled inverse / AF forward (target <= 1.3; paper 0.0076/0.0066 = 1.15)":
            rows["AF inverse, distilled"] / rows["AF forward"],
        "uncached / cached inverse (target >= 5 at B = 64)":
            rows["AF inverse, no KV cache"] / rows["AF inverse, KV cache"],
        "cached / distilled inverse (target >= 8 at B = 8; paper 22)":
            rows["AF inverse, KV cache"] / rows["AF inverse, distilled"],
        "cached / Jacobi inverse (speed-up of Jacobi; target > 1 at B = 8)":
            rows["AF inverse, KV cache"] / rows["AF inverse, jacobi"],
        "cached / GS-Jacobi inverse": rows["AF inverse, KV cache"] / rows["AF inverse, GS-Jacobi"],
        "cached / hybrid inverse": rows["AF inverse, KV cache"] / rows["AF inverse, hybrid"],
        "end to end, sequential / distilled (paper 0.2189/0.0567 = 3.9)":
            rows[e2e + "sequential"] / rows[e2e + "distilled"],
        "end to end, sequential / jacobi": rows[e2e + "sequential"] / rows[e2e + "jacobi"],
        "AR, resampling CFG / no CFG": rows["AR, resampling CFG"] / rows["AR, no CFG"],
        "AR, naive CFG / no CFG": rows["AR, naive CFG"] / rows["AR, no CFG"],
    }
    extra = {"jacobi_mean_iterations": iters, "jacobi_tol": JACOBI_TOL, "gs_chunk": GS_CHUNK,
             "jacobi_max_abs_diff_vs_sequential": float(jacobi_err), "tokens": cfg.tokens}
    print(f"  B={B:<4d} Jacobi images vs sequential: max |diff| {float(jacobi_err):.2e} ([−1, 1] units)")
    rows_extra.update(extra)
    return rows, ratios


def decoder_quality(model: farmer.Farmer, n: int) -> dict:
    """Class consistency and FD of n unguided samples (seed 0, balanced labels) decoded by each decoder;
    the latents are the same for every decoder, only the AF inverse differs."""
    from farmer.data import load_fashion_mnist
    from farmer.quality import load_classifier, predict, sample_quality
    repo = Path(__file__).resolve().parents[1]
    classifier, _ = load_classifier(repo / "checkpoints" / "fmnist-classifier")
    reference = predict(classifier, load_fashion_mnist("test").images)[1]
    out = {}
    for dec in ("sequential", "jacobi", "distilled", "hybrid"):
        q = sample_quality(model, classifier, reference, num_samples=n, batch_size=250, seed=0, guidance="none",
                           decoder=dec, jacobi_tol=JACOBI_TOL)
        out[dec] = {"class_consistency": q["class_consistency"], "fd": q["fd"], "seconds_per_image": q["seconds_per_image"]}
        print(f"  {dec:<12s} {n} samples: class consistency {100 * q['class_consistency']:.1f}%, FD {q['fd']:.2f}",
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/fmnist",
                   help="checkpoint to time (default checkpoints/fmnist; the preset if it does not exist)")
    p.add_argument("--preset", default="fmnist", help="model preset when there is no checkpoint")
    p.add_argument("--batch", type=int, nargs="+", default=[8, 64],
                   help="batch sizes; every stage of one table runs at the same batch (default 8 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per stage (median reported)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--fd-samples", type=int, default=1000,
                   help="unguided samples per decoder for FD and class consistency (0 = skip; default 1000)")
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".json")), help="JSON output")
    args = p.parse_args(argv)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    device = torch.device(dev)
    model, source = build_model(args, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"sampling benchmark: {source}; device {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats} (1 for stages over 2 s)")
    runs = []
    for B in args.batch:
        extra: dict = {}
        rows, ratios = bench(model, B, args.repeats, device, extra)
        runs.append({"batch": B, "seconds_per_image": rows, "ratios": ratios, **extra})
    quality = decoder_quality(model, args.fd_samples) if args.fd_samples else {}
    for run in runs:
        print(f"\nbatch {run['batch']}, {device}\n\n| stage | s/img |\n|---|---|")
        for k, v in run["seconds_per_image"].items():
            print(f"| {k} | {v:.6f} |")
        print("\n| ratio | value |\n|---|---|")
        for k, v in run["ratios"].items():
            print(f"| {k} | {v:.2f} |")
        print(f"\nJacobi: mean iterations per block {run['jacobi_mean_iterations']} (of {run['tokens'] - 1} "
              f"sequential steps), images within {run['jacobi_max_abs_diff_vs_sequential']:.1e} of sequential")
    if quality:
        print(f"\n{args.fd_samples} unguided samples, the same latents for every decoder\n\n"
              f"| decoder | class consistency | FD | FD / sequential FD |\n|---|---|---|---|")
        for dec, q in quality.items():
            print(f"| {dec} | {100 * q['class_consistency']:.1f}% | {q['fd']:.2f} | "
                  f"{q['fd'] / quality['sequential']['fd']:.3f} |")
    result = {"source": source, "preset": args.preset, "device": str(device), "device_name": name,
              "repeats": args.repeats, "cfg_scale": CFG_W, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.platform(), "runs": runs,
              "quality_by_decoder": quality, "fd_samples": args.fd_samples}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
