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


# CPU flags of the instructions that compute bf16 products natively (oneDNN uses them for CPU autocast).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is not there)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def cpu_bf16() -> str:
    """native: the CPU multiplies bf16 itself (AVX512-BF16, AMX); emulated: oneDNN converts to fp32 and back,
    slower than plain fp32 (measured: results/bench/cpu_bf16.md)."""
    return "native" if cpu_flags() & set(NATIVE_BF16_FLAGS) else "emulated"


def resolve_precision(precision: str, device: torch.device, allow_emulated_bf16: bool = False) -> str:
    """auto: bf16 autocast on a GPU that has it, else fp16 with a gradient scaler (V100, T4); fp32 on the CPU, so
    CPU records keep their keys."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if device.type == "cuda" or precision == "fp32":
        return precision
    if precision != "bf16":
        raise BeftError(f"trainer.precision={precision} needs a CUDA device, and this run is on {device.type}; "
                        f"valid here: auto, fp32, bf16")
    if cpu_bf16() == "emulated" and not allow_emulated_bf16:
        raise BeftError(f"trainer.precision=bf16: this CPU has no bf16 instructions ({', '.join(NATIVE_BF16_FLAGS)} "
                        f"absent; torch reports {torch.backends.cpu.get_cpu_capability()}), so bf16 is emulated and "
                        "slower than fp32 (results/bench/cpu_bf16.md); use trainer.precision=fp32, or "
                        "trainer.allow_emulated_bf16=true to run it anyway")
    return precision


def free_device_memory() -> None:
    """Return what dropped models held: Python's cycles first (a model refers to itself through its modules),
    then the CUDA allocator's cache, so the next model loads into memory that is really free."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
