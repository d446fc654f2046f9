"""The paper's own score (`method=beft`, docs/paper.md §A.3): project the shorter of b_0, b_f on the longer one.

    s(b) = 1 - <b_f, b_0> / max(|b_f|, |b_0|)^2  =  1 - cos(a) * min(|b_f|, |b_0|) / max(|b_f|, |b_0|)

0 when the bias did not move; grows with both rotation and relative change of length. The authors' code
aborts when a bias rotates by more than 90 degrees; here the formula is computed anyway and a warning recorded.
A zero-norm b_0 (bias-free models, added biases) leaves the score undefined: that is an error.
"""
from __future__ import annotations

from beft.bias_map import PAPER_LABELS
from beft.errors import BeftError

NEEDS_PROBE = True
UNDEFINED = ("the projection score (method=beft) is undefined where the pre-trained bias is zero; "
             "use method=magnitude, fisher or causal")


def projection_score(b0, bf) -> tuple[float, bool]:
    """(score, rotated_past_90_degrees). Squared norms are computed as dot products so that an unchanged
    bias gives exactly 0."""
    b0, bf = b0.double().flatten(), bf.double().flatten()
    n0, nf, dot = float(b0 @ b0), float(bf @ bf), float(bf @ b0)
    if n0 == 0 or nf == 0:
        raise BeftError(f"{UNDEFINED} (found a {'pre-trained' if n0 == 0 else 'fine-tuned'} bias of norm 0)")
    return 1.0 - dot / max(n0, nf), dot < 0


def check(bias_map) -> None:
    if bias_map.bias_free_types():
        raise BeftError(f"{bias_map.model_type} has no pre-trained {', '.join(bias_map.bias_free_types())} "
                        f"biases: {UNDEFINED}")


def scores(ctx) -> dict:
    out, rotated = {}, []
    for cell in ctx.cells:
        out[cell], past_90 = projection_score(ctx.probe.b0[cell], ctx.probe.bf[cell])
        if past_90:
            rotated.append(cell)
    if rotated:
        where = ", ".join(f"{PAPER_LABELS[t]} layer {layer + 1}" for layer, t in rotated[:5])
        ctx.warnings.append(f"{len(rotated)} bias vector(s) rotated by more than 90 degrees during the probe "
                            f"({where}{', ...' if len(rotated) > 5 else ''}); the authors' code aborts here, "
                            f"beft computes the formula anyway (scores above 1)")
    return out

