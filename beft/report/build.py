"""`make tables` from end to end: read the results store, write every table and figure, and a summary.

results/runs/<experiment>/**/result.json  ->  results/tables/<experiment>[_paired|_selection|_totals|_cost].*,
results/tables/fig1_scores.*, results/tables/summary.md, results/figures/<experiment>_*.png (.* = .md .csv .tex),
and results/README.md (beft.report.readme: the report that puts them together, with what is still unmeasured).
Both output folders are generated: what the previous call wrote (listed in each folder's `.manifest`) is
removed first, so a table never outlives its records, and nothing else there is touched. The same records give
byte-identical tables (everything sorted, no timestamps).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from beft.report import figures
from beft.report import readme
from beft.report import table_io
from beft.report import tables
from beft.report.costs import COST_NOTE, cost_table
from beft.report.examples import EXAMPLES_NOTE, examples_table
from beft.report.store import Store, read_store

log = logging.getLogger("beft")
NLI_TASKS = {"rte", "mnli", "qnli", "cb", "qqp", "mrpc"}
MANIFEST = ".manifest"


@dataclass
class Report:
    store: Store
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    readme: Path | None = None


# Experiments whose table has the paper's own layout; every other one gets tables.main_table (arms as columns).
LAYOUTS = {"table2": tables.table2, "table4": tables.table4}


def make_tables(runs_dir: Path, paper_dir: Path, tables_dir: Path, figures_dir: Path,
                with_figures: bool = True, readme_path: Path | None = None) -> Report:
    """Every table and figure of the store; with `readme_path`, the results report too (beft.report.readme)."""
    store = read_store(runs_dir)
    paper = tables.load_paper(paper_dir)
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    _clear(tables_dir)
    if with_figures:
        _clear(figures_dir)
    report = Report(store)
    runs = store.runs
    for experiment in sorted(runs["experiment"].unique()) if not runs.empty else []:
        mine = runs[runs["experiment"] == experiment]
        ok = mine[mine["status"] == "ok"]
        if ok.empty:
            continue
        name = experiment or "runs"
        report.tables += _experiment_tables(name, ok, int((mine["status"] != "ok").sum()), paper, tables_dir, store)
        if with_figures:
            report.figures += figures.all_figures(store, ok, name, figures_dir)
    fig1 = tables.fig1_scores(store, paper_dir)
    if fig1 is not None:
        columns, rows, data, notes = fig1
        report.tables += table_io.write(tables_dir, "fig1_scores", "Fig. 1: type scores, notebook vs ours",
                                        columns, rows, notes, data)
    report.tables.append(_summary(store, tables_dir))
    _manifest(tables_dir, report.tables)
    if with_figures:
        _manifest(figures_dir, report.figures)
    if readme_path is not None:
        report.readme = readme.write(readme_path, store, tables_dir, report.figures)
    return report


def _experiment_tables(name: str, ok: pd.DataFrame, failed: int, paper: pd.DataFrame, out: Path,
                       store: Store) -> list[Path]:
    title = tables.TITLES.get(name, f"Experiment {name}")
    layout = LAYOUTS.get(name)
    columns, rows, data, notes = layout(ok, paper) if layout else tables.main_table(name, ok, paper)
    if name.startswith("table"):
        notes = notes + tables.unplaced_notes(paper, set(ok["task"]))
    if "minilm" in set(ok["model"]) and NLI_TASKS & set(ok["task"]):
        notes.append(tables.NLI_NOTE)
    if failed:
        notes.append(f"{failed} failed run(s) are not in this table: see summary.md.")
    paths = []
    p_columns, p_rows, p_data = tables.paired_table(ok)
    e_columns, e_rows, e_data = examples_table(ok, store)   # only where both arms kept their predictions
    over_examples = (f"## Paired over examples\n\n{table_io.markdown(e_columns, e_rows)}\n- {EXAMPLES_NOTE}\n"
                     if e_rows else "")
    extra = ""
    if p_rows:
        extra = (f"## Paired comparisons\n\n{table_io.markdown(p_columns, p_rows)}\n- {tables.PAIRED_NOTE}\n")
        paths += table_io.write(out, f"{name}_paired", f"{title}: paired comparisons", p_columns, p_rows,
                                [tables.PAIRED_NOTE], p_data, over_examples)
    if e_rows:
        extra += "\n" + over_examples
        paths += table_io.write(out, f"{name}_examples", f"{title}: paired over examples", e_columns, e_rows,
                                [EXAMPLES_NOTE], e_data)
    s_data = pd.DataFrame()
    if ok["is_selection"].any():
        s_columns, s_rows, s_data = tables.selection_table(ok)
        extra += (f"\n## Selection\n\n{table_io.markdown(s_columns, s_rows)}\n- {tables.SELECTION_NOTE}\n")
        paths += table_io.write(out, f"{name}_selection", f"{title}: selection", s_columns, s_rows,
                                [tables.SELECTION_NOTE], s_data)
    t_columns, t_rows, t_data = tables.totals_table(p_data, s_data)
    if t_rows:
        extra += (f"\n## Across rows\n\n{table_io.markdown(t_columns, t_rows)}\n- {tables.TOTALS_NOTE}\n")
        paths += table_io.write(out, f"{name}_totals", f"{title}: across rows", t_columns, t_rows,
                                [tables.TOTALS_NOTE], t_data)
    c_columns, c_rows, c_data = cost_table(ok)
    paths += table_io.write(out, f"{name}_cost", f"{title}: cost per run", c_columns, c_rows, [COST_NOTE], c_data)
    return table_io.write(out, name, title, columns, rows, notes, data, extra) + paths


def _summary(store: Store, out: Path) -> Path:
    runs = store.runs
    lines = ["# Results store summary\n", "| experiment | ok | failed |", "| --- | ---: | ---: |"]
    if not runs.empty:
        counts = runs.groupby(["experiment", "status"]).size().unstack(fill_value=0)
        for experiment, row in counts.sort_index().iterrows():
            lines.append(f"| {experiment or '(top level)'} | {row.get('ok', 0)} | {row.sum() - row.get('ok', 0)} |")
        failed = runs[runs["status"] != "ok"].sort_values("path")   # interrupted runs too
        if len(failed):
            lines += ["", "## Failed runs (rerun the sweep to retry them)", ""]
            lines += [f"- `{r.path}`: {str(r.error).splitlines()[0] if r.error else 'no error recorded'}"
                      for r in failed.itertuples()]
    if store.skipped:
        lines += ["", "## Files skipped (not a usable record)", ""] + [f"- {s}" for s in sorted(store.skipped)]
    if store.untrusted:
        lines += ["", "## Records not trusted (left out of every table; `--untrusted` lists them)", ""]
        lines += [f"- `{u['path']}`: {u['reason']}" for u in sorted(store.untrusted, key=lambda u: u["path"])]
    path = out / "summary.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _clear(folder: Path) -> None:
    """Remove what the last call wrote (never anything it did not write)."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        for name in manifest.read_text().split():
            (folder / name).unlink(missing_ok=True)


def _manifest(folder: Path, paths: list[Path]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text("".join(f"{p.name}\n" for p in sorted(set(paths))))
