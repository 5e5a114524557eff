"""`python -m app`: load the model once and serve the workbench (127.0.0.1 unless told otherwise)."""
from __future__ import annotations

import argparse
import os
import signal
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app", description="The FARMER workbench (Gradio).")
    p.add_argument("--checkpoint", action="append", default=None, metavar="PATH",
                   help="checkpoint folder (config.json + model.safetensors) or a `farmer train` run folder; "
                        "repeat it to load several (each tab has a model menu). Default: every shipped model, "
                        "the folders of checkpoints/ with a card.json (today one: fmnist)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind; 0.0.0.0 exposes the app to the network (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: 7860, or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a public *.gradio.live link (off by default)")
    p.add_argument("--device", default="cpu", help="torch device for the model (default: cpu)")
    p.add_argument("--data-dir", default=None, help="folder with the test split's files (default: the usual search)")
    p.add_argument("--max-batch", type=int, default=16, help="largest batch one sample request may ask for")
    p.add_argument("--concurrency", type=int, default=2, help="requests that run the model at the same time")
    p.add_argument("--queue-size", type=int, default=16,
                   help="requests that may wait; beyond this a request is refused with 'queue is full'")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--max-file-size", default="20mb", help="largest upload accepted (default: 20mb)")
    p.add_argument("--open", action="store_true", help="open the app in a browser tab")
    args = p.parse_args(argv)
    for name in ("max_batch", "concurrency", "queue_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")               # no calls home
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from .models import Shelf
    from .ui import CSS, build_app
    try:
        shelf = Shelf.load(args.checkpoint, device=args.device, max_batch=args.max_batch, data_dir=args.data_dir)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"python -m app: cannot load the model: {e}")
    first = next(iter(shelf))
    print(f"FARMER workbench: {first.test_error or f'{len(first.test)} test images'}", flush=True)
    for wb in shelf:
        views = [v for v, n in shelf.defaults.items() if n == wb.name]
        print(f"  model {wb.name}: {wb.checkpoint}" + (f" (opens {', '.join(views)})" if views else ""), flush=True)
    # a plain `kill` (SIGTERM) exits like Ctrl-C, so the atexit clean-up (the frames folder) runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo = build_app(shelf, queue_size=args.queue_size, concurrency=args.concurrency)
    # quiet: Gradio's own banner tells users to "set share=True in launch()"; this app has --share
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, inbrowser=args.open,
                max_file_size=args.max_file_size, ssr_mode=False, css=CSS, quiet=True, prevent_thread_lock=True)
    print(f"* Running on local URL: {demo.local_url}", flush=True)
    if demo.share_url:
        print(f"* Running on public URL: {demo.share_url}", flush=True)
    else:
        print("* Public link: restart with --share (off by default)", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
