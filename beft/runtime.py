"""What a run takes from the machine it runs on: its device, the precision that device supports, and where the
task files are. Plain values in, plain values out: the spec builder (beft.config) asks, nothing else needs to."""
from __future__ import annotations

import gc
import os
from pathlib import Path

import torch

from beft.errors import BeftError


def data_dir(value) -> str | None:
    """`data_dir=...`, else $BEFT_DATA_DIR, as an absolute path; None means the Hugging Face hub."""
    value = value or os.environ.get("BEFT_DATA_DIR") or None
    return str(Path(value).expanduser().resolve()) if value else None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise BeftError(f"trainer.device={name!r} is not a device; valid: auto, cpu, cuda, cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BeftError(f"trainer.device={name} but no CUDA GPU is visible; use trainer.device=cpu or auto")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":   # bf16 where the GPU has it; else fp16 with a gradient scaler (V100, T4); CPU: fp32
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if precision != "fp32" and device.type != "cuda":   # autocast is CUDA-only here: the record would claim bf16
        raise BeftError(f"trainer.precision={precision} needs a CUDA device, and this run is on {device.type}; "
                        f"valid here: auto, fp32")
    return precision


def free_device_memory() -> None:
    """Return what dropped models held: Python's cycles first (a model refers to itself through its modules),
    then the CUDA allocator's cache, so the next model loads into memory that is really free."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
