"""The bias map finds exactly the expected parameters, and freezing leaves exactly the requested ones trainable."""
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from beft.bias_map import TYPES, BiasMap, canonical_type
from beft.errors import BeftError
from beft.methods import fixed_scope
from beft.trainable import Scope, apply_scope, trainable_names

SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48, vocab_size=100,
             max_position_embeddings=64)


def tiny(model_type, num_labels=2):
    config = AutoConfig.for_model(model_type, num_labels=num_labels, **SMALL)
    return AutoModelForSequenceClassification.from_config(config)


@pytest.mark.parametrize("model_type,prefix", [("bert", "bert"), ("roberta", "roberta")])
def test_bias_map_names_every_cell(model_type, prefix):
    model = tiny(model_type)
    bias_map = BiasMap(model)
    assert bias_map.num_layers == 3 and bias_map.types == list(TYPES)
    expected = {
        "q": "attention.self.query.bias", "k": "attention.self.key.bias", "v": "attention.self.value.bias",
        "o": "attention.output.dense.bias", "fc1": "intermediate.dense.bias", "fc2": "output.dense.bias",
        "ln1": "attention.output.LayerNorm.bias", "ln2": "output.LayerNorm.bias"}
    names = {bias_map.param_name(c) for c in bias_map.cells()}
    assert names == {f"{prefix}.encoder.layer.{i}.{suffix}" for i in range(3) for suffix in expected.values()}
    for (layer, t) in bias_map.cells():
        assert bias_map.param_name((layer, t)) == f"{prefix}.encoder.layer.{layer}.{expected[t]}"
    # fc2 must not match attention.output.dense, nor ln2 attention.output.LayerNorm
    assert bias_map.size((0, "fc1")) == 48 and bias_map.size((0, "fc2")) == 32


def test_aliases_and_unknown_term():
    assert {canonical_type(a) for a in ("value", "b_v", "bv", "V")} == {"v"}
    assert canonical_type("intermediate") == "fc1" and canonical_type("LN2") == "ln2"
    with pytest.raises(BeftError) as err:
        canonical_type("vv")
    message = str(err.value)
    assert "\n" not in message and "'vv'" in message and all(t in message for t in TYPES)


def test_unknown_family_says_how_to_add_one():
    config = AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2, vocab_size=50)
    from transformers import AutoModelForCausalLM
    with pytest.raises(BeftError, match="add a Family entry"):
        BiasMap(AutoModelForCausalLM.from_config(config))


@pytest.mark.parametrize("terms,per_layer", [(["v"], 32), (["q", "k"], 64), (["fc1"], 48), (["v", "ln2"], 64)])
def test_freezing_leaves_exactly_the_terms_and_head(terms, per_layer):
    model = tiny("bert")
    bias_map = BiasMap(model)
    from omegaconf import OmegaConf
    scope = fixed_scope(OmegaConf.create({"name": "fixed", "terms": terms}), bias_map)
    count = apply_scope(model, bias_map, scope)
    head = 32 * 2 + 2 + 32  # classifier + pooler bias (the authors train it with every bias subset)
    assert count == 3 * per_layer + head
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == set(trainable_names(model, bias_map, scope))
    assert all(n.endswith("bias") or n.startswith("classifier.") for n in trained)


def test_scopes_bitfit_full_head():
    model = tiny("roberta", num_labels=3)
    bias_map = BiasMap(model)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("classifier."))
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias") and
                 not n.startswith("classifier."))
    assert apply_scope(model, bias_map, Scope("all")) == total
    assert apply_scope(model, bias_map, Scope("head")) == head
    assert apply_scope(model, bias_map, Scope("all_biases")) == biases + head


def test_fixed_without_terms_is_an_error():
    from omegaconf import OmegaConf
    with pytest.raises(BeftError, match="method.terms"):
        fixed_scope(OmegaConf.create({"name": "fixed", "terms": []}), BiasMap(tiny("bert")))
