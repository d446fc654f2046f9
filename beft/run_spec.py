"""One run, resolved once: `RunSpec` is what every layer below the pipeline reads, instead of the Hydra config.

beft.config builds it from the composed config, after its checks: device, precision, data directory, training
size and schedule are decided there, once, and the config's sections travel as `Section`s, plain read-only
data. A new knob is a key in its config group (read as `run.trainer.<key>`), or, where it must be resolved
(a device map, a memory plan), one field here and one line in beft.config.build.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotations: this module imports nothing of the run
    import torch

    from beft.train import TrainSettings


class Section(dict):
    """A config section as plain, read-only data: `section.lr` or `section.get("lr")`, nested sections alike,
    lists as tuples. A dict, so it serialises as JSON like the config it came from."""

    __slots__ = ()

    def __init__(self, values=()):
        super().__init__({k: _frozen(v) for k, v in dict(values).items()})   # (a DictConfig's: resolved)

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"the config section has no key {name!r}") from None

    def _read_only(self, *args, **kwargs):
        raise TypeError("a run's config section is read-only: beft.config resolves the config once")

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _read_only
    clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def __reduce__(self):   # copy and pickle by value (dict's own way would set items one by one)
        return Section, (dict(self),)

    def to_dict(self) -> dict:
        """The section as plain dicts and lists (for a peft config, a key, a record)."""
        return plain(self)


def plain(value):
    """A section's value (or any mapping's) as plain dicts and lists; anything else as it is."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if _is_list(value):
        return [plain(v) for v in value]
    return value


def _frozen(value):
    if isinstance(value, Mapping):
        return value if isinstance(value, Section) else Section(value)
    if _is_list(value):
        return tuple(_frozen(v) for v in value)
    return value


def _is_list(value) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


@dataclass(frozen=True)
class RunSpec:
    kind: str                        # encoder | decoder (beft.workload.kind_of)
    model: Section                   # the config groups' sections, as composed
    task: Section                    # (a decoder reads the task's prompted form, beft.decoder.spec.section)
    regime: Section
    method: Section
    budget: Section
    trainer: Section
    logger: Section
    seed: int
    device: torch.device             # trainer.device, resolved (auto: CUDA where there is one)
    precision: str                   # fp32 | bf16 | fp16, resolved for the device
    data_dir: str | None             # data_dir=..., else $BEFT_DATA_DIR; None: the Hugging Face hub
    train_size: int | None           # training examples to draw (None: the whole split)
    exact_train_size: bool           # False: fewer where the split has fewer (a decoder task's n_train)
    settings: TrainSettings          # the training schedule: the task's and the paper's, unless overridden
    cache_dir: str | None            # finished trainings are kept here and reused (None: nowhere)
    force: bool | str                # false | true (recompute every training) | record (reuse trainings)
    lock_timeout: float | None = None   # seconds a job waits on a lock whose holder shows no sign of life
    frozen_dtype: str = "fp32"          # fp32 | bf16 | fp16: the frozen weights' dtype (beft.precision.frozen_dtype)
