"""Speed and memory of bias-only fine-tuning against full fine-tuning and LoRA, measured in one run.

    python scripts/bench.py                       # step time and peak memory: full, lora, bitfit, v-only (minilm)
    python scripts/bench.py --end-to-end          # SST-2 low-data v-only run: beft defaults vs the authors' protocol
    python scripts/bench.py --decoder             # SmolLM2 prompted SST-2: candidate scoring now vs before
    python scripts/bench.py --prefix-generation   # SmolLM2 prefix-tuned SQuAD answers: KV cache vs recomputation
    python scripts/bench.py --error-time          # how fast a typo (run.py model=foo) comes back, vs python -c pass
    python scripts/bench.py --job-memory --before ../main   # peak RSS of a beft job / a fixed-v job, before and now
    python scripts/bench.py --cpu-bf16            # bf16 on the CPU against fp32 (scripts/bench_bf16.py)

Each training mode runs in its own subprocess so that its peak memory is its own: on CUDA the allocator's
peak, on CPU the growth of the process's peak resident memory over the loaded model. Results are ratios to
full fine-tuning (or to the authors' protocol) from the same invocation, never timings from elsewhere.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MODES = ("full", "lora", "bitfit", "v")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(mode: str, model_name: str, batch_size: int, seq_len: int, steps: int, warmup: int,
            device_name: str) -> dict:
    """One training mode: mean step time and peak extra memory (runs inside its own process)."""
    import torch
    from omegaconf import OmegaConf

    from beft.bias_map import BiasMap
    from beft.runtime import resolve_device, resolve_precision
    from beft.evaluate import autocast
    from beft.models import load_encoder
    from beft.trainable import Scope, apply_scope

    torch.manual_seed(0)
    device = resolve_device(device_name)
    precision = resolve_precision("auto", device)
    model_cfg = OmegaConf.load(REPO / "conf" / "model" / f"{model_name}.yaml")
    model, _ = load_encoder(model_cfg, num_labels=2, attn_implementation="sdpa")
    bias_map = BiasMap(model)
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"],
                                                 modules_to_save=["classifier"]))
    else:
        scope = {"full": Scope("all"), "bitfit": Scope("all_biases"),
                 "v": Scope("targets", bias_map.cells(["v"]))}[mode]
        apply_scope(model, bias_map, scope)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, eps=1e-6, weight_decay=0.0)
    vocab = model.config.vocab_size
    batch = {"input_ids": torch.randint(1000, vocab, (batch_size, seq_len), device=device),
             "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long, device=device)}
    labels = torch.randint(0, 2, (batch_size,), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = _rss_kib("VmRSS")
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        with autocast(device, precision):
            logits = model(**batch).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mib = (_rss_kib("VmHWM") - base_rss) / 1024
    return {"mode": mode, "trainable": sum(p.numel() for p in params), "step_ms": 1000 * statistics.median(times),
            "peak_extra_mib": max(peak_mib, 0.0), "device": str(device), "precision": precision}


def step_table(args) -> str:
    rows = []
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, "--one", mode, "--model", args.model, "--batch-size",
                              str(args.batch_size), "--seq-len", str(args.seq_len), "--steps", str(args.steps),
                              "--device", args.device], capture_output=True, text=True, check=True,
                             env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    full = rows[0]
    lines = [f"model {args.model}, batch {args.batch_size} x {args.seq_len} tokens, {rows[0]['device']} "
             f"({rows[0]['precision']}), median of {args.steps} steps", "",
             "| mode | trainable params | step time (ms) | time / full | extra peak memory (MiB) | memory / full |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['trainable']:,} | {r['step_ms']:.1f} | {r['step_ms'] / full['step_ms']:.2f} "
                     f"| {r['peak_extra_mib']:.0f} | {r['peak_extra_mib'] / max(full['peak_extra_mib'], 1e-9):.2f} |")
    return "\n".join(lines)


def end_to_end(args) -> str:
    """The low-data SST-2 v-only run with beft's speed features and with the authors' protocol, same seeds."""
    rows = []
    for trainer in ("default", "paper"):
        for seed in args.seeds:
            cmd = [sys.executable, str(REPO / "run.py"), "model=minilm", "task=sst2", "regime=low", "method=fixed",
                   "method.terms=[v]", f"trainer={trainer}", f"seed={seed}", "cache_dir=null", "force=true",
                   "trainer.progress=false", f"out_dir={args.out_dir}"]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
            wall = time.perf_counter() - start
            record = max(Path(args.out_dir).glob(f"minilm-sst2-low-fixed-v-s{seed}-*/result.json"),
                         key=lambda p: p.stat().st_mtime)
            result = json.loads(record.read_text())
            rows.append({"trainer": trainer, "seed": seed, "wall_s": wall,
                         "accuracy": result["metrics"]["main"]["value"]})
    mean = {t: statistics.mean(r["wall_s"] for r in rows if r["trainer"] == t) for t in ("default", "paper")}
    acc = {t: [r["accuracy"] for r in rows if r["trainer"] == t] for t in ("default", "paper")}
    lines = ["| protocol | seeds | wall time per run (s, mean) | validation accuracy (mean ± std) |",
             "|---|---|---:|---:|"]
    for t, label in (("paper", "authors' (pad to 128, eager attention, train-set eval every epoch)"),
                     ("default", "beft (per-batch padding, length grouping, SDPA, no train-set eval)")):
        sd = statistics.stdev(acc[t]) if len(acc[t]) > 1 else 0.0
        lines.append(f"| {label} | {len(acc[t])} | {mean[t]:.1f} | {100 * statistics.mean(acc[t]):.2f} ± "
                     f"{100 * sd:.2f} |")
    lines += ["", f"speed-up: {mean['paper'] / mean['default']:.1f}x end to end "
                  f"(per seed: {', '.join(f'{r:.1f}' for r in _per_seed_ratio(rows))})"]
    return "\n".join(lines)


def decoder_rows(args) -> str:
    """A real decoder (SmolLM2-135M) on prompted SST-2: evaluation examples per second and training step time with
    one prompt row for all one-token candidates (now) against one row per candidate (before), one process.
    `--model-path DIR` swaps in another copy of the weights (the GPU check uses SmolLM2's shape with random
    weights: speed does not depend on the weights' values); `--device` and `--precision` choose where and how."""
    import torch

    from beft.evaluate import autocast, to_device
    from beft.methods import fixed_scope
    from beft.trainable import apply_scope

    wl = _decoder_workload(args, "task=sst2", "method=fixed-v")
    model, _ = wl.new_model()
    apply_scope(model, wl.bias_map(), fixed_scope(wl.run.method, wl.bias_map()))
    cuda = wl.device.type == "cuda"

    def timed(work) -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        work()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def forward_backward(batch):
        with autocast(wl.device, wl.precision):
            loss = wl.loss(model, to_device(batch, wl.device))
        loss.backward()    # forward + backward: what a training step costs besides Adam
        model.zero_grad(set_to_none=True)

    labels = {False: "before: one row per candidate", True: "now: one prompt row per example"}
    eval_s, step_s = {False: [], True: []}, {False: [], True: []}
    # Interleaved (before, now, now, before, ...), so load from other processes falls on both alike.
    for fast in (False, True, True, False):
        wl.coder.one_row_for_one_token = fast
        eval_s[fast].append(timed(lambda: wl.evaluate(model)))
    model.train()
    items = wl.train_set.items
    for step in range(args.steps):
        chunk = [items[(step * 8 + k) % len(items)] for k in range(8)]
        for fast in ((False, True) if step % 2 else (True, False)):
            wl.coder.one_row_for_one_token = fast
            batch = wl.coder.collate(chunk, "all")
            step_s[fast].append(timed(lambda: forward_backward(batch)))
    rows = {labels[f]: {"eval_per_s": args.eval_n / statistics.median(eval_s[f]),
                        "step_s": statistics.median(step_s[f][1:])} for f in (False, True)}
    before, now = rows.values()
    weights = f"random weights in {args.model_path}" if args.model_path else "its packaged weights"
    where = _where(wl)
    lines = [f"smollm2-135m ({weights}), SST-2 prompts, {args.eval_n} validation examples (2 evaluations each), "
             f"forward + backward of a training batch of 8 (added b_v, {args.steps} batches each), interleaved, "
             f"{where}", "",
             "| scoring | eval examples / s | train step (s, median) |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['eval_per_s']:.1f} | {v['step_s']:.3f} |" for k, v in rows.items()]
    lines += ["", f"now / before: evaluation {now['eval_per_s'] / before['eval_per_s']:.2f}x the examples per second, "
                  f"training step {before['step_s'] / now['step_s']:.2f}x faster. Decoders also evaluate once after "
                  "training (trainer.eval_every_epoch null), not every epoch: 1 evaluation instead of 5 on the "
                  "paper's 5-epoch schedule."]
    return "\n".join(lines)


def prefix_generation_rows(args) -> str:
    """Greedy SQuAD answers of a prefix-tuned SmolLM2-135M (prefix initialised from real activations, as a run
    starts): the prefix carried in the KV cache (now) against rerunning the whole sequence for every token (what
    prefix runs did before: transformers' generate drops PEFT's prefix), the same prompts, one process."""
    from beft.decoder.scoring import greedy, greedy_by_recomputation
    from beft.decoder.workload import MAX_NEW_TOKENS

    wl = _decoder_workload(args, "task=squad", "method=prefix")
    model, _ = wl.new_model()
    model.eval()
    items = wl.eval_sets["validation"].items[:args.eval_n]
    prompts = [wl.coder.generation_prompt(item, MAX_NEW_TOKENS) for item in items]
    seconds, answers = {"before": [], "now": []}, {}
    for which in ("before", "now", "now", "before"):   # interleaved, so other load falls on both alike
        start = time.perf_counter()
        answers[which] = (greedy(model, prompts, MAX_NEW_TOKENS, wl.coder.stop, wl.coder.pad, prefix_tuned=True)
                          if which == "now" else greedy_by_recomputation(model, prompts, MAX_NEW_TOKENS, wl.coder.stop))
        seconds[which].append(time.perf_counter() - start)
    before, now = (statistics.median(seconds[k]) for k in ("before", "now"))
    same = sum(a == b for a, b in zip(answers["before"], answers["now"]))
    tokens = sum(len(a) for a in answers["now"])
    return "\n".join([
        f"smollm2-135m, prefix tuning (5 virtual tokens), {len(prompts)} SQuAD validation prompts, {tokens} answer "
        f"tokens, greedy, 2 runs each, interleaved, {_where(wl)}", "",
        "| prefix-tuned generation | answers / s |", "|---|---:|",
        f"| before: whole sequence rerun per token | {len(prompts) / before:.2f} |",
        f"| now: prefix and prompt in the KV cache | {len(prompts) / now:.2f} |", "",
        f"now / before: {before / now:.2f}x the answers per second; identical answers: {same} of {len(prompts)}."])


def _decoder_workload(args, *overrides):
    from hydra import compose, initialize_config_dir

    from beft import config
    from beft.decoder import DecoderWorkload

    overrides = ["model=smollm2-135m", *overrides, "regime.n=64", f"task.decoder.n_eval={args.eval_n}",
                 f"data_dir={os.environ.get('BEFT_DATA_DIR') or REPO.parent / 'shared' / 'data'}",
                 f"trainer.device={args.device}", f"trainer.precision={args.precision}"]
    if args.model_path:
        overrides.append(f"model.path={args.model_path}")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return DecoderWorkload(config.resolve(compose(config_name="config", overrides=overrides)))


def _where(wl) -> str:
    import torch

    if wl.device.type == "cuda":
        return (f"{torch.cuda.get_device_name(wl.device)}, {wl.precision}, peak GPU memory "
                f"{torch.cuda.max_memory_allocated(wl.device) / 2**30:.2f} GiB")
    return f"{torch.get_num_threads()} threads, cpu, {wl.precision}"


def _per_seed_ratio(rows):
    by = {(r["trainer"], r["seed"]): r["wall_s"] for r in rows}
    return [by[("paper", s)] / by[("default", s)] for s in sorted({r["seed"] for r in rows})]


def time_to_first_line(cmd: list[str]) -> tuple[float, str]:
    """Seconds from start until the command's first line of output (stdout or stderr), and that line."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.communicate()
    return elapsed, line.strip()


# Bad command lines timed by --error-time: a typo in a group option, and values checked before torch is imported
# (a bias term, a budget), which once took 5-27 s because they were checked only once the model was loaded.
ERROR_COMMANDS = [["model=foo"], ["method=fixed", "method.terms=[zz]"], ["budget=types", "budget.k=0"]]


def error_time(repeats: int = 5) -> dict:
    """Median time until each of ERROR_COMMANDS (`run.py model=foo`, ...) prints its error line, and as a ratio to
    a bare interpreter's start (`python -c "print()"`: `python -c pass`, plus the line that marks its end)."""
    bare = statistics.median(time_to_first_line([sys.executable, "-c", "print()"])[0] for _ in range(repeats))
    rows = []
    for args in ERROR_COMMANDS:
        runs = [time_to_first_line([sys.executable, str(REPO / "run.py"), *args]) for _ in range(repeats)]
        seconds = statistics.median(t for t, _ in runs)
        rows.append({"command": " ".join(args), "error_s": seconds, "ratio": seconds / bare, "line": runs[0][1]})
    return {"python_s": bare, "rows": rows}


def error_table(repeats: int) -> str:
    r = error_time(repeats)
    lines = ["| command | time to its first line (s, median of %d) | / bare python |" % repeats, "|---|---:|---:|",
             f"| python -c \"print()\" (a bare interpreter) | {r['python_s']:.3f} | 1.0 |"]
    lines += [f"| run.py {row['command']} (error line) | {row['error_s']:.3f} | {row['ratio']:.1f} |" for row in r["rows"]]
    return "\n".join(lines + [""] + [f"error line of run.py {row['command']}: {row['line'][:120]}" for row in r["rows"]])


# Runs argv[2:] as its child and writes "<peak RSS KiB> <exit code>" to argv[1]. A child's peak RSS (wait4)
# counts the memory of the process it was forked from until it execs: from this small interpreter (-S, nothing
# imported) that is a few MiB, the same for every job, where forking from a process holding torch would add GBs.
_MEASURE = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execvp(sys.argv[2], sys.argv[2:])\n"
            "_, status, usage = os.wait4(pid, 0)\n"
            "open(sys.argv[1], 'w').write(f'{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}')")


def peak_rss_mib(cmd: list[str], cwd: Path, log: Path) -> tuple[float, int]:
    """(peak resident memory of `cmd`'s process in MiB, its exit code): the kernel's own count (wait4)."""
    result = log.with_suffix(".rss")
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-S", "-c", _MEASURE, str(result), *cmd], cwd=cwd, stdout=out,
                       stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
                       check=True)
    kib, code = result.read_text().split()
    return int(kib) / 1024, int(code)


def job_memory(args) -> str:
    """Peak RSS of a whole `method=beft` job over a `method=fixed-v` job (the same model, task, data and
    schedule), each run.py in its own process, for this checkout and (--before) another one: one model per job
    (issue 39) brings the ratio towards 1, where the probe's, b_0's and the export's extra models raised it."""
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="job-memory-"))
    checkouts = [("before", Path(args.before).resolve())] if args.before else []
    checkouts.append(("now", REPO))
    lines = ["| code | beft job peak RSS (MiB) | fixed-v job peak RSS (MiB) | beft / fixed-v |",
             "|---|---:|---:|---:|"]
    for label, checkout in checkouts:
        peaks = {}
        for method in ("fixed-v", "beft"):
            out = work / f"{label}-{method}"
            cmd = [sys.executable, str(checkout / "run.py"), f"model={args.model}", "task=sst2", f"method={method}",
                   f"out_dir={out / 'runs'}", f"cache_dir={out / 'cache'}", "trainer.progress=false",
                   "trainer.device=cpu", *args.job_args.split()]
            peaks[method], code = peak_rss_mib(cmd, work, out.with_suffix(".log"))
            if code != 0:
                raise SystemExit(f"{label} {method} failed (exit {code}): see {out.with_suffix('.log')}")
        lines.append(f"| {label} ({checkout}) | {peaks['beft']:.0f} | {peaks['fixed-v']:.0f} | "
                     f"{peaks['beft'] / peaks['fixed-v']:.3f} |")
    return "\n".join([f"{args.model}, SST-2, {args.job_args}, CPU, each job its own process (peak RSS: wait4)", ""]
                     + lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--decoder", action="store_true", help="SmolLM2 scoring: one prompt row vs one per candidate")
    parser.add_argument("--prefix-generation", action="store_true", help="prefix-tuned SQuAD answers: cache vs none")
    parser.add_argument("--eval-n", type=int, default=None, help="validation examples (decoder 128, prefix 16)")
    parser.add_argument("--model-path", help="--decoder, --prefix-generation: load the weights from this folder")
    parser.add_argument("--precision", default="auto", help="--decoder: auto (bf16 on CUDA), fp32, bf16")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out-dir", default=str(REPO / "outputs" / "bench"))
    parser.add_argument("--error-time", action="store_true", help="time to the error line of a bad override")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--job-memory", action="store_true", help="peak RSS of a beft job / a fixed-v job")
    parser.add_argument("--before", help="--job-memory: another checkout (e.g. ../main) measured the same way")
    parser.add_argument("--job-args", default="regime.n=256 trainer.epochs=2", help="--job-memory: run.py overrides")
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 on the CPU vs fp32: scripts/bench_bf16.py")
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.cpu_bf16:   # its own script and options (--rounds, --quick, --out)
        sys.exit(subprocess.call([sys.executable, str(REPO / "scripts" / "bench_bf16.py"), *rest]))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.one:
        print(json.dumps(measure(args.one, args.model, args.batch_size, args.seq_len, args.steps, 3, args.device)))
    elif args.end_to_end:
        print(end_to_end(args))
    elif args.decoder:
        args.eval_n = args.eval_n or 128
        print(decoder_rows(args))
    elif args.prefix_generation:
        args.eval_n = args.eval_n or 16
        print(prefix_generation_rows(args))
    elif args.error_time:
        print(error_table(args.repeats))
    elif args.job_memory:
        print(job_memory(args))
    else:
        print(step_table(args))
        print()
        print(error_table(args.repeats))


if __name__ == "__main__":
    main()
