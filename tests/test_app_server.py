"""The app as a real server on a free local port, driven with gradio_client the way a script would."""
import functools
import io
import math
import urllib.request
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import pytest
from PIL import Image

import farmer
from conftest import need_or_skip
from _app_server import REPO, free_port, server_log, shared_app, tiny_png, wait_until_up
from farmer.data import HOW_TO_GET_FMNIST, find_fashion_mnist

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

SAMPLE = dict(class_name="Trouser", guidance="resample", cfg_scale=2.0, candidates_cond=3, candidates_uncond=3,
              t_pi=1.0, t_sigma=1.0, t_pi_verify=0.1, t_sigma_verify=1.0, t_select=1.1, seed=0, batch_size=2,
              decoder="sequential")
PICK = dict(source="test image", test_class="any class", test_index=0, sample_class="Bag", sample_seed=0,
            upload=None, fit="pad", invert=False, condition="the image's own label")


@pytest.fixture(scope="module")
def server():
    return shared_app()                    # python -m app --max-batch 8 --queue-size 16 --concurrency 2


@pytest.fixture(scope="module")
def client(server):
    # download_files=False: a streaming endpoint's client would otherwise fetch every file of every
    # intermediate update; the tests fetch the files they look at (`fetch`)
    return Client(server, verbose=False, download_files=False)


def fetch(file: dict) -> np.ndarray:
    """An image output (gradio FileData as a dict) -> its pixels, fetched over HTTP from the server."""
    with urllib.request.urlopen(file["url"], timeout=30) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())))


def have_data() -> bool:
    try:
        find_fashion_mnist(download=False)
        return True
    except FileNotFoundError:
        return False


def test_binds_to_localhost_and_names_every_endpoint(server, client):
    assert server.startswith("http://127.0.0.1:")
    from app.__main__ import parse_args
    args = parse_args([])
    assert args.host == "127.0.0.1" and args.share is False
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/sample", "/likelihood", "/likelihood_b", "/compare", "/channels", "/classify", "/classify_b",
            "/interpolate"} <= names


def test_classify_and_interpolate_endpoints(client):
    pick = {k: v for k, v in PICK.items() if k != "condition"} | dict(source="model sample", sample_class="Bag")
    chart, summary, numbers = client.predict(**pick, noise_draws=1, api_name="/classify")
    assert sum(numbers["probabilities"].values()) == pytest.approx(1.0, abs=1e-6) and "p(y|x)" in summary
    ends = {f"a_{k}": v for k, v in pick.items()} | {f"b_{k}": v for k, v in pick.items()} | dict(b_sample_seed=1)
    lin, sph, bpd, norm, summary, numbers = client.predict(**ends, steps=3, decoder="sequential",
                                                           api_name="/interpolate")
    strip = fetch(sph)
    assert len(numbers["t"]) == 3 and strip.shape[1] > 2 * strip.shape[0]    # three images in a row
    assert len(numbers["bits_per_dim"]["linear"]) == 3 and "bits/dim" in summary


def test_sample(client):
    grid, seconds, frames, stats, report = client.predict(**SAMPLE, api_name="/sample")
    img = fetch(grid)
    assert img.dtype == np.uint8 and min(img.shape[:2]) >= 2 * 28
    assert isinstance(seconds, float) and seconds > 0                         # a number, not a string
    assert stats["batch_size"] == 2 and stats["guidance"] == "resample" and stats["model"] == "fmnist"
    assert stats["command"].startswith("farmer sample checkpoints/fmnist --labels 1 --repeat 2")
    assert len(frames) >= 4 and all(fetch(f["image"]).shape[0] > 28 for f in frames)
    assert "tokens drawn" in frames[0]["caption"]


@pytest.mark.parametrize("model", [None, "fmnist"])
def test_likelihood_of_a_test_image(client, model):
    """Without a model the endpoint scores with the Likelihood view's default, the one shipped model."""
    need_or_skip(have_data(), f"the test-image source needs Fashion-MNIST: {HOW_TO_GET_FMNIST}")
    chosen = {} if model is None else {"model": model}
    out = client.predict(**(PICK | dict(test_index=7) | chosen), api_name="/likelihood")
    numbers = out[6]
    assert numbers["model"] == (model or "fmnist")
    x, y = farmer.data.load_fashion_mnist("test", download=False).get_batch([7])
    ref = farmer.load(REPO / "checkpoints" / numbers["model"]).nll(x, y, seed=0)
    assert math.isfinite(numbers["bits_per_dim"])
    assert numbers["bits_per_dim"] == pytest.approx(float(ref["bpd"][0]), abs=1e-5)
    assert numbers["pixel_bits_sum"] == pytest.approx(numbers["bits_per_dim"] * 784, rel=1e-5)
    assert out[2]["type"] == "plotly" and "Heatmap" in out[2]["plot"].replace("heatmap", "Heatmap")


def test_upload_of_a_png_is_converted(client, tmp_path):
    png = tiny_png(tmp_path / "photo.png", (90, 50), "RGBA")
    out = client.predict(**(PICK | dict(source="upload", upload=handle_file(str(png)))), api_name="/likelihood")
    numbers = out[6]
    assert math.isfinite(numbers["bits_per_dim"]) and numbers["image"] == "upload photo.png"
    assert any("90×50" in n for n in numbers["conversion"]) and "Converted" in out[1]
    assert fetch(out[0]).dtype == np.uint8


def test_upload_of_a_non_image_is_a_clear_error(client, tmp_path):
    txt = tmp_path / "results.csv"
    txt.write_text("bpd,3.1\n")
    with pytest.raises(AppError, match="not an image"):
        client.predict(**(PICK | dict(source="upload", upload=handle_file(str(txt)))), api_name="/likelihood")


@pytest.mark.parametrize("change, name", [
    (dict(cfg_scale=50.0), "cfg_scale"), (dict(t_sigma=0.0), "t_sigma"), (dict(batch_size=9), "batch_size"),
    (dict(seed=-5), "seed"), (dict(candidates_cond=100), "candidates_cond"), (dict(t_select="hot"), "t_select"),
    (dict(guidance="cfg++"), "cfg\\+\\+"), (dict(decoder="bogus"), "bogus"),   # jacobi is a decoder now
])
def test_out_of_range_parameters_are_named_errors(client, change, name):
    with pytest.raises(AppError, match=name) as err:
        client.predict(**(SAMPLE | change), api_name="/sample")
    assert "Traceback" not in str(err.value)


def test_ordinary_input_errors_leave_no_traceback_in_the_server_log(client):
    with pytest.raises(AppError, match="t_sigma"):
        client.predict(**(SAMPLE | dict(t_sigma=7.0)), api_name="/sample")
    with pytest.raises(AppError, match="test_index"):
        client.predict(**(PICK | dict(test_index=10**6)), api_name="/likelihood")
    log = server_log().read_text()
    assert "t_sigma" not in log and "Traceback" not in log, log[-2000:]
    assert "share=True" not in log and "--share" in log                        # the app's own flag, not Gradio's


def test_out_of_range_channel_and_likelihood_parameters(client):
    with pytest.raises(AppError, match="variance_scale"):
        client.predict(**PICK, variance_scale=9.0, z_i_mode="keep", z_i_noise=0.5, draws=2, seed=0,
                       decoder="sequential", api_name="/channels")
    with pytest.raises(AppError, match="test_index"):
        client.predict(**(PICK | dict(test_index=10**6)), api_name="/likelihood")


def test_eight_concurrent_requests_complete(client):
    jobs = [client.submit(**(SAMPLE | dict(seed=k, batch_size=1, guidance="none")), api_name="/sample")
            for k in range(8)]
    results = [job.result(timeout=240) for job in jobs]
    assert len(results) == 8 and all(r[3]["seed"] == k for k, r in enumerate(results))
    assert all(r[1] > 0 for r in results)                                 # the seconds (a number)


def test_a_request_beyond_a_full_queue_is_refused_with_a_message(one_thread):
    """Queue of 1, one worker: a held request runs, one waits, the next is refused, not hung."""
    from app import Workbench, build_app
    from app.handlers import Workbench as Base
    gate = threading.Event()

    class Held(Workbench):
        @functools.wraps(Base.likelihood)
        def likelihood(self, *args, **kwargs):
            gate.wait(60)
            return super().likelihood(*args, **kwargs)

    demo = build_app(Held(), queue_size=1, concurrency=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url, 60)
        c = Client(url, verbose=False, download_files=False)
        pick = PICK | dict(source="model sample")
        running = c.submit(**pick, api_name="/likelihood")
        _wait_for(lambda: running.status().code.name == "PROCESSING")
        waiting = c.submit(**pick, api_name="/likelihood")
        _wait_for(lambda: waiting.status().code.name == "IN_QUEUE")
        refused = c.submit(**pick, api_name="/likelihood")
        start = time.monotonic()
        with pytest.raises(Exception, match="(?i)queue is full"):
            refused.result(timeout=30)
        assert time.monotonic() - start < 30                                   # refused, not left hanging
        gate.set()
        assert math.isfinite(running.result(timeout=60)[6]["bits_per_dim"])
        assert math.isfinite(waiting.result(timeout=60)[6]["bits_per_dim"])
    finally:
        gate.set()
        demo.close()


def _wait_for(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise FutureTimeout("the job did not reach the expected state")
        time.sleep(0.1)
