"""The key/value cache under whichever name the installed transformers uses.

transformers 5.24 renamed `past_key_values` to `cache` (forward keyword and output field) and removes the old name in
5.40; releases before 5.24 know only `past_key_values`. The project allows both ranges, so the name is looked up once
per model class instead of pinned.
"""
import functools
import inspect


@functools.cache
def _forward_takes_cache(model_class) -> bool:
    return "cache" in inspect.signature(model_class.forward).parameters


def with_cache(model, cache) -> dict:
    """Forward keyword arguments that hand `cache` to `model` (a transformers model or a PEFT wrapper of one)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"cache": cache} if _forward_takes_cache(type(base)) else {"past_key_values": cache}


def cache_of(output):
    """The key/value cache a forward pass with `use_cache=True` returned."""
    return output["cache"] if "cache" in output else output["past_key_values"]
