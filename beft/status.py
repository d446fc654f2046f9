"""`python -m beft.status experiment=NAME [overrides]` (`make status EXP=NAME`): which jobs of a sweep are done,
failed (and why), invalid (a record that fails its checks, and why) or missing, counted per model × task × arm,
and what the jobs still to run will cost by the committed cost table. Nothing is run, trained or written.

The jobs are those of `python run.py -m experiment=NAME [overrides]` (beft.jobs), each looked up where its run
writes its record and checked as the run checks it, under the same data directory (`data_dir=`, else
$BEFT_DATA_DIR, else the hub) that gives the run its key. The cost of a job is the median wall time of the ok
runs of its model × task × arm in results/tables/<out_dir's folder>_cost.csv (beft/report/costs.py; written by
`make tables`); where that table has no timed run of it, the same model × task × arm from another folder's cost
table (marked *: it ran under that experiment's settings); where none has, the cost is unknown. Exit 0 once the
state is told (whatever it is), 2 on bad input.
"""
from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

from beft import jobs
from beft.checks import CONF_DIR, check_overrides, group_choices
from beft.errors import BeftError
from beft.resume import STATES

USAGE = ("usage: python -m beft.status experiment=NAME [overrides ...]   (the overrides of "
         "`python run.py -m experiment=NAME ...`; -m may be given, it changes nothing)")
REPO = CONF_DIR.parent
COST_TABLES = REPO / "results" / "tables"
RUNS = REPO / "results" / "runs"


def read_overrides(argv: list[str]) -> list[str]:
    """The command line's overrides, checked as run.py checks a sweep's (one line naming what is wrong)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    flags = [a for a in argv if a.startswith("-") and a not in ("-m", "--multirun")]
    if flags:
        raise BeftError(f"unknown option {flags[0]!r}: give overrides only. {USAGE}")
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    check_overrides(overrides, multirun=True)
    chosen = [o for o in OverridesParser.create().parse_overrides(overrides) if o.key_or_group == "experiment"]
    if not chosen or chosen[0].is_sweep_override() or chosen[0].value() is None:
        raise BeftError(f"give one experiment=NAME; valid: {', '.join(group_choices('experiment'))}")
    return overrides


def _medians(path: Path) -> dict:
    """{(model, task, arm): (median minutes, timed runs)} of one cost table's timed ok runs."""
    minutes = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                timed, median = int(row.get("timed") or 0), float(row.get("median_min") or "nan")
            except ValueError:
                continue
            if timed > 0 and median == median:   # (NaN: no timed run)
                minutes[(row["model"], row["task"], row["arm"])] = (median, timed)
    return minutes


def cost_table(out_dir: str) -> tuple[Path | None, dict, dict]:
    """The committed cost table of a results folder, {(model, task, arm): median minutes of a timed ok run}, and
    the same from the other folders' cost tables (the one with the most timed runs of a cell wins): a new grid's
    cells are often measured in another experiment, with other settings."""
    folder = Path(out_dir)
    if not folder.is_absolute():
        folder = Path.cwd() / folder
    if folder.resolve().parent != RUNS.resolve():
        return None, {}, {}
    path = COST_TABLES / f"{folder.name}_cost.csv"
    own = {cell: median for cell, (median, _) in _medians(path).items()} if path.is_file() else {}
    best: dict = {}
    for other in sorted(COST_TABLES.glob("*_cost.csv")):
        if other.name != path.name:
            for cell, (median, timed) in _medians(other).items():
                if cell not in own and timed > best.get(cell, (0.0, 0))[1]:
                    best[cell] = (median, timed)
    return path, own, {cell: median for cell, (median, _) in best.items()}


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _duration(minutes: float) -> str:
    return f"{minutes:.1f} min" if minutes < 60 else f"{minutes / 60:.2f} h"


def report(overrides: list[str], found, out_dir: str, data: str | None) -> list[str]:
    """The status as lines of text: every job, the counts per model × task × arm, the cost of what is left."""
    lines = [f"{' '.join(overrides)}: {len(found)} jobs; records in {out_dir}; task data: {data or 'the hub'}"]
    width = max(len(s) for s in STATES)
    for s in found:
        lines.append(f"  {s.state:<{width}}  {s.run_id}" + (f": {s.reason}" if s.reason else ""))
    table, minutes, elsewhere = cost_table(out_dir)
    groups: dict[tuple, Counter] = {}
    for s in found:
        groups.setdefault((s.model, s.task, s.arm), Counter())[s.state] += 1
    header = ["model", "task", "arm", "jobs", *STATES, "to run: est."]
    rows, known, unknown, total, borrowed = [], 0, 0, 0.0, 0
    for cell, counts in groups.items():
        left = sum(counts[w] for w in STATES if w != "done")
        per_job = minutes.get(cell, elsewhere.get(cell))
        estimate = "" if not left else "unknown" if per_job is None else _duration(left * per_job)
        if left and per_job is not None:
            known, total = known + left, total + left * per_job
            if cell not in minutes:
                estimate, borrowed = estimate + " *", borrowed + left
        elif left:
            unknown += left
        rows.append([*cell, str(sum(counts.values())), *(str(counts[w]) for w in STATES), estimate])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines += ["", "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
              for r in rows]
    totals = Counter(s.state for s in found)
    lines += ["", f"{len(found)} jobs: " + ", ".join(f"{totals[w]} {w}" for w in STATES)]
    left = len(found) - totals["done"]
    if left:
        if known:
            sources = [f"{known - borrowed} from {_shown(table)}"] if known > borrowed else []
            sources += [f"{borrowed} (*) from another experiment's cost table in {_shown(COST_TABLES)}, run under "
                        "its settings"] if borrowed else []
            cost = (f"≈ {_duration(total)} for {known} of them (median wall time of an ok run of the same model × "
                    f"task × arm, which does not split regimes or seeds: {'; '.join(sources)})")
            cost += f"; unknown for {unknown} (no timed run of theirs in any cost table)" if unknown else ""
        elif table is None:
            cost = f"cost unknown: {out_dir} is not a folder of results/runs, which the cost tables cover"
        elif not table.is_file() and not elsewhere:
            cost = f"cost unknown: no cost table {_shown(table)} (make tables writes it from the records)"
        else:
            cost = f"cost unknown: no cost table in {_shown(COST_TABLES)} has a timed run of their model × task × arm"
        lines.append(f"to run (failed, invalid and missing: the sweep reruns all three): {left} jobs; {cost}")
        lines.append(f"resume with: python run.py -m {' '.join(overrides)}")
    return lines



def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE + "\n\n" + __doc__)
        return 0
    try:
        overrides = read_overrides(argv)
        from beft.cli import compose
        from beft.resume import data_dir

        cfg = compose("config", overrides, multirun=True)   # a composition error: one line, before any work
        found = jobs.states(jobs.compose_jobs(overrides))
    except BeftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    strays = jobs.strays(cfg.out_dir, found)
    lines = report(overrides, found, str(cfg.out_dir), data_dir(cfg))
    if strays:
        lines.append(f"{cfg.out_dir} also holds {strays} record(s) of runs that are no job of this sweep (another "
                     "grid, other data or code, or another experiment writing there)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
