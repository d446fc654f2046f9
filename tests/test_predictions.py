"""Every run keeps its per-example predictions (predictions.jsonl, named in the record with its sha256 and count);
scored again they give the record's metrics exactly; an edited file is ignored, and older records stay valid."""
import hashlib
import json
import logging
import shutil

import pytest

from beft import predictions
from beft.decoder.workload import choice_metrics, generation_metrics
from beft.evaluate import score_rows
from beft.pipeline import done_record, run
from beft.record_check import distrust, trusted_predictions
from beft.report.store import read_store
from conftest import REPO

QUICK = ("regime.n=16", "trainer.epochs=1", "method=fixed-v")


def _stsb(root):
    """A small STS-B in the GLUE layout (not among the fixtures of tests/data): scores spread over 0-5."""
    (root / "STS-B").mkdir(parents=True)
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    for name, n in (("train.tsv", 24), ("dev.tsv", 12)):
        rows = [f"{i}\tmain\tf\t2012\t{i}\ts\ts\ta man plays {'guitar ' * (i % 4)}\tsomeone plays music {i}\t"
                f"{(i * 7 % 26) / 5:.1f}\n" for i in range(n)]
        (root / "STS-B" / name).write_text(header + "".join(rows))
    return root


def _rows_of(record, run_dir):
    rows = trusted_predictions(record, run_dir)
    assert rows is not None
    return predictions.by_split(rows)


def _check_file(record, run_dir):
    field = record["predictions"]
    data = (run_dir / field["file"]).read_bytes()
    assert field["file"] == "predictions.jsonl" and field["sha256"] == hashlib.sha256(data).hexdigest()
    n_eval = sum(record["n_eval"].values())
    assert field["count"] == n_eval == len(data.splitlines()) > 0
    return _rows_of(record, run_dir)


@pytest.mark.parametrize("task,kind", [("sst2", "classification"), ("stsb", "regression")])
def test_encoder_predictions_reproduce_the_metrics(make_cfg, tmp_path, task, kind):
    extra = (f"data_dir={_stsb(tmp_path / 'data')}",) if task == "stsb" else ()
    cfg = make_cfg("model=tiny-bert", f"task={task}", *QUICK, *extra)
    record = run(cfg)
    run_dir = tmp_path / "runs" / record["run_id"]
    by_split = _check_file(record, run_dir)
    regression = kind == "regression"
    rescored = {f"{split}/{name}": value for split, rows in by_split.items()
                for name, value in score_rows(rows, list(cfg.task.metrics), regression).items()}
    assert rescored == record["metrics"]["final"]                 # exactly: the file is what the metric was made of
    first = by_split["validation"][0]
    assert first["index"] == 0 and "gold" in first and "prediction" in first
    if regression:
        assert isinstance(first["prediction"], float) and "correct" not in first
    else:
        assert len(first["scores"]) == 2 and first["prediction"] == max(range(2), key=first["scores"].__getitem__)
        assert first["correct"] == (first["prediction"] == first["gold"])


@pytest.mark.parametrize("task", ["copa", "squad"])
def test_decoder_predictions_reproduce_the_metrics(make_cfg, tmp_path, task):
    cfg = make_cfg("model=tiny-opt", f"task={task}", *QUICK)
    record = run(cfg)
    by_split = _check_file(record, tmp_path / "runs" / record["run_id"])
    rows = by_split["validation"]
    if task == "copa":
        rescored = choice_metrics(rows)
        assert all(len(r["scores"]) == 2 and r["gold"] in ([0], [1]) for r in rows)
    else:
        rescored = generation_metrics(rows, ["f1", "em"])
        assert all(isinstance(r["prediction"], str) and r["gold"] for r in rows)
    final = record["metrics"]["final"]
    assert {f"validation/{k}": v for k, v in rescored.items()} == {k: final[k] for k in final
                                                                     if k.startswith("validation/")}


def test_a_cached_training_still_writes_its_predictions(make_cfg, tmp_path):
    cache = f"cache_dir={tmp_path / 'cache'}"
    first = run(make_cfg("model=tiny-bert", "task=sst2", *QUICK, cache))
    again = run(make_cfg("model=tiny-bert", "task=sst2", *QUICK, cache, "force=record"))
    assert again["training"]["reused"] and not first["training"]["reused"]
    assert again["predictions"] == first["predictions"]            # the cache entry carried them
    assert (tmp_path / "runs" / again["run_id"] / "predictions.jsonl").is_file()


def test_an_edited_predictions_file_is_ignored_and_the_record_stands(make_cfg, tmp_path, caplog):
    cfg = make_cfg("model=tiny-bert", "task=sst2", *QUICK)
    record = run(cfg)
    run_dir = tmp_path / "runs" / record["run_id"]
    path = run_dir / "predictions.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    row["prediction"] = 1 - row["prediction"]                       # one example's answer changed
    path.write_text("\n".join([json.dumps(row, sort_keys=True)] + lines[1:]) + "\n")
    with caplog.at_level(logging.WARNING, logger="beft"):
        assert trusted_predictions(record, run_dir) is None
    assert "does not have the sha256" in caplog.text
    path.write_text("\n".join(lines[1:]) + "\n")                   # one example dropped: the hash says so too
    assert trusted_predictions(record, run_dir) is None
    assert distrust(record, run_dir.name) is None                  # the record itself is still trusted
    assert done_record(json.loads((run_dir / "result.json").read_text())["config"], record["key"],
                       record["fingerprint"]) is not None
    store = read_store(tmp_path / "runs")
    assert len(store.runs) == 1 and store.predictions == {}       # the report pairs nothing on edited files
    path.unlink()
    assert trusted_predictions(record, run_dir) is None


def test_an_older_record_without_predictions_still_loads(tmp_path, caplog):
    source = sorted((REPO / "results" / "runs" / "local").glob("*/result.json"))[0]
    target = tmp_path / "runs" / "local" / source.parent.name
    shutil.copytree(source.parent, target)
    record = json.loads((target / "result.json").read_text())
    assert "predictions" not in record
    with caplog.at_level(logging.WARNING, logger="beft"):
        assert trusted_predictions(record, target) is None
    assert caplog.text == ""                                        # nothing to check, nothing to warn about
    store = read_store(tmp_path / "runs")
    assert len(store.runs) == 1 and not store.untrusted and store.predictions == {}


def test_a_cache_entry_from_before_predictions_still_serves_and_says_so(make_cfg, tmp_path):
    import safetensors.torch

    from beft.cache import Cache, _statement

    cache_dir = tmp_path / "cache"
    first = run(make_cfg("model=tiny-bert", "task=sst2", *QUICK, f"cache_dir={cache_dir}"))
    [entry_path] = (cache_dir / "fits").glob("*.safetensors")
    data = entry_path.read_bytes()
    statement = _statement(data)
    del statement["entry"]["predictions"]                           # as beft wrote entries before it kept them
    Cache(cache_dir).put("fits", statement["key"], statement["determined_by"], statement["entry"],
                         safetensors.torch.load(data))
    again = run(make_cfg("model=tiny-bert", "task=sst2", *QUICK, f"cache_dir={cache_dir}", "force=record"))
    assert again["training"]["reused"] and "predictions" not in again
    assert any("no per-example predictions" in note for note in again["notes"])
    assert again["metrics"]["final"] == first["metrics"]["final"]
    assert not (tmp_path / "runs" / again["run_id"] / "predictions.jsonl").exists()   # the first run's is gone
