"""Metrics on known inputs; the record key and its atomic JSON file."""
import numpy as np
import pytest

from beft import metrics
from beft.errors import BeftError
from beft.record import read_record, write_json_atomic


def test_metrics_on_known_inputs():
    preds, labels = [1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 0, 1]
    got = metrics.compute(["accuracy", "f1", "macro_f1", "mcc"], preds, labels)
    assert got["accuracy"] == pytest.approx(4 / 6)
    # positives: tp=2, fp=1, fn=1 -> f1 = 2/3; negatives symmetric -> macro 2/3; mcc = (2*2-1*1)/9 = 1/3
    assert got["f1"] == pytest.approx(2 / 3)
    assert got["macro_f1"] == pytest.approx(2 / 3)
    assert got["mcc"] == pytest.approx(1 / 3)
    three = metrics.compute(["macro_f1"], [0, 1, 2, 2], [0, 1, 1, 2])
    assert three["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_correlations():
    x = np.array([0.1, 0.4, 0.2, 0.9])
    got = metrics.compute(["pearson", "spearman"], x, 2 * x + 1)
    assert got["pearson"] == pytest.approx(1.0) and got["spearman"] == pytest.approx(1.0)
    assert metrics.compute(["spearman"], [1, 2, 3, 4], [4, 3, 2, 1])["spearman"] == pytest.approx(-1.0)
    assert metrics.compute(["pearson"], [1, 1, 1, 1], [1, 2, 3, 4])["pearson"] == 0.0  # constant: no NaN


def test_unknown_metric():
    with pytest.raises(BeftError, match="valid: accuracy"):
        metrics.compute(["auc"], [0], [0])


def test_record_round_trip_and_atomicity(tmp_path):
    record = {"key": "abc", "metrics": {"main": {"value": np.float32(0.5)}}, "history": [np.arange(3)]}
    path = tmp_path / "run" / "result.json"
    write_json_atomic(path, record)
    back = read_record(path)
    assert back == {"key": "abc", "metrics": {"main": {"value": 0.5}}, "history": [[0, 1, 2]]}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temp file left behind
    path.write_text('{"key": "abc", "metr')  # a torn file is not a record
    assert read_record(path) is None and read_record(tmp_path / "missing.json") is None
