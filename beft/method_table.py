"""One table of methods: for each `method`, what it trains, on which kinds of model, with which adapter, and
under which label in records and tables.

Read by beft.config (which methods exist, on which kinds), beft.methods (the scope a run trains),
beft.decoder.peft_methods (the adapter a decoder gets), beft.bias_updates (a structured update's form),
beft.pipeline (a run's label) and beft.report.store (table rows, their names and order). The selection
methods (beft.selection.SELECTORS) share one entry, SELECTION: they train the bias cells their scores choose;
a selection method registered there needs no entry here. A new PEFT-library baseline is its YAML in
conf/method/ and one entry here (tests/test_method_grid.py adds IA3 that way). Imports nothing of beft.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

ENCODER_AND_DECODER = ("encoder", "decoder")
DECODER = ("decoder",)
# The bias types in the order tables show them: the paper's question first (b_v, b_q, b_k).
TYPE_ORDER = ("v", "q", "k", "o", "fc1", "fc2", "ln1", "ln2")
# A decoder model without a bias on some projections (LLaMA, Qwen2's o and MLP) gets PEFT BEFT biases there,
# zero-initialised, so every bias type exists to select and train (beft.decoder.peft_methods).
ADDED_BIASES = "beft"


def _name(name, method, budget) -> str:
    return name


def _terms(method) -> str:
    return "+".join(str(t) for t in method.get("terms") or [])


def _fixed_label(name, method, budget) -> str:
    return "fixed-" + _terms(method)


def _update_label(name, method, budget) -> str:        # lora_bias-v, dora_bias-v+q-authors
    return f"{name}-{_terms(method)}" + ("-authors" if method.get("authors") else "")


def _budget_label(name, method, budget) -> str:        # beft, beft-params
    return name if budget.get("name") == "one_type" else f"{name}-{budget.get('name')}"


def _size_label(name, method, budget) -> str:          # rand_uniform, rand_uniform-bitfit
    return name if method.get("num_params", "budget") == "budget" else f"{name}-{method.get('num_params')}"


@dataclass(frozen=True)
class Adapter:
    """A PEFT-library adapter a method puts on a decoder model (`peft.get_peft_model`). Its settings are the
    method's config section, so they are part of the training key."""
    name: str                       # how the training key and the record name it
    config: Callable                # (method section, {bias type: the family's module name}) -> a peft config
    init: str | None = None         # after building: "activations" (prefix: the model's own keys and values)
    in_kv_cache: bool = False       # it lives in the key/value cache (prefix): scoring must not share one


@dataclass(frozen=True)
class Method:
    """One method: what it trains, where it runs, what adapter a decoder gets, and how records and tables name it."""
    scope: str                                  # what it trains: a beft.trainable.Scope kind, or "selection"
    title: str                                  # its name in tables (a structured update's: "LoRA" on b_v)
    kinds: tuple[str, ...] = ENCODER_AND_DECODER   # the kinds of model it runs on
    adapter: str | Adapter | None = ADDED_BIASES   # what a decoder model gets: added biases, an Adapter, nothing
    label: Callable = _name                     # (name, method section, budget section) -> the run's label
    arms: Callable | None = None                # (name) -> {label: name in tables}, in table order
    form: str | None = None                     # bias_updates: the update's form (beft.bias_updates.FORMS)
    refusal: str | None = None                  # why it cannot run on a kind it lacks (else: it needs the other)


def _lora(method, modules):
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", r=int(method.get("r", 8)), lora_alpha=int(method.get("alpha", 16)),
                      lora_dropout=float(method.get("dropout", 0.0)),
                      target_modules=sorted({modules[t] for t in method.get("targets", ["q", "v"])}))


def _prefix(method, modules):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=int(method.get("num_virtual_tokens", 5)),
                              prefix_projection=False)


def _evaluation_only(title: str) -> Method:
    """Trains nothing: scores the decoder as it is (zero-shot, or with demonstrations in every prompt)."""
    return Method("none", title, kinds=DECODER, adapter=None)


SELECTION = Method("selection", "{name} (select)", label=_budget_label)
# The selection methods the paper and beft define, in table order; any other name in beft.selection.SELECTORS
# is one too.
SELECTION_METHODS = ("beft", "magnitude", "fisher", "causal", "random")
_UPDATES = {"lora_bias": ("lora", "LoRA"), "dora_bias": ("dora", "DoRA"), "vera_bias": ("vera", "VeRA"),
            "vera1d_bias": ("vera1d", "VeRA1D")}

# In table order.
METHODS: dict[str, Method] = {
    "fixed": Method("targets", "", label=_fixed_label,
                    arms=lambda name: {f"fixed-{t}": "" for t in TYPE_ORDER}),
    **{name: Method("bias_updates", title, label=_update_label, form=form,
                    arms=lambda name: {f"{name}-{t}{a}": "" for a in ("", "-authors") for t in TYPE_ORDER})
       for name, (form, title) in _UPDATES.items()},
    **dict.fromkeys(SELECTION_METHODS, SELECTION),
    "bitfit": Method("all_biases", "all biases"),
    "rand_uniform": Method("random_weights", "", label=_size_label,
                           arms=lambda name: {name: "rand. uniform (b_v size)",
                                              f"{name}-bitfit": "rand. uniform (all-bias size)"}),
    "full": Method("all", "full FT", adapter=None),
    "head": Method("head", "head only", kinds=("encoder",), adapter=None,
                   refusal="trains only a task head, and a decoder has none (the LM head stays frozen, docs/paper.md "
                           "§C.2): on a decoder it would silently be zero-shot; use method=zero_shot"),
    "lora": Method("adapter", "LoRA", kinds=DECODER, adapter=Adapter("lora", _lora)),
    "prefix": Method("adapter", "prefix", kinds=DECODER,
                     adapter=Adapter("prefix", _prefix, init="activations", in_kv_cache=True)),
    "icl": _evaluation_only("ICL"),
    "zero_shot": _evaluation_only("zero-shot"),
}
# What a method needs where its model is of a kind it lacks (an entry's `refusal` says more).
NEEDS = {"decoder": "needs a decoder (causal LM), but model={model} is an encoder; use e.g. model=opt-1.3b "
                    "(or tiny-opt)",
         "encoder": "needs an encoder with a task head, but model={model} is a decoder"}


def method(name: str) -> Method:
    """The entry of `name`; a name without one is a selection method (beft.config refuses any other)."""
    return METHODS.get(name, SELECTION)


def label(name: str, method_cfg, budget_cfg) -> str:
    """The run's label (its run id, its record's `method_label`, its arm in tables): `fixed-v`, `beft-params`."""
    return method(name).label(name, method_cfg, budget_cfg)


def arms(name: str) -> dict[str, str]:
    """{arm label: its name in tables} of a method, in table order ("" where the tables compose the name)."""
    entry = method(name)
    if entry.arms is not None:
        return entry.arms(name)
    return {name: entry.title.format(name=name)}


def refusal(name: str, kind: str, model_name: str) -> str | None:
    """Why `name` cannot run on a `kind` model (None where it can)."""
    entry = method(name)
    if kind in entry.kinds:
        return None
    return f"method={name} " + (entry.refusal or NEEDS[entry.kinds[0]].format(model=model_name))


def checkpointing_refusal(name: str) -> str | None:
    """Why trainer.gradient_checkpointing cannot train `name` (None where it can). Inside a checkpointed layer
    transformers drops the key/value cache, so an adapter that lives there (prefix) would vanish from the forward."""
    adapter = method(name).adapter
    if isinstance(adapter, Adapter) and adapter.in_kv_cache:
        return (f"trainer.gradient_checkpointing=true cannot train method={name}: transformers drops the key/value "
                f"cache inside a checkpointed layer, and the {adapter.name} lives there; set "
                "trainer.gradient_checkpointing=false (to fit a big job: a smaller trainer.eval_batch_size, or "
                "model.device_map=auto)")
    return None
