"""The two kinds of model, one entry each: the kind's spec (what its runs need of the config, its training size
and schedule) and its workload. The spec builder (beft.config) and the pipeline look a kind up here; no other
module tells encoders and decoders apart (beft.workload.kind_of reads the kind from the model's config)."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from beft.decoder import DecoderWorkload
from beft.decoder import spec as decoder_spec
from beft.encoder import EncoderWorkload
from beft.encoder import spec as encoder_spec
from beft.workload import Workload


@dataclass(frozen=True)
class KindCode:
    spec: ModuleType      # validate(model, task, regime, method), train_size(task, regime), schedule(...)
    workload: type        # built from the run spec


KIND_CODE = {"encoder": KindCode(encoder_spec, EncoderWorkload), "decoder": KindCode(decoder_spec, DecoderWorkload)}


def spec_of(kind: str) -> ModuleType:
    return KIND_CODE[kind].spec


def make_workload(run) -> Workload:
    """The task made ready for the run's model (`run`: the RunSpec)."""
    return KIND_CODE[run.kind].workload(run)
