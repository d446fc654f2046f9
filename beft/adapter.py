"""Export a bias-only run as a PEFT BEFT adapter (`<run dir>/adapter/`), for encoders and decoders alike.

A run whose trained parameters are all biases of Linear layers (plus the task head) is exactly a BEFT adapter:
`PeftModel.from_pretrained(pretrained_model, adapter_dir)` gives the trained model back. Each trained Linear
bias becomes the `beft_bias` of its module: the change b_trained - b_pretrained where the model has its own
bias (the base keeps b_pretrained, so the sum is the trained bias), the bias itself where it was added to a
bias-free projection. The head (BERT: classifier; its pooler bias is a Linear bias too) is saved through
`modules_to_save`. Runs that train anything else (LayerNorm biases, weights, LoRA, prefixes) or nothing get
no adapter, and the record says why.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn

from beft.files import atomic_folder
from beft.fit import Fit, pretrained_values

PEFT_PREFIX = "base_model.model."


def _bias_like(name: str, head: list[re.Pattern]) -> bool:
    return name.endswith(".bias") or ".beft_bias." in name or any(p.search(name) for p in head)


def export_adapter(workload, result: Fit, out_dir: Path) -> dict:
    """Write the adapter if the run trained only Linear biases (+ head); returns what the record should say."""
    from peft import PeftModel

    if not result.state:
        return {"written": False, "reason": "the run trained no parameters" if result.trainable == 0
                else "the trained parameters were too many to keep"}
    head = [re.compile(p) for p in workload.bias_map().family.head]
    others = [n for n in result.state if not _bias_like(n, head)]
    if others:
        return {"written": False, "reason": f"the run trains {others[0]}, which is not a bias"}

    # The trained model is gone by now (one model at a time on the device): the structure comes from the meta
    # skeleton, the pre-trained biases from the training's own start (Fit.start).
    model = workload.skeleton()
    modules = dict(model.named_modules())
    pretrained = _pretrained(workload, result)
    # A top-level module that is all head (BERT's classifier) is saved whole; a head bias inside the backbone
    # (BERT's pooler bias) is a Linear bias like any other and becomes a BEFT target.
    tops = {n.split(".")[0] for n in result.state if any(p.search(n) for p in head)}
    whole = {t for t in tops if all(any(p.search(f"{t}.{n}") for p in head)
                                    for n, _ in model.get_submodule(t).named_parameters())}
    targets, head_params = {}, {}
    for name, value in result.state.items():
        if name.split(".")[0] in whole:
            head_params[name] = value
        elif ".beft_bias." in name:          # an added bias: the adapter holds it as is
            targets[name.split(".beft_bias.")[0].removeprefix(PEFT_PREFIX)] = value.flatten()
        elif name.endswith(".bias") and isinstance(modules.get(name[:-5]), nn.Linear):
            targets[name[:-5]] = (value - pretrained[name]).flatten()
        else:
            return {"written": False, "reason": f"the run trains {name}, which is not the bias of a Linear layer"}
    if not targets:  # MPNet's head has no bias inside the backbone: a head-only run has no BEFT adapter to write
        return {"written": False, "reason": "the run trained only the task head, no bias vector"}
    base = model.unload() if isinstance(model, PeftModel) else model
    return write_adapter(base, targets, head_params, workload.peft_task_type, out_dir)


def _pretrained(workload, result: Fit) -> dict:
    """b_0 of the trained biases: kept by the training (Fit.start), else (a training cached before it was kept)
    read from a model loaded now, when the trained one is gone."""
    needed = {n for n in result.state if n.endswith(".bias")}   # a Linear bias's b_0 (added ones start at 0)
    if result.start is not None and set(result.start) >= needed:
        return result.start
    return pretrained_values(workload, needed)


def write_adapter(base: nn.Module, targets: dict, head_params: dict, task_type: str, out_dir: Path) -> dict:
    """Save a BEFT adapter for `base` (a model without adapter, with weights or a meta-device skeleton): `targets`
    {Linear module name: the change of its bias (the whole bias where the module has none)}, `head_params`
    {parameter name: value} of the top-level modules saved whole. Only the adapter's own tensors are made real
    (on the CPU), so a skeleton never costs a model's memory. Returns what the record says of it."""
    from peft import BeftConfig, get_peft_model

    to_save = sorted({n.split(".")[0] for n in head_params})
    # A copy: PEFT extends the list it is given (a classification task adds "classifier" and "score").
    config = BeftConfig(task_type=task_type, target_modules=sorted(targets), modules_to_save=list(to_save) or None)
    with warnings.catch_warnings():  # "base layer has no bias": an added bias, exactly what the adapter is for
        warnings.filterwarnings("ignore", message=".*no bias.*")
        adapted = get_peft_model(base, config)
    inner = adapted.base_model.model
    with torch.no_grad():
        for module, value in targets.items():
            biases = inner.get_submodule(module).beft_bias
            bias = biases["default"]
            biases["default"] = nn.Parameter(value.detach().cpu().view(bias.shape).to(bias.dtype).clone())
        for top in to_save:
            saved = inner.get_submodule(top).modules_to_save["default"]
            if any(p.is_meta for p in saved.parameters()):
                saved.to_empty(device="cpu")   # the head alone, filled from the trained values below
        for name, value in head_params.items():
            top, rest = name.split(".", 1)
            inner.get_submodule(top).modules_to_save["default"].get_parameter(rest).copy_(value)
    with atomic_folder(out_dir) as folder:   # whole or absent, never through a planted link, modes by the umask
        adapted.save_pretrained(str(folder))
    return {"written": True, "path": Path(out_dir).name, "peft_type": "BEFT", "target_modules": len(targets),
            "modules_to_save": to_save, "params": sum(v.numel() for v in targets.values())
            + sum(v.numel() for v in head_params.values())}
