"""Scoring a causal LM on prompted tasks (docs/paper.md §C.7).

- Candidates: the mean log-probability of a candidate's tokens given the prompt (length-normalised); the
  prediction is the best-scoring candidate.
- Losses: cross-entropy over those mean log-likelihoods (train as classification), or the LM loss on the gold
  candidate's tokens only.
- Generation: greedy decoding, at most 50 new tokens, stopping at a newline or EOS; SQuAD-style exact match and
  token F1, the best over the gold answers.
"""
from __future__ import annotations

import collections
import re
import string

import torch
from torch.nn import functional

from beft.decoder.kv_cache import cache_of, with_cache


def option_logprobs(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the candidate tokens' log-probabilities, number of candidate tokens), one per row."""
    ids = batch["input_ids"]
    # Token t+1 is predicted at position t: keep those positions only, so the LM head projects a few hidden
    # states onto the vocabulary instead of all of them (transformers flattens them row by row).
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[:, :-1] = batch["option_mask"][:, 1:].bool()
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
    rows, cols = keep.nonzero(as_tuple=True)
    token_logp = logits.float().log_softmax(-1).gather(1, ids[rows, cols + 1].unsqueeze(1)).squeeze(1)
    sums = torch.zeros(ids.shape[0], device=token_logp.device).index_add(0, rows, token_logp)
    return sums, keep.sum(1)


def next_token_scores(model, batch: dict) -> torch.Tensor:
    """[examples, candidates] log-probabilities of one-token candidates after each row's last prompt token (a
    batch from `PromptCoder._collate_prompts`); -inf where an example has fewer candidates."""
    ids, attention = batch["input_ids"], batch["attention_mask"]
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[torch.arange(len(ids), device=ids.device), attention.sum(1) - 1] = True   # right padding: the last real token
    logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=keep).logits  # one row per example
    logp = logits.reshape(len(ids), -1).float().log_softmax(-1)
    choices = batch["choice_ids"]
    scores = logp.gather(1, choices.clamp(min=0))
    return scores.masked_fill(choices < 0, float("-inf"))


def candidate_scores(model, batch: dict) -> torch.Tensor:
    """[examples, candidates] mean log-probability of each candidate's tokens, whichever form the batch has."""
    if "choice_ids" in batch:
        return next_token_scores(model, batch)
    sums, counts = option_logprobs(model, batch)
    return choice_scores(sums, counts, batch)


@torch.no_grad()
def shared_prompt_scores(model, prefix: list[int], options: list[list[int]], pad: int) -> torch.Tensor:
    """Mean log-probability of each (multi-token) candidate after one prompt, the prompt computed once: one
    forward pass over BOS + prompt keeps its keys and values, which every candidate row then reuses (the cache is
    repeated across the rows), so only the candidates' own tokens are computed again. Evaluation only."""
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True)
    first = out.logits[0, -1].float().log_softmax(-1)            # predicts every candidate's first token
    n, width, length = len(options), max(len(o) for o in options), len(prefix)
    totals = torch.stack([first[o[0]] for o in options])
    if width > 1:
        cache = cache_of(out)
        cache.batch_repeat_interleave(n)
        ids = torch.full((n, width), pad, dtype=torch.long)
        attention = torch.zeros((n, length + width), dtype=torch.long)
        attention[:, :length] = 1
        for r, option in enumerate(options):
            ids[r, :len(option)] = torch.tensor(option)
            attention[r, length:length + len(option)] = 1
        positions = (length + torch.arange(width)).expand(n, width)
        logp = model(input_ids=ids.to(device), attention_mask=attention.to(device), position_ids=positions.to(device),
                     **with_cache(model, cache)).logits.float().log_softmax(-1)
        for r, option in enumerate(options):      # token j of a candidate is predicted at its position j - 1
            totals[r] = totals[r] + sum(logp[r, j - 1, option[j]] for j in range(1, len(option)))
    return totals / torch.tensor([len(o) for o in options], device=totals.device)


def choice_scores(sums: torch.Tensor, counts: torch.Tensor, batch: dict) -> torch.Tensor:
    """[examples, candidates] mean log-probabilities; -inf where an example has fewer candidates."""
    n_examples = len(batch["labels"])
    n_choices = int(batch["row_choice"].max()) + 1
    scores = torch.full((n_examples, n_choices), float("-inf"), device=sums.device)
    scores[batch["row_example"], batch["row_choice"]] = sums / counts
    return scores


def classification_loss(scores: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return functional.cross_entropy(scores, labels, reduction=reduction)


def lm_loss(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Token-level cross-entropy over every gold-candidate token in the batch."""
    return -sums.sum() / counts.sum()


@torch.no_grad()
def greedy(model, prompts: list[list[int]], max_new_tokens: int, stop: list[int], pad: int,
           prefix_tuned: bool = False) -> list[list[int]]:
    """Greedy continuations of token-id prompts, cut before the first stop token.

    Plain and LoRA models: transformers' generate (KV cache, left padding). Prefix-tuned models: generate drops
    PEFT's prefix in transformers 5, so each prompt runs alone, without padding: its first forward goes through
    the PEFT model, which puts the prefix's keys and values in the cache, and every next token through the base
    model on that cache (same positions and attention as recomputing prefix + prompt + answer at each step).
    """
    if prefix_tuned:
        continuations = [_greedy_after_prefix(model, p, max_new_tokens, stop) for p in prompts]
    else:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p)
            attention[r, width - len(p):] = 1
        device = next(model.parameters()).device
        out = model.generate(input_ids=ids.to(device), attention_mask=attention.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=pad)
        continuations = out[:, width:].tolist()
    return [_cut(c, stop) for c in continuations]


def _greedy_after_prefix(peft_model, prompt: list[int], max_new_tokens: int, stop: list[int]) -> list[int]:
    device = next(peft_model.parameters()).device
    base = peft_model.get_base_model()
    out = peft_model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
    tokens = []
    while len(tokens) < max_new_tokens:
        tokens.append(int(out.logits[0, -1].argmax()))
        if tokens[-1] in stop or len(tokens) == max_new_tokens:
            break   # no forward pass for a token that will not be used
        out = base(input_ids=torch.tensor([tokens[-1:]], device=device), **with_cache(base, cache_of(out)),
                   use_cache=True)
    return tokens


@torch.no_grad()
def greedy_by_recomputation(model, prompts: list[list[int]], max_new_tokens: int, stop: list[int]) -> list[list[int]]:
    """Reference decoding for tests and the bench: one prompt at a time, the whole sequence rerun for every token."""
    out = []
    device = next(model.parameters()).device
    for prompt in prompts:
        answer = []
        while len(answer) < max_new_tokens and not (answer and answer[-1] in stop):
            ids = torch.tensor([list(prompt) + answer], device=device)
            answer.append(int(model(input_ids=ids).logits[0, -1].argmax()))
        out.append(_cut(answer, stop))
    return out


def _cut(tokens: list[int], stop: list[int]) -> list[int]:
    for k, token in enumerate(tokens):
        if token in stop:
            return tokens[:k]
    return tokens


# ---- SQuAD-style answer metrics --------------------------------------------------------------------------

def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces: the SQuAD normalisation."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: list[str]) -> float:
    """The best token-overlap F1 against any gold answer, as the official SQuAD v1.1 script defines it: no
    common token (an empty prediction included, even against an answer that normalises to nothing) scores 0."""
    def f1(pred: list[str], gold: list[str]) -> float:
        common = sum((collections.Counter(pred) & collections.Counter(gold)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(pred), common / len(gold)
        return 2 * precision * recall / (precision + recall)

    pred = normalize_answer(prediction).split()
    return max(f1(pred, normalize_answer(a).split()) for a in answers)
