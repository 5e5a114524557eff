"""Shared test helpers.

`need_or_skip(ok, message)`: a test that needs something a user's machine may
lack (real data, a browser, a GPU) skips with `message` — which should say how
to get it — except under FARMER_REQUIRE_ALL=1 (CI, .ci/run), where the
missing piece is a failure: STYLE says such tests are real tests in CI.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """A script of benchmarks/ imported as a module (they are scripts, not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def require_all() -> bool:
    """True when FARMER_REQUIRE_ALL=1: nothing may be skipped for lack of data or tools."""
    return os.environ.get("FARMER_REQUIRE_ALL", "") not in ("", "0")


def need_or_skip(ok: bool, message: str) -> None:
    """Skip the calling test with `message` unless `ok`; fail instead under FARMER_REQUIRE_ALL=1."""
    if ok:
        return
    if require_all():
        pytest.fail(f"FARMER_REQUIRE_ALL=1 but: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def fmnist_dir() -> Path:
    """The folder with the real Fashion-MNIST IDX files (no download); skips (or fails in CI) without them."""
    from farmer.data import HOW_TO_GET_FMNIST, find_fashion_mnist
    try:
        return find_fashion_mnist(download=False)
    except FileNotFoundError:
        need_or_skip(False, f"Fashion-MNIST IDX files not found: {HOW_TO_GET_FMNIST}")


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m farmer` subprocesses: one thread each (2-core CI), the repo importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


@pytest.fixture
def run_farmer():
    """run_farmer(*args, cwd=..., timeout=...) -> CompletedProcess of `python -m farmer ARGS` (text, captured)."""
    def run(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "farmer", *map(str, args)], cwd=cwd or REPO,
                              env=env or cli_env(), capture_output=True, text=True, timeout=timeout)
    return run


@pytest.fixture
def need():
    """The `need_or_skip` function as a fixture: `need(shutil.which("chromium") is not None, "apt-get install chromium")`."""
    return need_or_skip


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: on a loaded 2-core machine two spinning OpenMP threads per
    process can make a millisecond model step 50× slower. Restores the previous setting."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
