"""Task data from the Hugging Face hub, for users with internet (tests never call this; they read local files).

Hub ids live in conf/task/*.yaml. GLUE: `nyu-mll/glue`. SuperGLUE cb/wic: `aps/super_glue`, the hub's
SuperGLUE repository since the `super_glue` alias moved there; it is stored as parquet files per config, so it
loads with datasets >= 4, which no longer runs loading scripts.
"""

from __future__ import annotations

from collections.abc import Mapping

from beft.errors import BeftError


def _split(path: str, name: str | None, split: str, label_names: list[str]):
    import datasets  # imported here: it is slow to import and only this path needs it

    try:
        ds = datasets.load_dataset(path, name, split=split)
    except (datasets.exceptions.DatasetNotFoundError, ConnectionError) as err:  # a misspelt id, or offline
        raise BeftError(f"hub dataset {path} ({name}) not found or not reachable ({' '.join(str(err).split())}); "
                        "give data_dir=... to read local GLUE/SuperGLUE files instead") from None
    except ValueError as err:
        if "split" not in str(err).lower():
            raise
        raise BeftError(f"hub dataset {path} ({name}) has no split {split!r}: "
                        f"{' '.join(str(err).split())}") from None
    names = getattr(ds.features.get("label"), "names", None)
    # Label indices pass through unchanged, so the hub's class order must be the config's.
    if label_names and names is not None and list(names) != list(label_names):
        raise BeftError(f"hub dataset {path} ({name}) orders its labels {names}, but the task config says "
                        f"label_names {list(label_names)}; make label_names match the hub")
    return ds.to_list(), ds._fingerprint


def load_hub(hub: Mapping, label_names: list[str]) -> tuple[list[dict], dict[str, list[dict]], dict]:
    """(train examples, {eval split: examples}, source record) for the hub section of a task config."""
    path, name = hub["path"], hub.get("name")
    fingerprints = {}
    train, fingerprints[hub["train"]] = _split(path, name, hub["train"], label_names)
    evals = {}
    for split in hub.get("eval") or []:
        evals[split], fingerprints[split] = _split(path, name, split, label_names)
    return train, evals, {"kind": "hub", "path": path, "name": name, "fingerprints": fingerprints}
