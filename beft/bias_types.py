"""The bias types under neutral names (q k v o fc1 fc2 ln1 ln2), their paper labels and their command-line aliases.

Plain data, no torch: the command-line checks (beft.checks) read `method.terms` with it before any model code is
imported; beft.bias_map maps the types onto a model's modules.
"""
from __future__ import annotations

from beft.errors import choices_error

TYPES = ("q", "k", "v", "o", "fc1", "fc2", "ln1", "ln2")

# The paper's labels (docs/paper.md §A.0); plots and tables use these.
PAPER_LABELS = {"q": "b_q", "k": "b_k", "v": "b_v", "o": "b_m1", "fc1": "b_m2", "fc2": "b_m3",
                "ln1": "b_LN1", "ln2": "b_LN2"}
TEX_LABELS = {"q": r"$\mathbf{b}_{q}$", "k": r"$\mathbf{b}_{k}$", "v": r"$\mathbf{b}_{v}$",
              "o": r"$\mathbf{b}_{m1}$", "fc1": r"$\mathbf{b}_{m2}$", "fc2": r"$\mathbf{b}_{m3}$",
              "ln1": r"$\mathbf{b}_{LN1}$", "ln2": r"$\mathbf{b}_{LN2}$"}

_ALIASES = {
    "q": ["query", "b_q", "bq", "q_proj"],
    "k": ["key", "b_k", "bk", "k_proj"],
    "v": ["value", "b_v", "bv", "v_proj"],
    "o": ["out", "attn_out", "m1", "b_m1", "bm1", "o_proj", "out_proj"],
    "fc1": ["intermediate", "m2", "b_m2", "bm2", "fc_in", "up_proj"],
    "fc2": ["output", "m3", "b_m3", "bm3", "fc_out", "down_proj"],
    "ln1": ["ln_1", "b_ln1", "bln1", "attention_layernorm"],
    "ln2": ["ln_2", "b_ln2", "bln2", "output_layernorm"],
}
ALIASES = {alias: name for name, aliases in _ALIASES.items() for alias in [name, *aliases]}


def canonical_type(name: str) -> str:
    """'value', 'b_v', 'bv' -> 'v'. Unknown names are a one-line error listing the valid ones."""
    key = str(name).strip().lower()
    if key not in ALIASES:
        raise choices_error("bias term", name, [f"{t} ({', '.join(_ALIASES[t][:3])})" for t in TYPES])
    return ALIASES[key]
