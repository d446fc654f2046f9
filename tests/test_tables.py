"""`make tables` on synthetic records: aggregation, the paper's numbers and "—", paired statistics, corrupt
and temp files, failed runs, determinism, and the figures."""
import logging

import numpy as np
import pytest

from beft.report import stats
from beft.report import make_tables
from beft.report.store import read_store
from conftest import REPO
from synthetic import realistic_store, record, rekey, write

PAPER = REPO / "results" / "paper"


def build(tmp_path, **kwargs):
    return make_tables(tmp_path / "runs", PAPER, tmp_path / "tables", tmp_path / "figures", **kwargs)


def table1_store(root):
    for seed, (v, q, k) in enumerate([(0.85, 0.80, 0.78), (0.86, 0.82, 0.77), (0.84, 0.81, 0.79)]):
        for arm, value in (("fixed-v", v), ("fixed-q", q), ("fixed-k", k)):
            write(root, "table1", record("bert-base-cased", "sst2", arm, seed, value))
            write(root, "table1", record("bert-base-cased", "rte", arm, seed, value - 0.25))


def test_mean_std_n_and_the_papers_number_beside_ours(tmp_path):
    table1_store(tmp_path / "runs")
    build(tmp_path, with_figures=False)
    md = (tmp_path / "tables" / "table1.md").read_text()
    sst2 = next(line for line in md.splitlines() if "| sst2 |" in line)
    rte = next(line for line in md.splitlines() if "| rte |" in line)
    # b_v on SST-2: mean 85.00, std 1.00 over 3 seeds; the notebook's 85.78 beside it with its tag
    assert "| 85.00 ± 1.00 (3) | 85.78 [NB] |" in sst2
    assert "80.05 [NB]" in sst2 and "77.18 [NB]" in sst2
    assert "| 60.00 ± 1.00 (3) | — |" in rte and "[NB]" not in rte  # no paper number for RTE: "—", never invented
    assert "tutorial.ipynb" in md                                    # the source is named
    assert "Unplaced, unverified [3P]: rte low accuracy 58.53" in md  # third-party: listed, not placed in a cell
    header = md.splitlines()[2]
    assert header.index("b_v") < header.index("b_q") < header.index("b_k")
    csv = (tmp_path / "tables" / "table1.csv").read_text()
    assert "fixed-v" in csv and "85.784" in csv
    tex = (tmp_path / "tables" / "table1.tex").read_text()
    assert r"$\mathbf{b}_{v}$" in tex and r"85.00 $\pm$ 1.00 (3)" in tex and "--" in tex


def test_paired_comparison_says_how_sure_it_is(tmp_path):
    table1_store(tmp_path / "runs")
    build(tmp_path, with_figures=False)
    paired = (tmp_path / "tables" / "table1_paired.md").read_text()
    line = next(x for x in paired.splitlines() if "| sst2 |" in x and "b_v − b_q" in x)
    # differences 5, 4, 3 points: mean +4.00, every seed a win, and 3 seeds give at best p = 2/8
    assert "| 3 | +4.00 |" in line and "3–0–0" in line and "0.250" in line
    assert "smallest possible p is 2/2^n" in paired


def test_paired_statistics():
    assert stats.sign_flip_p(np.array([1.0, 2.0, 3.0])) == pytest.approx(0.25)
    assert stats.sign_flip_p(np.array([1.0, -1.0])) == pytest.approx(1.0)
    assert stats.sign_flip_p(np.ones(5)) == pytest.approx(2 / 32)
    result = stats.paired([0.9, 0.8, 0.7, 0.6], [0.8, 0.8, 0.75, 0.5])
    assert (result["wins"], result["ties"], result["losses"]) == (2, 1, 1)
    assert result["diff"] == pytest.approx(0.0375)
    assert result["ci_low"] <= result["diff"] <= result["ci_high"]
    assert stats.bootstrap_ci(np.array([0.02, 0.02, 0.02])) == pytest.approx((0.02, 0.02))
    assert np.isnan(stats.paired([0.5], [0.4])["ci_low"])  # one pair: no interval


def test_corrupt_and_temp_files_are_skipped_with_a_warning(tmp_path, caplog):
    runs = tmp_path / "runs"
    table1_store(runs)
    torn = runs / "table1" / "torn-run" / "result.json"
    torn.parent.mkdir()
    torn.write_text('{"key": "abc", "status": "ok", "metr')
    (runs / "table1" / "torn-run" / ".result.json.x1y2.tmp").write_text("{")  # a write that never finished
    no_metrics = record("bert-base-cased", "sst2", "fixed-v", 7, 0.5)
    del no_metrics["metrics"]
    write(runs, "table1", no_metrics)
    with caplog.at_level(logging.WARNING, logger="beft"):
        report = build(tmp_path, with_figures=False)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "torn-run/result.json" in warned and "s7" in warned
    assert ".tmp" not in warned                                   # temp files are never even read
    # The torn file is not a record; the ok record without metrics is one that does not check out.
    assert len(report.store.skipped) == 1 and len(report.store.untrusted) == 1 and len(report.store.runs) == 18
    summary = (tmp_path / "tables" / "summary.md").read_text()
    assert "torn-run/result.json" in summary and "| table1 | 18 | 0 |" in summary
    assert "no finite metrics.main.value" in summary


def test_failed_runs_are_counted_not_tabled(tmp_path):
    table1_store(tmp_path / "runs")
    write(tmp_path / "runs", "table1", record("bert-base-cased", "sst2", "fixed-v", 3, 0.0, status="failed"))
    build(tmp_path, with_figures=False)
    assert "| 85.00 ± 1.00 (3) |" in (tmp_path / "tables" / "table1.md").read_text()  # still 3 seeds
    summary = (tmp_path / "tables" / "summary.md").read_text()
    assert "| table1 | 18 | 1 |" in summary and "synthetic failure" in summary


def test_same_records_give_identical_tables(tmp_path):
    realistic_store(tmp_path / "runs", seeds=(0, 1, 2), tasks=("sst2", "rte"))
    table1_store(tmp_path / "runs")
    first = make_tables(tmp_path / "runs", PAPER, tmp_path / "a", tmp_path / "fa", with_figures=False)
    make_tables(tmp_path / "runs", PAPER, tmp_path / "b", tmp_path / "fb", with_figures=False)
    names = sorted(p.name for p in first.tables)
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir() if not p.name.startswith("."))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_selection_tables_and_figures(tmp_path):
    realistic_store(tmp_path / "runs", seeds=(0, 1, 2), tasks=("sst2", "rte"), layers=4)
    report = build(tmp_path)
    names = {p.name for p in report.figures}
    assert {"selection_heatmap_bert-base-cased_sst2_low.png", "selection_heatmap_bert-base-cased_rte_low.png",
            "selection_bars_bert-base-cased.png", "selection_score_vs_accuracy.png",
            "selection_agreement.png"} <= names
    assert all(p.stat().st_size > 10_000 for p in report.figures)
    selection = (tmp_path / "tables" / "selection_selection.md").read_text()
    assert "beft (select) | b_v ×3" in selection          # the synthetic beft scores always rank b_v first
    fig1 = (tmp_path / "tables" / "fig1_scores.md").read_text()
    assert "0.350 [NB]" in fig1 and "(3)" in fig1       # the notebook's Avg. beside our mean over 3 seeds
    # A second call replaces what the first wrote, and nothing else.
    (tmp_path / "figures" / "mine.png").write_bytes(b"not generated")
    make_tables(tmp_path / "runs2", PAPER, tmp_path / "tables", tmp_path / "figures")
    assert [p.name for p in (tmp_path / "figures").glob("*.png")] == ["mine.png"]


def test_a_pick_is_judged_against_every_type_measured_for_its_seed(tmp_path):
    """fisher's pick (ln2) was never trained as a fixed run, but its own run measures it: it beats b_v / b_q /
    b_k, so fisher picked the best type and beft (b_v) did not."""
    from beft.bias_map import TYPES

    def top(kind):
        return {t: [1.0 if t == kind else 0.1] * 4 for t in TYPES}

    for seed in (0, 1):
        for arm, value in (("fixed-v", 0.80), ("fixed-q", 0.70), ("fixed-k", 0.60)):
            write(tmp_path / "runs", "exp", record("minilm", "sst2", arm, seed, value))
        write(tmp_path / "runs", "exp", record("minilm", "sst2", "beft", seed, 0.80, scores=top("v"), layers=4))
        write(tmp_path / "runs", "exp", record("minilm", "sst2", "fisher", seed, 0.85, scores=top("ln2"), layers=4))
    build(tmp_path, with_figures=False)
    md = (tmp_path / "tables" / "exp_selection.md").read_text()
    assert "| beft (select) | b_v ×2 | 80.00 ± 0.00 (2) | 0/2 | 0.00 |" in md
    assert "| fisher (select) | b_LN2 ×2 | 85.00 ± 0.00 (2) | 2/2 | -5.00 |" in md


def test_totals_pool_every_row_and_seed(tmp_path):
    """b_v wins all 3 SST-2 seeds against b_q and loses / ties the 2 RTE seeds; pooled: 3-1-1 over 2 rows.
    fisher's pick beats every measured type in all 5 cases, beft's never does."""
    from beft.bias_map import TYPES

    def top(kind):
        return {t: [1.0 if t == kind else 0.1] * 4 for t in TYPES}

    cases = [("sst2", 0, 0.80, 0.70), ("sst2", 1, 0.81, 0.72), ("sst2", 2, 0.79, 0.75),
             ("rte", 0, 0.50, 0.55), ("rte", 1, 0.52, 0.52)]
    for task, seed, v, q in cases:
        write(tmp_path / "runs", "exp", record("minilm", task, "fixed-v", seed, v))
        write(tmp_path / "runs", "exp", record("minilm", task, "fixed-q", seed, q))
        write(tmp_path / "runs", "exp", record("minilm", task, "beft", seed, v, scores=top("v"), layers=4))
        write(tmp_path / "runs", "exp", record("minilm", task, "fisher", seed, 0.9, scores=top("ln2"), layers=4))
    build(tmp_path, with_figures=False)
    md = (tmp_path / "tables" / "exp_totals.md").read_text()
    assert "| b_v vs b_q | 2 | 5 | 3–1–1 |" in md
    assert "| beft (select): picked the best measured type | 2 | 5 | 0/5 |" in md
    assert "| fisher (select): picked the best measured type | 2 | 5 | 5/5 |" in md
    assert "## Across rows" in (tmp_path / "tables" / "exp.md").read_text()


def test_table2_has_parameter_counts(tmp_path):
    for seed in (0, 1):
        write(tmp_path / "runs", "table2", record("bert-base-cased", "rte", "fixed-v", seed, 0.6, trainable=11522))
        write(tmp_path / "runs", "table2", record("bert-base-cased", "rte", "full", seed, 0.65,
                                                  trainable=108_311_810))
    build(tmp_path, with_figures=False)
    md = (tmp_path / "tables" / "table2.md").read_text()
    assert "| b_v | 11,522 | 0.0106 | 60.00 ± 0.00 (2) | — |" in md
    assert "| full FT | 108,311,810 | 100.0000 |" in md


def test_table4_puts_each_bias_beside_its_structured_updates_with_counts(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        for t, direct, lora in (("v", 0.80, 0.78), ("q", 0.75, 0.74), ("k", 0.60, 0.60)):
            write(runs, "table4", record("minilm", "sst2", f"fixed-{t}", seed, direct + seed / 100, trainable=3458))
            write(runs, "table4", record("minilm", "sst2", f"lora_bias-{t}", seed, lora, trainable=3074))
        write(runs, "table4", record("minilm", "sst2", "vera_bias-v", seed, 0.7, trainable=1346))
        write(runs, "table4", record("minilm", "sst2", "vera1d_bias-v-authors", seed, 0.65, trainable=1160))
    build(tmp_path, with_figures=False)
    md = (tmp_path / "tables" / "table4.md").read_text()
    assert ("| model | task | regime | bias | trained directly | params | LoRA | LoRA params | VeRA | VeRA params "
            "| VeRA1D (authors' form) | VeRA1D (authors' form) params |") in md
    assert "| minilm | sst2 | low (1,000) | b_v | 81.00 ± 1.00 (3) | 3,458 | 78.00 ± 0.00 (3) | 3,074 | 70.00" in md
    assert "| minilm | sst2 | low (1,000) | b_k | 61.00 ± 1.00 (3) | 3,458 | 60.00 ± 0.00 (3) | 3,074 | — | — | — |" in md
    # each update is paired with its own bias trained directly, not with b_v
    assert "| b_q − LoRA on b_q | 3 |" in md and "b_v − LoRA on b_q" not in md
    assert "| b_v − VeRA1D on b_v (authors' form) | 3 |" in md


def test_runs_with_other_settings_are_kept_apart(tmp_path):
    for seed in (0, 1):
        write(tmp_path / "runs", "exp", record("minilm", "sst2", "fixed-v", seed, 0.8))
        write(tmp_path / "runs", "exp", record("minilm", "sst2", "fixed-v", seed, 0.7, epochs=3))
    build(tmp_path, with_figures=False)
    md = (tmp_path / "tables" / "exp.md").read_text()
    assert "setting" in md.splitlines()[2]
    assert "80.00 ± 0.00 (2)" in md and "70.00 ± 0.00 (2)" in md  # two rows, never one mixed cell
    rows = {line.split(" | ")[3]: line for line in md.splitlines() if "| sst2 |" in line and "| acc. |" in line}
    assert "80.00" in rows["trainer.epochs=null"] and "70.00" in rows["trainer.epochs=3"]   # named, as overrides


def _setting(rec: dict, **changes) -> dict:
    """The record with changed model / trainer fields ({"model.attention_dropout": 0.0}), rekeyed."""
    for field, value in changes.items():
        section, name = field.split("__")
        rec["config"][section][name] = value
    return rekey(rec)


def test_why_bv_rows_dropout_and_sgd_at_each_arms_own_lr_are_paired_per_seed(tmp_path):
    """experiment=why-bv's layout: b_v against b_o with attention dropout on and off (rows apart, each named), and
    plain SGD at each arm's own tuned lr (one row: the arms are compared); an lr search keeps a row per lr."""
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        for arm, base in (("fixed-v", 0.70), ("fixed-o", 0.72)):
            write(runs, "exp", record("minilm", "sst2", arm, seed, base + seed / 100))
            write(runs, "exp", _setting(record("minilm", "sst2", arm, seed, base + 0.05 + seed / 100),
                                        model__attention_dropout=0.0))
            lr = {"fixed-v": 1.0, "fixed-o": 0.3}[arm]
            write(runs, "exp", _setting(record("minilm", "sst2", arm, seed, base + 0.10 + seed / 50),
                                        trainer__optimizer="sgd", trainer__lr=lr))
            write(runs, "exp", record("minilm", "rte", arm, seed, base - 0.2))   # a task with one setting so far
    for lr, value in ((0.1, 0.6), (1.0, 0.65)):   # an lr search: one arm, several lrs, seed 0 only
        write(runs, "search", _setting(record("minilm", "sst2", "fixed-v", 0, value), trainer__optimizer="sgd",
                                       trainer__lr=lr))
    build(tmp_path, with_figures=True)
    md = (tmp_path / "tables" / "exp.md").read_text()
    rows = {line.split(" | ")[3]: line for line in md.splitlines() if "| sst2 |" in line and "| acc. |" in line}
    assert sorted(rows) == ["model.attention_dropout=0.0, trainer.optimizer=adamw, trainer.lr=null",
                            "model.attention_dropout=null, trainer.optimizer=adamw, trainer.lr=null",
                            "model.attention_dropout=null, trainer.optimizer=sgd, trainer.lr per arm: b_m1 0.3, "
                            "b_v 1.0"]
    assert "| 71.00 ± 1.00 (3) | 73.00 ± 1.00 (3) |" in rows["model.attention_dropout=null, trainer.optimizer="
                                                              "adamw, trainer.lr=null"]   # never mixed
    # RTE ran one setting: its row still says which, by the axes SST-2's rows are named by
    rte = next(line for line in md.splitlines() if "| rte |" in line and "| acc. |" in line)
    assert rte.split(" | ")[3] == "model.attention_dropout=null, trainer.optimizer=adamw, trainer.lr=null"
    paired = (tmp_path / "tables" / "exp_paired.md").read_text()
    sgd = next(line for line in paired.splitlines() if "per arm" in line)
    assert "| b_v − b_m1 | 3 | -2.00 | 0: -2.00 1: -2.00 2: -2.00 |" in sgd and "0–0–3" in sgd
    assert sum("| b_v − b_m1 |" in line for line in paired.splitlines()) == 4
    from beft.report.figures import _setting_tick   # the bars' tick: one override a line, without its section
    tick = _setting_tick(sgd.split(" | ")[3])
    assert tick == "\nattention_dropout=null\noptimizer=sgd\nlr per arm: b_m1 0.3\nb_v 1.0"
    assert (tmp_path / "figures" / "exp_bars_minilm.png").exists()
    search = (tmp_path / "tables" / "search.md").read_text()
    assert "trainer.lr=0.1 | acc. | 60.00 (1)" in search and "trainer.lr=1.0 | acc. | 65.00 (1)" in search


def test_fields_the_key_ignores_never_split_a_cell(tmp_path):
    """An encoder record written before task configs had a prompted form (task.decoder), or on another device,
    is the same setting: one cell, not two rows."""
    for seed in (0, 1):
        old = record("minilm", "sst2", "fixed-v", seed, 0.8)
        new = record("minilm", "sst2", "fixed-v", seed + 2, 0.7)
        new["config"]["task"]["decoder"] = {"template": "sst2", "lr": 1e-3}
        new["config"]["trainer"]["device"] = "cuda"
        write(tmp_path / "runs", "exp", old)
        write(tmp_path / "runs", "exp", new)
    # a failed run in another setting is in no table: it names no rows either
    write(tmp_path / "runs", "exp", record("minilm", "sst2", "fixed-v", 0, 0.5, epochs=3, status="failed"))
    build(tmp_path, with_figures=False)
    md = (tmp_path / "tables" / "exp.md").read_text()
    assert "75.00 ± 5.77 (4)" in md and "setting" not in md.splitlines()[2]


def test_arm_matches_the_run_id_label(make_cfg):
    from omegaconf import OmegaConf

    from beft.pipeline import method_label, run_id
    from beft.record import legacy_keys
    from beft.report.store import arm_of

    for overrides in (["method=fixed-v"], ["method=fixed", "method.terms=[q,v]"], ["method=rand_uniform-bitfit"],
                      ["method=beft", "budget=types"], ["method=head"], ["regime.n=40", "method=bitfit"],
                      ["method=lora_bias", "method.terms=[v,q]"], ["method=dora_bias", "method.authors=true"]):
        config = OmegaConf.to_container(make_cfg("model=tiny-bert", *overrides), resolve=True)
        key = legacy_keys(config)[0]
        rec = {"key": key, "run_id": run_id(config, key), "config": config}
        assert arm_of(rec) == method_label(config), overrides


def test_cost_table_reads_each_runs_wall_time(tmp_path):
    runs = tmp_path / "runs"
    for seed, seconds in enumerate([60.0, 120.0, 600.0]):
        write(runs, "local", record("minilm", "sst2", "fixed-v", seed, 0.8, seconds=seconds))
    untimed = record("minilm", "sst2", "fixed-q", 0, 0.7)
    del untimed["timing"]                      # an old record without timing: counted, not timed
    write(runs, "local", untimed)
    write(runs, "local", record("minilm", "sst2", "fixed-k", 0, 0.6, seconds=1800.0))
    write(runs, "local", record("minilm", "sst2", "fixed-k", 1, 0.6, status="failed"))   # failed: not counted
    build(tmp_path, with_figures=False)
    lines = (tmp_path / "tables" / "local_cost.md").read_text().splitlines()
    # b_v: 1, 2 and 10 minutes -> median 2.0, range 1.0-10.0, 13 minutes = 0.22 h
    assert "| minilm | sst2 | b_v | 3 | 2.0 | 1.0–10.0 | 0.22 |" in lines
    assert "| minilm | sst2 | b_q | 1 (0 timed) | — | — | — |" in lines
    assert "| minilm | sst2 | b_k | 1 | 30.0 | — | 0.50 |" in lines
    assert "| all |  |  | 5 (4 timed) |  |  | 0.72 |" in lines
