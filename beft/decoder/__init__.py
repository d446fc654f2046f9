"""Decoders (causal LMs) on prompted tasks, docs/paper.md §C: templates, candidate scoring, greedy generation, PEFT
baselines (LoRA, prefix), added biases for bias-free models, and `DecoderWorkload`, which the pipeline uses
exactly as it uses `EncoderWorkload`."""

from beft.decoder.workload import DecoderWorkload

__all__ = ["DecoderWorkload"]
