"""Merge a run's trained b_v into b_o: the same model, with the value biases back at their pre-trained values.

A change Δ of the value bias is exactly the change W_o Δ of the attention-output bias (docs/why-bv.md), so a
b_v-only run's adapter can be rewritten as a b_o adapter (an added b_o where the model has none): one bias add
per layer either way. This writes `<run dir>/<name>/` (default `adapter-bo`) from the run's `adapter/` and,
unless --no-check, evaluates the merged model and compares its final metrics (main metric, loss) with the
record's.

    python scripts/merge_value_bias.py results/runs/why-bv/minilm-sst2-low-fixed-v-s0-<key>
    python scripts/merge_value_bias.py RUN_DIR --name adapter-bo --no-check
Exit status: 0 merged (and, when checked, every final metric equal to the record's to 1e-5), 1 the check
differs, 2 bad input.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TOLERANCE = 1e-5   # the same logits up to float summation order


def pretrained(workload):
    """The model the adapter was trained on, without adapter (an encoder's head is fresh: the adapter has it)."""
    return workload.load_base()[0] if workload.kind == "decoder" else workload.new_model()[0]


def merge(run_dir: Path, name: str, check: bool, data_dir: str | None) -> int:
    from omegaconf import OmegaConf

    from beft.errors import BeftError
    from beft.record import RECORD, read_record
    from beft.value_bias import merge_value_adapter
    from beft import config
    from beft.kinds import make_workload

    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", "..", "adapter"):
        raise BeftError(f"--name {name!r} must be a new folder name inside the run folder (letters, digits, . _ -)")
    record = read_record(run_dir / RECORD)
    if record is None or record.get("status") != "ok":
        raise BeftError(f"no ok record at {run_dir / RECORD}; give a finished run's folder")
    if not (record.get("adapter") or {}).get("written"):
        raise BeftError(f"run {record['run_id']} wrote no adapter ({(record.get('adapter') or {}).get('reason')})")
    cfg = OmegaConf.create(record["config"])
    if data_dir:
        cfg.data_dir = data_dir
    workload = make_workload(config.resolve(cfg))
    summary = merge_value_adapter(pretrained(workload), run_dir / "adapter", run_dir / name)
    print(f"wrote {run_dir / name}: b_v of layers {summary['merged_layers']} moved into b_o "
          f"({summary['target_modules']} bias vectors, {summary['params']:,} parameters with the head)")
    if not check:
        return 0
    from peft import PeftModel

    merged = PeftModel.from_pretrained(pretrained(workload), str(run_dir / name))
    scores, same = workload.evaluate(merged), True
    for metric, expected in record["metrics"]["final"].items():   # the main metric and the loss, final epoch
        same &= metric in scores and abs(scores[metric] - expected) <= TOLERANCE
        print(f"{metric}: merged {scores.get(metric, float('nan')):.6f}, record {expected:.6f}")
    return 0 if same else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run folder holding result.json and adapter/")
    parser.add_argument("--name", default="adapter-bo", help="the merged adapter's folder inside the run folder")
    parser.add_argument("--no-check", action="store_true", help="write only; do not evaluate the merged model")
    parser.add_argument("--data-dir", default=None, help="task files (default: the record's, or $BEFT_DATA_DIR)")
    args = parser.parse_args(argv)
    from beft.errors import BeftError

    try:
        return merge(args.run_dir, args.name, not args.no_check, args.data_dir)
    except BeftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
