"""The memory plan: what a job needs on its device, from the model's structure alone, before any weight loads.

A job holds its frozen weights (at the dtype they load in), its trainable parameters in fp32 with their
gradients and optimizer state (AdamW: two fp32 moments), the activations one training batch saves for the
backward pass, and, while it evaluates, one evaluation batch's logits and (generation) key/value cache. The
plan adds these up from the model config (a meta-device skeleton: shapes, no weights); `check` compares the sum
with what the device has free (or `trainer.memory_budget_gib`), refuses a job that cannot fit in one line naming
the knob that would make it fit, and picks the largest evaluation batch that fits. It is an estimate (the
allocator's measured peak goes beside it in the record, on CUDA): activations follow the usual per-token count
of a transformer layer's saved tensors, not a trace.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from beft import method_table
from beft.errors import BeftError

GiB = 2 ** 30
BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2, torch.float64: 8}
# Per trainable parameter beyond its weight: fp32 gradient + optimizer state (AdamW: 2 fp32 moments; SGD none).
STATE_BYTES = {"adamw": 4 + 8, "sgd": 4}
GATED_MLP = ("llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text")   # gate + up: two ffn-wide tensors


@dataclass(frozen=True)
class Shape:
    """What the plan needs of a model config (any family: the names differ, the quantities do not)."""
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_dim: int        # key (= value) width per token and layer: kv heads x head dim
    vocab: int
    gated: bool

    @classmethod
    def of(cls, config) -> "Shape":
        def first(*names, default=None):
            for name in names:
                if getattr(config, name, None) is not None:
                    return int(getattr(config, name))
            if default is None:
                raise BeftError(f"the memory plan reads {' or '.join(names)} from the {config.model_type} config, "
                                "which has none of them")
            return default
        hidden = first("hidden_size", "n_embd", "d_model")
        heads = first("num_attention_heads", "n_head")
        head_dim = first("head_dim", default=hidden // heads)
        return cls(layers=first("num_hidden_layers", "n_layer"), hidden=hidden,
                   ffn=first("intermediate_size", "ffn_dim", "n_inner", default=4 * hidden), heads=heads,
                   kv_dim=first("num_key_value_heads", default=heads) * head_dim, vocab=first("vocab_size"),
                   gated=config.model_type in GATED_MLP)


@dataclass(frozen=True)
class Job:
    """The batch a job runs: training rows (examples x candidates) x length, evaluation rows, new tokens."""
    train_rows: int
    length: int
    eval_rows: int
    new_tokens: int = 0                 # > 0: the evaluation generates (a key/value cache per row)
    act_bytes: int = 4                  # 2 under bf16 / fp16 autocast
    checkpointing: bool = False
    can_checkpoint: bool = True         # false for an adapter in the key/value cache (beft.method_table)
    optimizer: str = "adamw"
    weights_need_inputs: bool = False   # weights (full, LoRA) train: every Linear's input is saved too
    lm_logits: bool = True              # a vocabulary-wide logit per token (decoders; an encoder's head is tiny)


@dataclass(frozen=True)
class Plan:
    weights: int          # bytes: every parameter at its load dtype (trainable ones in fp32)
    training_state: int   # gradients + optimizer state of the trainable parameters
    activations: int      # saved for backward by one training batch (+ its logits)
    evaluation: int       # one evaluation batch: logits (+ key/value cache when generating)

    @property
    def total(self) -> int:
        return self.weights + self.training_state + max(self.activations, self.evaluation)

    def gib(self) -> dict:
        return {k: round(v / GiB, 3) for k, v in {**asdict(self), "total": self.total}.items()}

    def describe(self) -> str:
        g = self.gib()
        return (f"{g['total']:.2f} GiB (weights {g['weights']:.2f}, training state {g['training_state']:.2f}, "
                f"activations {g['activations']:.2f}, evaluation {g['evaluation']:.2f})")


def per_token_layer_bytes(shape: Shape, job: Job) -> int:
    """Saved activations of one layer per token. Bias-only backward needs what the nonlinearities and norms
    read (both norms' inputs, q k v and the attention output, the MLP activation's input: two ffn-wide tensors
    when gated); trainable weights (full, LoRA) need every Linear's input too (the two norms' outputs and the
    MLP activation's output)."""
    h, f = shape.hidden, shape.ffn * (2 if shape.gated else 1)
    count = 4 * h + 2 * shape.kv_dim + f + ((2 * h + shape.ffn) if job.weights_need_inputs else 0)
    return count * job.act_bytes


def estimate(skeleton: torch.nn.Module, weight_dtype: torch.dtype, job: Job) -> Plan:
    """The plan of a job on the model `skeleton` (meta device is fine), whose trainable parameters are those
    that require grad: frozen ones at `weight_dtype`, trainable ones in fp32."""
    shape = Shape.of(skeleton.config)
    frozen = sum(p.numel() for p in skeleton.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in skeleton.parameters() if p.requires_grad)
    weights = frozen * BYTES[weight_dtype] + trainable * 4
    # autocast keeps a half copy of each fp32 weight it casts while the graph lives (full fine-tuning on CUDA)
    cast_copies = trainable * job.act_bytes if job.act_bytes < 4 and job.weights_need_inputs else 0
    state = trainable * STATE_BYTES.get(job.optimizer, STATE_BYTES["adamw"]) + cast_copies
    tokens = job.train_rows * job.length
    per_layer = per_token_layer_bytes(shape, job)
    saved = (shape.layers * shape.hidden * job.act_bytes + per_layer) if job.checkpointing \
        else shape.layers * per_layer
    logits = shape.vocab * (job.act_bytes + 4 + 4) if job.lm_logits else 0   # logits, fp32 log-softmax, gradient
    activations = tokens * (saved + logits) if trainable else 0
    evaluation = evaluation_bytes(shape, job, job.eval_rows)
    return Plan(weights, state, activations, evaluation)


def evaluation_bytes(shape: Shape, job: Job, rows: int) -> int:
    """One evaluation batch: its logits and one layer's transient tensors, plus the generation cache."""
    length = job.length + job.new_tokens
    logits = shape.vocab * (job.act_bytes + 4) if job.lm_logits else 0
    transient = rows * length * (logits + per_token_layer_bytes(shape, job))
    kv_cache = 2 * shape.layers * shape.kv_dim * rows * length * job.act_bytes if job.new_tokens else 0
    return transient + kv_cache


def largest_eval_rows(plan: Plan, skeleton_shape: Shape, job: Job, budget: int) -> int:
    """The largest evaluation batch (at most job.eval_rows) whose evaluation fits beside the weights and
    training state in `budget` bytes; 1 if none does."""
    room = budget - plan.weights - plan.training_state
    rows = job.eval_rows
    while rows > 1 and evaluation_bytes(skeleton_shape, job, rows) > room:
        rows //= 2
    return rows


def knobs(skeleton, weight_dtype, job: Job, budget: int, *, half_possible: bool) -> list[str]:
    """The settings that, each alone, bring the plan within `budget` (the one-line refusal names them)."""
    found = []
    checkpointed = replace(job, checkpointing=True)
    if job.can_checkpoint and not job.checkpointing and estimate(skeleton, weight_dtype, checkpointed).total <= budget:
        found.append("trainer.gradient_checkpointing=true")
    if job.eval_rows > 1:
        one = estimate(skeleton, weight_dtype, replace(job, eval_rows=1))
        if one.total <= budget:
            found.append("a smaller trainer.eval_batch_size")
    if half_possible and weight_dtype == torch.float32 and \
            estimate(skeleton, torch.float16, replace(job, act_bytes=2)).total <= budget:
        found.append("trainer.precision=fp16")
    return found


def refusal(plan: Plan, budget: int, where: str, suggestions: list[str]) -> str:
    fix = ", or ".join(suggestions) if suggestions else "no single setting fits it here"
    return (f"this job needs about {plan.describe()} by the memory plan, but {budget / GiB:.2f} GiB is free "
            f"({where}); to fit: {fix}; or model.device_map=auto (with model.max_memory) to spread the model over "
            "the visible GPUs and the CPU")


def job_of(spec, workload) -> Job:
    """The job a run's spec and workload describe (batch, lengths, precision, checkpointing, optimizer)."""
    shape, s = workload.batch_shape(), spec.settings
    return Job(train_rows=s.batch_size * shape["candidates"], length=shape["length"],
               eval_rows=workload.eval_batch_size * (shape["candidates"] if not shape["new_tokens"] else 1),
               new_tokens=shape["new_tokens"], act_bytes=4 if spec.precision == "fp32" else 2,
               checkpointing=bool(spec.trainer.get("gradient_checkpointing")), optimizer=s.optimizer,
               can_checkpoint=method_table.checkpointing_refusal(spec.method.name) is None,
               lm_logits=workload.kind == "decoder")


def budget_of(spec) -> tuple[int | None, str]:
    """(bytes the job may use, where that number comes from); None where nothing is stated or measurable."""
    stated = spec.trainer.get("memory_budget_gib")
    if stated is not None:
        return int(float(stated) * GiB), "trainer.memory_budget_gib"
    if spec.device.type == "cuda" and not spec.model.get("device_map"):
        free, _ = torch.cuda.mem_get_info(spec.device)
        return free, f"free on {spec.device}"
    return None, "not checked"


def check(spec, workload, scope) -> dict:
    """Plan the job before its model loads; refuse it (BeftError, one line) if it cannot fit, else set the
    workload's evaluation batch to the largest that fits. Returns what the record keeps under `memory`."""
    from beft.bias_map import BiasMap
    from beft.trainable import apply_scope

    skeleton = workload.skeleton()
    try:
        apply_scope(skeleton, BiasMap(skeleton), scope)
    except (NotImplementedError, RuntimeError, ValueError):   # a scope that needs weights to attach: all biases
        from beft.trainable import Scope

        apply_scope(skeleton, BiasMap(skeleton), Scope("all_biases"))
    job = replace(job_of(spec, workload), weights_need_inputs=scope.kind in ("all", "adapter", "random_weights"))
    plan = estimate(skeleton, workload.weights_dtype, job)
    budget, where = budget_of(spec)
    record = {"plan_gib": plan.gib(), "budget_gib": None if budget is None else round(budget / GiB, 3),
              "budget_from": where, "eval_batch_size": workload.eval_batch_size}
    if budget is None:
        return record
    shape = Shape.of(skeleton.config)
    rows = largest_eval_rows(plan, shape, job, budget)
    if rows < job.eval_rows:
        per_example = max(1, job.eval_rows // workload.eval_batch_size)
        workload.eval_batch_size = max(1, rows // per_example)
        plan = replace(plan, evaluation=evaluation_bytes(shape, job, rows))
        record.update(plan_gib=plan.gib(), eval_batch_size=workload.eval_batch_size)
    if plan.total > budget:
        raise BeftError(refusal(plan, budget, where, knobs(skeleton, workload.weights_dtype, job, budget,
                                                           half_possible=spec.device.type == "cuda")))
    return record
