"""The memory plan (issue 39): an estimate from the model config alone, a one-line refusal before loading when
the job cannot fit a stated budget, the knob that would make it fit, and an evaluation batch chosen to fit."""
from dataclasses import replace

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from beft import memory_plan
from beft.decoder import model as causal_lm
from beft.errors import BeftError
from beft.memory_plan import GiB, Job, Shape, estimate
from beft.pipeline import run

QUICK = ("regime.n=16", "trainer.epochs=1")


def skeleton(layers=8, hidden=256, vocab=1000, trainable="bias"):
    config = AutoConfig.for_model("opt", hidden_size=hidden, word_embed_proj_dim=hidden, ffn_dim=4 * hidden,
                                  num_hidden_layers=layers, num_attention_heads=4, vocab_size=vocab)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    for name, p in model.named_parameters():
        p.requires_grad_(trainable == "all" or name.endswith("v_proj.bias"))
    return model


def test_the_estimate_counts_weights_state_and_grows_with_the_batch_and_shrinks_with_checkpointing():
    model = skeleton()
    params = sum(p.numel() for p in model.parameters())
    job = Job(train_rows=16, length=128, eval_rows=16)
    plan = estimate(model, torch.bfloat16, job)
    trainable = 8 * 256
    assert plan.weights == (params - trainable) * 2 + trainable * 4     # frozen in bf16, trainables in fp32
    assert plan.training_state == trainable * 12                       # fp32 gradient + AdamW's two moments
    bigger = estimate(model, torch.bfloat16, replace(job, train_rows=32))
    assert bigger.activations == 2 * plan.activations > 0
    checkpointed = estimate(model, torch.bfloat16, replace(job, checkpointing=True))
    assert checkpointed.activations < plan.activations and checkpointed.weights == plan.weights
    full = estimate(skeleton(trainable="all"), torch.float32, job)
    assert full.training_state == params * 12 and full.weights == params * 4


def test_generation_adds_a_kv_cache_and_the_eval_batch_is_chosen_within_the_budget():
    model, shape = skeleton(), Shape.of(skeleton().config)
    job = Job(train_rows=16, length=128, eval_rows=64, new_tokens=50)
    plan = estimate(model, torch.float32, job)
    cache = 2 * shape.layers * shape.kv_dim * 64 * (128 + 50) * 4
    assert plan.evaluation - estimate(model, torch.float32, replace(job, new_tokens=0)).evaluation > cache * 0.99
    budget = plan.weights + plan.training_state + memory_plan.evaluation_bytes(shape, job, 8)
    rows = memory_plan.largest_eval_rows(plan, shape, job, budget)
    assert rows == 8 and memory_plan.largest_eval_rows(plan, shape, job, 10 * plan.total) == 64


def test_the_refusal_names_the_knob_that_fits():
    model = skeleton(layers=24, hidden=512)
    job = Job(train_rows=64, length=512, eval_rows=1)
    plain, checkpointed = (estimate(model, torch.float32, replace(job, checkpointing=c)) for c in (False, True))
    budget = (plain.total + checkpointed.total) // 2
    knobs = memory_plan.knobs(model, torch.float32, job, budget, half_possible=False)
    assert knobs == ["trainer.gradient_checkpointing=true"]
    line = memory_plan.refusal(plain, budget, "trainer.memory_budget_gib", knobs)
    assert "\n" not in line and f"{plain.total / GiB:.2f} GiB" in line and f"{budget / GiB:.2f} GiB is free" in line
    assert "trainer.gradient_checkpointing=true" in line and "model.device_map=auto" in line
    # prefix tuning cannot be checkpointed (beft.method_table.checkpointing_refusal): the knob is not offered
    prefix_job = replace(job, can_checkpoint=False)
    assert memory_plan.knobs(model, torch.float32, prefix_job, budget, half_possible=False) == []


def test_a_job_over_its_stated_budget_stops_before_loading(make_cfg, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(causal_lm, "load_causal_lm", no_loading)
    with pytest.raises(BeftError) as err:
        run(make_cfg("model=tiny-opt", "method=fixed-v", *QUICK, "trainer.memory_budget_gib=0.001"))
    message = str(err.value)
    assert "\n" not in message and "by the memory plan" in message and "0.00 GiB is free (trainer.memory_budget_gib)" \
        in message


def test_the_record_keeps_the_plan_and_a_budget_lowers_the_generation_batch(make_cfg):
    free = run(make_cfg("model=tiny-opt", "task=squad", "method=fixed-v", *QUICK))
    assert free["memory"]["budget_from"] == "not checked" and free["memory"]["eval_batch_size"] == 64
    plan = free["memory"]["plan_gib"]
    assert plan["total"] == pytest.approx(plan["weights"] + plan["training_state"]
                                          + max(plan["activations"], plan["evaluation"]), abs=0.002)
    tight = plan["weights"] + plan["training_state"] + plan["activations"] + 0.001   # room for training, not 64
    record = run(make_cfg("model=tiny-opt", "task=squad", "method=fixed-v", *QUICK,
                          f"trainer.memory_budget_gib={tight}", "force=true"))
    assert record["status"] == "ok" and record["memory"]["eval_batch_size"] < 64
    assert record["memory"]["plan_gib"]["total"] <= tight
    assert record["key"] == free["key"]                  # a budget changes no maths: the same record key
    assert record["metrics"]["final"] == pytest.approx(free["metrics"]["final"])   # greedy answers: unchanged
