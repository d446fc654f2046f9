"""The paper's scale on one GPU (issue 39): random-weight models of the real OPT-1.3B / OPT-6.7B shapes
(conf/model/shape-*.yaml, made on the GPU in bf16), every job through beft's own pipeline (run.py's path).

  python scripts/gpu_scale.py                 # on a CUDA GPU, ~5 minutes -> results/bench/gpu_scale.md
  python scripts/gpu_scale.py --dry-run --out /tmp/x.md    # the same code path on the CPU, tiny shapes, seconds

A. OPT-1.3B shape, SST-2 prompts, batch 16, 20 optimizer steps: fixed-v, beft (probe + selection + training),
   lora, full: training tokens/s, the allocator's peak, the memory plan's estimate beside it.
B. OPT-6.7B shape on a simulated 24 GB card (torch.cuda.set_per_process_memory_fraction, and the plan's budget):
   fixed-v and beft whole jobs (probe, training, evaluation, adapter export), checkpointing off and on.
C. One model split by model.device_map=auto with a max_memory that leaves part of it off the GPU: the metrics of
   an evaluation-only job (zero_shot) against the unsplit model's, and a fixed-v job tried split.
Task data: the repository's tests/data SST-2 files (the GPU machine has no other). Metrics of random weights
mean nothing; memory and speed are the real shapes'.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from beft import pipeline  # noqa: E402
from beft.pipeline import run  # noqa: E402

GiB = 2 ** 30
REAL = {"a_model": "shape-opt-1.3b", "b_model": "shape-opt-6.7b", "c_model": "shape-opt-1.3b", "steps": 20,
        "b_steps": 10, "n": 320, "n_eval": 64, "card_gib": 24, "split_max_memory": "{0: 2GiB, cpu: 60GiB}"}
DRY = {"a_model": "tiny-opt", "b_model": "tiny-opt", "c_model": "tiny-opt", "steps": 2, "b_steps": 2, "n": 32,
       "n_eval": 8, "card_gib": 1, "split_max_memory": "{cpu: 1GiB}"}


class TokenCount:
    """Tokens (attention-mask ones) the final training's batches hold: wraps the pipeline's `fit`, so a selection
    method's probe (trained through beft.selection) is not counted."""

    def __init__(self):
        self.tokens, self.active = 0, False

    @contextlib.contextmanager
    def installed(self):
        fit, make = pipeline.fit, pipeline.make_workload

        def counting_fit(*args, **kwargs):
            self.active = True
            try:
                return fit(*args, **kwargs)
            finally:
                self.active = False

        def counting_workload(spec):
            workload = make(spec)
            loss = workload.loss

            def counted(model, batch):
                if self.active and torch.is_grad_enabled():
                    self.tokens += int(batch["attention_mask"].sum())
                return loss(model, batch)
            workload.loss = counted
            return workload

        pipeline.fit, pipeline.make_workload = counting_fit, counting_workload
        try:
            yield self
        finally:
            pipeline.fit, pipeline.make_workload = fit, make


def job(out: Path, *overrides: str) -> dict:
    """One pipeline job; returns its record (or the error) with the final training's tokens/s. Each job has its
    own cache: checkpointing and placement are not in the training key, and each must really train."""
    cache = out / f"cache-{len(list(out.glob('cache-*')))}"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"out_dir={out / 'runs'}", f"cache_dir={cache}", f"data_dir={REPO / 'tests' / 'data'}",
            "task=sst2", "trainer.progress=false", "force=true", *overrides])
    counter = TokenCount()
    start = time.perf_counter()
    try:
        with counter.installed():
            record = run(cfg)
    except Exception as err:   # noqa: BLE001 (a row that failed is a result too: its one line goes in the table)
        return {"status": "failed", "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}",
                "seconds": time.perf_counter() - start}
    train = record["timing"].get("train") or 0.0
    record["tokens_per_s"] = counter.tokens / train if train and counter.tokens else None
    record["seconds"] = time.perf_counter() - start
    return record


def row(part: str, label: str, record: dict) -> str:
    if record.get("status") != "ok":
        return f"| {part} | {label} | {record.get('status')} | | | | | {record.get('error', '')} |"
    memory = record.get("memory") or {}
    plan = (memory.get("plan_gib") or {}).get("total")
    peak = memory.get("peak_gib")
    ratio = f"{plan / peak:.2f}" if plan and peak else "—"
    main = record["metrics"]["main"]
    tps = record.get("tokens_per_s")
    return (f"| {part} | {label} | ok | {record['training']['steps']} | {tps:,.0f} | " if tps else
            f"| {part} | {label} | ok | {record['training']['steps']} | — | ") + \
        (f"{peak:.2f} | " if peak is not None else "— | ") + (f"{plan:.2f} ({ratio}) | " if plan else "— | ") + \
        f"{main['name']} {main['value']:.4f}, {record['seconds']:.0f} s |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: the same code path")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "gpu_scale.md"))
    parser.add_argument("--parts", default="ACB", help="which parts to run, in order (B last: it caps memory)")
    args = parser.parse_args(argv)
    s = DRY if args.dry_run else REAL
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("no CUDA GPU visible: run with --dry-run for the CPU path", file=sys.stderr)
        return 2
    device = ["trainer.device=cuda", "trainer.precision=bf16"] if cuda else ["trainer.device=cpu"]
    work = Path(tempfile.mkdtemp(prefix="gpu_scale-"))
    common = [*device, f"regime.n={s['n']}", f"task.decoder.n_eval={s['n_eval']}", "task.decoder.batch_size=16",
              "trainer.epochs=100"]
    lines, results = [], {}
    gpu = torch.cuda.get_device_name(0) if cuda else "CPU (dry run: tiny shapes, nothing measured on a GPU)"
    total = torch.cuda.get_device_properties(0).total_memory / GiB if cuda else None
    for part in args.parts:
        if part == "A":
            for method in ("fixed-v", "beft", "lora", "full"):
                rec = job(work, f"model={s['a_model']}", f"method={method}", f"trainer.max_steps={s['steps']}",
                          *common)
                results[("A", method)] = rec
                lines.append(row("A", f"{s['a_model']} {method}", rec))
        elif part == "C":
            for label, extra in (("zero_shot unsplit", ["method=zero_shot"]),
                                 ("zero_shot split", ["method=zero_shot", "model.device_map=auto",
                                                      f"model.max_memory={s['split_max_memory']}"]),
                                 ("fixed-v split", ["method=fixed-v", f"trainer.max_steps={s['steps']}",
                                                    "model.device_map=auto",
                                                    f"model.max_memory={s['split_max_memory']}"])):
                rec = job(work, f"model={s['c_model']}", *extra, *common)
                results[("C", label)] = rec
                lines.append(row("C", f"{s['c_model']} {label}", rec))
        elif part == "B":
            if cuda:   # a 24 GB card: the allocator refuses past it, and the plan is told the same budget
                torch.cuda.set_per_process_memory_fraction(min(1.0, s["card_gib"] / total))
            for method in ("fixed-v", "beft"):
                for ckpt in ("false", "true"):
                    rec = job(work, f"model={s['b_model']}", f"method={method}", f"trainer.max_steps={s['b_steps']}",
                              f"trainer.gradient_checkpointing={ckpt}", f"trainer.memory_budget_gib={s['card_gib']}",
                              *common)
                    results[("B", method, ckpt)] = rec
                    lines.append(row("B", f"{s['b_model']} {method}, checkpointing {ckpt}, "
                                          f"{s['card_gib']} GiB card", rec))
    write(Path(args.out), gpu, args.dry_run, lines, results)
    failed = [k for k, r in results.items() if r.get("status") != "ok" and k != ("C", "fixed-v split")]
    print(Path(args.out).read_text())
    return 1 if failed else 0


def ratios(results: dict) -> list[str]:
    full = results.get(("A", "full"))
    out = []
    if not full or full.get("status") != "ok":
        return out
    for method in ("fixed-v", "beft", "lora"):
        r = results.get(("A", method))
        if r and r.get("status") == "ok" and r.get("tokens_per_s") and full.get("tokens_per_s"):
            speed = r["tokens_per_s"] / full["tokens_per_s"]
            peak, full_peak = (r.get("memory") or {}).get("peak_gib"), (full.get("memory") or {}).get("peak_gib")
            memory = f", peak {peak / full_peak:.2f}x full's" if peak and full_peak else ""
            out.append(f"- {method}: {speed:.2f}x full fine-tuning's training tokens/s{memory}")
    for key, r in results.items():   # B: the peak against the bf16 weights + the plan's activations
        if key[0] == "B" and r.get("status") == "ok":
            plan, peak = r["memory"]["plan_gib"], r["memory"].get("peak_gib")
            bound = plan["weights"] + plan["activations"]
            shown = peak if peak is not None else "—"
            out.append(f"- {key[1]} checkpointing {key[2]}: peak {shown} GiB vs weights + activations {bound:.2f} GiB" + (f" ({peak / bound:.2f}x; goal <= 1.3x)" if peak else "")
                       + f"; adapter {'written' if r['adapter']['written'] else 'not written'}")
    split, unsplit = results.get(("C", "zero_shot split")), results.get(("C", "zero_shot unsplit"))
    if split and unsplit and split.get("status") == unsplit.get("status") == "ok":
        same = split["metrics"]["final"] == unsplit["metrics"]["final"]
        out.append(f"- split model (device_map=auto): metrics {'identical to' if same else 'DIFFERENT from'} the "
                   f"unsplit model's ({split['metrics']['final']})")
    return out


def write(path: Path, gpu: str, dry: bool, lines: list[str], results: dict) -> None:
    head = ["# One job at the paper's scale (issue 39)", "",
            "Produced by `scripts/gpu_scale.py`" + (" --dry-run (CPU, tiny shapes: the code path, no GPU numbers)"
                                                    if dry else "") + f" on {gpu}, torch {torch.__version__}.",
            "Random weights of the real shapes: memory and speed are the real models', metrics are not. Peak: the "
            "allocator's peak over the whole job (`memory.peak_gib`); plan: the memory plan's estimate "
            "(`memory.plan_gib.total`), with plan / peak in brackets. tokens/s: the final training's tokens "
            "(attention mask) per second of training.", "",
            "| part | job | status | steps | tokens/s | peak GiB | plan GiB (plan/peak) | result |",
            "|---|---|---|---:|---:|---:|---:|---|"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head + lines + [""] + ratios(results)) + "\n")


if __name__ == "__main__":
    sys.exit(main())
