"""`python -m app`: load the model once and serve the workbench (127.0.0.1 unless told otherwise)."""
from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from .handlers import DEFAULT_CHECKPOINT
    p = argparse.ArgumentParser(prog="python -m app", description="The FARMER workbench (Gradio).")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                   help="checkpoint folder (config.json + model.safetensors) or a `farmer train` run folder "
                        "(default: the shipped checkpoints/fmnist)")
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
    from .handlers import Workbench
    from .ui import CSS, build_app
    try:
        wb = Workbench(args.checkpoint, device=args.device, max_batch=args.max_batch, data_dir=args.data_dir)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"python -m app: cannot load the model: {e}")
    print(f"FARMER workbench: {wb.checkpoint} · {wb.test_error or f'{len(wb.test)} test images'}", flush=True)
    demo = build_app(wb, queue_size=args.queue_size, concurrency=args.concurrency)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, inbrowser=args.open,
                max_file_size=args.max_file_size, ssr_mode=False, css=CSS)


if __name__ == "__main__":
    main()
