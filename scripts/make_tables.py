"""`make tables`: results/runs/** -> results/tables/*.{md,csv,tex}, results/figures/*.png and results/README.md.

    python scripts/make_tables.py                      # the committed results store
    python scripts/make_tables.py --runs outputs/runs  # run.py's <run id>/result.json, or <experiment>/<run id>/...
    python scripts/make_tables.py --untrusted          # also list the records left out as not trusted

Corrupt or half-written records are skipped with a warning; failed runs are counted in summary.md; records that do
not check out (beft.record_check: an edited key, a record in another run's folder, status and fields that
disagree, other code's) are left out of every table with a warning and listed in summary.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from beft.report import make_tables  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "results" / "runs", help="results store to read")
    parser.add_argument("--paper", type=Path, default=REPO / "results" / "paper", help="known paper numbers")
    parser.add_argument("--tables", type=Path, default=REPO / "results" / "tables", help="where tables go")
    parser.add_argument("--figures", type=Path, default=REPO / "results" / "figures", help="where figures go")
    parser.add_argument("--readme", type=Path, default=REPO / "results" / "README.md",
                        help="where the results report goes (links to the tables and figures relative to it)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument("--untrusted", action="store_true",
                        help="print the records left out as not trusted, with why and what they claim")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.runs.is_dir():
        print(f"error: no results store at {args.runs}; run a sweep first (python run.py -m experiment=smoke)",
              file=sys.stderr)
        return 2
    report = make_tables(args.runs, args.paper, args.tables, args.figures, with_figures=not args.no_figures,
                         readme_path=args.readme)
    runs = report.store.runs
    ok = int((runs["status"] == "ok").sum()) if not runs.empty else 0
    untrusted = report.store.untrusted
    print(f"{ok} ok and {len(runs) - ok} failed records, {len(report.store.skipped)} files skipped"
          + (f", {len(untrusted)} records not trusted" if untrusted else "")
          + f" -> {len(report.tables)} table files in {args.tables}, {len(report.figures)} figures in {args.figures}"
          + f", the report in {report.readme}")
    if args.untrusted:
        for item in untrusted:
            row = item["row"]
            print(f"not trusted: {item['path']}: {item['reason']} (claims {row['status']}, {row['arm']}, "
                  f"{row['metric']} = {row['value']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
