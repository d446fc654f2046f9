"""The report program, `make tables`: the results store (results/runs/**/result.json) -> tables and figures.

    store.py     read every record into one row each (arm, seed, metric, counts); what a record is, from itself
    tables.py    the experiment tables: arms as columns, the paper's own layouts (Table 2, Table 4), paired
                 comparisons, selection and totals
    stats.py     paired statistics over seeds (bootstrap CI, sign-flip test)
    costs.py     what each run cost: wall time per model × task × arm, from the records' timing
    table_io.py  one table as Markdown, CSV and LaTeX
    figures.py   bars, heat maps, scatter and agreement plots
    examples.py  paired comparisons over examples (McNemar) where both arms kept their predictions
    jobs.py      the jobs each experiment config sweeps, as table cells (what is still unmeasured)
    readme.py    results/README.md: the report of every experiment, from the tables, figures and jobs
    build.py     make_tables: all of the above for every experiment, plus the summary

It reads records only; nothing here trains or loads a model (the run program is the rest of beft).
"""
from beft.report.build import make_tables

__all__ = ["make_tables"]
