"""`make tables`: the paper's tables from the results store.

Per experiment (results/runs/<experiment>/): a main table (rows: model x task x regime; columns: the arms run,
mean ± std over seeds with n; the paper's number beside ours where results/paper/ knows it, "—" where not),
paired comparisons over the same seeds (how sure each difference is), and for selection methods what they
picked and what it cost against the best single type. Table 2 is shaped like the paper's (one row per method,
with parameter counts). Only `ok` records enter a table; failed ones are counted in summary.md.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from beft.bias_map import PAPER_LABELS, TYPES
from beft.report import stats, table_io
from beft.report.store import (BIAS_UPDATES, FIXED_ORDER, Store, arm_name, arm_order, bias_update_arm, fixed_type,
                               order_key, selection_arms, sort_runs, update_arm, update_form_name)
from beft.report.table_io import DASH

SCALE = 100.0   # metrics are stored as fractions (accuracy, F1, MCC, correlations); tables show ×100
ROW = ["model", "task", "regime_label", "row", "setting"]   # a table row (beft.report.settings)
METRIC_NAMES = {"accuracy": "acc.", "mcc": "MCC", "macro_f1": "macro-F1", "f1": "F1", "spearman": "Spearman",
                "pearson": "Pearson"}
TITLES = {
    "table1": "Table 1: b_v vs b_q vs b_k across GLUE tasks and data regimes",
    "table2": "Table 2: efficiency and effectiveness on RTE",
    "table3": "Table 3: b_v vs b_q vs b_k across datasets and encoders",
    "table4": "Table 4: LoRA injected into b_v, b_q, b_k",
    "table5": "Table 5: autoregressive LLMs",
    "table6": "Table 6: bias-free LLMs with an added bias",
    "selection": "Selection methods: what they pick and what it is worth",
    "local": "MiniLM on the tasks with local data (CPU)",
    "local-base": "MPNet-base (all-mpnet-base-v2, 12 x 768) on the tasks with local data (CPU)",
    "decoder-local": "Real decoders on the tasks with local data (CPU): SmolLM2-135M (added biases), Qwen2.5-Coder-0.5B",
    "smoke": "Smoke sweep (random tiny model: checks the plumbing; its numbers mean nothing)",
}
CELL_NOTE = ("Cells: validation metric ×100 at the final epoch, mean ± std over seeds (number of seeds); "
             "— where nothing was measured.")
PAPER_NOTE = ("paper: the paper's number where one is known (results/paper/, with its source tag); — where "
              "unknown. The paper's own tables were not available (docs/paper.md §0.2): no number is filled in.")
NLI_NOTE = ("MiniLM (all-MiniLM-L6-v2) was fine-tuned on sentence pairs that include SNLI, MultiNLI and QQP: "
            "keep that in mind for its entailment and paraphrase results.")


def fmt_cell(values: list[float]) -> str:
    if not values:
        return DASH
    mean = sum(values) / len(values) * SCALE
    if len(values) == 1:
        return f"{mean:.2f} (1)"
    return f"{mean:.2f} ± {pd.Series(values).std() * SCALE:.2f} ({len(values)})"


def regime_text(label: str, n_train) -> str:
    if label.startswith("n") and label[1:].isdigit():
        return f"n={int(label[1:]):,}"
    return f"{label} ({int(n_train):,})" if n_train == n_train and n_train is not None else label


def load_paper(paper_dir: Path) -> pd.DataFrame:
    path = Path(paper_dir) / "results.csv"
    if not path.exists():
        return pd.DataFrame(columns=["model", "task", "n_train", "arm", "metric", "statistic", "value", "tag",
                                     "kind", "source", "regime"])
    return pd.read_csv(path, dtype={"n_train": "Int64", "seed": "Int64"}, keep_default_na=False,
                       na_values={"n_train": [""], "seed": [""], "value": [""]})


def paper_match(paper: pd.DataFrame, model, task, n_train, arm, metric) -> tuple[float, str] | None:
    hits = paper[(paper["model"] == model) & (paper["task"] == task) & (paper["arm"] == arm)
                 & (paper["metric"] == metric) & (paper["statistic"] == "final")]
    hits = hits[hits["n_train"].astype("float") == float(n_train)]
    if hits.empty:
        return None
    row = hits.sort_values(["tag", "value"]).iloc[0]
    return float(row["value"]), str(row["tag"])


def row_blocks(ok: pd.DataFrame):
    """(row key dict, runs of that row) in the paper's order."""
    keys = sort_runs(ok[ROW].drop_duplicates(), ["model", "task", "regime_label", "setting", "row"])
    for _, key in keys.iterrows():
        mask = (ok[ROW] == key.values).all(axis=1)
        yield key.to_dict(), ok[mask]


def ordered_arms(ok: pd.DataFrame) -> list[str]:
    order = arm_order()
    return sorted(ok["arm"].unique(), key=lambda a: order_key(a, order))


def with_settings(ok: pd.DataFrame) -> bool:
    """Whether any row is set apart by its settings (then every table shows a setting column)."""
    return bool((ok["setting"] != "").any())


def row_columns(ok: pd.DataFrame) -> list[str]:
    return ["model", "task", "regime"] + (["setting"] if with_settings(ok) else [])


def label_row(key: dict, runs: pd.DataFrame, settings: bool) -> list[str]:
    """The cells naming a row: model, task, regime (and its training-set size), and its setting if shown."""
    cells = [key["model"], key["task"], regime_text(key["regime_label"], runs["n_train"].min())]
    return cells + ([key["setting"]] if settings else [])


def metric_text(runs: pd.DataFrame) -> str:
    metric = "/".join(sorted(runs["metric"].unique()))
    return METRIC_NAMES.get(metric, metric)


def _values(runs: pd.DataFrame, arm: str) -> list[float]:
    picked = runs[runs["arm"] == arm].sort_values("seed")
    return [float(v) for v in picked["value"]]


def main_table(experiment: str, ok: pd.DataFrame, paper: pd.DataFrame):
    arms = ordered_arms(ok)
    settings = with_settings(ok)
    rows, data, tags = [], [], set()
    # A paper column beside an arm in the paper's tables (— says "unknown"), elsewhere only where one matches.
    with_paper = {a for a in arms if experiment.startswith("table") or any(
        paper_match(paper, k["model"], k["task"], r["n_train"].min(), a, r["metric"].iloc[0])
        for k, r in row_blocks(ok))}
    for key, runs in row_blocks(ok):
        cells = label_row(key, runs, settings) + [metric_text(runs)]
        for arm in arms:
            values = _values(runs, arm)
            cells.append(fmt_cell(values))
            hit = paper_match(paper, key["model"], key["task"], runs["n_train"].min(), arm, runs["metric"].iloc[0])
            if arm in with_paper:
                cells.append(f"{hit[0]:.2f} [{hit[1]}]" if hit else DASH)
                tags |= {hit[1]} if hit else set()
            data.append({**key, "n_train": runs["n_train"].min(), "metric": runs["metric"].iloc[0], "arm": arm,
                         "mean": _mean(values), "std": pd.Series(values).std() if len(values) > 1 else math.nan,
                         "n": len(values), "seeds": " ".join(str(s) for s in sorted(runs[runs["arm"] == arm]["seed"])),
                         "trainable_params": _median(runs[runs["arm"] == arm]["trainable_params"]),
                         "paper": hit[0] if hit else math.nan, "paper_tag": hit[1] if hit else ""})
        rows.append(cells)
    columns = row_columns(ok) + ["metric"]
    for arm in arms:
        columns += [arm_name(arm)] + ([f"{arm_name(arm)} paper"] if arm in with_paper else [])
    notes = [CELL_NOTE] + ([PAPER_NOTE] if with_paper else []) + _tag_notes(paper, tags)
    if settings:
        notes.append(SETTING_NOTE)
    return columns, rows, pd.DataFrame(data), notes


def table2(ok: pd.DataFrame, paper: pd.DataFrame):
    """One row per method, with its trainable parameters, like the paper's Table 2."""
    settings = with_settings(ok)
    rows, data, tags = [], [], set()
    for key, runs in row_blocks(ok):
        for arm in ordered_arms(runs):
            picked = runs[runs["arm"] == arm]
            params, total = _median(picked["trainable_params"]), _median(picked["total_params"])
            hit = paper_match(paper, key["model"], key["task"], picked["n_train"].min(), arm, picked["metric"].iloc[0])
            tags |= {hit[1]} if hit else set()
            values = _values(runs, arm)
            rows.append(label_row(key, runs, settings) + [
                arm_name(arm), f"{params:,}" if params else DASH,
                f"{100 * params / total:.4f}" if params and total else DASH, fmt_cell(values),
                f"{hit[0]:.2f} [{hit[1]}]" if hit else DASH])
            data.append({**key, "arm": arm, "trainable_params": params, "total_params": total,
                         "mean": _mean(values), "n": len(values), "paper": hit[0] if hit else math.nan})
    columns = row_columns(ok) + ["method", "trainable params", "% of model", "score", "paper"]
    notes = [CELL_NOTE, PAPER_NOTE, "Trainable parameters include the task head (BERT: classifier + pooler bias)."]
    return columns, rows, pd.DataFrame(data), notes + _tag_notes(paper, tags)


def table4(ok: pd.DataFrame, paper: pd.DataFrame):
    """The paper's Table 4 layout: one row per bias type, the bias trained directly beside each structured update
    of it (LoRA, DoRA, VeRA, VeRA1D on the bias), each with its score and trainable parameters."""
    settings = with_settings(ok)
    updates = sorted({(u[0], u[2]) for u in map(bias_update_arm, ok["arm"]) if u},
                     key=lambda f: (list(BIAS_UPDATES).index(f[0]), f[1]))
    types = sorted({fixed_type(a) or (bias_update_arm(a) or ("", ""))[1] for a in ok["arm"]} - {"", None},
                   key=lambda t: order_key(t, FIXED_ORDER))
    rows, data = [], []
    for key, runs in row_blocks(ok):
        for t in types:
            arms = [(f"fixed-{t}", "directly")] + [(update_arm(m, t, authors), update_form_name(m, authors))
                                                   for m, authors in updates]
            if not runs["arm"].isin([a for a, _ in arms]).any():
                continue
            cells = label_row(key, runs, settings) + [arm_name(f"fixed-{t}")]
            for arm, form in arms:
                values, picked = _values(runs, arm), runs[runs["arm"] == arm]
                params = _median(picked["trainable_params"])
                cells += [fmt_cell(values), f"{params:,}" if params else DASH]
                data.append({**key, "type": t, "form": form, "arm": arm, "trainable_params": params,
                             "mean": _mean(values), "std": pd.Series(values).std() if len(values) > 1 else math.nan,
                             "n": len(values)})
            rows.append(cells)
    columns = row_columns(ok) + ["bias", "trained directly", "params"]
    for m, authors in updates:
        name = update_form_name(m, authors)
        columns += [name, f"{name} params"]
    notes = [CELL_NOTE, "params: trainable parameters, task head included (BERT: classifier + pooler bias). A "
             "structured update of a bias trains its own factors (LoRA: r·(m + n) per bias, the bias read off an "
             "m × n matrix) while the bias itself stays frozen; after training it is merged into a plain bias.",
             "The paper's Table 4 numbers were not available (docs/paper.md §0.2): no paper column is filled in."]
    return columns, rows, pd.DataFrame(data), notes


def comparisons(arms: list[str], selection: set[str]) -> list[tuple[str, str]]:
    """Which arms to compare pairwise: b_v against every other arm; each selection method against random and
    against b_v; a structured update of a bias (LoRA on b_q, ...) against that bias trained directly."""
    updates = {a: f"fixed-{bias_update_arm(a)[1]}" for a in arms if bias_update_arm(a)}
    pairs = [("fixed-v", a) for a in arms if a != "fixed-v" and a not in selection and a not in updates
             ] if "fixed-v" in arms else []
    pairs += [(direct, a) for a, direct in updates.items() if direct in arms]
    for method in (m for m in arms if m in selection and m != "random"):
        pairs += [(method, ref) for ref in ("random", "fixed-v") if ref in arms]
    return pairs


def paired_table(ok: pd.DataFrame):
    settings = with_settings(ok)
    rows, data = [], []
    for key, runs in row_blocks(ok):
        for a, b in comparisons(ordered_arms(runs), set(selection_arms(runs))):
            left, right = (runs[runs["arm"] == x].set_index("seed")["value"] for x in (a, b))
            seeds = sorted(set(left.index) & set(right.index))
            if not seeds:
                continue
            result = stats.paired([left[s] for s in seeds], [right[s] for s in seeds])
            ci = (DASH if math.isnan(result["ci_low"])
                  else f"[{result['ci_low'] * SCALE:+.2f}, {result['ci_high'] * SCALE:+.2f}]")
            per_seed = [(left[s] - right[s]) * SCALE for s in seeds]
            rows.append(label_row(key, runs, settings) + [
                f"{arm_name(a)} − {arm_name(b)}", str(result["n"]), f"{result['diff'] * SCALE:+.2f}",
                " ".join(f"{s}: {d:+.2f}" for s, d in zip(seeds, per_seed)), ci,
                f"{result['wins']}–{result['ties']}–{result['losses']}", f"{result['p']:.3f}"])
            data.append({**key, "a": a, "b": b, "seeds": " ".join(map(str, seeds)),
                         "per_seed": " ".join(f"{d:.4f}" for d in per_seed), **result})
    columns = row_columns(ok) + ["difference", "n", "Δ (×100)", "Δ per seed (seed: Δ)", "95% bootstrap CI",
                                 "wins–ties–losses", "sign-flip p"]
    return columns, rows, pd.DataFrame(data)


SETTING_NOTE = ("setting: runs of one model, task and regime whose settings differ are kept in rows apart; every "
                "row is named, as overrides, by the fields on which the experiment's settings differ "
                "(beft.report.settings), where null is the config's own (trainer.lr=null: the task's lr; "
                "model.attention_dropout=null: the checkpoint's dropout); where the arms differ only by their own "
                "tuned trainer.lr, one row names each arm's lr.")

PAIRED_NOTE = ("Paired over the seeds both arms have (same data subset, same head initialisation). Δ: mean "
               "difference, and each seed's; CI: percentile bootstrap over seeds (optimistic for few seeds); "
               "wins–ties–losses: seeds where the first arm scored higher / equal / lower; sign-flip p: exact "
               "two-sided permutation test. With n seeds the smallest possible p is 2/2^n (0.25 for 3 seeds, 0.0625 "
               "for 5): three seeds cannot establish a difference, and most differences under a point are noise.")


def measured_types(runs: pd.DataFrame) -> dict[int, dict[str, float]]:
    """Per seed, the score of every bias type that was trained alone in all layers: by a fixed run (b_v, b_q, ...)
    or by a one-type selection run (whose pick, say ln2 or fc1, is then measured too)."""
    out: dict[int, dict[str, float]] = {}
    for row in runs.itertuples():
        kind = fixed_type(row.arm)
        if kind is None and row.is_selection and row.chosen in TYPES:
            kind = row.chosen
        if kind is not None:
            out.setdefault(int(row.seed), {})[kind] = float(row.value)
    return out


def selection_table(ok: pd.DataFrame):
    """Per selection method: the types it picked over seeds, its score, whether its pick is the best of the types
    measured for that seed, and its cost against the best single fixed type of the same seed (regret)."""
    settings = with_settings(ok)
    rows, data = [], []
    for key, runs in row_blocks(ok):
        fixed = runs[runs["arm"].isin([f"fixed-{t}" for t in TYPES])]
        best = fixed.groupby("seed")["value"].max() if fixed["arm"].nunique() >= 2 else pd.Series(dtype=float)
        measured = {seed: types for seed, types in measured_types(runs).items() if len(types) >= 2}
        for method in [a for a in ordered_arms(runs) if a in set(selection_arms(runs))]:
            mine = runs[runs["arm"] == method].set_index("seed")
            picks = mine["chosen"].fillna("?").value_counts()
            picked = ", ".join(f"{_types_text(t)} ×{c}" for t, c in sorted(picks.items(), key=lambda x: (-x[1], x[0])))
            seeds = sorted(set(mine.index) & set(best.index))
            regret = [best[s] - mine.loc[s, "value"] for s in seeds]
            judged = sorted(set(mine.index) & set(measured))
            hits = sum(mine.loc[s, "value"] >= max(measured[s].values()) for s in judged)
            rows.append(label_row(key, runs, settings) + [
                arm_name(method), picked, fmt_cell([float(v) for v in mine.sort_index()["value"]]),
                f"{hits}/{len(judged)}" if judged else DASH,
                f"{_mean(regret) * SCALE:.2f}" if seeds else DASH])
            data.append({**key, "method": method, "picked": picked, "mean": _mean(list(mine["value"])),
                         "n": len(mine), "best_type_hits": hits, "n_judged": len(judged),
                         "measured_types": " ".join(sorted({t for s in judged for t in measured[s]})),
                         "regret": _mean(regret)})
    columns = row_columns(ok) + ["method", "picked (seeds)", "score", "picked the best measured type",
                                 "regret vs best of b_v/b_q/b_k (×100)"]
    return columns, rows, pd.DataFrame(data)


SELECTION_NOTE = ("picked the best measured type: seeds where the method's pick scored at least as well as every "
                  "bias type trained alone for that seed — b_v, b_q, b_k (fixed runs) and whatever type any "
                  "selection method picked (its run trains that type alone); ties count as hits. regret: best "
                  "fixed-type score of the seed minus the method's score, mean over seeds (0: as good as the best "
                  "of them; negative: the method's pick, a type not among them, beat them all).")


def totals_table(paired: pd.DataFrame, selection: pd.DataFrame):
    """The paired and selection tables pooled over all their rows (task x regime x model): in how many
    row x seed cases b_v beat each other arm, and how often each selection method picked the best measured type."""
    rows, data = [], []
    if not paired.empty:
        for b, group in paired[paired["a"] == "fixed-v"].groupby("b", sort=False):
            wins, ties, losses = (int(group[c].sum()) for c in ("wins", "ties", "losses"))
            rows.append([f"{arm_name('fixed-v')} vs {arm_name(b)}", str(len(group)), str(wins + ties + losses),
                         f"{wins}–{ties}–{losses}"])
            data.append({"comparison": f"fixed-v vs {b}", "rows": len(group), "cases": wins + ties + losses,
                         "wins": wins, "ties": ties, "losses": losses})
    if not selection.empty:
        for method, group in selection.groupby("method", sort=False):
            hits, judged = int(group["best_type_hits"].sum()), int(group["n_judged"].sum())
            if judged:
                rows.append([f"{arm_name(method)}: picked the best measured type", str(len(group)), str(judged),
                             f"{hits}/{judged}"])
                data.append({"comparison": f"{method} best type", "rows": len(group), "cases": judged,
                             "wins": hits, "ties": math.nan, "losses": judged - hits})
    columns = ["question", "rows", "cases (row × seed)", "wins–ties–losses / hits"]
    return columns, rows, pd.DataFrame(data)


TOTALS_NOTE = ("Pooled over every row of this experiment: b_v against each arm, case by case (a case is one row "
               "and one seed both arms have; wins–ties–losses as in the paired table), and each selection "
               "method's hits (ties count as hits, as in the selection table). Cases with scores at chance "
               "count like any other: read them beside the main table.")


def fig1_scores(store: Store, paper_dir: Path):
    """The notebook's Fig. 1 averages (results/paper/fig1_scores.csv) beside our type scores."""
    path = Path(paper_dir) / "fig1_scores.csv"
    if not path.exists():
        return None
    ref = pd.read_csv(path)
    runs = store.runs
    rows, data = [], []
    for (model, task, n_train, method), block in ref.groupby(["model", "task", "n_train", "method"], sort=True):
        ours = runs[(runs["status"] == "ok") & (runs["model"] == model) & (runs["task"] == task)
                    & (runs["n_train"] == n_train) & (runs["arm"] == method)] if not runs.empty else runs
        scores = [store.records[p]["selection"]["type_scores"] for p in sorted(ours["path"])] if len(ours) else []
        for _, r in block.sort_values("avg_score", ascending=False, kind="stable").iterrows():
            mine = [s[r["type"]] for s in scores if s.get(r["type"]) is not None]
            text = DASH if not mine else (f"{_mean(mine):.3f}" + (f" ± {pd.Series(mine).std():.3f}" if len(mine) > 1 else "")
                                         + f" ({len(mine)})")
            rows.append([model, task, f"{n_train:,}", method, PAPER_LABELS[r["type"]],
                         f"{r['avg_score']:.3f} [{r['tag']}]", text])
            data.append({"model": model, "task": task, "n_train": n_train, "method": method, "type": r["type"],
                         "paper": r["avg_score"], "ours_mean": _mean(mine), "ours_n": len(mine)})
    columns = ["model", "task", "n_train", "score", "bias", "paper (Avg.)", "ours (mean over seeds)"]
    notes = ["The Avg. column of the heat maps in the authors' notebook (docs/paper.md §A.5, seed 0) beside our type "
             "scores (mean over layers) for runs of the same model, task and training size, any experiment.",
             *sorted({f"[{t}] {s}" for t, s in zip(ref["tag"], ref["source"])})]
    return columns, rows, pd.DataFrame(data), notes


def unplaced_notes(paper: pd.DataFrame, tasks: set[str]) -> list[str]:
    """Third-party numbers whose model or method is unknown: listed beside tables with their task, never placed."""
    loose = paper[((paper["model"] == "unknown") | (paper["arm"] == "unknown")) & paper["task"].isin(tasks)]
    return [f"Unplaced, unverified [{r.tag}]: {r.task}{' ' + r.regime if r.regime else ''} {r.metric} {r.value:g} "
            f"({r.source})" for r in loose.sort_values(["task", "value"]).itertuples()]


def _tag_notes(paper: pd.DataFrame, tags: set[str]) -> list[str]:
    """One line per source tag used in a table: the tag and its source."""
    return [f"[{t}] " + sorted(paper.loc[paper["tag"] == t, "source"])[0] for t in sorted(tags)]


def _types_text(chosen: str) -> str:
    return "+".join(PAPER_LABELS.get(t, t) for t in str(chosen).split("+"))


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else math.nan


def _median(series: pd.Series) -> int | None:
    series = series.dropna()
    return int(series.median()) if len(series) else None
