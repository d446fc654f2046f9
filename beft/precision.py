"""The float types a run computes and stores in: autocast for the matrix products, and the dtype the frozen
weights are kept in. Trainable tensors (biases, added biases, adapters, the head) and the optimizer state stay
fp32 whatever is chosen: an AdamW update of a bias is far below bf16's resolution.

Autocast runs on CUDA (bf16 or fp16) and on the CPU (bf16, through oneDNN: fast where the CPU has bf16
instructions, emulated and slower than fp32 where it has not; beft.runtime.cpu_bf16 tells which). The frozen
weights: `trainer.frozen_dtype=auto` keeps what beft always did (a decoder under half-precision autocast on CUDA
loads them in that dtype, so a 7B model fits one GPU; fp32 otherwise: autocast rounds each product's operands to
bf16 either way); `bf16` keeps the frozen matrices in bf16 on the CPU too (half the memory and bandwidth).
Imports nothing of beft but its errors.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from beft.errors import BeftError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Method scopes (beft.method_table) that train weight matrices: theirs cannot be frozen in bf16.
TRAINS_MATRICES = ("all", "random_weights")


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast on CUDA, bf16 on the CPU; plain fp32 otherwise. Trainable weights stay fp32."""
    if (device.type == "cuda" and precision in ("bf16", "fp16")) or (device.type == "cpu" and precision == "bf16"):
        return torch.autocast(device.type, dtype=DTYPES[precision])
    return contextlib.nullcontext()


def frozen_dtype(choice: str, kind: str, precision: str, scope: str, device: torch.device) -> str:
    """The dtype (fp32 | bf16 | fp16) the frozen weights are kept in, for `trainer.frozen_dtype=choice`."""
    if choice == "auto":   # what beft always did; elsewhere autocast casts each product's operands to bf16 anyway
        half = kind == "decoder" and device.type == "cuda" and precision in ("bf16", "fp16") and scope != "all"
        return precision if half else "fp32"
    if choice == "bf16" and precision != "bf16":
        raise BeftError(f"trainer.frozen_dtype=bf16 needs trainer.precision=bf16 (got {precision}): frozen bf16 "
                        "weights are only multiplied under bf16 autocast; valid: auto, fp32")
    if choice == "bf16" and scope in TRAINS_MATRICES:
        raise BeftError("trainer.frozen_dtype=bf16 keeps the weight matrices frozen in bf16, but this method trains "
                        "them; valid here: auto, fp32")
    return choice


def store_frozen_matrices(model: nn.Module, dtype: torch.dtype, keep: set[str]) -> int:
    """Keeps the weight matrices of the Linear and Embedding layers in `dtype`, except the parameters named in
    `keep` (the task head, which trains). Norms and biases stay fp32: a norm's weight must match its bias's dtype,
    and biases are what trains. Returns the number of values cast."""
    cast = 0
    for module_name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            continue
        name = f"{module_name}.weight" if module_name else "weight"
        if name in keep or module.weight.dtype == dtype:
            continue
        module.weight.data = module.weight.data.to(dtype)
        cast += module.weight.numel()
    return cast


def describe(device: torch.device, precision: str, frozen: str) -> dict:
    """What a record says ran: the autocast dtype (None: plain fp32), the frozen weights' dtype, and under CPU bf16
    whether this CPU multiplies bf16 natively or emulates it (beft.runtime.cpu_bf16)."""
    from beft.runtime import cpu_bf16   # the machine's side; kept out of the module's import for its plain users

    out = {"autocast": precision if precision in ("bf16", "fp16") else None, "frozen_dtype": frozen}
    if device.type == "cpu" and precision == "bf16":
        out.update(cpu_bf16=cpu_bf16(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    return out
