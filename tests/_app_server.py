"""Helpers for the app tests (not a test module): make `app` importable, start it as a real server.

`app/` lives at the repository root next to `farmer/` but is not an installed
package, so the tests put the root on sys.path, as `python -m app` run from the
root does.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")                    # tests never call home


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}:\n{log.read_text() if log else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the app did not answer at {url} within {timeout:.0f} s:\n{log.read_text() if log else ''}")


@contextlib.contextmanager
def app_process(tmp: Path, *args: str, timeout: float = 120):
    """`python -m app --port FREE ARGS` in a subprocess (one torch thread); yields its URL."""
    port = free_port()
    log = tmp / f"app-{port}.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO),
               GRADIO_ANALYTICS_ENABLED="False")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port), "--threads", "1", *args],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, timeout, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SHARED_ARGS = ("--max-batch", "8", "--queue-size", "16", "--concurrency", "2")
_shared: dict[str, str] = {}


def shared_app() -> str:
    """The URL of one `python -m app SHARED_ARGS` for the whole pytest run (the server and the
    browser tests share it: starting one costs Gradio's import and the model load); it is
    stopped when pytest exits."""
    if "url" not in _shared:
        folder = Path(tempfile.mkdtemp(prefix="farmer-app-"))
        server = app_process(folder, *SHARED_ARGS)
        _shared["url"] = server.__enter__()
        _shared["log"] = next(folder.glob("app-*.log"))
        atexit.register(server.__exit__, None, None, None)
    return _shared["url"]


def server_log() -> Path:
    """The log (stdout and stderr) of the shared server."""
    shared_app()
    return _shared["log"]


def tiny_png(path: Path, size: tuple[int, int] = (60, 40), mode: str = "RGB") -> Path:
    """A small non-square colour PNG (so the app must convert it), written to `path`."""
    import numpy as np
    from PIL import Image
    w, h = size
    rng = np.random.RandomState(0)
    a = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
    a[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 230                        # a light block on noise
    Image.fromarray(a).convert(mode).save(path)
    return path


def shipped_copy(folder: Path, model_changes: dict | None = None, card: dict | None = None) -> Path:
    """A second model folder on the shipped weights (linked, not copied): its config with `model_changes`
    (settings without weights of their own, e.g. the mixing position), and `card` as its card.json
    (none when None). For tests of the app with several models, or with one without a card."""
    shipped = REPO / "checkpoints" / "fmnist"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").symlink_to(shipped / "model.safetensors")
    config = json.loads((shipped / "config.json").read_text())
    config["model"].update(model_changes or {})
    (folder / "config.json").write_text(json.dumps(config))
    if card is not None:
        (folder / "card.json").write_text(json.dumps(card))
    return folder
