"""One-step distillation of the AF inverse (DESIGN §1.7, Algorithm 2)."""
import json

import pytest
import torch

import farmer
from farmer import checkpoint
from farmer.cli import main as cli_main
from farmer.data import dequantize_uniform, load_digits
from farmer.distill import (STATE_JSON, STATE_TENSORS, DistillConfig, Distiller, batch_stream, distill_loss,
                            make_student, read_state, reconstruction_error, save_state)
from farmer.layers import patchify
from _models import perturbed_model


@pytest.fixture(scope="module")
def digits():
    return load_digits("train").images, load_digits("test").images          # uint8 (M, 1, 8, 8)


def test_student_is_a_bidirectional_copy_of_the_teacher():
    model = perturbed_model(seed=0)
    student = make_student(model)
    assert len(student.blocks) == len(model.flow.blocks)
    for t, s in zip(model.flow.blocks, student.blocks):
        assert t.trunk.causal and not s.trunk.causal
        for (kt, vt), (ks, vs) in zip(t.state_dict().items(), s.state_dict().items()):
            assert kt == ks and torch.equal(vt, vs)
    # bidirectional: an early output token depends on the LAST latent token
    z = torch.randn(1, model.cfg.tokens, model.cfg.token_dim, requires_grad=True)
    x = student(z)
    (grad,) = torch.autograd.grad(x[0, 1].sum(), z)
    assert grad[0, -1].abs().sum() > 0
    # token 0 of the last-inverted block passes unchanged, as in the teacher
    assert torch.equal(student.invert_block(student.blocks[0], z)[0, 0], z[0, 0])


def test_student_of_an_identity_flow_is_exact():
    model = farmer.Farmer(farmer.presets["tiny"]).eval()                       # fresh flow = identity
    z = torch.randn(2, model.cfg.tokens, model.cfg.token_dim)
    assert torch.equal(make_student(model)(z), z)


def test_distill_loss_follows_algorithm_2():
    model = perturbed_model(seed=1)
    student = make_student(model)
    x = patchify(dequantize_uniform(load_digits("test").images[:4], seed=0), 2)
    loss, per_block = distill_loss(model.flow, student, x, max_noise=0.0)
    # by hand: teacher path, then the student blocks in reverse order on their own outputs
    _, _, path = model.flow(x, return_path=True)
    z, expected = path[-1], []
    for t in reversed(range(len(student.blocks))):
        z = student.invert_block(student.blocks[t], z)
        expected.insert(0, (z - path[t]).square().mean())
    assert torch.allclose(per_block, torch.stack(expected))
    assert torch.allclose(loss, torch.stack(expected).mean())
    # the perturbation s·ε with s ~ U[0, 0.3] changes the loss; a fixed generator fixes it
    a = distill_loss(model.flow, student, x, generator=torch.Generator().manual_seed(0))[0]
    b = distill_loss(model.flow, student, x, generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(a, b) and not torch.equal(a, loss)


def test_brief_distillation_beats_the_undistilled_copy(digits):
    """60 steps on digits: on held-out images the student is closer to the exact inverse
    than the copy it started from, through model.decode(decoder="distilled") too."""
    train, test = digits
    test = test[:128]
    model = perturbed_model(seed=0, scale=0.1)
    before = reconstruction_error(model, test, make_student(model))
    d = Distiller(model, DistillConfig(steps=60, batch_size=16, lr=1e-3, warmup=5))
    stream = batch_stream(train, 16)
    losses = [d.train_step(next(stream))["loss"] for _ in range(60)]
    after = reconstruction_error(model, test, d.student, exact=False)
    assert before["exact_mse"] < 1e-8                                          # the sequential inverse is exact
    assert after["mse"] < 0.5 * before["mse"], (before, after)
    assert sum(losses[-10:]) < sum(losses[:10])
    # the decoder API: held-out latents (the distribution the student was trained on;
    # samples of this untrained AR prior are not), decoded three ways
    z, _ = model.encode(dequantize_uniform(test[:32], seed=1))
    exact = model.decode(z, decoder="sequential")
    model.student = make_student(model)
    copy = model.decode(z, decoder="distilled")
    model.student = d.student
    distilled = model.decode(z, decoder="distilled")
    assert (distilled - exact).square().mean() < 0.5 * (copy - exact).square().mean()


def test_state_roundtrip_resumes_exactly(tmp_path, digits):
    """3 + 3 steps with a save/load in between == 6 steps straight."""
    train, _ = digits
    cfg = DistillConfig(steps=6, batch_size=8, lr=1e-3, warmup=2)
    straight = Distiller(perturbed_model(seed=2), cfg)
    for batch, _ in zip(batch_stream(train, 8), range(6)):
        straight.train_step(batch)

    first = Distiller(perturbed_model(seed=2), cfg)
    for batch, _ in zip(batch_stream(train, 8), range(3)):
        first.train_step(batch)
    save_state(tmp_path, first)
    assert (tmp_path / STATE_TENSORS).exists()
    meta = json.loads((tmp_path / STATE_JSON).read_text())                     # plain JSON, no pickle
    assert meta["step"] == 3 and meta["config"]["batch_size"] == 8
    student = make_student(perturbed_model(seed=2))
    student.load_state_dict(first.student.state_dict())
    second = Distiller(perturbed_model(seed=2), cfg, student=student)
    second.load_state(*read_state(tmp_path))
    for batch, _ in zip(batch_stream(train, 8, start_step=second.step), range(3)):
        second.train_step(batch)
    for a, b in zip(straight.student.parameters(), second.student.parameters()):
        assert torch.equal(a, b)


def test_batch_stream_is_a_function_of_the_step():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    full = [b for b, _ in zip(batch_stream(images, 4, seed=3), range(7))]
    tail = [b for b, _ in zip(batch_stream(images, 4, seed=3, start_step=4), range(3))]
    assert all(torch.equal(a, b) for a, b in zip(full[4:], tail))
    assert len(set(torch.cat(full[:2]).flatten().tolist())) == 8             # no repeats within an epoch


def test_cli_distill_resumes_and_farmer_load_picks_the_student_up(tmp_path):
    model = perturbed_model(seed=3)
    a = checkpoint.save(model, tmp_path / "a", train={"data": "digits"})
    b = checkpoint.save(model, tmp_path / "b", train={"data": "digits"})
    common = ["--batch-size", "8", "--lr", "1e-3", "--warmup", "2", "--eval-images", "16",
              "--save-every", "2", "--no-progress", "--device", "cpu"]
    assert cli_main(["distill", str(a), "--steps", "3", *common]) == 0
    assert cli_main(["distill", str(a), "--steps", "5", *common]) == 0        # resumes at step 3
    assert cli_main(["distill", str(b), "--steps", "5", *common]) == 0        # straight through
    meta = json.loads((a / STATE_JSON).read_text())
    assert meta["step"] == 5 and "undistilled" in meta and meta["distilled"]["mse"] >= 0
    la, lb = checkpoint.load(a), checkpoint.load(b)
    assert la.student is not None
    for p, q in zip(la.student.parameters(), lb.student.parameters()):
        assert torch.equal(p, q)
    imgs = farmer.sample(la, [0, 1], decoder="distilled", seed=0)
    assert imgs.shape == (2, 1, 8, 8) and imgs.dtype == torch.uint8


def test_a_warm_up_longer_than_the_run_is_warned_and_the_errors_say_their_space(tmp_path, capsys):
    model = perturbed_model(seed=4)
    path = checkpoint.save(model, tmp_path / "w", train={"data": "digits"})
    assert cli_main(["distill", str(path), "--steps", "2", "--warmup", "20", "--batch-size", "8", "--eval-images",
                     "8", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "warning: the warm-up (20 steps) is longer than the run (2 steps)" in out
    assert "ends at 2e-05 of 0.0002" in out                       # the default lr 2e-4, reached only to 2/20
    assert "pixels, clipped to [-1, 1]" in out and "grey levels" in out and "flow's input space" in out
