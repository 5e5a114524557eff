"""Jacobi and Gauss–Seidel–Jacobi inversion of the AF (farmer/jacobi.py, farmer/decoders.py)."""
import pytest
import torch
from _models import perturbed_model

import farmer
from farmer.jacobi import jacobi_reverse
from farmer.student import make_student

pytestmark = pytest.mark.usefixtures("one_thread")


def _outputs(model, seed=0, batch=3):
    """A batch of every block's output z (B, N, d), from real forward passes of random inputs."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    x = torch.rand(batch, cfg.tokens, cfg.token_dim, generator=g, dtype=next(model.parameters()).dtype) * 2 - 1
    _, _, path = model.flow(x, return_path=True)
    return path                                                     # [Z_0, Z_1, …, Z_n]


@pytest.mark.parametrize("chunk", [None, 1, 3, 7])
def test_n_minus_one_iterations_solve_the_triangular_system_exactly(chunk):
    model = perturbed_model(seed=1, scale=0.1).double()                     # stronger random blocks are chaotic
    path = _outputs(model)
    N = model.cfg.tokens
    for t, block in enumerate(model.flow.blocks):
        x, iters = jacobi_reverse(block, path[t + 1], tol=0.0, chunk=chunk)   # tol 0: never stop early
        assert iters == N - 1                                              # every chunk runs its own length
        assert torch.allclose(x, path[t], atol=1e-12, rtol=0), (t, (x - path[t]).abs().max())
        assert torch.allclose(x, block.reverse(path[t + 1]), atol=1e-12, rtol=0)


def test_after_k_iterations_the_first_k_tokens_are_exact():
    model = perturbed_model(seed=2, scale=0.1).double()
    path = _outputs(model)
    block = model.flow.blocks[1]                                           # a reversed-order block
    exact = block.order(path[1])
    for k in (1, 4, 9):
        x, iters = jacobi_reverse(block, path[2], tol=0.0, max_iter=k)
        err = (block.order(x) - exact).abs().amax(dim=(0, 2))              # (N,) in block order
        assert iters == k and err[:k + 1].max() < 1e-12                   # tokens 0 … k solved
        assert err[k + 1:].max() > 1e-9                                    # later ones not yet


def test_chunk_one_is_the_sequential_inverse():
    model = perturbed_model(seed=3, scale=0.1)
    path = _outputs(model)
    for t, block in enumerate(model.flow.blocks):
        x, iters = jacobi_reverse(block, path[t + 1], chunk=1)
        assert iters == model.cfg.tokens - 1
        assert torch.equal(x, block.reverse(path[t + 1]))                  # the same cached steps


def test_converged_jacobi_matches_the_sequential_decoder_and_stops_early():
    model = perturbed_model(seed=4, scale=0.02)                            # weakly coupled tokens: a contraction
    z = _outputs(model, batch=4)[-1]
    stats = {}
    x_j = model.decode(z, decoder="jacobi", jacobi_tol=1e-6, stats=stats)
    x_s = model.decode(z, decoder="sequential")
    assert (x_j - x_s).abs().max() < 1e-5
    iters = stats["jacobi_iterations"]
    assert len(iters) == model.cfg.flow_blocks and max(iters) < model.cfg.tokens - 1   # stopped on tol
    assert stats["jacobi_mean_iterations"] == sum(iters) / len(iters)
    # started from the exact answer, one iteration sees no change
    block = model.flow.blocks[0]
    path = _outputs(model)
    assert jacobi_reverse(block, path[1], init=path[0], tol=1e-5)[1] == 1


def test_hybrid_starts_from_the_student_and_needs_fewer_iterations():
    model = perturbed_model(seed=5, scale=0.1)
    z = _outputs(model, batch=4)[-1]
    with pytest.raises(ValueError, match="needs a distilled student"):
        model.decode(z, decoder="hybrid")
    model.student = make_student(model)                                    # one Jacobi step from x = z
    assert (model.decode(z, decoder="hybrid", jacobi_tol=1e-6) - model.decode(z)).abs().max() < 1e-5
    # k hybrid iterations are k Jacobi iterations started, block by block, from the student's output
    for k in (1, 3):
        x_h = model.decode(z, decoder="hybrid", jacobi_tol=0.0, jacobi_max_iter=k)
        t = model.unmix_latent(z)
        for b in reversed(range(model.cfg.flow_blocks)):
            init = model.student.invert_block(model.student.blocks[b], t)
            t, iters = jacobi_reverse(model.flow.blocks[b], t, init, tol=0.0, max_iter=k)
            assert iters == k
        assert torch.equal(x_h, model.tokens_to_image(t))
        assert (x_h - model.decode(z)).abs().max() > 1e-4                   # and not yet converged


def test_sample_with_jacobi_matches_sequential_and_reports_iterations():
    model = perturbed_model(seed=6, scale=0.1)
    seq = farmer.sample(model, [0, 1, 2], seed=1)
    res = farmer.sample(model, [0, 1, 2], seed=1, decoder="jacobi", jacobi_tol=1e-6, jacobi_chunk=8,
                        return_intermediates=True)
    assert (res.images.int() - seq.int()).abs().max() <= 1                 # uint8 rounding at most
    assert res.stats["decoder"] == "jacobi" and res.stats["jacobi"]["chunk"] == 8
    assert len(res.stats["jacobi_iterations"]) == model.cfg.flow_blocks


@pytest.mark.parametrize("kwargs, name", [({"jacobi_tol": -1.0}, "jacobi_tol"), ({"jacobi_tol": float("nan")}, "jacobi_tol"),
                                          ({"jacobi_max_iter": 0}, "jacobi_max_iter"),
                                          ({"jacobi_chunk": 2.5}, "jacobi_chunk")])
def test_bad_jacobi_settings_are_named(kwargs, name):
    model = perturbed_model()
    z = torch.randn(1, model.cfg.tokens, model.cfg.token_dim)
    with pytest.raises(ValueError, match=name):
        model.decode(z, decoder="jacobi", **kwargs)
    with pytest.raises(ValueError, match=name):
        farmer.sample(model, [0], decoder="jacobi", **kwargs)
