"""Encoders with a task head (BERT, RoBERTa, MiniLM, MPNet) on classification and regression tasks:
`EncoderWorkload`, which the pipeline uses exactly as it uses `DecoderWorkload`, and the encoder's spec."""

from beft.encoder.workload import EncoderWorkload

__all__ = ["EncoderWorkload"]
