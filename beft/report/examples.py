"""Paired comparisons over examples: where both arms of a (model, task, regime, seed) kept their predictions
(beft.predictions, checked by beft.report.store) over the same examples, an exact McNemar test on the examples
one arm alone got right. A handful of seeds cannot settle a difference (beft.report.stats); a few hundred
examples of one seed often can say whether that seed's difference is more than the luck of the examples.
Arms without kept predictions (every record made before beft kept them) are paired over seeds only."""
from __future__ import annotations

import pandas as pd

from beft.report import stats
from beft.report.store import Store, arm_name
from beft.report.tables import (SCALE, comparisons, label_row, ordered_arms, row_blocks, row_columns, selection_arms,
                                with_settings)

EXAMPLES_NOTE = ("Paired over examples: for one seed, both arms' predictions on the same evaluation examples "
                 "(predictions.jsonl, its sha256 checked). first only / second only: examples that arm alone got "
                 "right; McNemar p: exact two-sided binomial test on those discordant examples. It says how sure "
                 "one seed's difference is over the examples, not over seeds (a new seed redraws the training "
                 "subset and the head).")


def correct_by_example(rows: list[dict], split: str) -> dict | None:
    """{(index, id, gold): correct} of one split's rows, or None where the task has no right answer (regression)."""
    mine = [r for r in rows if r.get("split") == split]
    if not mine or not all(isinstance(r.get("correct"), bool) for r in mine):
        return None
    return {(r.get("index"), str(r.get("id")), repr(r.get("gold"))): r["correct"] for r in mine}


def examples_table(ok: pd.DataFrame, store: Store):
    rows, data, settings = [], [], with_settings(ok)
    for key, runs in row_blocks(ok):
        for a, b in comparisons(ordered_arms(runs), set(selection_arms(runs))):
            for seed in sorted(set(runs.loc[runs["arm"] == a, "seed"]) & set(runs.loc[runs["arm"] == b, "seed"])):
                pair = [runs[(runs["arm"] == arm) & (runs["seed"] == seed)].iloc[0] for arm in (a, b)]
                kept = [store.predictions.get(p["path"]) for p in pair]
                if any(k is None for k in kept):
                    continue
                split = store.records[pair[0]["path"]]["metrics"]["main"]["name"].split("/")[0]
                first, second = (correct_by_example(k, split) for k in kept)
                if first is None or second is None or first.keys() != second.keys():
                    continue   # no right answer per example, or not the same examples: seeds only
                first_only = sum(first[e] and not second[e] for e in first)
                second_only = sum(second[e] and not first[e] for e in first)
                n = len(first)
                diff = (sum(first.values()) - sum(second.values())) / n
                p = stats.mcnemar_p(first_only, second_only)
                rows.append(label_row(key, runs, settings) + [
                    f"{arm_name(a)} − {arm_name(b)}", str(seed), str(n), f"{diff * SCALE:+.2f}", str(first_only),
                    str(second_only), f"{p:.3f}"])
                data.append({**key, "a": a, "b": b, "seed": seed, "split": split, "examples": n, "diff": diff,
                             "first_only": first_only, "second_only": second_only, "p": p})
    columns = row_columns(ok) + ["difference", "seed", "examples", "Δ acc. (×100)", "first only",
               "second only", "McNemar p"]
    return columns, rows, pd.DataFrame(data)
