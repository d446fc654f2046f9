"""rand_uniform: exactly N random backbone weights (+ the head) train; every other weight stays bit-identical."""
import pytest
import torch

from beft import config
from beft.cache import Cache
from beft.errors import BeftError
from beft.fit import fit
from beft.methods import fixed_scope
from beft.pipeline import run
from beft.trainable import apply_scope, random_positions
from beft.encoder import EncoderWorkload

QUICK = ("model=tiny-bert", "task=rte", "regime.n=16", "trainer.epochs=1", "trainer.max_length=64",
         "cache_dir=null")


def test_budgets_resolve_to_exact_counts(make_cfg):
    cfg = make_cfg(*QUICK, "method=rand_uniform")
    bias_map = EncoderWorkload(config.resolve(cfg)).bias_map()
    assert fixed_scope(cfg.method, bias_map).num_params == 2 * 32          # b_v in both layers of tiny-bert
    model, _ = EncoderWorkload(config.resolve(cfg)).new_model()
    head = set(bias_map.head_param_names(model))
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias") and n not in head)
    assert fixed_scope(make_cfg(*QUICK, "method=rand_uniform-bitfit").method, bias_map).num_params == biases
    assert fixed_scope(make_cfg(*QUICK, "method=rand_uniform", "method.num_params=500").method,
                       bias_map).num_params == 500


@pytest.mark.parametrize("value", ["lots", 0, 10**12, True])
def test_bad_counts_are_one_line(make_cfg, value):
    cfg = make_cfg(*QUICK, "method=rand_uniform", f"method.num_params={value}")
    with pytest.raises(BeftError) as err:
        fixed_scope(cfg.method, EncoderWorkload(config.resolve(cfg)).bias_map())
    assert "\n" not in str(err.value) and "budget" in str(err.value) and "bitfit" in str(err.value)


def test_weight_decay_is_refused(make_cfg):
    with pytest.raises(BeftError, match="weight_decay=0"):
        config.validate(make_cfg(*QUICK, "method=rand_uniform", "trainer.weight_decay=0.01"))


def test_positions_are_exact_unique_seeded_and_outside_the_head(make_cfg):
    cfg = make_cfg(*QUICK, "method=rand_uniform", "method.num_params=3000")
    workload = EncoderWorkload(config.resolve(cfg))
    model, _ = workload.new_model()
    bias_map = workload.bias_map()
    scope = fixed_scope(cfg.method, bias_map)
    positions = random_positions(model, bias_map, scope)
    assert sum(len(ix) for ix in positions.values()) == 3000
    assert all(len(ix.unique()) == len(ix) for ix in positions.values())
    assert not set(positions) & set(bias_map.head_param_names(model))
    assert len(positions) > 5  # spread over many tensors, as a uniform draw over ~1M weights must be
    again = random_positions(model, bias_map, scope)
    assert all(torch.equal(positions[n], again[n]) for n in positions)
    scope.seed += 1
    other = random_positions(model, bias_map, scope)
    assert any(n not in other or not torch.equal(positions[n], other[n]) for n in positions)


def test_only_the_chosen_weights_and_the_head_move(make_cfg):
    cfg = make_cfg(*QUICK, "method=rand_uniform", "method.num_params=3000", "trainer.lr=0.01")
    workload = EncoderWorkload(config.resolve(cfg))
    bias_map = workload.bias_map()
    scope = fixed_scope(cfg.method, bias_map)
    start, _ = workload.new_model()
    result, trained = fit(workload, scope, config.resolve(cfg).settings, Cache(None))
    head = set(bias_map.head_param_names(start))
    assert result.trainable == 3000 + sum(p.numel() for n, p in start.named_parameters() if n in head)
    positions = random_positions(start, bias_map, scope)
    in_layers, moved_in_layers = 0, 0
    for name, before in start.named_parameters():
        after = trained.get_parameter(name).detach()
        if name in head:
            continue
        chosen = torch.zeros(before.numel(), dtype=torch.bool)
        if name in positions:
            chosen[positions[name]] = True
        changed = (after.reshape(-1) != before.detach().reshape(-1))
        assert not changed[~chosen].any(), f"{name}: a weight outside the mask moved"
        if name.startswith("bert.encoder.layer.") and "key.bias" not in name:
            in_layers += int(chosen.sum())
            moved_in_layers += int(changed[chosen].sum())
    # The chosen ones do train. (Most of tiny-bert is word embeddings, whose rows for unseen tokens get no
    # gradient, and b_k gets none at all: count the transformer layers' weights.)
    assert in_layers > 20 and moved_in_layers >= 0.9 * in_layers
    assert any(not torch.equal(trained.get_parameter(n), p) for n, p in start.named_parameters() if n in head)


def test_record_states_the_exact_count(make_cfg):
    record = run(make_cfg(*QUICK, "method=rand_uniform"))
    assert record["status"] == "ok"
    assert record["scope"]["kind"] == "random_weights" and record["scope"]["num_params"] == 64
    assert record["scope"]["seed"] == 0 and record["run_id"].startswith("tiny-bert-rte-n16-rand_uniform-s0-")
    head = record["trainable_params"] - 64
    bitfit = run(make_cfg(*QUICK, "method=rand_uniform-bitfit"))
    assert bitfit["trainable_params"] - bitfit["scope"]["num_params"] == head
    assert "-rand_uniform-bitfit-s0-" in bitfit["run_id"]


def test_apply_scope_counts_the_head_and_the_mask(make_cfg):
    cfg = make_cfg(*QUICK, "method=rand_uniform", "method.num_params=123")
    workload = EncoderWorkload(config.resolve(cfg))
    model, _ = workload.new_model()
    bias_map = workload.bias_map()
    head = sum(p.numel() for n, p in model.named_parameters() if n in set(bias_map.head_param_names(model)))
    assert apply_scope(model, bias_map, fixed_scope(cfg.method, bias_map)) == 123 + head
