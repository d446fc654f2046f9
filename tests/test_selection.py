"""Selection scores against hand computations, the probe shared across methods, budgets and their errors."""
import copy

import pytest
import torch

from beft import config
from beft.cache import Cache
from beft.errors import BeftError
from beft.pipeline import run
from beft.selection import SELECTORS, SelectionContext, causal, select
from beft.selection.fisher import fisher_scores
from beft.selection.magnitude import magnitude
from beft.selection.probe import run_probe
from beft.selection.projection import projection_score
from beft.trainable import Scope, apply_scope
from beft.encoder import EncoderWorkload

QUICK = ("model=tiny-bert", "regime.n=32", "trainer.epochs=1")


def test_magnitude_by_hand():
    assert magnitude(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([1.5, -1.0, 0.5])) == pytest.approx(0.5)
    assert magnitude(torch.ones(4), torch.ones(4)) == 0.0


def test_projection_score_by_hand():
    b0 = torch.tensor([3.0, 4.0])                            # |b0| = 5
    assert projection_score(b0, b0.clone()) == (0.0, False)  # untouched: exactly 0
    score, _ = projection_score(b0, torch.tensor([4.0, 3.0]))  # equal norms, rotated: 1 - 24/25
    assert score == pytest.approx(1 / 25)
    score, _ = projection_score(b0, 2 * b0)                  # longer, same direction: 1 - 50/100
    assert score == pytest.approx(0.5)
    score, _ = projection_score(b0, 0.5 * b0)                # shorter: 1 - 12.5/25
    assert score == pytest.approx(0.5)
    score, past_90 = projection_score(b0, torch.tensor([-4.0, 0.0]))  # angle > 90 degrees: 1 + 12/25
    assert past_90 and score == pytest.approx(1 + 12 / 25)
    with pytest.raises(BeftError, match="undefined where the pre-trained bias is zero.*magnitude, fisher or causal"):
        projection_score(torch.zeros(2), b0)


@pytest.fixture
def workload(make_cfg):
    return EncoderWorkload(config.resolve(make_cfg(*QUICK, "task=sst2")))


def test_fisher_equals_an_independent_computation(workload):
    bias_map = workload.bias_map()
    cells = bias_map.cells(["v", "q", "k", "fc1"])
    got = fisher_scores(workload, bias_map, cells, batch_size=8, clip=1.0, seed=0, per_example=False)
    # Independent: the same batches (seeded order), plain autograd, global clipping, mean of squares.
    model, _ = workload.new_model()
    apply_scope(model, bias_map, Scope("all_biases"))
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    sums, n = {c: 0.0 for c in cells}, 0
    for batch in workload.batches(workload.train_set, 8, torch.Generator().manual_seed(0), group_by_length=False):
        model.zero_grad()
        labels = batch.pop("labels")
        torch.nn.functional.cross_entropy(model(**batch).logits, labels).backward()
        for c in cells:  # b_k's true gradient is 0; what autograd returns is round-off
            if c[1] == "k":
                bias_map.param(model, c).grad.zero_()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for c in cells:
            sums[c] += bias_map.param(model, c).grad.pow(2).mean().item()
        n += 1
    assert n == 4
    for c in cells:
        assert got[c] == pytest.approx(sums[c] / n, rel=1e-5), c
    assert all(got[c] == 0.0 for c in cells if c[1] == "k") and all(got[c] > 0 for c in cells if c[1] != "k")


def test_per_example_fisher(workload):
    bias_map = workload.bias_map()
    cells = bias_map.cells(["v", "fc1"])
    one = fisher_scores(workload, bias_map, cells, batch_size=1, clip=None, seed=0, per_example=False)
    per = fisher_scores(workload, bias_map, cells, batch_size=8, clip=1.0, seed=0, per_example=True)
    batch = fisher_scores(workload, bias_map, cells, batch_size=8, clip=None, seed=0, per_example=False)
    for c in cells:
        assert per[c] == pytest.approx(one[c], rel=1e-6)  # per-example = batches of one, unclipped
        assert per[c] > batch[c]                          # E[g^2] > (E g)^2: averaging in a batch cancels


def test_causal_by_hand_and_leaves_the_model_untouched(make_cfg):
    cfg = make_cfg(*QUICK, "task=rte", "method=causal", "method.selection_size=24")
    workload = EncoderWorkload(config.resolve(cfg))
    bias_map = workload.bias_map()
    cells = bias_map.cells()
    probe = run_probe(cfg.method, workload, bias_map, config.resolve(cfg).settings, Cache(None), cells)
    model = probe.model(workload)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ctx = SelectionContext(cfg.method, int(cfg.seed), False, workload, bias_map, cells, probe)
    types = causal.type_scores(ctx)
    cell_scores = causal.scores(ctx)
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)   # no intervention leaks

    # By hand for b_v: separate copies of the model with the biases set, the same selection split.
    data = workload.selection_split(24, 0)
    head = set(bias_map.head_param_names(model))
    def loss_with(values):
        fresh = copy.deepcopy(model)  # an independent copy of the probe model, then set biases by name
        with torch.no_grad():
            for name, value in values.items():
                fresh.get_parameter(name).copy_(value)
        return workload.mean_loss(fresh, data)
    pre = {n: v for n, v in probe.pretrained.items() if n not in head}
    v_fine = {bias_map.param_name(c): probe.bf[c].float() for c in cells if c[1] == "v"}
    v_pre = {bias_map.param_name(c): probe.b0[c].float() for c in cells if c[1] == "v"}
    sufficiency = loss_with(pre) - loss_with({**pre, **v_fine})
    necessity = loss_with(v_pre) - loss_with({})
    assert types["v"] == pytest.approx((sufficiency + necessity) / 2, abs=1e-6)
    assert types["k"] == 0.0 and all(cell_scores[c] == 0.0 for c in cells if c[1] == "k")


@pytest.mark.parametrize("method", ["magnitude", "fisher", "beft"])
def test_k_scores_exactly_zero(make_cfg, method):
    cfg = make_cfg(*QUICK, "task=sst2", f"method={method}")
    workload = EncoderWorkload(config.resolve(cfg))
    selection, _ = select(cfg.method, cfg.budget, workload, config.resolve(cfg).settings, Cache(None))
    assert selection.type_scores["k"] == 0.0
    assert all(selection.cell_scores[c] == 0.0 for c in selection.cell_scores if c[1] == "k")
    assert {"q", "k", "v"} <= set(selection.ranking) and selection.ranking[-1] == "k"


def test_one_shared_probe_and_a_complete_record(make_cfg, tmp_path):
    cache = f"cache_dir={tmp_path / 'cache'}"
    records = {m: run(make_cfg(*QUICK, "task=sst2", f"method={m}", cache)) for m in SELECTORS}
    probes = {m: r["selection"]["probe"] for m, r in records.items()}
    assert probes["fisher"] is None and probes["random"] is None
    assert probes["beft"]["reused"] is False
    assert probes["magnitude"]["reused"] and probes["causal"]["reused"]
    assert len({probes[m]["key"] for m in ("beft", "magnitude", "causal")}) == 1
    bitfit = run(make_cfg(*QUICK, "task=sst2", "method=bitfit", cache))
    assert bitfit["training"]["reused"] and bitfit["training"]["key"] == probes["beft"]["key"]
    for method, record in records.items():
        sel = record["selection"]
        assert sel["method"] == method and set(sel["ranking"]) == set(sel["scores"]) == set(sel["type_scores"])
        assert all(len(v) == 2 for v in sel["scores"].values())  # tiny-bert: 2 layers
        assert sel["chosen_types"] == [sel["ranking"][0]] and len(sel["targets"]) == 2
        run_dir = tmp_path / "runs" / record["run_id"]
        assert (run_dir / "heatmap.png").exists()
        assert len((run_dir / "scores.csv").read_text().splitlines()) == 1 + 2 * 8


def test_budgets(make_cfg):
    cfg = make_cfg(*QUICK, "task=sst2", "method=magnitude", "budget=params", "budget.max_params=100")
    workload = EncoderWorkload(config.resolve(cfg))
    settings = config.resolve(cfg).settings
    selection, bias_map = select(cfg.method, cfg.budget, workload, settings, Cache(None))
    # tiny-bert: every bias is 32 wide except fc1 (64); 100 fits three 32-wide cells, the best three.
    assert sum(bias_map.size(c) for c in selection.targets) <= 100
    best = sorted((c for c in selection.cell_scores if bias_map.size(c) <= 100),
                  key=lambda c: -selection.cell_scores[c])
    assert set(selection.targets) <= set(best[:4]) and len(selection.targets) >= 2
    cfg = make_cfg(*QUICK, "task=sst2", "method=magnitude", "budget=types", "budget.k=3")
    selection, _ = select(cfg.method, cfg.budget, workload, settings, Cache(None))
    assert {t for _, t in selection.targets} == set(selection.ranking[:3])


@pytest.mark.parametrize("overrides,needle", [
    (("budget=params", "budget.max_params=10"), "smaller than one bias vector (32 parameters"),
    (("method.probe.fraction=1.5",), "must be in (0, 1]"),
    (("method.probe.fraction=0",), "must be in (0, 1]"),
    (("budget=types", "budget.k=9"), "from 1 to 8"),
    (("budget.name=most",), "unknown budget 'most'; valid: one_type"),
])
def test_bad_budgets_and_probes(make_cfg, overrides, needle):
    cfg = make_cfg(*QUICK, "task=sst2", "method=beft", *overrides)
    with pytest.raises(BeftError) as err:   # from the config's checks, or (what they cannot see) the selection
        spec = config.resolve(cfg)
        select(cfg.method, cfg.budget, EncoderWorkload(spec), spec.settings, Cache(None))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_budget_on_the_command_line():
    with pytest.raises(BeftError, match="unknown budget 'all'; valid: one_type, params, types"):
        config.check_overrides(["budget=all"])


def test_shortened_probe_from_the_full_probe_equals_a_shortened_training(make_cfg, tmp_path):
    """A probe stopped at 25 % of its steps, trained on its own, and the full probe's snapshot at that step:
    the same biases to the last bit (constant lr, same batches), so the snapshot is used when it exists."""
    cfg = make_cfg("model=tiny-bert", "regime.n=64", "trainer.epochs=2", "method=magnitude",
                   "method.probe.fraction=0.25")
    workload = EncoderWorkload(config.resolve(cfg))
    bias_map = workload.bias_map()
    settings = config.resolve(cfg).settings
    trained = run_probe(cfg.method, workload, bias_map, settings, Cache(str(tmp_path / "a")), bias_map.cells())
    assert trained.fit.steps == 2 and not trained.fit.reused  # 8 steps in all (64 / 16 x 2 epochs)

    full_cache = Cache(str(tmp_path / "b"))
    full_cfg = make_cfg("model=tiny-bert", "regime.n=64", "trainer.epochs=2", "method=magnitude")
    full = run_probe(full_cfg.method, workload, bias_map, settings, full_cache, bias_map.cells())
    assert full.fit.steps == 8 and sorted(full.fit.snapshots) == [1, 2, 4]  # 10, 25, 50 % of 8 steps
    snap = run_probe(cfg.method, workload, bias_map, settings, full_cache, bias_map.cells())
    assert snap.fit.steps == 2 and snap.fit.reused and "full probe" in snap.fit.notes[0]
    assert trained.fit.state.keys() == snap.fit.state.keys()
    for name, value in trained.fit.state.items():
        assert torch.equal(value, snap.fit.state[name]), name
    assert not torch.equal(full.fit.state[bias_map.param_name((0, "v"))], snap.fit.state[bias_map.param_name((0, "v"))])
