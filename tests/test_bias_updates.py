"""LoRA / DoRA / VeRA / VeRA1D injected into a bias vector (the paper's Table 4, beft.bias_updates)."""
import math
from pathlib import Path

import pytest
import torch

from beft import bias_updates, config
from beft.bias_map import BiasMap
from beft.errors import BeftError
from beft.methods import fixed_scope
from beft.pipeline import run
from beft.kinds import make_workload
from beft.trainable import InertKeyBiases, apply_scope

QUICK = ("regime.n=16", "trainer.epochs=1")
FORMS = ["lora_bias", "dora_bias", "vera_bias", "vera1d_bias"]


def _scoped(make_cfg, *overrides):
    """(workload, model with the method's scope applied, bias map, trainable count)."""
    cfg = make_cfg(*QUICK, "task=sst2", *overrides)
    wl = make_workload(config.resolve(cfg))
    model, _ = wl.new_model()
    bias_map = BiasMap(model)
    return wl, model, bias_map, apply_scope(model, bias_map, fixed_scope(cfg.method, bias_map))


def _outputs(wl, model) -> torch.Tensor:
    """Encoder logits, or a decoder's per-example prompt losses, on one training batch."""
    batch = next(iter(wl.batches(wl.train_set, 8)))
    model.eval()
    with torch.no_grad():
        if wl.kind == "decoder":
            return wl.example_losses(model, batch)
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


# DoRA on tiny-llama's added (zero) biases is refused instead (test_dora_on_an_added_zero_bias_is_one_line).
@pytest.mark.parametrize("model, terms, method", [
    (model, terms, method) for model, terms in (("tiny-bert", "[v,q]"), ("tiny-qwen2", "[v,k]"), ("tiny-llama", "[v]"))
    for method in FORMS if not (method == "dora_bias" and model == "tiny-llama")])
def test_the_update_starts_at_zero_so_outputs_equal_the_pretrained_models(make_cfg, model, terms, method):
    wl, plain, _, _ = _scoped(make_cfg, f"model={model}", "method=fixed", f"method.terms={terms}")
    _, updated, _, _ = _scoped(make_cfg, f"model={model}", f"method={method}", f"method.terms={terms}")
    assert bias_updates.updates_of(updated)
    torch.testing.assert_close(_outputs(wl, updated), _outputs(wl, plain), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["dora_bias", "vera_bias", "vera1d_bias"])
def test_the_authors_forms_move_the_bias_before_training(make_cfg, method):
    wl, plain, bias_map, _ = _scoped(make_cfg, "model=tiny-bert", "method=fixed")
    _, updated, _, _ = _scoped(make_cfg, "model=tiny-bert", f"method={method}", "method.authors=true")
    cell = bias_map.cells(["v"])[0]
    b0 = bias_map.param(plain, cell).detach()
    used = bias_updates._owner(updated, bias_map.param_name(cell))[0].bias.detach()
    if method == "vera1d_bias":    # every dimension shifted by alpha / r = 1/8
        torch.testing.assert_close(used - b0, torch.full_like(b0, 1 / 8))
    elif method == "dora_bias":    # b_0 counted twice: b_0 + (1/8)·‖b_0‖·b_0/‖b_0‖ = (1 + 1/8)·b_0
        torch.testing.assert_close(used, b0 * (1 + 1 / 8))
    else:
        assert (used - b0).abs().max() > 1e-3


@pytest.mark.parametrize("method", FORMS)
def test_gradients_reach_only_the_update_and_the_head(make_cfg, method):
    wl, model, bias_map, trainable = _scoped(make_cfg, "model=tiny-bert", f"method={method}", "method.terms=[v,q]")
    head = set(bias_map.head_param_names(model))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    update_params = {n for n in names if ".parametrizations." in n}
    assert names == update_params | head and update_params
    assert not any(n.endswith(".original") for n in update_params)   # b_0 is frozen
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in names)
    model.train()
    batch = next(iter(wl.batches(wl.train_set, 8)))
    wl.loss(model, batch).backward()
    got_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got_grad <= names and got_grad & update_params


def test_b_k_updates_get_exactly_zero_gradient_where_b_k_is_inert(make_cfg):
    wl, model, bias_map, _ = _scoped(make_cfg, "model=tiny-bert", "method=lora_bias", "method.terms=[k]")
    inert = InertKeyBiases(model, bias_map)
    assert inert.active
    B = next(u for u in bias_updates.updates_of(model).values()).lora_B
    B.data.normal_()   # a non-zero B, so the gradient of A is not zero for a trivial reason
    wl.loss(model, next(iter(wl.batches(wl.train_set, 8)))).backward()
    assert inert.max_roundoff < 1e-6
    updates = bias_updates.updates_of(model).values()
    assert all(float(p.grad.abs().max()) == 0.0 for u in updates for p in u.parameters())


@pytest.mark.parametrize("width, shape", [(384, (24, 16)), (576, (24, 24)), (768, (32, 24)), (896, (32, 28)),
                                          (192, (16, 12)), (128, (16, 8))])
def test_the_most_square_shape_and_an_exact_reshape(width, shape):
    assert bias_updates.square_shape(width) == shape                # 768 -> the authors' hard-coded 32 x 24
    m, n = shape
    b0 = torch.randn(width)
    update = bias_updates.BiasUpdate("lora", b0, m, n, rank=8, alpha=1.0, authors=False)
    torch.nn.init.normal_(update.lora_B)
    matrix = ((1 / 8) * update.lora_A.T @ update.lora_B.T).detach()   # m x n
    delta = (update(b0) - b0).detach()
    for i, j in [(0, 0), (0, n - 1), (m - 1, 0), (m // 2, n // 3)]:   # row-major vec, as the authors' flatten
        assert float(delta[i * n + j]) == pytest.approx(float(matrix[i, j]), abs=1e-6)


def test_a_prime_width_is_refused_unless_the_vector_shape_is_asked_for():
    with pytest.raises(BeftError, match=r"width 97, a prime.*method.shape=\[97,1\]"):
        bias_updates.shape_for(97, None, "b_v of layer 0")
    assert bias_updates.shape_for(97, [97, 1], "b_v of layer 0") == (97, 1)
    with pytest.raises(BeftError, match=r"method.shape=\[10,10\] does not fit b_v of layer 0 of width 97"):
        bias_updates.shape_for(97, [10, 10], "b_v of layer 0")


def test_dora_on_an_added_zero_bias_is_one_line(make_cfg):
    with pytest.raises(BeftError, match="dora_bias needs a non-zero pre-trained bias") as err:
        _scoped(make_cfg, "model=tiny-llama", "method=dora_bias")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, needle", [("method.rank=0", "method.rank=0"), ("method.alpha=-1", "method.alpha=-1"),
                                              ("method.shape=[3]", "method.shape=[3]"),
                                              ("method.authors=maybe", "method.authors='maybe'")])
def test_bad_options_are_one_line(make_cfg, override, needle):
    with pytest.raises(BeftError) as err:
        _scoped(make_cfg, "model=tiny-bert", "method=lora_bias", override)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_counts_equal_the_formula_at_bert_base_width(make_cfg):
    """LoRA on b_v of a 12 x 768 BERT: 8·32 + 24·8 = 448 per layer, 5,376 in all, plus the head (docs/paper.md §D.1)."""
    tiny = ("model.tiny.hidden_size=768", "model.tiny.num_hidden_layers=12", "model.tiny.num_attention_heads=12",
            "model.tiny.intermediate_size=32")
    _, model, _, trainable = _scoped(make_cfg, "model=tiny-bert", *tiny, "method=lora_bias")
    head = 768 + 768 * 2 + 2                                    # pooler bias + classifier (binary)
    assert trainable == 12 * 448 + head
    assert bias_updates.describe(model, {"method": "lora_bias", "rank": 8, "alpha": 1})["params"] == {"v": 5376}
    _, model, _, trainable = _scoped(make_cfg, "model=tiny-bert", *tiny, "method=vera_bias")
    assert trainable == 12 * (8 + 24) + head                   # d (r) and β (n) per layer
    _, model, _, trainable = _scoped(make_cfg, "model=tiny-bert", *tiny, "method=vera1d_bias")
    assert trainable == 12 + head
    _, model, _, trainable = _scoped(make_cfg, "model=tiny-bert", *tiny, "method=dora_bias")
    assert trainable == 12 * 449 + head                        # + the magnitude μ


@pytest.mark.parametrize("model, method", [("tiny-bert", "lora_bias"), ("tiny-llama", "vera_bias"),
                                           ("tiny-qwen2", "dora_bias")])
def test_the_merged_update_exports_a_plain_beft_adapter_that_reproduces_the_run(make_cfg, model, method):
    from peft import PeftModel

    cfg = make_cfg(f"model={model}", "task=sst2", f"method={method}", "method.terms=[v,q]", *QUICK,
                   "trainer.lr=0.05")
    record = run(cfg)
    assert record["status"] == "ok" and record["adapter"]["written"] and record["adapter"]["peft_type"] == "BEFT"
    assert record["bias_update"]["method"] == method and record["scope"]["label"] == f"{method} on q+v"
    wl = make_workload(config.resolve(cfg))
    base, _ = wl.load_base() if wl.kind == "decoder" else wl.new_model()
    folder = Path(cfg.out_dir) / record["run_id"] / "adapter"
    reloaded = PeftModel.from_pretrained(base, str(folder))
    moved = [float(p.abs().max()) for n, p in reloaded.named_parameters() if ".beft_bias." in n]
    assert moved and max(moved) > 1e-4                          # the biases did train
    scores = wl.evaluate(reloaded)
    for name in ("validation/accuracy", "validation/loss"):   # the loss to 1e-5: the same logits
        assert scores[name] == pytest.approx(record["metrics"]["final"][name], abs=1e-5), name


def test_minilm_lora_on_b_v_counts(make_cfg):
    """The local Table 4 model: hidden 384 -> 24 x 16, r (24 + 16) = 320 per layer, 6 layers."""
    _, model, _, trainable = _scoped(make_cfg, "model=minilm", "method=lora_bias")
    assert bias_updates.describe(model, {"method": "lora_bias", "rank": 8, "alpha": 1}) == {
        "method": "lora_bias", "rank": 8, "alpha": 1.0, "authors": False, "shapes": {"v": [24, 16]},
        "params": {"v": 6 * 320}, "total_params": 1920}
    assert trainable == 1920 + 384 + 384 * 2 + 2
    assert math.isclose(trainable / (6 * 384 + 384 + 770), 3074 / 3458)
