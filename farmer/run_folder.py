"""A run folder belongs to one run: what `farmer train --out DIR` may do with what DIR already holds.

A training run writes, under its output folder,

    metrics.jsonl, loss_curve.png, checkpoints/ (step_*/ and latest), samples/,
    curriculum_end/ (with a uniform tail)

and nothing else. Before a run writes anything, `claim` decides from what is
there and from how the run was started:

    resume=False     a fresh run: refused if DIR holds a run (any of the files above), unless
                     replace=True, which deletes that earlier run's files first (and only those)
    resume=True      continue DIR's newest checkpoint: refused if there is none (a typo in --out
                     must not start a fresh full-length run)
    resume="auto"    start-or-resume, for a preemptible job whose first start has nothing to resume:
                     the newest checkpoint if there is one, else a fresh start (files of a run that
                     died before its first checkpoint are that same run's, and are restarted)

So the records, checkpoints and grids of one run are never mixed with
another's, and nothing of an earlier run is overwritten or deleted unless the
caller asked for it by name. Under torchrun only rank 0 looks at the folder
and acts; `claim_for_ranks` gives every rank its verdict.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch.distributed as dist

from . import checkpoint as ckpt

if TYPE_CHECKING:  # pragma: no cover
    from .distributed import Dist

# what a run writes under --out
RUN_FILES = ("metrics.jsonl", "loss_curve.png", "checkpoints", "samples", "curriculum_end")
RESUME_MODES = (False, True, "auto")


def run_files(out: str | os.PathLike) -> list[Path]:
    """The files and folders of a training run that `out` already holds (empty folders do not count)."""
    out = Path(out)
    found = []
    for name in RUN_FILES:
        p = out / name
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            found.append(p)
    return found


def check_resume_mode(resume: object) -> bool | str:
    """ValueError unless `resume` is False, True or "auto"."""
    if not any(resume is m or (isinstance(m, str) and resume == m) for m in RESUME_MODES):
        raise ValueError(f"resume must be False, True or 'auto', got {resume!r}")
    return resume                                                             # type: ignore[return-value]


def claim(out: str | os.PathLike, resume: bool | str = False, replace: bool = False) -> Path | None:
    """Decide what a run may do with `out`; returns the checkpoint to resume from, or None for a fresh start.

    Raises ValueError (naming the folder, and the flags that would continue or
    replace the run there) when the run must not start. With replace=True the
    earlier run's files (RUN_FILES) are deleted here, nothing else in `out`.
    """
    resume = check_resume_mode(resume)
    if replace and resume:
        raise ValueError("--replace starts a new run in place of the old one; it cannot be combined with --resume")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    last = ckpt.latest_checkpoint(out) if out.is_dir() else None
    if resume is True and last is None:
        raise ValueError(f"--resume: no checkpoint in {out / 'checkpoints'} (is --out right?). "
                         f"Use --resume auto to start the run there when nothing is there to resume, "
                         f"or leave --resume out for a fresh run")
    if resume:
        return last                                                           # None: "auto" starting fresh
    found = run_files(out) if out.is_dir() else []
    if found and not replace:
        what = f"a run up to {last.name}" if last is not None else "a run's files"
        raise ValueError(f"--out {out} already holds {what} ({', '.join(p.name for p in found)}); a run folder "
                         f"belongs to one run. Continue it with --resume, replace it on purpose with --replace "
                         f"(deletes {', '.join(RUN_FILES)} there), or pick another --out")
    for p in found:                                                           # replace=True: the old run goes
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return None


def claim_for_ranks(out: Path, resume: bool | str, replace: bool, dd: "Dist") -> Path | None:
    """`claim` on rank 0, before any rank writes; every rank gets the verdict (a collective).

    Returns the checkpoint to resume from (None: a fresh start). A refusal is a
    ValueError on every rank carrying rank 0's message (the folder and the flags):
    torchrun may stop the job on whichever rank fails first, so each must say why."""
    error: ValueError | None = None
    last = None
    if dd.main:
        try:
            last = claim(out, resume, replace)
        except ValueError as e:
            error = e
    if dd.world > 1:                                                    # rank 0's verdict, to every rank
        verdict = [None if error is None else str(error)]
        dist.broadcast_object_list(verdict, src=0, device=dd.device)
        if not dd.main:
            if verdict[0] is not None:
                raise ValueError(verdict[0])
            last = ckpt.latest_checkpoint(out) if resume else None
    if error is not None:
        raise error
    return last


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records past `step` (written after the checkpoint we resume from) so the log has no duplicates."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    ckpt.atomic_write_bytes(path, "".join(ln + "\n" for ln in keep).encode())
