"""results/README.md is generated from the records: the same records give the same bytes, what is unmeasured is
listed with the command that runs it, and arms that kept their predictions are paired over examples (McNemar)."""
import json
import shutil
import subprocess
import sys

import pytest
from scipy.stats import binomtest

from beft.pipeline import run
from beft.report import make_tables
from conftest import REPO

PAPER = REPO / "results" / "paper"


def _issue2(tmp_path):
    """The committed issue2 records (4 runs of `experiment=issue2`, b_v / b_q / b_k / all biases on SST-2)."""
    shutil.copytree(REPO / "results" / "runs" / "issue2", tmp_path / "runs" / "issue2")
    return tmp_path / "runs"


def _build(runs, out, figures=True):
    return make_tables(runs, PAPER, out / "tables", out / "figures", with_figures=figures,
                       readme_path=out / "README.md")


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_report_is_the_same_bytes_from_the_same_records(tmp_path):
    runs = _issue2(tmp_path)
    first = _build(runs, tmp_path / "a")
    _build(runs, tmp_path / "b")
    assert first.readme == tmp_path / "a" / "README.md"
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    text = first.readme.read_text()
    assert "## issue2" in text and "What ran: 4 ok runs of 1 model(s) (minilm) × 1 task(s) (sst2) × 4 arm(s)" in text
    assert "| minilm | sst2 | low (1,000) | acc. | 71.67 (1) |" in text             # the main table, inlined
    assert "#### Paired comparisons" in text and "### Cost" in text
    figure = "figures/issue2_bars_minilm.png"
    assert f"]({figure})" in text and (tmp_path / "a" / figure).is_file()          # links work from the report
    assert "Nothing: every job of `experiment=issue2` has an ok record." in text
    assert "| table1 | 216 | `python run.py -m experiment=table1` |" in text       # configs with no records yet


def test_jobs_without_an_ok_record_are_listed_with_the_command(tmp_path):
    runs = _issue2(tmp_path)
    for folder in (runs / "issue2").glob("*-fixed-k-*"):
        shutil.rmtree(folder)
    text = _build(runs, tmp_path / "out", figures=False).readme.read_text()
    assert "1 job(s) of the experiment config(s) have no ok record" in text
    assert "- `python run.py -m experiment=issue2`: 1 job(s)" in text
    assert "| issue2 | minilm | sst2 | low | b_k | 0 |" in text
    assert "| [issue2](#issue2) |" in text and "| 3 | 0 | 1 |" in text


def test_arms_with_predictions_are_paired_over_examples(make_cfg, tmp_path):
    out = tmp_path / "runs" / "demo"
    records = {arm: run(make_cfg("model=tiny-bert", "task=sst2", "regime.n=16", "trainer.epochs=1",
                                 f"method={arm}", f"out_dir={out}"))
               for arm in ("fixed-v", "fixed-q")}
    correct = {}
    for arm, record in records.items():
        lines = (out / record["run_id"] / "predictions.jsonl").read_text().splitlines()
        correct[arm] = [json.loads(line)["correct"] for line in lines]
    v_only = sum(a and not b for a, b in zip(correct["fixed-v"], correct["fixed-q"]))
    q_only = sum(b and not a for a, b in zip(correct["fixed-v"], correct["fixed-q"]))
    expected = 1.0 if v_only + q_only == 0 else binomtest(v_only, v_only + q_only, 0.5).pvalue
    report = _build(tmp_path / "runs", tmp_path / "out", figures=False)
    table = (tmp_path / "out" / "tables" / "demo_examples.csv").read_text().splitlines()
    header, row = table[0].split(","), dict(zip(table[0].split(","), table[1].split(",")))
    assert len(table) == 2 and "p" in header
    assert (int(row["first_only"]), int(row["second_only"]), int(row["examples"])) == (v_only, q_only,
                                                                                         len(correct["fixed-v"]))
    assert float(row["p"]) == pytest.approx(expected, rel=1e-5)
    assert "Paired over examples" in (tmp_path / "out" / "tables" / "demo_paired.md").read_text()
    assert "#### Paired over examples" in report.readme.read_text()
    # An edited predictions file: the pair falls back to seeds only.
    path = out / records["fixed-q"]["run_id"] / "predictions.jsonl"
    path.write_text(path.read_text().replace('"correct": false', '"correct": true'))
    _build(tmp_path / "runs", tmp_path / "again", figures=False)
    assert not (tmp_path / "again" / "tables" / "demo_examples.csv").exists()
    assert (tmp_path / "again" / "tables" / "demo_paired.csv").exists()


@pytest.mark.slow
def test_make_tables_on_the_committed_records_changes_nothing(tmp_path):
    """`make tables` on the committed records writes exactly the committed tables, figures and report."""
    out = tmp_path / "results"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_tables.py"), "--tables", str(out / "tables"),
                    "--figures", str(out / "figures"), "--readme", str(out / "README.md")], check=True, cwd=REPO)
    committed = REPO / "results"
    for folder in ("tables", "figures"):
        ours, theirs = _tree(out / folder), _tree(committed / folder)
        assert sorted(ours) == sorted(theirs)
        assert [name for name in ours if ours[name] != theirs[name]] == []
    assert (out / "README.md").read_text() == (committed / "README.md").read_text()


def test_jobs_that_differ_only_in_a_setting_are_cells_of_their_own():
    """experiment=why-bv sweeps model.attention_dropout (the checkpoint's, and off): 120 jobs over 60 model × task ×
    method × seed cells, told apart by their variant as the store tells records apart, so one variant's records never count the
    other variant's jobs as measured."""
    from beft.report import jobs

    cells = jobs.job_cells("why-bv")
    plain = {(c["model"], c["task"], c["arm"], c["seed"]) for c in cells}
    assert len(cells) == 120 and len(plain) == 60
    for model in ("minilm", "mpnet-base"):   # the variant covers model, task, regime and trainer: two per task here
        for task in ("sst2", "wic", "cb", "rte", "cola"):
            assert len({c["variant"] for c in cells if (c["model"], c["task"]) == (model, task)}) == 2
    assert len({tuple(sorted(c.items())) for c in cells}) == 120
