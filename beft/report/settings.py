"""The rows of a table besides model, task and regime: runs of one experiment whose settings differ (attention
dropout off, plain SGD instead of AdamW) are kept apart, each row named by the overrides that set the
experiment's rows apart.

A run's setting is what changes its numbers besides its method and seed: the record key's model, task, regime
and trainer fields (beft.report.store.variant_of hashes them; a field the key ignores never splits a row). Within
one experiment × model × task × regime, the fields on which the runs' settings differ are the experiment's axes,
and every row of that experiment is named by its values on all of them, as the overrides a user types:
`model.attention_dropout=0.0` beside `model.attention_dropout=null`, and a model or task that ran one setting so
far still says which (its row is not left blank beside rows that are named).

One exception keeps tuned arms comparable: where settings differ only in `trainer.lr` and each arm ran at one lr
there (each arm at its own tuned lr, as experiment=why-bv's SGD arms), they make one row, named with each arm's lr,
so the paired tables compare the arms. An arm that ran at several lrs there (a learning-rate search) keeps one
row per lr.
"""
from __future__ import annotations

import json

import pandas as pd

from beft.record import NEUTRAL, key_fields

SECTIONS = ("model", "task", "regime", "trainer")
GROUP = ["experiment", "model", "task", "regime_label"]
LR = "trainer.lr"


def fields_of(config: dict) -> str:
    """A run's setting as JSON: {dotted field: value} over the key's model, task, regime and trainer fields."""
    keyed = key_fields(config)
    flat: dict[str, object] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            flat[prefix] = value

    for section in SECTIONS:
        walk(section, keyed.get(section))
    return json.dumps(flat, sort_keys=True, default=str)


def _value(field: str, fields: dict) -> str | None:
    """The field's value as an override writes it; a field the key leaves out has its neutral value (None where
    it has none: the record predates the field)."""
    if field in fields:
        value = fields[field]
    else:
        section, _, name = field.partition(".")
        if name not in NEUTRAL.get(section, {}):
            return None
        value = NEUTRAL[section][name]
    return value if isinstance(value, str) else json.dumps(value)


def _text(field: str, fields: dict) -> str:
    value = _value(field, fields)
    return f"{field} unset" if value is None else f"{field}={value}"


def _fields(group: pd.DataFrame) -> dict[str, dict]:
    """variant -> its setting's {dotted field: value}."""
    return {v: json.loads(block["setting_fields"].iloc[0]) for v, block in group.groupby("variant")}


def _differing(fields: dict[str, dict]) -> set[str]:
    """The fields on which the settings of one model × task × regime differ."""
    return {f for f in set().union(*fields.values())
            if len({json.dumps(v.get(f), sort_keys=True) for v in fields.values()}) > 1}


def assign(runs: pd.DataFrame, arm_names) -> pd.DataFrame:
    """`runs` with a `row` (the row a run belongs to within its experiment × model × task × regime) and a
    `setting` (its name: "" where the experiment has one setting everywhere), among the ok runs (a failed run:
    its own variant, unnamed). `arm_names`: arm label -> its name in tables."""
    runs = runs.copy()
    runs["row"], runs["setting"] = runs["variant"], ""
    if runs.empty:
        return runs
    groups = [(group, _fields(group)) for _, group in runs[runs["status"] == "ok"].groupby(GROUP, sort=False)]
    # an experiment's axes: the fields its settings differ on within some model × task × regime (a field that
    # differs only between models or tasks, as model.name does, is no axis)
    axes: dict[str, set[str]] = {}
    for group, fields in groups:
        axes.setdefault(group["experiment"].iloc[0], set()).update(_differing(fields))
    for group, fields in groups:   # the rows tables show
        differ = sorted(axes[group["experiment"].iloc[0]])
        if not differ:
            continue
        variants = sorted(fields)
        others = [f for f in differ if f != LR]
        by_rest: dict[tuple, list[str]] = {}
        for v in variants:
            by_rest.setdefault(tuple(_text(f, fields[v]) for f in others), []).append(v)
        for rest, members in by_rest.items():
            block = group[group["variant"].isin(members)]
            one_lr_each = len(members) > 1 and (block.groupby("arm")["variant"].nunique() == 1).all()
            for v in members:
                if one_lr_each:
                    per_arm = ", ".join(f"{arm_names(a)} {_value(LR, fields[w])}" for a, w in sorted(
                        block.groupby("arm")["variant"].first().items()))
                    name, row = ", ".join([*rest, f"{LR} per arm: {per_arm}"]), "+".join(members)
                else:
                    name, row = ", ".join([*rest, *([_text(LR, fields[v])] if LR in differ else [])]), v
                index = group.index[group["variant"] == v]
                runs.loc[index, "row"], runs.loc[index, "setting"] = row, name
    return runs
