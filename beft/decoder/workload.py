"""`DecoderWorkload`: a prompted task on a causal LM, behind the same interface as `EncoderWorkload`.

Training, selection and the pipeline see only the workload interface (beft/workload.py), so every method that
works on encoders works here: batches are (prompt + candidate) rows, `loss` is the cross-entropy over the
candidates' mean log-likelihoods or the LM loss on the gold tokens (per task, docs/paper.md §C.3), and `evaluate`
is accuracy over candidates or greedy-decoding F1 / exact match (§C.7). The model carries the method's adapter
(added biases on bias-free projections, LoRA, prefix); there is no task head, the LM head stays frozen.
"""
from __future__ import annotations

import numpy as np
import torch
from transformers import set_seed

from beft.bias_map import BiasMap
from beft.fingerprint import model_identity
from beft.data import load_prompted
from beft.decoder import model as causal_lm
from beft.decoder import scoring, spec
from beft.decoder.peft_methods import add_adapter, adapter_name, adapter_of
from beft.decoder.prompts import (PromptCoder, PromptSet, context_report, demonstration_indices,
                                  with_demonstrations)
from beft.decoder.templates import get_template
from beft.errors import BeftError
from beft.evaluate import autocast, to_device
from beft.method_table import Adapter
from beft.models import enable_checkpointing, load_tokenizer, place
from beft.precision import DTYPES, store_frozen_matrices
from beft.predictions import example_id

MAX_NEW_TOKENS = 50


class DecoderWorkload:
    kind = "decoder"
    peft_task_type = "CAUSAL_LM"

    def __init__(self, run):
        """`run`: the RunSpec (beft.run_spec) the pipeline resolved from the config."""
        self.run, self.spec = run, spec.section(run.task)
        self.template = get_template(self.spec["template"])
        self.device, self.precision = run.device, run.precision
        self.method = run.method.name
        raw = causal_lm.skeleton(run.model)
        self.adapter = adapter_of(self.method, raw, BiasMap(raw))
        self.max_length = min(int(self.spec["max_length"]), causal_lm.context_length(raw.config))
        self.coder = PromptCoder(load_tokenizer(run.model), self.max_length)
        self.data = load_prompted(self.spec, run.data_dir, run.train_size, int(self.spec["n_eval"]), run.seed,
                                  run.exact_train_size)
        train = self._render(self.data.train, "train")
        self.train_set = self.coder.encode(train)
        self.demonstrations = int(run.method.demonstrations) if self.method == "icl" else 0
        self.eval_sets, self.prompting = {}, {}
        for split, rows in self.data.eval.items():
            prompted = self._render(rows, split)
            if self.demonstrations:
                chosen = [demonstration_indices(len(train), self.demonstrations, run.seed, i)
                          for i in range(len(prompted))]
                shown = [with_demonstrations(p, [train[j] for j in picks]) for p, picks in zip(prompted, chosen)]
                self.eval_sets[split] = self.coder.encode(shown)
                self.prompting[split] = context_report(self.coder, prompted, train, chosen, self.eval_sets[split])
            else:
                self.eval_sets[split] = self.coder.encode(prompted)
        if run.trainer.eval_train:
            self.eval_sets["train"] = self.train_set
        self.main_metric = f"{next(iter(self.data.eval))}/{self.spec['main_metric']}"
        self.source = self.data.source
        self.rows = "all" if self.spec["loss"] == "classification" else "gold"
        self.eval_batch_size = int(run.trainer.eval_batch_size)   # the memory plan may lower it (beft.memory_plan)
        self.weights_dtype = DTYPES[run.frozen_dtype]   # beft.precision.frozen_dtype; the memory plan counts it

    def _render(self, examples: list[dict], split: str):
        missing = [f for f in self.template.fields if examples and f not in examples[0]]
        if missing:
            raise BeftError(f"{self.spec['name']} {split} examples lack {', '.join(missing)} for the "
                            f"{self.spec['template']} template (fields: {', '.join(examples[0])})")
        return [self.template.render(ex) for ex in examples]

    @property
    def _in_kv_cache(self) -> bool:
        """The adapter's virtual tokens sit in the key/value cache (prefix tuning)."""
        return isinstance(self.adapter, Adapter) and self.adapter.in_kv_cache

    # ---- models ----------------------------------------------------------------------------------------

    def load_base(self):
        """The pretrained causal LM without any adapter, on the workload's device (or its device map), its frozen
        weights in the run's frozen dtype: on CUDA the whole model (autocast runs its norms in fp32), on the CPU
        its matrices only (CPU autocast leaves a norm in its weight's dtype, which must match its fp32 bias)."""
        frozen = self.weights_dtype
        whole = frozen if self.device.type == "cuda" else torch.float32
        model, source = causal_lm.load_causal_lm(self.run.model, whole, self.run.trainer.attn_implementation,
                                                 device=self.device)
        if frozen != whole:
            store_frozen_matrices(model, frozen, keep=set())   # before any adapter: its matrices train
        return place(model, self.run.model, self.device), source

    def new_model(self):
        """The pretrained model with the method's adapter (seeded), trainable parts in fp32."""
        set_seed(self.run.seed)
        base, source = self.load_base()
        model = add_adapter(base, self.adapter, self.run.method, BiasMap(base), seed=self.run.seed)
        causal_lm.keep_trainable_fp32(model)
        if self.run.trainer.get("gradient_checkpointing"):
            enable_checkpointing(model)
        return (model if self.run.model.get("device_map") else model.to(self.device)), source

    def bias_map(self) -> BiasMap:
        """Bias cells of the model as `new_model` builds it (added biases included), without loading weights."""
        return BiasMap(self.skeleton())

    def batch_shape(self) -> dict:
        """What a batch holds, for the memory plan: rows per example, the longest row, tokens generated."""
        items = self.train_set.items
        candidates = max((len(it.options) for it in items), default=1) if self.rows == "all" else 1
        longest = max(max(d.lengths, default=1) for d in (self.train_set, *self.eval_sets.values()))
        return {"candidates": candidates, "length": min(longest, self.max_length),   # batches pad to their longest
                "new_tokens": 0 if self.template.kind == "choice" else MAX_NEW_TOKENS}

    def skeleton(self):
        """The model as `new_model` builds it (with its adapter) on the meta device: structure and names only."""
        raw = causal_lm.skeleton(self.run.model)
        return add_adapter(raw, self.adapter, self.run.method, BiasMap(raw), init=False)

    def identity(self) -> dict:
        adapter = None
        if self.adapter is not None:   # a PEFT-library adapter is configured by the method's settings
            settings = self.run.method.to_dict() if isinstance(self.adapter, Adapter) else {}
            adapter = {"kind": adapter_name(self.adapter), **{k: v for k, v in settings.items() if k != "name"}}
        source = {k: v for k, v in self.data.source.items() if k != "dir"}
        return {"model": model_identity(self.run.model),
                "kind": "decoder", "adapter": adapter, "attn": self.run.trainer.attn_implementation,
                "data": {"source": source, "n_train": len(self.train_set), "seed": self.run.seed,
                         "eval": {k: len(v) for k, v in self.eval_sets.items()},
                         "template": self.spec["template"], "loss": self.spec["loss"],
                         "metrics": list(self.spec["metrics"]), "max_length": self.max_length,
                         "demonstrations": self.demonstrations}}

    # ---- batches and loss ------------------------------------------------------------------------------

    def batches(self, data: PromptSet, batch_size: int, generator: torch.Generator | None = None,
                group_by_length: bool = True):
        """Batches of `batch_size` examples with the rows the loss needs (all candidates, or the gold one)."""
        if generator is not None:
            return self.coder.train_batches(data, batch_size, self.rows, generator, group_by_length)
        chunks = [list(range(i, min(i + batch_size, len(data)))) for i in range(0, len(data), batch_size)]
        return (self.coder.collate([data.items[i] for i in chunk], self.rows) for chunk in chunks)

    def example_losses(self, model, batch: dict) -> torch.Tensor:
        if self.rows == "all":
            scores = scoring.candidate_scores(model, batch)
            return scoring.classification_loss(scores, batch["labels"], reduction="none")
        sums, counts = scoring.option_logprobs(model, batch)
        return -sums / counts

    def loss(self, model, batch: dict) -> torch.Tensor:
        if self.rows == "all":
            return scoring.classification_loss(scoring.candidate_scores(model, batch), batch["labels"])
        sums, counts = scoring.option_logprobs(model, batch)
        return scoring.lm_loss(sums, counts)

    def selection_split(self, n: int, seed: int) -> PromptSet:
        return self.train_set.subset(np.random.RandomState(seed).permutation(len(self.train_set))[:n].tolist())

    @torch.no_grad()
    def mean_loss(self, model, data: PromptSet) -> float:
        was_training = model.training
        model.eval()
        total = 0.0
        for batch in self.batches(data, self.eval_batch_size):
            with autocast(self.device, self.precision):
                total += float(self.example_losses(model, to_device(batch, self.device)).sum())
        model.train(was_training)
        return total / len(data)

    # ---- evaluation ------------------------------------------------------------------------------------

    @torch.no_grad()
    def candidate_scores(self, model, data: PromptSet) -> list[np.ndarray]:
        """Mean log-probability of every candidate of every example, in the split's order."""
        out = [None] * len(data)
        shared = [i for i, item in enumerate(data.items) if self._shares_prompt(item)]
        for i in shared:   # many multi-token candidates after one long prompt (ReCoRD): the prompt once
            item = data.items[i]
            with autocast(self.device, self.precision):
                out[i] = scoring.shared_prompt_scores(model, self.coder.bos + item.prompt, item.options,
                                                      self.coder.pad).cpu().numpy()
        rest = PromptSet([data.items[i] for i in range(len(data)) if out[i] is None])
        index = [i for i in range(len(data)) if out[i] is None]
        for chunk in self.coder.eval_chunks(rest, self.eval_batch_size):
            batch = to_device(self.coder.collate([rest.items[i] for i in chunk], "all"), self.device)
            with autocast(self.device, self.precision):
                scores = scoring.candidate_scores(model, batch).cpu().numpy()
            for row, i in zip(scores, chunk):
                out[index[i]] = row[: len(rest.items[i].options)]
        return out

    def _shares_prompt(self, item) -> bool:
        """Score this item's candidates from one shared prompt pass: three or more candidates, some of several
        tokens, the prompt whole (not cut for any candidate) and no prefix adapter (it owns the key/value cache)."""
        longest = max(len(o) for o in item.options)
        return (len(item.options) >= 3 and longest > 1 and not self._in_kv_cache
                and len(self.coder.bos) + len(item.prompt) + longest <= self.max_length)

    @torch.no_grad()
    def generate(self, model, data: PromptSet) -> list[str]:
        """Greedy answers (first line, stripped), in the split's order."""
        out = [None] * len(data)
        for chunk in self.coder.eval_chunks(data, self.eval_batch_size, rows="gold"):
            prompts = [self.coder.generation_prompt(data.items[i], MAX_NEW_TOKENS) for i in chunk]
            with autocast(self.device, self.precision):
                tokens = scoring.greedy(model, prompts, MAX_NEW_TOKENS, self.coder.stop, self.coder.pad,
                                        prefix_tuned=self._in_kv_cache)
            for i, ids in zip(chunk, tokens):
                out[i] = self.coder.decode(ids).split("\n")[0].strip()
        return out

    def predict(self, model) -> dict[str, list[dict]]:
        """{split: one row per example (beft.predictions)}: the chosen candidate with every candidate's mean
        log-likelihood (`scores`), or the generated answer, beside the gold."""
        was_training = model.training
        model.eval()
        out = {}
        for split, data in self.eval_sets.items():
            examples = self.data.train if split == "train" else self.data.eval[split]
            ids = [example_id(ex) for ex in examples] if len(examples) == len(data) else [None] * len(data)
            if self.template.kind == "choice":
                scores = self.candidate_scores(model, data)
                rows = [{"gold": list(it.gold), "prediction": int(np.argmax(s)), "scores": s.tolist(),
                         "correct": int(np.argmax(s)) in it.gold} for s, it in zip(scores, data.items)]
            else:
                answers = self.generate(model, data)
                rows = [{"gold": list(it.answers), "prediction": a, "correct": bool(scoring.exact_match(a, it.answers))}
                        for a, it in zip(answers, data.items)]
            out[split] = [{"index": i, **({"id": ids[i]} if ids[i] is not None else {}), **row}
                          for i, row in enumerate(rows)]
        model.train(was_training)
        return out

    def score(self, predictions: dict[str, list[dict]]) -> dict[str, float]:
        """{"<split>/<metric>": value} from `predict`'s rows (or the same rows read back from disk): accuracy
        and the mean loss over candidates, or F1 / exact match of the generated answers."""
        results = {}
        for split, rows in predictions.items():
            if self.template.kind == "choice":
                results.update({f"{split}/{name}": value for name, value in choice_metrics(rows).items()})
            else:
                results.update({f"{split}/{name}": value
                                for name, value in generation_metrics(rows, self.spec["metrics"]).items()})
        return results

    def evaluate(self, model) -> dict[str, float]:
        return self.score(self.predict(model))


def choice_metrics(rows: list[dict]) -> dict[str, float]:
    """Accuracy (the top-scoring candidate is a gold one) and the mean cross-entropy of the first gold candidate."""
    correct = [int(np.argmax(r["scores"])) in r["gold"] for r in rows]
    losses = [float(-torch.log_softmax(torch.tensor(r["scores"], dtype=torch.float64), 0)[r["gold"][0]])
              for r in rows]
    return {"accuracy": float(np.mean(correct)), "loss": float(np.mean(losses))}


def generation_metrics(rows: list[dict], metric_names) -> dict[str, float]:
    return {name: float(np.mean([fn(r["prediction"], r["gold"]) for r in rows]))
            for name, fn in (("f1", scoring.token_f1), ("em", scoring.exact_match)) if name in metric_names}
