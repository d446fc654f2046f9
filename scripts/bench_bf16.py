"""bf16 on the CPU against fp32 (issue 41): ratios measured interleaved in one process, one torch thread.

    python scripts/bench_bf16.py                       # writes results/bench/cpu_bf16.md
    python scripts/bench.py --cpu-bf16                 # the same
    python scripts/bench_bf16.py --rounds 1 --quick    # the plumbing on tiny models (tests/test_cpu_bf16.py)

Three variants of the same job: fp32; bf16 autocast with fp32 frozen weights (trainer.precision=bf16); bf16 with
the frozen matrices stored in bf16 too (+ trainer.frozen_dtype=bf16). Rows: an encoder training step (MiniLM, and
MPNet-base where installed: b_v + head trainable, batch 16), a decoder training step and evaluation (SmolLM2-135M,
prompted SST-2, b_v), and greedy generation (SmolLM2-135M, SQuAD). Each round times one step of every variant in
turn on the same batch, so a machine shared with other jobs slows all variants alike; the table gives the median
over rounds and the speed-up over fp32 (above 1: bf16 is faster). On a CPU without bf16 instructions bf16 is
emulated (beft.runtime.cpu_bf16), which is what the `cpu` line of the output says.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VARIANTS = {"fp32": ("trainer.precision=fp32",),
            "bf16": ("trainer.precision=bf16", "trainer.allow_emulated_bf16=true"),
            "bf16, frozen bf16": ("trainer.precision=bf16", "trainer.allow_emulated_bf16=true",
                                  "trainer.frozen_dtype=bf16")}
FULL = {"encoders": ("minilm", "mpnet-base"), "decoder": "smollm2-135m", "batch": 16, "gen_batch": 4}
QUICK = {"encoders": ("tiny-bert",), "decoder": "tiny-llama", "batch": 4, "gen_batch": 2}


def workload(*overrides):
    """The workload of a run with these overrides (composed and resolved as run.py does)."""
    from hydra import compose, initialize_config_dir

    from beft import config
    from beft.kinds import make_workload

    data = os.environ.get("BEFT_DATA_DIR") or str(REPO.parent / "shared" / "data")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"data_dir={data}", "trainer.progress=false",
                                                       "trainer.device=cpu", *overrides])
    return make_workload(config.resolve(cfg))


def interleaved(steps: dict, rounds: int) -> dict[str, float]:
    """{variant: median seconds of its step}, the variants timed in turn in every round (after one warm-up)."""
    times = {name: [] for name in steps}
    for r in range(rounds + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if r:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def training_steps(model_name: str, task: str, batch_size: int, *overrides) -> dict:
    """One optimizer step of a b_v run (and its head, on an encoder) for every variant, on one fixed batch."""
    import torch

    from beft.bias_map import BiasMap
    from beft.evaluate import autocast, to_device
    from beft.methods import fixed_scope
    from beft.trainable import apply_scope

    steps = {}
    for name, variant in VARIANTS.items():
        wl = workload(f"model={model_name}", f"task={task}", "method=fixed-v", *overrides, *variant)
        model, _ = wl.new_model()
        bias_map = BiasMap(model)
        apply_scope(model, bias_map, fixed_scope(wl.run.method, bias_map))
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        batch = to_device(next(iter(wl.batches(wl.train_set, batch_size, torch.Generator().manual_seed(0)))),
                          wl.device)

        def step(wl=wl, model=model, optimizer=optimizer, batch=batch):
            with autocast(wl.device, wl.precision):
                loss = wl.loss(model, batch)
            loss.float().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steps[name] = step
    return steps


def evaluation(model_name: str, task: str, n: int, variant: tuple) -> tuple:
    """(workload, model in eval mode, its first evaluation split of `n` examples, scored in one batch)."""
    wl = workload(f"model={model_name}", f"task={task}", "method=fixed-v", "regime.n=16",
                  f"task.decoder.n_eval={n}", f"trainer.eval_batch_size={n}", *variant)
    model, _ = wl.new_model()
    return wl, model.eval(), next(iter(wl.eval_sets.values()))


def decoder_eval_and_generation(model_name: str, batch: int, gen_batch: int) -> tuple[dict, dict]:
    """Scoring the candidates of `batch` SST-2 prompts, and greedy SQuAD answers for `gen_batch` prompts."""
    scoring, generation = {}, {}
    for name, variant in VARIANTS.items():
        wl, model, data = evaluation(model_name, "sst2", batch, variant)
        scoring[name] = lambda wl=wl, model=model, data=data: wl.candidate_scores(model, data)
        wl, model, data = evaluation(model_name, "squad", gen_batch, variant)
        generation[name] = lambda wl=wl, model=model, data=data: wl.generate(model, data)
    return scoring, generation


def rows(label: str, unit: str, per_step: float, medians: dict) -> list[str]:
    """One table row per variant: the median time, the rate, and the speed-up over fp32."""
    base = medians["fp32"]
    return [f"| {label} | {name} | {1000 * t:.0f} | {per_step / t:.1f} {unit} | {base / t:.2f}× |"
            for name, t in medians.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny random models: the plumbing only")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "cpu_bf16.md"))
    args = parser.parse_args()
    import torch

    from beft.errors import BeftError
    from beft.runtime import cpu_bf16

    torch.set_num_threads(1)
    plan = QUICK if args.quick else FULL
    table = ["| job | variant | median step (ms) | rate | speed-up over fp32 |", "|---|---|---:|---:|---:|"]
    skipped = []
    for model_name in plan["encoders"]:
        try:
            steps = training_steps(model_name, "sst2", plan["batch"], "trainer.max_length=64")
        except BeftError as err:   # an optional model that is not installed (make models): said below
            skipped.append(f"{model_name}: {str(err).splitlines()[0]}")
            continue
        table += rows(f"{model_name} training step (b_v + head, batch {plan['batch']})", "examples/s",
                      plan["batch"], interleaved(steps, args.rounds))
    decoder = plan["decoder"]
    steps = training_steps(decoder, "sst2", plan["batch"], "regime.n=32", "task.decoder.n_eval=8")
    table += rows(f"{decoder} training step (b_v, SST-2 prompts, batch {plan['batch']})", "examples/s",
                  plan["batch"], interleaved(steps, args.rounds))
    scoring, generation = decoder_eval_and_generation(decoder, plan["batch"], plan["gen_batch"])
    table += rows(f"{decoder} evaluation (SST-2 candidates, {plan['batch']} examples)", "examples/s",
                  plan["batch"], interleaved(scoring, args.rounds))
    table += rows(f"{decoder} generation (SQuAD, greedy, {plan['gen_batch']} prompts)", "prompts/s",
                  plan["gen_batch"], interleaved(generation, args.rounds))
    text = "\n".join([
        "# bf16 on the CPU against fp32",
        "",
        f"Written by `python scripts/bench_bf16.py{' --quick' if args.quick else ''} --rounds {args.rounds}`: "
        "every variant timed in turn in each round, one torch thread, median over rounds.",
        f"cpu: {torch.backends.cpu.get_cpu_capability()}, bf16 {cpu_bf16()} "
        "(native: AVX512-BF16 or AMX; emulated: converted to fp32 and back); torch " + torch.__version__ + ".",
        "",
        *table,
        "",
        *(f"- not measured: {line}" for line in skipped),
    ]).rstrip() + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
