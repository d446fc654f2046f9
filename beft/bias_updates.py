"""Train a bias vector through a structured update (the paper's Table 4, docs/paper.md §D): b = b_0 + Δb, b_0 frozen.

Δb is read off an m × n matrix, m·n = the bias width (row-major `vec`); by default (m, n) is the most square
factorisation with m >= n (768 -> 32 × 24, the authors' hard-coded shape; 384 -> 24 × 16), or `method.shape`.
With rank r and scale s = alpha / r:

    lora    Δb = s · vec(Aᵀ Bᵀ)             A ∈ R^{r×m} Kaiming-uniform, B ∈ R^{n×r} = 0      r(m+n) trainable
    dora    b  = μ · (b_0 + Δb) / ‖b_0 + Δb‖  Δb as lora, μ ∈ R initialised ‖b_0‖              r(m+n) + 1
    vera    Δb = s · vec(Aᵀ diag(d) Bᵀ diag(β)) A, B frozen random (Kaiming-uniform), shared by every
                                             bias of one shape; d ∈ R^r = d_init, β ∈ R^n = 0     r + n
    vera1d  Δb = s · σ · 1                   σ ∈ R = 0                                            1

Each form starts at Δb = 0 (b = b_0: the model's outputs are the pre-trained model's), as its method defines.
`method.authors=true` gives the authors' code instead (docs/paper.md §D.2-D.4): VeRA's d and β Kaiming-uniform and
VeRA1D's σ = 1 (so Δb ≠ 0 at the start), and DoRA's b = b_0 + s·μ·normalise(vec(B A) + b_0), which counts b_0
twice. Only LoRA ran in the authors' Table 4 code; the others are defined there but inactive.

The update is a `torch.nn.utils.parametrize` parametrization of the bias parameter (the model's own, or the one
a BEFT adapter added to a bias-free projection): no model code changes, and `merge` turns it back into a plain
bias holding b_0 + Δb, so the trained run exports as an ordinary BEFT adapter.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from beft.bias_map import PAPER_LABELS, BiasMap, Cell
from beft.errors import BeftError
from beft.method_table import method

FORMS = ("lora", "dora", "vera", "vera1d")   # each method's form is its entry in beft.method_table


def square_shape(width: int) -> tuple[int, int]:
    """(m, n) with m·n = width, m >= n and n as large as possible: the most square factorisation."""
    n = max(d for d in range(1, math.isqrt(width) + 1) if width % d == 0)
    return width // n, n


def shape_for(width: int, shape, where: str) -> tuple[int, int]:
    """The update's matrix shape for a bias of `width`: `shape` if given, else the most square one. A width with
    no factorisation into two factors > 1 (a prime) is refused unless `shape` accepts [width, 1] explicitly."""
    if shape is not None:
        m, n = (int(x) for x in shape)
        if m * n != width or m < 1 or n < 1:
            raise BeftError(f"method.shape=[{m},{n}] does not fit {where} of width {width}: m·n must equal "
                            f"{width}, e.g. {list(square_shape(width))}")
        return m, n
    m, n = square_shape(width)
    if n == 1 and width > 1:
        raise BeftError(f"{where} has width {width}, a prime: no m × n matrix with m, n > 1 holds it; give "
                        f"method.shape=[{width},1] for a rank-1 vector update, or train the bias directly "
                        f"(method=fixed)")
    return m, n


def _kaiming(*size: int) -> torch.Tensor:
    """nn.Linear's default init (Kaiming-uniform, a=√5: bound 1/√fan_in), as the authors initialise A."""
    tensor = torch.empty(*size)
    nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))
    return tensor


class BiasUpdate(nn.Module):
    """A parametrization of one bias: forward(b_0) = the bias the model uses."""

    def __init__(self, form: str, b0: torch.Tensor, m: int, n: int, rank: int, alpha: float, authors: bool,
                 d_init: float = 0.1, shared: dict | None = None):
        super().__init__()
        self.form, self.m, self.n, self.authors = form, m, n, authors
        self.scale = alpha / rank
        if form in ("lora", "dora"):
            self.lora_A = nn.Parameter(_kaiming(rank, m))
            self.lora_B = nn.Parameter(torch.zeros(n, rank))
        if form == "dora":
            norm = float(b0.detach().float().norm())
            if norm == 0.0:
                raise BeftError("dora_bias needs a non-zero pre-trained bias (its magnitude ‖b_0‖ sets the "
                                "direction's length); an added bias starts at zero: use lora_bias or vera_bias")
            self.magnitude = nn.Parameter(torch.tensor(norm))
        if form == "vera":
            # Frozen random projections, one pair per shape (VeRA shares them across layers); not trained or saved.
            shared = {} if shared is None else shared
            if (m, n, rank) not in shared:
                shared[(m, n, rank)] = (_kaiming(rank, m), _kaiming(n, rank))
            A, B = shared[(m, n, rank)]
            self.register_buffer("vera_A", A, persistent=False)
            self.register_buffer("vera_B", B, persistent=False)
            self.vera_d = nn.Parameter(_kaiming(1, rank)[0] if authors else torch.full((rank,), float(d_init)))
            self.vera_b = nn.Parameter(_kaiming(1, n)[0] if authors else torch.zeros(n))
        if form == "vera1d":
            self.vera_scale = nn.Parameter(torch.tensor(1.0 if authors else 0.0))

    def delta(self) -> torch.Tensor:
        """Δb as a flat vector of length m·n (for dora: the low-rank part before normalisation)."""
        if self.form in ("lora", "dora"):
            return self.scale * (self.lora_A.T @ self.lora_B.T).flatten()
        if self.form == "vera":
            left = self.vera_A.T * self.vera_d                      # Aᵀ diag(d): m × r
            right = self.vera_B.T * self.vera_b                     # Bᵀ diag(β): r × n
            return self.scale * (left @ right).flatten()
        return self.scale * self.vera_scale.expand(self.m * self.n)

    def forward(self, b0: torch.Tensor) -> torch.Tensor:
        flat = b0.flatten()
        if self.form == "dora" and self.authors:
            # out = W x + b_0 + s·μ·normalise(vec(B A) + b_0): the authors flatten B A (n × m), and b_0 enters twice
            direction = (self.lora_B @ self.lora_A).flatten().to(flat.dtype) + flat
            return (flat + self.scale * self.magnitude * direction / direction.norm()).view_as(b0)
        delta = self.delta().to(flat.dtype)
        if self.form != "dora":
            return (flat + delta).view_as(b0)
        direction = flat + delta
        return (self.magnitude * direction / direction.norm()).view_as(b0)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _owner(model: nn.Module, param_name: str) -> tuple[nn.Module, str]:
    module, _, attr = param_name.rpartition(".")
    return model.get_submodule(module), attr


def attach(model: nn.Module, bias_map: BiasMap, cells: list[Cell], spec: dict) -> dict[Cell, BiasUpdate]:
    """Parametrize the bias of every cell with the update `spec` describes; b_0 is frozen. Returns the updates."""
    form = method(spec["method"]).form
    shared: dict = {}
    updates = {}
    for cell in cells:
        name = bias_map.param_name(cell)
        owner, attr = _owner(model, name)
        b0 = getattr(owner, attr)
        m, n = shape_for(b0.numel(), spec.get("shape"), f"{PAPER_LABELS[cell[1]]} of layer {cell[0]}")
        update = BiasUpdate(form, b0, m, n, int(spec["rank"]), float(spec["alpha"]), bool(spec.get("authors")),
                            float(spec.get("d_init", 0.1)), shared).to(device=b0.device, dtype=torch.float32)
        update.cell = cell
        parametrize.register_parametrization(owner, attr, update)
        owner.parametrizations[attr].original.requires_grad_(False)
        updates[cell] = update
    return updates


def updates_of(model: nn.Module) -> dict[str, BiasUpdate]:
    """{parameter name the bias had before: its update} for every attached update."""
    found = {}
    for module_name, module in model.named_modules():
        for attr, plist in getattr(module, "parametrizations", {}).items():
            if isinstance(plist[0], BiasUpdate):
                found[f"{module_name}.{attr}" if module_name else attr] = plist[0]
    return found


def merge(model: nn.Module) -> list[str]:
    """Replace every update by a plain parameter holding b_0 + Δb (trainable, as a directly trained bias would
    be); returns the merged parameter names. The model computes exactly what it computed before."""
    names = list(updates_of(model))
    for name in names:
        owner, attr = _owner(model, name)
        parametrize.remove_parametrizations(owner, attr, leave_parametrized=True)
        getattr(owner, attr).requires_grad_(True)
    return names


def describe(model: nn.Module, spec: dict) -> dict:
    """What the record says about the model's updates: form, rank, alpha, shapes per type, trainable counts."""
    shapes, per_type = {}, {}
    for update in updates_of(model).values():
        t = update.cell[1]
        shapes.setdefault(t, [update.m, update.n])
        per_type[t] = per_type.get(t, 0) + update.num_trainable()
    return {"method": spec["method"], "rank": int(spec["rank"]), "alpha": float(spec["alpha"]),
            "authors": bool(spec.get("authors")), "shapes": shapes, "params": per_type,
            "total_params": sum(per_type.values())}
