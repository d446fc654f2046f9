"""`DecoderWorkload`: a prompted task on a causal LM, behind the same interface as `EncoderWorkload`.

Training, selection and the pipeline see only the workload interface (beft/workload.py), so every method that
works on encoders works here: batches are (prompt + candidate) rows, `loss` is the cross-entropy over the
candidates' mean log-likelihoods or the LM loss on the gold tokens (per task, PAPER.md §C.3), and `evaluate`
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
from beft.models import load_tokenizer
from beft.precision import DTYPES, store_frozen_matrices

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
        """The pretrained causal LM without any adapter, on the workload's device, its frozen weights in the run's
        frozen dtype: on CUDA the whole model (autocast runs its norms in fp32), on the CPU its matrices only (CPU
        autocast leaves a norm in its weight's dtype, which must match its trainable fp32 bias)."""
        frozen = DTYPES[self.run.frozen_dtype]
        whole = frozen if self.device.type == "cuda" else torch.float32
        model, source = causal_lm.load_causal_lm(self.run.model, whole, self.run.trainer.attn_implementation)
        if frozen != whole:
            store_frozen_matrices(model, frozen, keep=set())   # before any adapter: its matrices train
        return model.to(self.device), source

    def new_model(self):
        """The pretrained model with the method's adapter (seeded), trainable parts in fp32."""
        set_seed(self.run.seed)
        base, source = self.load_base()
        model = add_adapter(base, self.adapter, self.run.method, BiasMap(base), seed=self.run.seed)
        causal_lm.keep_trainable_fp32(model)
        return model.to(self.device), source

    def bias_map(self) -> BiasMap:
        """Bias cells of the model as `new_model` builds it (added biases included), without loading weights."""
        raw = causal_lm.skeleton(self.run.model)
        return BiasMap(add_adapter(raw, self.adapter, self.run.method, BiasMap(raw), init=False))

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
        for batch in self.batches(data, self.run.trainer.eval_batch_size):
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
        for chunk in self.coder.eval_chunks(rest, int(self.run.trainer.eval_batch_size)):
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
        for chunk in self.coder.eval_chunks(data, int(self.run.trainer.eval_batch_size), rows="gold"):
            prompts = [self.coder.generation_prompt(data.items[i], MAX_NEW_TOKENS) for i in chunk]
            with autocast(self.device, self.precision):
                tokens = scoring.greedy(model, prompts, MAX_NEW_TOKENS, self.coder.stop, self.coder.pad,
                                        prefix_tuned=self._in_kv_cache)
            for i, ids in zip(chunk, tokens):
                out[i] = self.coder.decode(ids).split("\n")[0].strip()
        return out

    def evaluate(self, model) -> dict[str, float]:
        was_training = model.training
        model.eval()
        results = {}
        for split, data in self.eval_sets.items():
            if self.template.kind == "choice":
                scores = self.candidate_scores(model, data)
                correct = [int(np.argmax(s)) in it.gold for s, it in zip(scores, data.items)]
                losses = [float(-torch.log_softmax(torch.from_numpy(s).double(), 0)[it.gold[0]])
                          for s, it in zip(scores, data.items)]
                results.update({f"{split}/accuracy": float(np.mean(correct)), f"{split}/loss": float(np.mean(losses))})
            else:
                answers = self.generate(model, data)
                for name, fn in (("f1", scoring.token_f1), ("em", scoring.exact_match)):
                    if name in self.spec["metrics"]:
                        results[f"{split}/{name}"] = float(np.mean([fn(a, it.answers)
                                                                    for a, it in zip(answers, data.items)]))
        model.train(was_training)
        return results
