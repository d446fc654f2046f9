"""Every method × every tiny model family, in the style of PEFT's test matrix: the exact number of trainable
parameters, or the one-line refusal declared below. A new method or family must be added to the table."""
import types

import pytest

from beft import config
from beft.bias_map import BiasMap
from beft.errors import BeftError
from beft.methods import FIXED, fixed_scope
from beft.pipeline import run
from beft.report import make_tables
from beft.selection import SELECTORS
from beft.trainable import apply_scope
from beft.kinds import make_workload
from conftest import REPO

MODELS = ["tiny-bert", "tiny-mpnet", "tiny-opt", "tiny-llama", "tiny-qwen2"]
ENCODER_ONLY = "needs a decoder (causal LM)"
NO_HEAD = "method=head trains only a task head, and a decoder has none"
# Trainable parameters (task head included) on SST-2, or the refusal. Hand checks: tiny-bert (hidden 32, 2 layers)
# bitfit = embedding LN 32 + 2 × 288 + pooler 32 + classifier 66 = 706; tiny-mpnet's head = dense 1,056 +
# out_proj 66 = 1,122; tiny-qwen2 (GQA: k, v 16 wide) has q/k/v biases only: 2 × 64 = 128; lora_bias on a
# 32-wide b_v reads it off 8 × 4: 8 · (8 + 4) = 96 per layer.
EXPECTED = {
    "tiny-bert": {"fixed": 162, "bitfit": 706, "full": 1011426, "head": 98, "rand_uniform": 162, "lora_bias": 290,
                  "dora_bias": 292, "vera_bias": 122, "vera1d_bias": 100, "lora": ENCODER_ONLY,
                  "prefix": ENCODER_ONLY, "icl": ENCODER_ONLY, "zero_shot": ENCODER_ONLY},
    "tiny-mpnet": {"fixed": 1186, "bitfit": 1730, "full": 1011714, "head": 1122, "rand_uniform": 1186,
                   "lora_bias": 1314, "dora_bias": 1316, "vera_bias": 1146, "vera1d_bias": 1124,
                   "lora": ENCODER_ONLY, "prefix": ENCODER_ONLY, "icl": ENCODER_ONLY, "zero_shot": ENCODER_ONLY},
    "tiny-opt": {"fixed": 64, "bitfit": 608, "full": 1010304, "head": NO_HEAD, "rand_uniform": 64, "lora_bias": 192,
                 "dora_bias": 194, "vera_bias": 24, "vera1d_bias": 2, "lora": 2048, "prefix": 640, "icl": 0,
                 "zero_shot": 0},
    "tiny-llama": {"fixed": 32, "bitfit": 384, "full": 1972000, "head": NO_HEAD, "rand_uniform": 32, "lora_bias": 128,
                   "dora_bias": "dora_bias needs a non-zero pre-trained bias", "vera_bias": 24, "vera1d_bias": 2,
                   "lora": 1792, "prefix": 320, "icl": 0, "zero_shot": 0},
    "tiny-qwen2": {"fixed": 32, "bitfit": 128, "full": 1972128, "head": NO_HEAD, "rand_uniform": 32, "lora_bias": 128,
                   "dora_bias": 130, "vera_bias": 24, "vera1d_bias": 2, "lora": 1792, "prefix": 320, "icl": 0,
                   "zero_shot": 0},
}
CELLS = [(model, method) for model in MODELS for method in sorted(FIXED)]


def test_the_table_covers_every_method_and_family():
    assert set(EXPECTED) == set(MODELS) and all(set(row) == set(FIXED) for row in EXPECTED.values())


@pytest.mark.parametrize("model, method", CELLS, ids=[f"{m}-{x}" for m, x in CELLS])
def test_trainable_count_or_refusal(make_cfg, model, method):
    expected = EXPECTED[model][method]
    cfg = make_cfg(f"model={model}", "task=sst2", f"method={method}", "regime.n=8", "task.decoder.n_eval=8")
    if isinstance(expected, str):
        with pytest.raises(BeftError) as err:
            spec = config.resolve(cfg)
            workload = make_workload(spec)
            model_, _ = workload.new_model()
            bias_map = BiasMap(model_)
            apply_scope(model_, bias_map, fixed_scope(spec.method, bias_map))
        assert expected in str(err.value) and "\n" not in str(err.value)
        return
    spec = config.resolve(cfg)
    workload = make_workload(spec)
    model_, _ = workload.new_model()
    bias_map = BiasMap(model_)
    assert apply_scope(model_, bias_map, fixed_scope(spec.method, bias_map)) == expected


# End to end: every selection method, and one run per family, through run() (the record's count must agree).
RUNS = [("tiny-bert", m) for m in sorted(SELECTORS)] + [("tiny-qwen2", "beft")] + \
       [(m, "fixed") for m in MODELS] + [("tiny-opt", "lora_bias"), ("tiny-llama", "prefix")]


@pytest.mark.parametrize("model, method", RUNS, ids=[f"{m}-{x}" for m, x in RUNS])
def test_runs_end_to_end(make_cfg, model, method):
    record = run(make_cfg(f"model={model}", "task=sst2", f"method={method}", "regime.n=8", "trainer.max_steps=2",
                          "task.decoder.n_eval=8", "trainer.eval_every_epoch=false"))
    assert record["status"] == "ok"
    if method in SELECTORS:
        assert record["selection_run"] and record["selection"]["chosen_types"]
    else:
        assert record["trainable_params"] == EXPECTED[model][method]


def test_a_new_selection_method_is_one_module_one_yaml_one_registry_line(make_cfg, tmp_path, monkeypatch):
    """Add `dummy` as a contributor would, then check that it runs and that make tables shows it."""
    module = types.ModuleType("dummy")          # the module: scores every cell, b_q highest
    module.NEEDS_PROBE = False
    module.scores = lambda ctx: {cell: float(cell[1] == "q") for cell in ctx.cells}
    conf = tmp_path / "conf" / "method"         # the YAML, on Hydra's search path
    conf.mkdir(parents=True)
    (conf / "dummy.yaml").write_text("defaults:\n  - _selection\n  - _self_\nname: dummy\n")
    monkeypatch.setitem(SELECTORS, "dummy", module)   # the registry line
    runs = tmp_path / "results" / "dummy-exp"
    for method in ("dummy", "fixed-v", "fixed-q"):
        cfg = make_cfg("model=tiny-bert", "task=sst2", f"method={method}", "regime.n=8", "trainer.epochs=1",
                       f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"out_dir={runs}")
        assert run(cfg)["status"] == "ok"
    make_tables(tmp_path / "results", REPO / "results" / "paper", tmp_path / "tables", tmp_path / "figures",
                with_figures=False)
    selection = (tmp_path / "tables" / "dummy-exp_selection.md").read_text()
    assert "| tiny-bert | sst2 | n=8 | dummy | b_q ×1 |" in selection
    assert "dummy" in (tmp_path / "tables" / "dummy-exp.md").read_text().splitlines()[2]


def test_a_new_peft_baseline_is_one_yaml_and_one_table_entry(make_cfg, tmp_path, monkeypatch):
    """Add IA3 (peft's IA3Config: learned scales on the key, value and MLP output projections) as a contributor
    would: its YAML and its entry in the method table. It trains exactly IA3's vectors, and the tables name it."""
    from peft import IA3Config

    from beft.method_table import DECODER, METHODS, Adapter, Method

    def ia3_config(method, modules):   # the entry's adapter: modules maps bias types to the family's names
        return IA3Config(task_type="CAUSAL_LM", target_modules=[modules[t] for t in method.targets],
                         feedforward_modules=[modules[t] for t in method.feedforward])

    conf = tmp_path / "conf" / "method"         # the YAML, on Hydra's search path
    conf.mkdir(parents=True)
    (conf / "ia3.yaml").write_text("name: ia3\ntargets: [k, v, fc2]\nfeedforward: [fc2]\n")
    monkeypatch.setitem(METHODS, "ia3", Method("adapter", "IA3", kinds=DECODER, adapter=Adapter("ia3", ia3_config)))
    runs = tmp_path / "results" / "ia3-exp"
    common = ("task=sst2", "regime.n=8", "trainer.max_steps=2", "task.decoder.n_eval=8",
              f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"out_dir={runs}")
    record = run(make_cfg("model=tiny-opt", "method=ia3", *common))
    # tiny-opt, 2 layers: a scale per output of k and v (32 each) and per input of fc2 (64): 2 × 128
    assert record["status"] == "ok" and record["trainable_params"] == 256 and record["method_label"] == "ia3"
    assert record["training"]["steps"] == 2
    assert run(make_cfg("model=tiny-opt", "method=fixed-v", *common))["status"] == "ok"
    with pytest.raises(BeftError, match="method=ia3 needs a decoder"):   # the entry's kinds
        config.validate(make_cfg("model=tiny-bert", "method=ia3", *common))
    make_tables(tmp_path / "results", REPO / "results" / "paper", tmp_path / "tables", tmp_path / "figures",
                with_figures=False)
    table = (tmp_path / "tables" / "ia3-exp.md").read_text()
    assert "IA3" in table and "b_v" in table
