"""Helpers shared by the `farmer` subcommands (farmer/cli.py, farmer/cli_sample.py): error messages
that name flags, option parsing, devices, file-name tags."""
from __future__ import annotations

import argparse
import sys


def _opt_int(s: str) -> int | None:
    return None if s.lower() == "none" else int(s)


def _pick_device(name: str) -> str:
    """"auto" -> "cuda" when available, else "cpu"; anything else as given."""
    import torch
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


_FLAG_ALIASES = {"num_samples": "--num", "cfg_scale": "--cfg", "warmup_steps": "--warmup-steps",
                 "jacobi_max_iter": "--jacobi-max-iter", "jacobi_chunk": "--jacobi-chunk",
                 "jacobi_tol": "--jacobi-tol"}


def _flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """{library argument name: the flag that sets it} for one subcommand."""
    names = {a.dest: a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help"}
    aliases = {k: v for k, v in _FLAG_ALIASES.items() if v in names.values()}
    return {**names, **aliases}


def name_flags(message: str, flags: dict[str, str]) -> str:
    """Rewrite the library's argument names in an error message as the flags a user types:
    "num_samples must be a positive int" -> "--num must be a positive int". Only identifiers
    with an underscore or an alias are rewritten (plain words such as "data" stay words)."""
    import re

    def sub(m: re.Match) -> str:
        word = m.group(0)
        return flags[word] if word in flags and ("_" in word or word in _FLAG_ALIASES) else word
    return re.sub(r"(?<![\w-])[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?![\w-])", sub, message)


def _friendly(fn, parser: argparse.ArgumentParser | None = None):
    """Run a subcommand; known failures print one clear line instead of a traceback (exit status 1),
    naming flags rather than the library's argument names."""
    def run(args: argparse.Namespace) -> int:
        from .train import TrainingAborted
        try:
            return int(fn(args) or 0)
        except (ValueError, FileNotFoundError, TrainingAborted) as e:
            msg = name_flags(str(e), _flags_of(parser)) if parser is not None else str(e)
            print(f"farmer {args.command}: error: {msg}", file=sys.stderr)
            return 1
    return run


def _checkpoint_tag(path) -> str:
    """A file-name tag for a checkpoint: "fmnist", or "run_step_00000040" for a run folder's checkpoint."""
    run_checkpoint = path.parent.name == "checkpoints" and path.name.startswith("step_")   # RUN/checkpoints/step_*
    return f"{path.parent.parent.name}_{path.name}" if run_checkpoint else path.name

