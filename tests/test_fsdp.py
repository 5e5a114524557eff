"""FSDP2 (farmer/sharding.py): the trainer under torchrun with 2 CPU processes (gloo), `--fsdp`.

Three claims, each able to fail:
  * sharding changes nothing but the memory: a 2-process FSDP run of the tiny
    preset ends with the weights (raw and EMA) of an ordinary single-process
    run with the same global batch, within float tolerance;
  * an FSDP run killed after a checkpoint and resumed with --resume ends with
    exactly the weights of the uninterrupted FSDP run (and, resharded onto
    one process, with the same weights to float tolerance);
  * the consolidated export (config.json + model.safetensors) loads with
    farmer.load and scores the same nll as the sharded model scored in the
    run; consolidating the shard files alone offline gives the same tensors.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, cli_env
from safetensors.torch import load_file

DRIVER = textwrap.dedent("""
    import json, os, sys
    import torch
    from farmer.checkpoint import write_tensors, model_state
    from farmer.config import TrainConfig, presets
    from farmer.data import dequantize_uniform, load_synthetic
    from farmer.train import train

    out, fsdp, resume, die_at = sys.argv[1], sys.argv[2] == "fsdp", sys.argv[3] == "resume", sys.argv[4]
    # label dropout draws from each rank's own RNG stream, so switch it off to compare with one process
    model_cfg = presets["tiny"].replace(label_dropout=0.0)
    # the Gaussian curriculum for 3 steps, then a uniform tail: the curriculum's end is gathered and kept
    cfg = TrainConfig(data="synthetic", batch_size=16, steps=6, lr=2e-3, warmup_steps=2, ckpt_every=3,
                      log_every=2, sample_every=0, ema_decay=0.9, device="cpu", fsdp=fsdp,
                      noise="gaussian", uniform_tail=0.5)

    def log(line):
        print(line, flush=True)
        if die_at != "-" and line.startswith("checkpoint") and line.endswith(die_at):
            os._exit(3)                                  # rank 0 dies at once; torchrun takes the others down

    if fsdp:    # our own group, so that train() leaves it up for the gathers below
        import torch.distributed as dist
        if "WORLD_SIZE" in os.environ:
            dist.init_process_group("gloo")
        else:       # FSDP in one process (a resharded resume)
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    res = train(model_cfg, cfg, out, progress=False, resume=resume, log=log)
    rank = int(os.environ.get("RANK", "0"))
    if fsdp:
        from farmer.sharding import full_tensors
        raw, ema = dict(full_tensors(res.model)), dict(full_tensors(res.ema))      # collective
    else:
        raw, ema = model_state(res.model), model_state(res.ema)
    # the sharded EMA scores a fixed batch (its forward all-gathers, on every rank)
    x = load_synthetic("test", 8, 1, 10, n=32)
    xb, yb = x.get_batch(list(range(32)))
    nll = res.ema.nll(xb, yb, seed=5)["nll"]
    if rank == 0:
        write_tensors(f"{out}/final.safetensors", {**{"raw." + k: v for k, v in raw.items()},
                                                   **{"ema." + k: v for k, v in ema.items()}, "nll": nll})
    if fsdp:    # a group left up at exit can abort in gloo's thread teardown ("terminate called ...")
        dist.barrier()
        dist.destroy_process_group()
""")


def _run(driver, out, *, procs: int, fsdp: bool, resume: bool = False, die_at: str = "-"):
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--standalone"]
           if procs > 1 else [sys.executable])
    return subprocess.run([*cmd, str(driver), str(out), "fsdp" if fsdp else "plain",
                           "resume" if resume else "fresh", die_at],
                          env=cli_env(), capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 2-process FSDP run and a single-process ordinary run of the same recipe."""
    tmp = tmp_path_factory.mktemp("fsdp")
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    fsdp = _run(driver, tmp / "fsdp", procs=2, fsdp=True)
    assert fsdp.returncode == 0, fsdp.stdout[-3000:] + fsdp.stderr[-3000:]
    plain = _run(driver, tmp / "plain", procs=1, fsdp=False)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    return tmp, driver, fsdp


@pytest.mark.slow
def test_two_process_fsdp_matches_one_ordinary_process(runs):
    tmp, _, proc = runs
    assert "2 process(es)" in proc.stdout and "FSDP" in proc.stdout
    sharded, single = load_file(tmp / "fsdp" / "final.safetensors"), load_file(tmp / "plain" / "final.safetensors")
    assert sharded.keys() == single.keys()
    worst = max((sharded[k] - single[k]).abs().max().item() for k in sharded if k != "nll")
    # float32 sums in another order, amplified where Adam divides tiny gradients by their own size
    # (1.5e-5 measured with the Gaussian noise); a wrong shard or a missed sync moves weights by ~lr = 2e-3
    assert worst < 5e-5, f"FSDP and single-process weights differ by {worst}"
    # not trivially untrained: the zero-initialised output layer moved
    assert sharded["raw.flow.blocks.0.proj_out.weight"].abs().max() > 1e-4
    # and the EMA is not the raw weights
    assert not torch.equal(sharded["ema.flow.blocks.0.proj_out.weight"], sharded["raw.flow.blocks.0.proj_out.weight"])
    # the EMA where the curriculum ends, gathered from the shards, is the single process's and step 3's export
    end_f, end_p = (load_file(tmp / run / "curriculum_end" / "model.safetensors") for run in ("fsdp", "plain"))
    step3 = load_file(tmp / "fsdp" / "checkpoints" / "step_00000003" / "model.safetensors")
    assert end_f.keys() == end_p.keys() == step3.keys()
    assert max((end_f[k] - end_p[k]).abs().max().item() for k in end_f) < 5e-5      # the tolerance above
    assert all(torch.equal(end_f[k], step3[k]) for k in end_f)
    # each rank wrote its own shards
    shards = sorted(p.name for p in (tmp / "fsdp" / "checkpoints" / "step_00000006" / "sharded").iterdir())
    assert any(n.startswith("shard-00001-") for n in shards) and any(n.startswith("shard-00002-") for n in shards)


@pytest.mark.slow
def test_fsdp_run_killed_and_resumed_equals_the_uninterrupted_run(runs):
    tmp, driver, _ = runs
    cut = _run(driver, tmp / "cut", procs=2, fsdp=True, die_at="step_00000003")
    assert cut.returncode != 0, "the run was meant to die after its first checkpoint"
    assert (tmp / "cut" / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    assert not (tmp / "cut" / "final.safetensors").exists()
    import shutil
    shutil.copytree(tmp / "cut", tmp / "cut-one-rank")
    resumed = _run(driver, tmp / "cut", procs=2, fsdp=True, resume=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {tmp / 'cut' / 'checkpoints' / 'step_00000003'} at step 3" in resumed.stdout
    a, b = load_file(tmp / "cut" / "final.safetensors"), load_file(tmp / "fsdp" / "final.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"resumed FSDP run differs from the uninterrupted one in {k}"
    # the metrics log has one record per logged step, none duplicated by the replay
    steps = [json.loads(ln)["step"] for ln in (tmp / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    # DCP reshards: the 2-rank checkpoint resumed by one FSDP process ends at the same weights (to float
    # tolerance: one rank sums its gradients in another order)
    one = _run(driver, tmp / "cut-one-rank", procs=1, fsdp=True, resume=True)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    assert "1 process(es)" in one.stdout and "resumed from" in one.stdout
    c = load_file(tmp / "cut-one-rank" / "final.safetensors")
    worst = max((c[k] - b[k]).abs().max().item() for k in b if k != "nll")
    assert worst < 1e-5, f"resumed on one rank, the weights differ by {worst}"


@pytest.mark.slow
def test_consolidated_checkpoint_loads_and_scores_the_same_nll(runs, tmp_path):
    import farmer
    from farmer.data import load_synthetic
    from farmer.sharding import consolidate
    tmp, _, _ = runs
    step = tmp / "fsdp" / "checkpoints" / "step_00000006"
    final = load_file(tmp / "fsdp" / "final.safetensors")
    model = farmer.load(step)                                        # the plain reader, nothing FSDP-specific
    x = load_synthetic("test", 8, 1, 10, n=32)
    xb, yb = x.get_batch(list(range(32)))
    nll = model.nll(xb, yb, seed=5)["nll"]
    assert torch.allclose(nll, final["nll"], rtol=0, atol=1e-4), (nll - final["nll"]).abs().max()
    assert all(torch.equal(v, final["ema." + k]) for k, v in load_file(step / "model.safetensors").items())
    # offline consolidation from the shard files alone: the same EMA, and the raw weights on request
    ema_dir = consolidate(step, tmp_path / "ema")
    assert all(torch.equal(v, final["ema." + k]) for k, v in load_file(ema_dir / "model.safetensors").items())
    raw_dir = consolidate(step, tmp_path / "raw", weights="raw")
    raw = farmer.load(raw_dir)
    assert all(torch.equal(v, final["raw." + k]) for k, v in raw.state_dict().items())
    assert json.loads((raw_dir / "config.json").read_text())["weights"] == "raw"
    # and the app opens the FSDP run folder like any other: it samples and scores
    import _app_server  # noqa: F401 - puts the repo root (the app package) on sys.path
    from app import Workbench
    wb = Workbench(tmp / "fsdp")
    assert torch.equal(wb.model.state_dict()["flow.blocks.0.proj_out.weight"],
                       final["ema.flow.blocks.0.proj_out.weight"])
    grid = list(wb.sample(wb.class_choices[1], guidance="none", batch_size=2))[-1][0]
    assert grid.ndim == 2 and grid.std() > 0
    assert wb.likelihood("test image", test_index=0) is not None


def test_a_sharded_run_draws_grids_and_refuses_a_plain_resume_and_names_a_damaged_shard(tmp_path, run_farmer):
    out = tmp_path / "run"
    r = run_farmer("train", "--preset", "tiny", "--data", "synthetic", "--steps", "2", "--batch-size", "8",
                   "--fsdp", "--sample-every", "2", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image
    with Image.open(out / "samples" / "step_00000002.png") as grid:       # sampled from the gathered EMA
        assert grid.size[0] > 8 * 10
    # the CLI resumes with the run's own settings (--fsdp included); the library is told them explicitly
    from farmer.config import TrainConfig, presets
    from farmer.train import train
    with pytest.raises(ValueError, match="resume it with --fsdp"):
        train(presets["tiny"], TrainConfig(data="synthetic", steps=4, batch_size=8, device="cpu"), out,
              resume=True, progress=False)
    shard = sorted((out / "checkpoints" / "step_00000002" / "sharded").glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    r = run_farmer("train", "--preset", "tiny", "--data", "synthetic", "--steps", "4", "--batch-size", "8",
                   "--resume", "--fsdp", "--out", out, "--no-progress")
    assert r.returncode != 0 and shard.name in r.stderr and "corrupt" in r.stderr, r.stderr[-2000:]


def test_activation_checkpointing_gives_the_same_gradients_with_dropout():
    """Recomputed layers replay their dropout masks: loss and every gradient equal the stored-activation run."""
    import farmer
    from farmer.layers import TransformerLayer, set_activation_checkpointing
    cfg = farmer.presets["tiny"].replace(dropout=0.2)
    torch.manual_seed(0)
    model = farmer.Farmer(cfg).train()
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 3])

    def grads():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)                                          # the same dropout masks
        loss, _ = model.loss(x, y)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain = grads()
    n = set_activation_checkpointing(model)
    assert n == sum(isinstance(m, TransformerLayer) for m in model.modules()) == 2 * 1 + 1
    ckpt_loss, ckpt = grads()
    assert torch.equal(plain_loss, ckpt_loss)
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for k in plain:
        assert torch.allclose(plain[k], ckpt[k], atol=1e-7, rtol=1e-6), k
    # and it really recomputes: the forward keeps far fewer activation bytes for the backward pass
    def saved_bytes():
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.loss(x, y)
        return total[0]
    kept_checkpointed = saved_bytes()
    set_activation_checkpointing(model, False)
    assert not any(m.checkpointing for m in model.modules() if isinstance(m, TransformerLayer))
    kept_plain = saved_bytes()
    assert kept_checkpointed < 0.7 * kept_plain, (kept_checkpointed, kept_plain)


def test_the_bf16_policy_gathers_layers_in_bf16_and_keeps_the_affine_maps_float32():
    """The CUDA mixed-precision policy, run here on one CPU process: what runs in bf16 and what does not."""
    import torch.distributed as dist
    import farmer
    from farmer import sharding
    from farmer.train import set_precision
    cfg = farmer.presets["tiny"]
    torch.manual_seed(0)
    ref = farmer.Farmer(cfg)
    model = farmer.Farmer(cfg)
    model.load_state_dict(ref.state_dict())
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        set_precision(model, "bf16")
        sharding.shard_model(model, sharding.device_mesh(torch.device("cpu")), bf16=True)
        seen = {}
        block = model.flow.blocks[0]
        block.trunk.layers[0].register_forward_pre_hook(
            lambda m, i: seen.__setitem__("layer", m.mlp.fc.weight.dtype))
        block.register_forward_pre_hook(lambda m, i: seen.__setitem__("proj_out", m.proj_out.weight.dtype))
        model.ar.head_informative.register_forward_pre_hook(
            lambda m, i: seen.__setitem__("gmm head", m.weight.dtype))
        x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 3])
        loss, terms = model.loss(x, y)
        loss.backward()
        assert seen == {"layer": torch.bfloat16, "proj_out": torch.float32, "gmm head": torch.float32}
        assert loss.dtype == terms["logdet"].dtype == torch.float32
        ref_loss, _ = ref.loss(x, y)
        assert abs(loss.item() - ref_loss.item()) < 1e-2 * abs(ref_loss.item())      # bf16 trunks, not garbage
        assert loss.item() != ref_loss.item()                                          # and really in bf16
        # the sharded master weights and their gradients stay float32
        assert all(p.dtype == p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)
    finally:
        dist.destroy_process_group()
