"""What the runs cost, read from the records themselves (`timing.total`: load + train + evaluation, wall
seconds), so a README's cost figures are derived, not typed in.

One row per model × task × arm: how many ok runs, the median and range of their wall time, and the sum; a last
row sums the experiment. Wall time depends on what shared the machine, so the table says how to read it.
"""
from __future__ import annotations

import pandas as pd

from beft.report.store import arm_name, sort_runs
from beft.report.table_io import DASH

COST_NOTE = ("Wall time of each ok run as its record states it (timing.total: loading, training, evaluation). It "
             "depends on what shared the machine (other jobs, threads) and includes a selection's probe; a run "
             "that reused a cached training shows little training time. Runs without a timing are counted, "
             "not timed.")


def cost_table(ok: pd.DataFrame):
    columns = ["model", "task", "arm", "runs", "median (min)", "range (min)", "sum (h)"]
    runs = sort_runs(ok, ["model", "task", "arm", "seed"])
    rows, data = [], []
    for (model, task, arm), group in runs.groupby(["model", "task", "arm"], sort=False):
        minutes = group["seconds"].dropna() / 60
        cell = {"model": model, "task": task, "arm": arm, "runs": len(group), "timed": len(minutes),
                "median_min": minutes.median(), "min_min": minutes.min(), "max_min": minutes.max(),
                "sum_h": minutes.sum() / 60}                  # NaN statistics (0 for the sum) when untimed
        data.append(cell)
        rows.append([model, task, arm_name(arm), _runs_text(len(group), len(minutes)),
                     f"{cell['median_min']:.1f}" if len(minutes) else DASH,
                     f"{cell['min_min']:.1f}–{cell['max_min']:.1f}" if len(minutes) > 1 else DASH,
                     f"{cell['sum_h']:.2f}" if len(minutes) else DASH])
    seconds = runs["seconds"].dropna()
    rows.append(["all", "", "", _runs_text(len(runs), len(seconds)), "", "", f"{seconds.sum() / 3600:.2f}"])
    return columns, rows, pd.DataFrame(data)


def _runs_text(runs: int, timed: int) -> str:
    return str(runs) if runs == timed else f"{runs} ({timed} timed)"
