"""Prompts as token ids, tokenized once, and padded per batch into (prompt + candidate) rows.

Every row is BOS (where the tokenizer uses one) + prompt + one candidate. The candidate's tokens are those of
the joined text after the prompt's own tokens (as lm-evaluation-harness does), which is right for BPE and
SentencePiece tokenizers alike. Rows longer than `max_length` lose prompt tokens from the left, as in the
authors' code; BOS and the candidate are always kept. An `option_mask` marks the candidate tokens to score.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from beft.decoder.templates import Prompted
from beft.errors import BeftError


@dataclass
class Item:
    prompt: list[int]                 # prompt token ids, without BOS
    options: list[list[int]]          # candidate token ids (generation: the training target)
    gold: list[int]                   # indices of the correct candidates
    answers: list[str]                # generation: the gold answers


@dataclass
class PromptSet:
    items: list[Item]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> list[int]:
        return [len(it.prompt) + max(len(o) for o in it.options) for it in self.items]

    def subset(self, indices) -> "PromptSet":
        return PromptSet([self.items[i] for i in indices])


class PromptCoder:
    """Tokenizes prompts and builds padded batches for one tokenizer and context length."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        # One prompt row scores every one-token candidate (collate); False: one row per candidate (bench: before).
        self.one_row_for_one_token = True
        bos = tokenizer.bos_token_id
        # Only where the tokenizer itself starts every text with BOS (OPT, LLaMA; not GPT-J, not BERT).
        self.bos = [bos] if bos is not None and tokenizer("a")["input_ids"][:1] == [bos] else []
        self.eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        # Greedy decoding stops at EOS or a newline token (the authors' stop criterion).
        self.stop = sorted({i for i in (self.eos, newline[-1] if newline else None) if i is not None})

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def encode(self, prompted: list[Prompted]) -> PromptSet:
        prompts = self._ids([p.prompt for p in prompted])
        joined = self._ids([p.prompt + c for p in prompted for c in p.candidates])
        alone = self._ids([c for p in prompted for c in p.candidates])
        items, k = [], 0
        for p, prompt in zip(prompted, prompts):
            options = []
            for _ in p.candidates:
                option = joined[k][len(prompt):] if joined[k][:len(prompt)] == prompt else alone[k]
                options.append(option or alone[k])
                k += 1
            if any(not o for o in options):
                raise BeftError(f"a candidate of {p.prompt[:40]!r}... tokenizes to nothing; check the template")
            items.append(Item(prompt, options, list(p.gold), list(p.answers)))
        return PromptSet(items)

    def row(self, prompt: list[int], option: list[int]) -> list[int]:
        room = self.max_length - len(self.bos) - len(option)
        if room < 1:
            raise BeftError(f"a candidate of {len(option)} tokens leaves no room for its prompt in max_length="
                            f"{self.max_length}; raise task.decoder.max_length")
        return self.bos + prompt[-room:] + option

    def collate(self, items: list[Item], rows: str) -> dict:
        """rows='all': one row per candidate (scoring, classification loss); 'gold': the first correct one.

        Where every candidate of every item is one token (SST-2, RTE, CB, BoolQ, WiC, WSC, MultiRC), rows='all'
        needs no candidate rows: one row of BOS + prompt per item, whose last position predicts every candidate
        at once (`choice_ids`, -1 where an item has fewer candidates). Same prefix, same numbers, C times fewer rows.
        """
        if rows == "all" and self.one_row_for_one_token and all(single_token(item) for item in items):
            return self._collate_prompts(items)
        ids, masks, row_example, row_choice = [], [], [], []
        for b, item in enumerate(items):
            choices = range(len(item.options)) if rows == "all" else item.gold[:1]
            for c in choices:
                seq = self.row(item.prompt, item.options[c])
                ids.append(seq)
                masks.append(len(item.options[c]))
                row_example.append(b)
                row_choice.append(c)
        width = max(len(s) for s in ids)
        input_ids = torch.full((len(ids), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        option_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, (seq, n) in enumerate(zip(ids, masks)):
            input_ids[r, :len(seq)] = torch.tensor(seq)
            attention[r, :len(seq)] = 1
            option_mask[r, len(seq) - n:len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "option_mask": option_mask,
                "row_example": torch.tensor(row_example), "row_choice": torch.tensor(row_choice),
                "labels": torch.tensor([item.gold[0] for item in items])}

    def _collate_prompts(self, items: list[Item]) -> dict:
        seqs = [self.row(item.prompt, item.options[0])[:-1] for item in items]   # the row minus its candidate
        width = max(len(q) for q in seqs)
        input_ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, seq in enumerate(seqs):
            input_ids[r, :len(seq)] = torch.tensor(seq)
            attention[r, :len(seq)] = 1
        n_choices = max(len(item.options) for item in items)
        choice_ids = torch.full((len(items), n_choices), -1, dtype=torch.long)
        for r, item in enumerate(items):
            choice_ids[r, :len(item.options)] = torch.tensor([o[0] for o in item.options])
        return {"input_ids": input_ids, "attention_mask": attention, "choice_ids": choice_ids,
                "labels": torch.tensor([item.gold[0] for item in items])}

    def train_batches(self, data: PromptSet, batch_size: int, rows: str, generator: torch.Generator,
                      group_by_length: bool = True):
        """One epoch of `batch_size` examples each, in a seeded order (similar lengths together if grouping)."""
        if group_by_length:
            order = get_length_grouped_indices(data.lengths, batch_size, generator=generator)
        else:
            order = torch.randperm(len(data), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            yield self.collate([data.items[i] for i in order[start:start + batch_size]], rows)

    def eval_chunks(self, data: PromptSet, max_rows: int, rows: str = "all") -> list[list[int]]:
        """Length-sorted groups of example indices with at most `max_rows` rows each (one example at least)."""
        order = sorted(range(len(data)), key=lambda i: data.lengths[i])
        chunks, current, used = [], [], 0
        for i in order:
            one_row = self.one_row_for_one_token and single_token(data.items[i])
            n = len(data.items[i].options) if rows == "all" and not one_row else 1
            if current and used + n > max_rows:
                chunks.append(current)
                current, used = [], 0
            current.append(i)
            used += n
        return chunks + ([current] if current else [])

    def generation_prompt(self, item: Item, max_new_tokens: int) -> list[int]:
        room = self.max_length - len(self.bos) - max_new_tokens
        return self.bos + item.prompt[-room:]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def single_token(item: Item) -> bool:
    return all(len(option) == 1 for option in item.options)


def with_demonstrations(prompted: Prompted, demos: list[Prompted]) -> Prompted:
    """In-context learning: solved examples, then the question, separated by blank lines (docs/paper.md §C.6)."""
    context = "\n\n".join([d.demonstration() for d in demos] + [prompted.prompt])
    return Prompted(context, prompted.candidates, prompted.gold, prompted.answers)


def context_report(coder: PromptCoder, questions: list[Prompted], demos: list[Prompted],
                   chosen: list[list[int]], encoded: PromptSet) -> dict:
    """What in-context learning really showed the model: prompts are cut from the left to fit max_length, so the
    earliest demonstrations of a long prompt are lost. Counts whole demonstrations that survive per prompt,
    tokenizing each demonstration (with its blank-line separator) and each question on its own."""
    demo_lengths = [len(ids) for ids in coder._ids([d.demonstration() + "\n\n" for d in demos])]
    question_lengths = [len(ids) for ids in coder._ids([q.prompt for q in questions])]
    kept, truncated = [], 0
    for item, picks, question in zip(encoded.items, chosen, question_lengths):
        room = coder.max_length - len(coder.bos) - max(len(o) for o in item.options)
        truncated += len(item.prompt) > room
        used, n = question, 0
        for j in reversed(picks):                 # the demonstrations nearest the question survive the cut
            if used + demo_lengths[j] > room:
                break
            used, n = used + demo_lengths[j], n + 1
        kept.append(n)
    return {"demonstrations": max((len(p) for p in chosen), default=0), "max_length": coder.max_length,
            "whole_demonstrations_kept": {"mean": float(np.mean(kept)), "min": int(min(kept)), "max": int(max(kept))},
            "prompts_truncated": truncated, "prompts": len(kept)}


def demonstration_indices(n_pool: int, k: int, seed: int, example: int) -> list[int]:
    """A fresh random set of k demonstrations for each evaluation example, seeded by (seed, example)."""
    rng = np.random.RandomState([seed, example])
    return rng.choice(n_pool, size=min(k, n_pool), replace=False).tolist()
