"""Does a shortened probe pick the same bias type as the full one?

For each task and seed, train the probe (all biases) in full and for 10 %, 25 % and 50 % of its steps, and
compare the top type chosen by beft, magnitude and causal with the full-probe choice. Probes are cached
trainings, so the full probes are shared with the `bitfit` runs of the same seeds.

    python scripts/probe_agreement.py                      # minilm, sst2 rte cola, seeds 0-2
    python scripts/probe_agreement.py --tasks sst2 --seeds 0 --fractions 0.1
    python scripts/probe_agreement.py --report             # only print the tables of the saved results
An interrupted study goes on from the cases saved in --out (`--fresh` recomputes them).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
METHODS = ("beft", "magnitude", "causal")


def compose(overrides):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def top_types(model: str, task: str, seed: int, fraction: float | None) -> dict:
    """The top-ranked type of each method after one probe (full when fraction is None)."""
    from beft import config
    from beft.cache import Cache
    from beft.selection import SELECTORS, SelectionContext, candidate_cells, score
    from beft.selection.probe import run_probe
    from beft.encoder import EncoderWorkload

    probe_fraction = "null" if fraction is None else str(fraction)
    cfg = compose([f"model={model}", f"task={task}", "regime=low", f"seed={seed}", "method=causal",
                   "method.cells=false", f"method.probe.fraction={probe_fraction}", "trainer.progress=false"])
    spec = config.resolve(cfg)
    workload = EncoderWorkload(spec)
    bias_map = workload.bias_map()
    cells = candidate_cells(spec.method, bias_map)
    probe = run_probe(spec.method, workload, bias_map, spec.settings, Cache(spec.cache_dir), cells)
    ctx = SelectionContext(spec.method, spec.seed, False, workload, bias_map, cells, probe)
    tops = {name: score(SELECTORS[name], ctx)[2][0] for name in METHODS}
    return {"steps": probe.fit.steps, "top": tops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "rte", "cola"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    parser.add_argument("--out", default=str(REPO / "results" / "probe_agreement.json"))
    parser.add_argument("--report", action="store_true", help="print the tables of --out; compute nothing")
    parser.add_argument("--fresh", action="store_true", help="recompute the cases already saved in --out")
    args = parser.parse_args()
    out = Path(args.out)
    if args.report:
        saved = json.loads(out.read_text())["results"]
        print(table(saved, sorted({r["fraction"] for r in saved})))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    previous = {} if args.fresh or not out.exists() else json.loads(out.read_text())
    if previous and previous["model"] != args.model:
        sys.exit(f"{out} holds a study of model {previous['model']!r}, not {args.model!r}: "
                 f"pass --fresh or another --out")
    results = previous.get("results", [])
    done = {(r["task"], r["seed"], r["fraction"]) for r in results}
    for task in args.tasks:
        for seed in args.seeds:
            todo = [f for f in args.fractions if (task, seed, f) not in done]
            if not todo:
                continue
            full = top_types(args.model, task, seed, None)
            for fraction in todo:
                short = top_types(args.model, task, seed, fraction)
                results.append({"task": task, "seed": seed, "fraction": fraction, "steps": short["steps"],
                                "full_steps": full["steps"], "top": short["top"], "full_top": full["top"]})
                print(json.dumps(results[-1]), flush=True)
                # after every case, so an interrupted study keeps what it measured (probes are cached: rerun to go on)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({"model": args.model, "results": results}, indent=2) + "\n")
    print(table(results, args.fractions))


def table(results: list[dict], fractions) -> str:
    """Agreement with the full probe's top type (matches out of seeds), per method, task and fraction, with the
    full probe's top type and, where a shortened probe disagrees, what it picked instead."""
    tasks = list(dict.fromkeys(r["task"] for r in results))
    lines = ["| method | task | " + " | ".join(f"{round(100 * f)} % of the probe" for f in fractions)
             + " | full probe's top type (seeds) |", "|---|---|" + "---:|" * len(fractions) + "---|"]
    for method in METHODS:
        for task in tasks + ["all"]:
            cells = []
            for f in fractions:
                rows = [r for r in results if r["fraction"] == f and task in (r["task"], "all")]
                hits = sum(r["top"][method] == r["full_top"][method] for r in rows)
                misses = Counter(r["top"][method] for r in rows if r["top"][method] != r["full_top"][method])
                cells.append(f"{hits}/{len(rows)}" + (" (" + ", ".join(misses) + ")" if misses else ""))
            full = Counter(r["full_top"][method] for r in results
                           if r["fraction"] == fractions[0] and task in (r["task"], "all"))
            tops = ", ".join(f"{t} ×{n}" for t, n in full.most_common())
            name = f"**{task}**" if task == "all" else task
            lines.append(f"| {method} | {name} | " + " | ".join(cells) + f" | {tops} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
