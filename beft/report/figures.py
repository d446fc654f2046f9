"""`make tables` figures, from the results store (Agg backend, no display):

- per-layer score heatmaps per method and task (layers x bias types with an Avg. column, like the paper's Fig. 1);
- b_v / b_q / b_k bars per task and model, with the seeds' spread;
- score vs accuracy: a selection method's type score against the score of training that type alone;
- agreement: how often two selection methods (and the best trained type) pick the same top type.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402

from beft.bias_map import TEX_LABELS, TYPES  # noqa: E402
from beft.report.store import (FIXED_ORDER, SELECTION_METHODS, Store, fixed_type, order_key,  # noqa: E402
                               sort_runs)

TASK_NAMES = {"cola": "CoLA", "mnli": "MNLI", "mrpc": "MRPC", "qnli": "QNLI", "qqp": "QQP", "rte": "RTE",
              "sst2": "SST-2", "stsb": "STS-B", "cb": "CB", "wic": "WiC", "boolq": "BoolQ", "copa": "COPA",
              "wsc": "WSC", "multirc": "MultiRC", "record": "ReCoRD", "squad": "SQuAD", "drop": "DROP"}
METRIC_SHORT = {"accuracy": "acc.", "mcc": "MCC", "macro_f1": "macro-F1", "f1": "F1", "spearman": "Spearman",
                "pearson": "Pearson"}
TYPE_COLORS = {"v": "#1f5fa8", "q": "#e08a1e", "k": "#8c8c8c", "o": "#3a9a5b", "fc1": "#b2443a",
               "fc2": "#7e57a6", "ln1": "#c2699d", "ln2": "#4fa9b8"}
METHOD_NAMES = {"beft": "beft (projection)", "magnitude": "magnitude", "fisher": "Fisher", "causal": "causal",
                "random": "random"}
MARKERS = "osD^vP*Xph"
BEST = "best trained"
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
         "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": 200}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.05, metadata={"Software": None})
    plt.close(fig)
    return path


def _slug(*parts) -> str:
    return "_".join(str(p).replace("/", "-") for p in parts)


def _regime(label: str) -> str:
    return f"n={label[1:]}" if label.startswith("n") and label[1:].isdigit() else label


def _power(values) -> int:
    """Power of ten to factor out of tiny or huge scores (Fisher is ~1e-7), 0 otherwise."""
    top = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 0.0
    return 0 if top == 0 or 1e-2 <= top < 1e3 else int(math.floor(math.log10(top)))


def heatmaps(store: Store, ok: pd.DataFrame, experiment: str, out_dir: Path) -> list[Path]:
    """One figure per model x task x regime: a panel per selection method, scores averaged over seeds."""
    chosen = ok[ok["is_selection"]]
    paths = []
    settings = chosen["setting"].nunique() > 1   # rows with their own settings: a figure each
    for (model, task, regime, setting), block in chosen.groupby(["model", "task", "regime_label", "setting"],
                                                                 sort=True):
        methods = sorted(block["arm"].unique(), key=lambda m: order_key(m, SELECTION_METHODS))
        n_train = int(block["n_train"].min())
        panels = [(m, [store.records[p]["selection"] for p in sorted(block[block["arm"] == m]["path"])])
                  for m in methods]
        n_types = max(len(s[0]["scores"]) for _, s in panels)
        n_layers = max(len(v) for _, s in panels for v in s[0]["scores"].values())
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(len(panels), 1, squeeze=False, constrained_layout=True,
                                     figsize=(0.5 * (n_layers + 1) + 2.6, len(panels) * (0.3 * n_types + 0.75) + 0.4))
            for ax, (method, selections) in zip(axes[:, 0], panels):
                _heatmap_panel(ax, method, selections, n_layers, last=ax is axes[-1, 0])
            where = _regime(regime) if regime.startswith("n") else f"{regime} regime, n={n_train:,}"
            fig.suptitle(f"Per-layer bias scores: {model}, {TASK_NAMES.get(task, task)}, {where}"
                         + (f"\n{setting}" if setting else ""), fontsize=10)
            suffix = [block["row"].iloc[0][:6]] if settings else []
            paths.append(_save(fig, out_dir / f"{_slug(experiment, 'heatmap', model, task, regime, *suffix)}.png"))
    return paths


def _heatmap_panel(ax, method: str, selections: list[dict], n_layers: int, last: bool) -> None:
    types = sorted({t for s in selections for t in s["scores"]}, key=TYPES.index)
    grid = np.array([[[np.nan if v is None else v for v in s["scores"].get(t, [None] * n_layers)] for t in types]
                     for s in selections], float)
    per_layer = np.nanmean(grid, axis=0) if np.isfinite(grid).any() else grid[0]
    avg = np.array([np.nanmean([s["type_scores"].get(t, np.nan) for s in selections]) for t in types], float)
    order = np.argsort(-np.nan_to_num(avg, nan=-np.inf), kind="stable")
    power = _power(np.concatenate([per_layer.ravel(), avg]))
    shown = np.column_stack([per_layer[order], avg[order]]) / 10.0 ** power
    cmap = plt.get_cmap("Blues").with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, aspect="auto")
    ax.axvline(n_layers - 0.5, color="white", lw=3)
    top = np.nanmax(shown) if np.isfinite(shown).any() else 1.0
    for row, value in enumerate(shown[:, -1]):
        if np.isfinite(value):
            ax.text(n_layers, row, f"{value:.3f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.6 * top else "black")
    ax.set_yticks(range(len(types)), [TEX_LABELS[types[i]] for i in order])
    labels = [str(i + 1) for i in range(n_layers)] + ["Avg."]
    ax.set_xticks(range(n_layers + 1), labels if last else [""] * len(labels))
    if last:
        ax.set_xlabel("layer")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    seeds = f"mean of {len(selections)} seeds" if len(selections) > 1 else "1 seed"
    unit = rf", scores in units of $10^{{{power}}}$" if power else ""
    ax.set_title(f"{METHOD_NAMES.get(method, method)}: {seeds}{unit}", loc="left", fontsize=9)
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.025, pad=0.01)
    bar.ax.tick_params(labelsize=7)


def bars(ok: pd.DataFrame, experiment: str, out_dir: Path) -> list[Path]:
    """b_v / b_q / b_k (whichever single-type runs exist) per task, one figure per model; error bars: std over
    seeds; dots: the seeds."""
    fixed = ok[ok["arm"].isin([f"fixed-{t}" for t in TYPES])]
    paths = []
    for model, block in fixed.groupby("model", sort=True):
        block = sort_runs(block, ["task", "regime_label", "setting", "arm", "seed"])
        groups = list(dict.fromkeys(zip(block["task"], block["regime_label"], block["setting"])))   # settings apart
        types = sorted({a[len("fixed-"):] for a in block["arm"]}, key=FIXED_ORDER.index)
        width = 0.8 / len(types)
        with plt.rc_context(STYLE):
            extra = max(_setting_tick(g[2]).count("\n") for g in groups)   # a setting's lines under its tick
            per_group = max(0.45 * len(types), 1.7 if extra else 0.0)
            fig, ax = plt.subplots(figsize=(max(3.2, per_group * len(groups) + 1.4), 2.8 + 0.18 * extra),
                                   constrained_layout=True)
            low, high = np.inf, -np.inf
            for j, t in enumerate(types):
                for i, (task, regime, setting) in enumerate(groups):
                    values = 100 * block[(block["task"] == task) & (block["regime_label"] == regime)
                                         & (block["setting"] == setting)
                                         & (block["arm"] == f"fixed-{t}")]["value"].to_numpy(float)
                    if not len(values):
                        continue
                    x = i + (j - (len(types) - 1) / 2) * width
                    std = values.std(ddof=1) if len(values) > 1 else 0.0
                    ax.bar(x, values.mean(), width * 0.92, color=TYPE_COLORS[t], yerr=std if len(values) > 1 else None,
                           capsize=2, error_kw={"lw": 0.8}, label=TEX_LABELS[t] if i == 0 else None, zorder=2)
                    offsets = np.linspace(-0.22, 0.22, len(values)) * width if len(values) > 1 else [0.0]
                    ax.scatter(x + np.asarray(offsets), values, s=6, color="black", zorder=3, lw=0)
                    low, high = min(low, values.min(), values.mean() - std), max(high, values.max(), values.mean() + std)
            metrics = block.groupby(["task", "regime_label"])["metric"].first()
            many_regimes = block["regime_label"].nunique() > 1
            ax.set_xticks(range(len(groups)), [
                f"{TASK_NAMES.get(t, t)}" + (f" {_regime(r)}" if many_regimes else "")
                + f"\n{METRIC_SHORT.get(metrics[(t, r)], metrics[(t, r)])}" + _setting_tick(setting)
                for t, r, setting in groups])
            span = max(high - low, 1.0)
            ax.set_ylim(max(0.0, low - 0.15 * span) if low >= 0 else low - 0.15 * span, high + 0.12 * span)
            ax.set_ylabel("validation score (×100)")
            ax.grid(axis="y", lw=0.4, alpha=0.5, zorder=0)
            # Below the tick labels: above the axes it would collide with the two-line title.
            ax.legend(ncol=len(types), frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16 - 0.08 * extra),
                      handlelength=1.2, columnspacing=1.0)
            seeds = int(block.groupby(["task", "regime_label", "setting", "arm"]).size().max())
            ax.set_title(f"{model}: one bias type trained alone\n(mean ± std over seeds, dots: up to {seeds} seeds)",
                         loc="left", fontsize=8)
            paths.append(_save(fig, out_dir / f"{_slug(experiment, 'bars', model)}.png"))
    return paths


SECTION_PREFIX = re.compile(r"^(model|task|regime|trainer)\.")


def _setting_tick(setting: str) -> str:
    """A row's setting under its tick, short: each override's field name without its section."""
    return "".join("\n" + SECTION_PREFIX.sub("", part.strip()) for part in setting.split(", ") if part)


def _units(ok: pd.DataFrame, store: Store):
    """Per (model, task, regime, row, seed): {type: fixed score} and {method: selection record}."""
    keys = ["model", "task", "regime_label", "row", "seed"]
    for key, block in ok.groupby(keys, sort=True):
        fixed = {fixed_type(a): float(v) for a, v in zip(block["arm"], block["value"]) if fixed_type(a)}
        chosen = {a: store.records[p]["selection"]
                  for a, p, sel in zip(block["arm"], block["path"], block["is_selection"])
                  if sel and (store.records[p].get("selection") or {}).get("type_scores")}
        yield dict(zip(keys, key)), fixed, chosen


def scatter(store: Store, ok: pd.DataFrame, experiment: str, out_dir: Path) -> list[Path]:
    """Per selection method: each trained type's score (x) against its fixed-run score relative to the mean of
    the trained types of the same run (y); a grey line joins the types of one run."""
    units = [(k, f, c) for k, f, c in _units(ok, store) if len(f) >= 2 and c]
    methods = sorted({m for _, _, c in units for m in c}, key=lambda m: order_key(m, SELECTION_METHODS))
    if not methods:
        return []
    tasks = sorted({k["task"] for k, _, _ in units}, key=lambda t: order_key(t, list(TASK_NAMES)))
    with plt.rc_context(STYLE):
        ncols = min(3, len(methods))
        nrows = math.ceil(len(methods) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.7 * ncols + 1.0, 2.7 * nrows + 0.3), squeeze=False,
                                 constrained_layout=True)
        for ax in axes.ravel()[len(methods):]:
            ax.set_visible(False)
        for ax, method in zip(axes.ravel(), methods):
            hits, rhos = 0, []
            shown = [(k, f, c[method]) for k, f, c in units if method in c]
            for key, fixed, selection in shown:
                types = [t for t in fixed if selection["type_scores"].get(t) is not None]
                xs = np.array([selection["type_scores"][t] for t in types], float)
                ys = 100 * (np.array([fixed[t] for t in types]) - np.mean([fixed[t] for t in types]))
                order = np.argsort(xs)
                ax.plot(xs[order], ys[order], color="#bbbbbb", lw=0.6, zorder=1)
                for x, y, t in zip(xs, ys, types):
                    ax.scatter(x, y, color=TYPE_COLORS[t], marker=MARKERS[tasks.index(key["task"]) % len(MARKERS)],
                               s=18, zorder=2, edgecolors="white", linewidths=0.3)
                hits += types[int(np.argmax(xs))] == types[int(np.argmax(ys))]
                if len(types) >= 3 and np.ptp(xs) > 0 and np.ptp(ys) > 0:
                    rhos.append(pd.Series(xs).corr(pd.Series(ys), method="spearman"))
            ax.axhline(0, color="black", lw=0.5, zorder=0)
            rho = f"\nmean Spearman ρ {np.mean(rhos):+.2f}" if rhos else ""
            ax.set_title(f"{METHOD_NAMES.get(method, method)}{rho}\ntop-scored type trained best: {hits}/{len(shown)}",
                         fontsize=8)
            ax.set_xlabel("type score")
            formatter = ScalarFormatter(useMathText=True)
            formatter.set_powerlimits((-2, 3))
            ax.xaxis.set_major_formatter(formatter)
        for ax in axes[:, 0]:
            ax.set_ylabel("score − mean of trained types (×100)")
        trained = sorted({t for _, f, _ in units for t in f}, key=FIXED_ORDER.index)
        handles = [plt.Line2D([], [], ls="", marker="o", color=TYPE_COLORS[t], label=TEX_LABELS[t]) for t in trained]
        handles += [plt.Line2D([], [], ls="", marker=MARKERS[i % len(MARKERS)], color="#555555",
                               label=TASK_NAMES.get(t, t)) for i, t in enumerate(tasks)]
        fig.legend(handles=handles, loc="outside right center", frameon=False)
        fig.suptitle("Does a higher type score mean a better type to train alone? (one run = one seed)", fontsize=9)
        return [_save(fig, out_dir / f"{_slug(experiment, 'score_vs_accuracy')}.png")]


def agreement(store: Store, ok: pd.DataFrame, experiment: str, out_dir: Path) -> list[Path]:
    """Share of runs (model, task, regime, seed) where two methods rank the same type first; 'best trained'
    is the single type whose own fixed run scored highest, where at least two were trained."""
    picks, trained = [], set()
    for key, fixed, chosen in _units(ok, store):
        row = {m: s["ranking"][0] for m, s in chosen.items() if s.get("ranking")}
        if len(fixed) >= 2:
            row[BEST] = max(sorted(fixed), key=lambda t: fixed[t])
            trained.update(fixed)
        picks.append(row)
    methods = sorted({m for row in picks for m in row}, key=lambda m: order_key(m, SELECTION_METHODS))
    if len([m for m in methods if m != BEST]) < 2:
        return []
    size = len(methods)
    share, count = np.full((size, size), np.nan), np.zeros((size, size), int)
    for i, a in enumerate(methods):
        for j, b in enumerate(methods):
            both = [row for row in picks if a in row and b in row]
            count[i, j] = len(both)
            if both:
                share[i, j] = np.mean([row[a] == row[b] for row in both])
    best = "best trained alone\n(" + ", ".join(TEX_LABELS[t] for t in sorted(trained, key=FIXED_ORDER.index)) + ")"
    names = [best if m == BEST else METHOD_NAMES.get(m, m) for m in methods]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(0.85 * size + 1.8, 0.7 * size + 1.0), constrained_layout=True)
        cmap = plt.get_cmap("Greens").with_extremes(bad="#eeeeee")
        shown = np.where(np.tril(np.ones((size, size), bool), k=-1), share, np.nan)  # each pair once
        image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=0, vmax=1)
        for i in range(size):
            for j in range(i + 1):
                if i == j:
                    text, color = f"n={count[i, i]}", "#555555"
                else:
                    text = "—" if count[i, j] == 0 else f"{share[i, j]:.2f}\nn={count[i, j]}"
                    color = "white" if count[i, j] and share[i, j] > 0.6 else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(size), names, rotation=30, ha="right")
        ax.set_yticks(range(size), names)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="same top type (share of runs)")
        ax.set_title("How often two methods rank the same bias type first", fontsize=9)
        return [_save(fig, out_dir / f"{_slug(experiment, 'agreement')}.png")]


def all_figures(store: Store, ok: pd.DataFrame, experiment: str, out_dir: Path) -> list[Path]:
    return (heatmaps(store, ok, experiment, out_dir) + bars(ok, experiment, out_dir)
            + scatter(store, ok, experiment, out_dir) + agreement(store, ok, experiment, out_dir))
