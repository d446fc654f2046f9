"""docs/gpu.md: what a b_v / LoRA / full job on BERT-base, OPT-1.3B, OPT-6.7B and LLaMA-2-7B needs by the memory
plan (beft/memory_plan.py), which GPU it fits, and the command. Written from the model shapes alone
(conf/model/shape-*.yaml), no weights; tests/test_gpu_plan.py checks the committed page equals this output.

  python scripts/gpu_plan.py            # rewrites docs/gpu.md
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from beft.bias_map import BiasMap  # noqa: E402
from beft.config import sections  # noqa: E402
from beft.decoder import model as causal_lm  # noqa: E402
from beft.decoder.peft_methods import adapter_of, add_adapter  # noqa: E402
from beft.memory_plan import GiB, Job, estimate  # noqa: E402
from beft.method_table import method as method_entry  # noqa: E402
from beft.methods import fixed_scope  # noqa: E402
from beft.models import encoder_skeleton  # noqa: E402
from beft.precision import DTYPES, frozen_dtype  # noqa: E402
from beft.trainable import apply_scope  # noqa: E402

MODELS = [("BERT-base", "shape-bert-base", "bert-base-cased"), ("OPT-1.3B", "shape-opt-1.3b", "opt-1.3b"),
          ("OPT-6.7B", "shape-opt-6.7b", "opt-6.7b"), ("LLaMA-2-7B", "shape-llama2-7b", "llama2-7b")]
METHODS = [("b_v", "fixed-v"), ("LoRA", "lora"), ("full", "full")]
# Cards by memory; a job fits where its plan is at most 90 % of the card (CUDA context, fragmentation).
GPUS = [(16, "16 GB (T4, V100)"), (24, "24 GB (A10, L4, RTX 4090)"), (40, "40 GB (A100 40GB)"),
        (80, "80 GB (A100 80GB, H100)"), (141, "141 GB (H200)")]
FIT_SHARE = 0.9
# The job planned: a training batch of 16 rows of 256 tokens (decoders: prompt + candidate), bf16 autocast
# (decoders' frozen weights in bf16; full fine-tuning and encoders keep fp32 weights), AdamW, evaluation
# batches of 16 rows.
JOB = Job(train_rows=16, length=256, eval_rows=16, act_bytes=2)


def skeleton(shape: str, method: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={shape}", f"method={method}"])
    s = sections(cfg)
    if s["model"].get("kind") == "decoder":
        raw = causal_lm.skeleton(s["model"])
        model = add_adapter(raw, adapter_of(method, raw, BiasMap(raw)), s["method"], BiasMap(raw), init=False)
        dtype = DTYPES[frozen_dtype("auto", "decoder", "bf16", method_entry(method).scope, torch.device("cuda"))]
    else:
        model, dtype = encoder_skeleton(s["model"], 2), torch.float32
    apply_scope(model, BiasMap(model), fixed_scope(s["method"], BiasMap(model)))
    return model, dtype


def smallest_gpu(gib: float) -> str | None:
    for size, name in GPUS:
        if gib <= FIT_SHARE * size * 1e9 / GiB:
            return name
    return None


def _measured() -> str:
    """Where the estimate meets measured peaks: the GPU check's output once a GPU has run it."""
    if (REPO / "results" / "bench" / "gpu_scale.md").is_file():
        return "set beside measured peaks in `results/bench/gpu_scale.md`."
    return ("not yet set beside measured peaks: `python scripts/gpu_scale.py` on a GPU writes them to "
            "results/bench/gpu_scale.md (then rerun this script).")


def render() -> str:
    lines = ["# Running beft on a GPU: what a job needs", "",
             "Written by `scripts/gpu_plan.py` from the memory plan (`beft/memory_plan.py`), which every run also "
             "makes before it loads its model: it refuses a job that cannot fit, naming the knob that would make "
             "it fit, and keeps its estimate (and on CUDA the allocator's measured peak) in the record under "
             "`memory`. The plan counts frozen weights at their dtype, trainable parameters in fp32 with their "
             "gradient and AdamW's two moments, the activations one training batch saves, and one evaluation "
             f"batch; it is an estimate, {_measured()}", "",
             f"Planned job: training batches of {JOB.train_rows} rows x {JOB.length} tokens, bf16 autocast (decoders "
             "load frozen weights in bf16; full fine-tuning and encoders keep fp32 weights), AdamW, evaluation "
             f"batches of {JOB.eval_rows} rows. A card fits a job when the plan is at most "
             f"{FIT_SHARE:.0%} of its memory. Generation tasks (SQuAD, DROP) add a key/value cache per "
             "evaluation row: the run lowers its evaluation batch to fit (`memory.eval_batch_size` in the record).",
             "", "| model | method | trainable | weights GiB | train state GiB | activations GiB (checkpointed) "
             "| plan GiB | smallest GPU | command |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for title, shape, real in MODELS:
        for label, method in METHODS:
            if method == "lora" and not shape.startswith("shape-opt") and not shape.startswith("shape-llama"):
                lines.append(f"| {title} | {label} | — | | | | | | beft runs LoRA on decoders only |")
                continue
            model, dtype = skeleton(shape, method)
            need_inputs = method in ("lora", "full")
            job = replace(JOB, weights_need_inputs=need_inputs, lm_logits=not shape.startswith("shape-bert"))
            plan, ckpt = estimate(model, dtype, job), estimate(model, dtype, replace(job, checkpointing=True))
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            command = f"`python run.py model={real} task=rte method={method}"
            gpu = smallest_gpu(plan.total / GiB)
            ckpt_gpu = smallest_gpu(ckpt.total / GiB)
            if ckpt_gpu is not None and (gpu is None or GPUS[[n for _, n in GPUS].index(ckpt_gpu)][0]
                                         < GPUS[[n for _, n in GPUS].index(gpu)][0]):
                gpu, command = f"{ckpt_gpu}, checkpointed", command + " trainer.gradient_checkpointing=true"
            if gpu is None:
                gpu, command = "none alone: several GPUs", command + " model.device_map=auto"
            g, c = plan.gib(), ckpt.gib()
            lines.append(f"| {title} | {label} | {trainable:,} | {g['weights']:.1f} | {g['training_state']:.1f} | "
                         f"{g['activations']:.1f} ({c['activations']:.1f}) | {g['total']:.1f} | {gpu} | "
                         f"{command}` |")
    lines += ["", "Where bf16 is missing (T4, V100) `trainer.precision=auto` runs fp16 with a gradient scaler; a "
              "model larger than one card spreads over the visible GPUs (and the CPU) with `model.device_map=auto` "
              "and `model.max_memory={0: 20GiB, cpu: 60GiB}`. `trainer.memory_budget_gib` states the budget "
              "instead of the GPU's free memory. None of these knobs changes a run's record key. Prefix tuning "
              "cannot be checkpointed (transformers drops the key/value cache, where the prefix lives, inside a "
              "checkpointed layer): `method=prefix trainer.gradient_checkpointing=true` is refused in one line."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = REPO / "docs" / "gpu.md"
    out.write_text(render())
    print(f"wrote {out}")
