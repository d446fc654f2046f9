"""Decoders on prompted tasks: tiny-opt (every bias) and tiny-llama (bias-free, grouped-query attention)."""
import pytest
import torch

from beft.bias_map import BiasMap
from beft.decoder import DecoderWorkload
from beft.decoder.scoring import candidate_scores, exact_match, token_f1
from beft.errors import BeftError
from beft.methods import fixed_scope
from beft.pipeline import run
from beft.train import train
from beft.trainable import apply_scope
from task_fixtures import ROWS

QUICK = ("regime.n=16", "trainer.epochs=1")


@pytest.fixture
def workload(make_cfg):
    def make(*overrides):
        cfg = make_cfg(*QUICK, *overrides)
        from beft import config

        return DecoderWorkload(config.resolve(cfg)), cfg
    return make


def test_bias_maps_of_opt_and_llama(workload):
    opt, _ = workload("model=tiny-opt", "task=sst2", "method=fixed-v")
    bias_map = opt.bias_map()
    assert bias_map.types == ["q", "k", "v", "o", "fc1", "fc2", "ln1", "ln2"] and bias_map.num_layers == 2
    assert bias_map.param_name((1, "v")).endswith("model.decoder.layers.1.self_attn.v_proj.bias")
    assert bias_map.param_name((0, "fc1")).endswith("model.decoder.layers.0.fc1.bias")
    assert bias_map.param_name((0, "ln2")).endswith("model.decoder.layers.0.final_layer_norm.bias")

    llama, _ = workload("model=tiny-llama", "task=sst2", "method=fixed-v")
    bias_map = llama.bias_map()
    assert bias_map.types == ["q", "k", "v", "o", "fc1", "fc2"]
    assert bias_map.bias_free_types() == bias_map.types  # nothing pre-trained: every bias is an added one
    assert bias_map.param_name((1, "v")).endswith("layers.1.self_attn.v_proj.beft_bias.default")
    # grouped-query attention: 2 key/value heads of 8 dims beside 4 query heads
    assert (bias_map.size((0, "q")), bias_map.size((0, "k")), bias_map.size((0, "v"))) == (32, 16, 16)


def test_added_biases_start_at_zero_and_leave_outputs_unchanged(workload):
    wl, _ = workload("model=tiny-llama", "task=sst2", "method=fixed-v")
    base, _ = wl.load_base()
    model, _ = wl.new_model()
    added = wl.bias_map().added_param_names()
    assert len(added) == 2 * 6
    params = dict(model.named_parameters())
    assert all(torch.count_nonzero(params[n]) == 0 for n in added)
    batch = wl.coder.collate(wl.eval_sets["validation"].items[:4], "all")
    with torch.no_grad():
        before = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        after = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.parametrize("model", ["tiny-opt", "tiny-llama"])
def test_only_the_chosen_biases_train(workload, model):
    wl, cfg = workload(f"model={model}", "task=rte", "method=fixed-v")
    from beft import config

    model_, _ = wl.new_model()
    bias_map = wl.bias_map()
    scope = fixed_scope(cfg.method, bias_map)
    apply_scope(model_, bias_map, scope)
    expected = {bias_map.param_name(c) for c in bias_map.cells(["v"])}
    assert {n for n, p in model_.named_parameters() if p.requires_grad} == expected  # no head on decoders
    start = {n: p.detach().clone() for n, p in model_.named_parameters()}
    train(model_, wl, wl.train_set, config.resolve(cfg).settings)
    moved = {n for n, p in model_.named_parameters() if not torch.equal(p, start[n])}
    assert moved == expected


def test_candidate_scores_equal_a_hand_computation(workload):
    wl, _ = workload("model=tiny-opt", "task=sst2", "method=zero_shot")
    model, _ = wl.new_model()
    model.eval()
    item = wl.eval_sets["validation"].items[0]
    batch = wl.coder.collate([item, wl.eval_sets["validation"].items[1]], "all")
    assert [wl.coder.decode(o) for o in item.options] == ["terrible", "great"]  # the verbalizer's tokens
    assert batch["input_ids"].shape[0] == 2       # one-token candidates: one prompt row per example, not per candidate
    with torch.no_grad():
        scores = candidate_scores(model, batch)[0]
        for choice, option in enumerate(item.options):
            ids = torch.tensor([wl.coder.bos + item.prompt + option])
            logp = model(input_ids=ids).logits[0].double().log_softmax(-1)
            start = ids.shape[1] - len(option)
            by_hand = sum(logp[p - 1, ids[0, p]] for p in range(start, ids.shape[1])) / len(option)
            assert float(scores[choice]) == pytest.approx(float(by_hand), abs=1e-5)


def test_f1_and_exact_match_on_known_strings():
    assert exact_match("The Cat!", ["a dog", "cat"]) == 1.0 and exact_match("cats", ["cat"]) == 0.0
    assert token_f1("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)  # P 2/2, R 2/3
    assert token_f1("Paris", ["London", "paris."]) == 1.0                     # the best gold answer counts
    assert token_f1("", ["x"]) == 0.0 and token_f1("blue", ["red"]) == 0.0


@pytest.mark.parametrize("task, n_eval", [("sst2", ROWS["SST-2/dev.tsv"]), ("rte", ROWS["RTE/val.jsonl"]),
                                          ("copa", ROWS["COPA/val.jsonl"])])
def test_decoder_end_to_end_on_local_files(make_cfg, task, n_eval):
    record = run(make_cfg("model=tiny-opt", f"task={task}", "method=fixed-v", *QUICK))
    assert record["status"] == "ok" and record["n_train"] == 16 and record["n_eval"] == {"validation": n_eval}
    assert record["env"]["data"]["kind"] == "local"
    assert 0.0 <= record["metrics"]["main"]["value"] <= 1.0 and record["trainable_params"] == 2 * 32
    assert record["adapter"]["written"]


@pytest.mark.parametrize("model, task", [("tiny-opt", "sst2"), ("tiny-llama", "copa"), ("tiny-bert", "sst2")])
def test_exported_adapter_reproduces_the_run(make_cfg, model, task):
    from peft import PeftModel

    from beft import config
    from beft.kinds import make_workload

    cfg = make_cfg(f"model={model}", f"task={task}", "method=fixed-v", *QUICK, "trainer.lr=0.05")
    record = run(cfg)
    assert record["adapter"]["written"] and record["adapter"]["peft_type"] == "BEFT"
    wl = make_workload(config.resolve(cfg))
    if wl.kind == "decoder":
        base, _ = wl.load_base()
    else:
        base, _ = wl.new_model()   # a fresh head: the adapter brings the trained one (modules_to_save)
    reloaded = PeftModel.from_pretrained(base, str(tmp_dir(cfg, record) / "adapter"))
    scores = wl.evaluate(reloaded)
    final = record["metrics"]["final"]
    for name in ("validation/accuracy", "validation/loss"):  # the loss to 1e-5: the same logits, not luck
        assert scores[name] == pytest.approx(final[name], abs=1e-5), name


def tmp_dir(cfg, record):
    from pathlib import Path

    return Path(cfg.out_dir) / record["run_id"]


@pytest.mark.parametrize("overrides, needle", [
    (("model=minilm", "method=icl"), "needs a decoder"),
    (("model=tiny-opt", "task=cola", "method=fixed-v"), "no template for decoders"),
    (("model=tiny-llama", "task=sst2", "method=beft"), "use method=magnitude, fisher or causal"),
])
def test_decoder_bad_input_is_one_line(make_cfg, overrides, needle):
    with pytest.raises(BeftError) as err:
        run(make_cfg(*QUICK, *overrides))
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("method, trainable", [("lora", 2 * 2 * (32 * 8 + 8 * 32)),  # r 8 on q_proj and v_proj
                                               ("prefix", 5 * 2 * 2 * 32),            # 5 keys + values per layer
                                               ("icl", 0), ("zero_shot", 0)])
def test_peft_baselines_icl_and_zero_shot(make_cfg, method, trainable):
    record = run(make_cfg("model=tiny-opt", "task=cb", f"method={method}", *QUICK, "method.demonstrations=2"
                          if method == "icl" else "trainer.eval_batch_size=64"))
    assert record["status"] == "ok" and record["trainable_params"] == trainable
    assert record["adapter"]["written"] is False  # not a bias-only run: no BEFT adapter


def test_prefix_tuning_on_a_generation_task_answers_and_scores(make_cfg):
    record = run(make_cfg("model=tiny-llama", "task=squad", "method=prefix", "regime.n=8", "trainer.epochs=1",
                          "task.decoder.n_eval=4"))
    final = record["metrics"]["final"]
    assert record["status"] == "ok" and record["trainable_params"] == 5 * 2 * 2 * 16  # GQA: k/v width 16
    assert 0.0 <= final["validation/em"] <= final["validation/f1"] <= 1.0


def test_greedy_decoding_stops_at_a_newline_and_agrees_without_cache(workload):
    from beft.decoder.scoring import greedy, greedy_by_recomputation

    wl, _ = workload("model=tiny-opt", "task=sst2", "method=zero_shot")
    model, _ = wl.new_model()
    model.eval()
    prompts = [wl.coder.bos + it.prompt for it in wl.eval_sets["validation"].items[:3]]
    stop = wl.coder.stop
    cached = greedy(model, prompts, 12, stop, wl.coder.pad)
    uncached = greedy_by_recomputation(model, prompts, 12, stop)
    assert cached == uncached                      # left-padded KV-cache decoding = step-by-step recomputation
    assert all(len(c) <= 12 and not set(c) & set(stop) for c in cached)
    # Make the newline token the certain next token: decoding must stop before it, with nothing generated.
    newline = max(stop)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
        model.get_output_embeddings().weight[newline] = 1.0
        model.model.decoder.final_layer_norm.weight.zero_()
        model.model.decoder.final_layer_norm.bias.fill_(1.0)
    assert greedy(model, prompts, 12, stop, wl.coder.pad) == [[], [], []]


@pytest.mark.parametrize("model_name", ["tiny-llama", "tiny-opt"])
def test_prefix_tuned_greedy_decoding_uses_the_prefix_and_equals_recomputation(workload, model_name):
    from beft.decoder.scoring import greedy, greedy_by_recomputation

    wl, _ = workload(f"model={model_name}", "task=squad", "method=prefix")
    model, _ = wl.new_model()
    with torch.no_grad():  # a strong random prefix, so that it visibly steers the answers
        for p in model.prompt_encoder.parameters():
            p.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    model.eval()
    prompts = [wl.coder.bos + it.prompt for it in wl.eval_sets["validation"].items[:4]]
    stop = wl.coder.stop
    cached = greedy(model, prompts, 10, stop, wl.coder.pad, prefix_tuned=True)
    assert cached == greedy_by_recomputation(model, prompts, 10, stop)  # prefix in the cache = recomputed
    assert cached != greedy_by_recomputation(model.get_base_model(), prompts, 10, stop)  # and it mattered


@pytest.mark.parametrize("model", ["tiny-opt", "tiny-llama", "tiny-qwen2"])
def test_shared_prompt_scoring_equals_one_row_per_candidate(workload, model, monkeypatch):
    """ReCoRD: many multi-token entities after one long passage. Scoring them from one cached prompt pass gives
    the numbers of scoring each (prompt + entity) row on its own."""
    wl, _ = workload(f"model={model}", "task=record", "method=fixed-v", "task.decoder.n_eval=4")
    model_, _ = wl.new_model()
    model_.eval()
    data = wl.eval_sets["validation"]
    assert all(wl._shares_prompt(item) for item in data.items)
    shared = wl.candidate_scores(model_, data)
    monkeypatch.setattr(type(wl), "_shares_prompt", lambda self, item: False)
    rows = wl.candidate_scores(model_, data)
    for a, b in zip(shared, rows):
        assert a == pytest.approx(b, abs=1e-4)


@pytest.mark.filterwarnings("error:.*past_key_values.*:FutureWarning")  # the old name goes in transformers 5.40
@pytest.mark.parametrize("model", ["tiny-opt", "tiny-llama"])
def test_the_kv_cache_is_passed_under_the_installed_name_and_continues_the_prompt(workload, model):
    from beft.decoder.kv_cache import cache_of, with_cache

    wl, _ = workload(f"model={model}", "task=sst2", "method=lora")   # a PEFT wrapper: the name comes from its base
    model_, _ = wl.new_model()
    model_.eval()
    ids = torch.tensor([wl.coder.bos + wl.eval_sets["validation"].items[0].prompt])
    with torch.no_grad():
        whole = model_(input_ids=ids).logits[0, -1]
        head = model_(input_ids=ids[:, :-1], use_cache=True)
        step = model_(input_ids=ids[:, -1:], **with_cache(model_, cache_of(head))).logits[0, -1]
    torch.testing.assert_close(step, whole, rtol=1e-4, atol=1e-5)   # the cache held the prompt's keys and values
