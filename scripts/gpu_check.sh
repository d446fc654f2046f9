#!/usr/bin/env bash
# The decoder path on a CUDA GPU, as one short script (issue 14 §6): bf16 runs of tiny random decoders through
# run.py (b_v, beft selection on native biases, LoRA, prefix, generation with F1/EM; bias LoRA / DoRA / VeRA and
# MPNet too), one SmolLM2-135M-shaped run
# (random weights: its speed and memory are the real model's), and the bench's decoder rows in bf16 and fp32.
#   OUT=/some/dir bash scripts/gpu_check.sh        -> $OUT/gpu_check.md, $OUT/runs/**/result.json
# Needs beft's dependencies and BEFT_DATA_DIR (SST-2, SQuAD). SMOLLM2_CONFIG: a folder with SmolLM2's config.json
# and tokenizer files (from the converted packaged model); without it the SmolLM2-shaped part is skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT/runs"
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
failed=0
run() {  # one run.py job; its log goes to $OUT/log
    echo "== run.py $*" | tee -a "$OUT/log"
    $PY run.py out_dir="$OUT/runs" trainer.precision=bf16 trainer.progress=false "$@" >>"$OUT/log" 2>&1 || failed=$((failed + 1))
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

run model=tiny-llama task=sst2 method=fixed-v regime.n=64 task.decoder.n_eval=64
run model=tiny-qwen2 task=sst2 method=beft regime.n=64 task.decoder.n_eval=64
run model=tiny-opt task=sst2 method=lora regime.n=64 task.decoder.n_eval=64
run model=tiny-llama task=sst2 method=prefix regime.n=64 task.decoder.n_eval=64
run model=tiny-qwen2 task=squad method=fixed-v regime.n=32 task.decoder.n_eval=32
# Table 4's structured bias updates (parametrized fp32 biases under bf16 autocast) and MPNet (eager attention)
run model=tiny-bert task=sst2 method=lora_bias method.terms=[v,q] regime.n=64
run model=tiny-llama task=sst2 method=vera_bias regime.n=64 task.decoder.n_eval=64
run model=tiny-qwen2 task=sst2 method=dora_bias regime.n=64 task.decoder.n_eval=64
run model=tiny-mpnet task=sst2 method=fixed-v regime.n=64

if [ -n "${SMOLLM2_CONFIG:-}" ]; then
    RANDOM_DIR=/tmp/smollm2-135m-random
    $PY - "$SMOLLM2_CONFIG" "$RANDOM_DIR" <<'EOF'
import shutil, sys
from pathlib import Path
import torch
from transformers import AutoConfig, AutoModelForCausalLM
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src)).save_pretrained(dst)
for f in src.iterdir():
    if f.name != "config.json":
        shutil.copy(f, dst / f.name)
EOF
    run model=smollm2-135m model.path=$RANDOM_DIR task=sst2 method=fixed-v regime.n=128 task.decoder.n_eval=256
    for precision in bf16 fp32; do
        echo "== bench --decoder $precision" | tee -a "$OUT/log"
        $PY scripts/bench.py --decoder --device cuda --precision $precision --model-path $RANDOM_DIR --eval-n 256 \
            --steps 20 >"$OUT/bench_decoder_$precision.md" 2>>"$OUT/log" || failed=$((failed + 1))
    done
fi

$PY - "$OUT" <<'EOF' >"$OUT/gpu_check.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"GPU: {(out / 'gpu.txt').read_text().strip()}\n")
print("| run | status | precision | metrics | trainable | train s | eval s | peak GPU GiB |")
print("|---|---|---|---|---:|---:|---:|---:|")
for f in sorted(out.glob("runs/*/result.json")):
    r = json.loads(f.read_text())
    m = r.get("metrics", {}).get("final", {})
    t = r.get("timing", {})
    print(f"| {r['run_id']} | {r['status']} | {r.get('training', {}).get('precision')} | "
          + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))
          + f" | {r.get('trainable_params')} | {t.get('train', 0):.1f} | {t.get('eval', 0):.1f} | "
          f"{t.get('peak_gpu_memory_gib')} |")
for b in sorted(out.glob("bench_decoder_*.md")):
    print(f"\n### scripts/bench.py --decoder ({b.stem.split('_')[-1]})\n\n{b.read_text().strip()}")
EOF
cat "$OUT/gpu_check.md"
echo "$failed failed"
exit $((failed > 0))
