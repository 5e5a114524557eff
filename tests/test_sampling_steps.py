"""farmer.sampling.sample_steps: the streamed sampler gives exactly `sample`'s result (for the app)."""
import pytest
import torch

import farmer
from farmer.distill import make_student
from farmer.sampling import sample_steps
from _models import perturbed_model

LABELS = [0, 3, 7]
pytestmark = pytest.mark.usefixtures("one_thread")      # 2 shared cores: no OpenMP spinning


@pytest.mark.parametrize("mode", ["split", "jetformer", "none"])
@pytest.mark.parametrize("guidance, decoder", [("none", "sequential"), ("naive", "sequential_nocache"),
                                               ("resample", "distilled")])
def test_streamed_result_equals_sample(mode, guidance, decoder):
    m = perturbed_model(seed=1, redundant_mode=mode)
    m.student = make_student(m)
    events = list(sample_steps(m, LABELS, guidance=guidance, decoder=decoder, seed=3, cfg_scale=2.0))
    ref = farmer.sample(m, LABELS, guidance=guidance, decoder=decoder, seed=3, cfg_scale=2.0,
                        return_intermediates=True)
    cfg = m.cfg
    stages = [e.stage for e in events]
    assert stages == ["token"] * cfg.tokens + ["redundant"] + ["block"] * cfg.flow_blocks + ["done"]
    got = events[-1].result
    assert torch.equal(got.images, ref.images) and torch.equal(got.z, ref.z)
    assert torch.equal(got.tokens, ref.tokens) and torch.equal(got.redundant, ref.redundant)
    assert all(torch.equal(a, b) for a, b in zip(got.block_images, ref.block_images))
    assert got.stats == ref.stats
    # the block events carry the same images as the result's intermediates
    blocks = [e.image for e in events if e.stage == "block"]
    assert all(torch.equal(a, b) for a, b in zip(blocks, ref.block_images))


def test_tokens_fill_in_one_at_a_time_in_ar_order():
    m = perturbed_model(seed=2)
    cfg = m.cfg
    events = [e for e in sample_steps(m, LABELS, seed=0) if e.stage in ("token", "redundant")]
    ref = farmer.sample(m, LABELS, seed=0, return_intermediates=True)
    for k, e in enumerate(events[:-1]):
        assert e.index == k and e.total == cfg.tokens and int(e.drawn.sum()) == k + 1
        z_ar = m.ar_order(e.z)                                                 # back to drawing order
        assert torch.equal(z_ar[:, :k + 1, :cfg.d_i], ref.tokens[:, :k + 1])   # drawn so far: final values
        assert not z_ar[:, k + 1:].any() and not z_ar[..., cfg.d_i:].any()     # the rest still zero
        assert e.image.shape == (len(LABELS), cfg.channels, cfg.image_size, cfg.image_size)
    assert torch.equal(events[-1].z, ref.z) and bool(events[-1].drawn.all())


def test_arguments_are_checked_and_grad_mode_is_not_leaked():
    m = perturbed_model(seed=0)
    with pytest.raises(ValueError, match="decoder"):
        next(sample_steps(m, LABELS, decoder="distilled"))                     # no student
    with pytest.raises(ValueError, match="cfg_scale"):
        next(sample_steps(m, LABELS, guidance="resample", cfg_scale=-1.0))
    steps = sample_steps(m, LABELS, seed=0)
    next(steps)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()  # between events: caller's mode
    steps.close()
    m.train()
    list(sample_steps(m, LABELS, seed=0))
    assert m.training                                                           # mode restored
