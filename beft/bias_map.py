"""Which bias vectors a model has, under neutral names (q k v o fc1 fc2 ln1 ln2), for any supported family.

A family is one small `Family` entry: where the layer list lives and which module in a layer holds each bias
type. `BiasMap(model)` finds every (layer, type) cell by module name, so it works on any wrapper
(`BertForSequenceClassification`, `OPTForCausalLM`, a PEFT model, ...). Cells whose module has no bias (LLaMA,
GPT-J projections) are still mapped: they are where an additive bias can be placed. Where PEFT's BEFT adapter
has added one (`<module>.beft_bias.<adapter>`, zero-initialised), that added bias is the cell's parameter.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from beft.bias_types import PAPER_LABELS, TEX_LABELS, TYPES, canonical_type  # noqa: F401 (re-exported)
from beft.errors import BeftError, choices_error


@dataclass(frozen=True)
class Family:
    """How one model family names its per-layer bias-carrying modules."""

    layers: str                      # path of the layer list, e.g. "encoder.layer"
    modules: dict[str, str]          # bias type -> module path inside one layer
    head: tuple[str, ...] = ()       # regexes over parameter names: the task head, trained with every method
    new_head: str = "classifier"     # the module an encoder's checkpoint lacks: initialised under each run's seed
    # True where keys get no positional rotation: then b_k only shifts every attention logit of a query by the
    # same amount, softmax cancels it, and its gradient is exactly zero (docs/paper.md §A.6). Rotary models rotate
    # b_k per position, so an added b_k does change attention there.
    key_bias_inert: bool = True
    peft_names: dict[str, str] = field(default_factory=dict)  # type -> module name PEFT target_modules uses


_BERT = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
         "o": "attention.output.dense", "fc1": "intermediate.dense", "fc2": "output.dense",
         "ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm"}
_MPNET = {"q": "attention.attn.q", "k": "attention.attn.k", "v": "attention.attn.v", "o": "attention.attn.o",
          "fc1": "intermediate.dense", "fc2": "output.dense", "ln1": "attention.LayerNorm", "ln2": "output.LayerNorm"}
_OPT = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
        "fc1": "fc1", "fc2": "fc2", "ln1": "self_attn_layer_norm", "ln2": "final_layer_norm"}
_LLAMA = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
          "fc1": "mlp.up_proj", "fc2": "mlp.down_proj"}
_GPTJ = {"q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj", "o": "attn.out_proj",
         "fc1": "mlp.fc_in", "fc2": "mlp.fc_out", "ln1": "ln_1"}


def _peft(modules: dict[str, str]) -> dict[str, str]:
    return {t: path.split(".")[-1] for t, path in modules.items() if not t.startswith("ln")}


FAMILIES: dict[str, Family] = {
    # BERT: the authors train the pooler bias with every bias subset (docs/paper.md §B.5), so it counts as head here.
    "bert": Family("encoder.layer", _BERT, head=(r"^classifier\.", r"(^|\.)pooler\.dense\.bias$"),
                   peft_names={"q": "query", "k": "key", "v": "value"}),
    "roberta": Family("encoder.layer", _BERT, head=(r"^classifier\.",),
                      peft_names={"q": "query", "k": "key", "v": "value"}),
    # MPNet: BERT's layout under other names; its relative position bias is an embedding added to the attention
    # scores (not a bias vector, not mapped), so b_k stays inert. Head: dense + out_proj (RoBERTa-like).
    "mpnet": Family("encoder.layer", _MPNET, head=(r"^classifier\.",), peft_names={"q": "q", "k": "k", "v": "v"}),
    "opt": Family("decoder.layers", _OPT, peft_names=_peft(_OPT)),
    "llama": Family("layers", _LLAMA, key_bias_inert=False, peft_names=_peft(_LLAMA)),
    "mistral": Family("layers", _LLAMA, key_bias_inert=False, peft_names=_peft(_LLAMA)),
    "gptj": Family("h", _GPTJ, key_bias_inert=False, peft_names=_peft(_GPTJ)),
    # Qwen2 / Qwen2.5: LLaMA's layout with pre-trained biases on q_proj, k_proj and v_proj only.
    "qwen2": Family("layers", _LLAMA, key_bias_inert=False, peft_names=_peft(_LLAMA)),
}


def family_of(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise BeftError(
            f"no bias map for model_type {model_type!r} (known: {', '.join(FAMILIES)}); add a Family entry "
            f"naming its layer list and per-layer bias modules to FAMILIES in beft/bias_map.py")
    return FAMILIES[model_type]


Cell = tuple[int, str]  # (layer index from 0, bias type)


class BiasMap:
    """Every (layer, type) cell of a model: its module name, and its bias parameter where one exists."""

    def __init__(self, model: nn.Module):
        config = getattr(model, "config", None)
        self.model_type = getattr(config, "model_type", None)
        self.family = family_of(self.model_type)
        self.modules: dict[Cell, str] = {}
        sizes: dict[Cell, int] = {}
        has_bias: dict[Cell, bool] = {}
        self._own: dict[Cell, str] = {}     # cell -> name of the model's own bias (under a PEFT base_layer if wrapped)
        self._added: dict[Cell, str] = {}   # cell -> name of a bias added by PEFT's BEFT adapter
        patterns = {t: re.compile(rf"(?:^|\.){re.escape(self.family.layers)}\.(\d+)\.{re.escape(path)}$")
                    for t, path in self.family.modules.items()}
        for name, module in model.named_modules():
            for t, pattern in patterns.items():
                match = pattern.search(name)
                # PEFT wraps a Linear as `<name>` with the original under `<name>.base_layer`: map the wrapper.
                if match and (layer := int(match.group(1)), t) not in self.modules:
                    base = getattr(module, "base_layer", module)
                    self.modules[(layer, t)] = name
                    has_bias[(layer, t)] = getattr(base, "bias", None) is not None
                    self._own[(layer, t)] = f"{name}.base_layer.bias" if base is not module else f"{name}.bias"
                    sizes[(layer, t)] = _out_size(base)
                    added = getattr(module, "beft_bias", None)
                    if added is not None and len(added):
                        self._added[(layer, t)] = f"{name}.beft_bias.{next(iter(added.keys()))}"
        if not self.modules:
            raise BeftError(f"found no {self.model_type} layers under '{self.family.layers}' in "
                            f"{type(model).__name__}; check the Family entry in beft/bias_map.py")
        self.num_layers = 1 + max(layer for layer, _ in self.modules)
        # Parameter counts outside the task head, for equal-budget baselines (rand_uniform).
        head = set(self.head_param_names(model))
        backbone = [(n, p.numel()) for n, p in model.named_parameters() if n not in head]
        self.backbone_params = sum(size for _, size in backbone)
        self.backbone_bias_params = sum(size for n, size in backbone if n.endswith(".bias"))
        self._sizes, self._has_bias = sizes, has_bias
        # Trainable cells: those with a bias, the model's own or an added one. A mapped projection without either
        # (Qwen2's o_proj and MLP: the model has q/k/v biases only, so nothing is added) is not a choice.
        self._trainable = [c for c in self.modules if has_bias[c] or c in self._added]
        self.types = [t for t in TYPES if any(t == c[1] for c in self._trainable)]

    def cells(self, types=None) -> list[Cell]:
        """Cells with a bias (own or added) in (layer, type order) order, optionally restricted to some types."""
        wanted = self.types if types is None else [canonical_type(t) for t in types]
        for t in wanted:
            if t not in self.types:
                raise choices_error(f"bias term for {self.model_type}", t, self.types)
        return sorted((c for c in self._trainable if c[1] in wanted), key=lambda c: (c[0], TYPES.index(c[1])))

    def bias_free_linear_cells(self, model: nn.Module) -> list[Cell]:
        """Mapped Linear projections without a bias of their own, in (layer, type) order: where an additive bias
        goes (docs/paper.md §C.9). Only for models whose attention projections have no bias (LLaMA; GPT-J, whose MLP
        keeps its own): a model with its own b_q / b_k / b_v (OPT, Qwen2) keeps exactly the biases it was trained
        with, so its "all biases" and its selection candidates are the paper's."""
        if any(self._has_bias[c] for c in self.modules if c[1] in ("q", "k", "v")):
            return []
        return sorted((c for c, m in self.modules.items() if not self._has_bias[c]
                       and isinstance(getattr(model.get_submodule(m), "base_layer", model.get_submodule(m)), nn.Linear)),
                      key=lambda c: (c[0], TYPES.index(c[1])))

    def has_bias(self, cell: Cell) -> bool:
        """Whether the pre-trained model has this bias (an added bias does not count: it starts at zero)."""
        return self._has_bias[cell]

    def bias_free_types(self) -> list[str]:
        return [t for t in self.types if not any(self._has_bias[c] for c in self.cells([t]))]

    def size(self, cell: Cell) -> int:
        return self._sizes[cell]

    def param_name(self, cell: Cell) -> str:
        """Name of the bias this cell trains: the added one where an adapter put one, else the model's own."""
        if cell in self._added:
            return self._added[cell]
        if not self._has_bias[cell]:
            raise BeftError(f"{self.model_type} layer {cell[0]} has no {PAPER_LABELS[cell[1]]} bias and none was "
                            f"added; decoder workloads add zero-initialised biases (PEFT BeftConfig) to bias-free "
                            f"Linear projections")
        return self._own[cell]

    def added_param_names(self) -> list[str]:
        return [self._added[c] for c in self.cells() if c in self._added]

    def param(self, model: nn.Module, cell: Cell) -> nn.Parameter:
        return model.get_parameter(self.param_name(cell))

    def head_param_names(self, model: nn.Module) -> list[str]:
        patterns = [re.compile(p) for p in self.family.head]
        return [n for n, _ in model.named_parameters() if any(p.search(n) for p in patterns)]


def _out_size(module: nn.Module) -> int:
    if hasattr(module, "out_features"):
        return int(module.out_features)
    if hasattr(module, "normalized_shape"):
        return int(module.normalized_shape[0])
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if weight is not None else 0
