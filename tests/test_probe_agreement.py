"""scripts/probe_agreement.py counts agreement correctly and resumes from its saved cases (probes are faked)."""
import importlib.util
import json
import sys

import pytest

from conftest import REPO


@pytest.fixture
def study(monkeypatch):
    spec = importlib.util.spec_from_file_location("probe_agreement", REPO / "scripts" / "probe_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []

    def fake_top_types(model, task, seed, fraction):
        calls.append((task, seed, fraction))
        early = fraction is not None and fraction < 0.25     # only the 10 % probe disagrees, and only for magnitude
        return {"steps": 100 if fraction is None else int(100 * fraction),
                "top": {"beft": "v", "magnitude": "ln2" if early else "q", "causal": "fc1"}}

    monkeypatch.setattr(module, "top_types", fake_top_types)
    return module, calls


def run(module, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["probe_agreement.py", *args])
    module.main()


def test_table_counts_matches_and_names_the_disagreeing_pick(study, monkeypatch, tmp_path, capsys):
    module, _ = study
    out = tmp_path / "study.json"
    run(module, monkeypatch, "--tasks", "sst2", "rte", "--seeds", "0", "1", "--fractions", "0.1", "0.5",
        "--out", str(out))
    rows = {line.split("|")[1].strip() + "/" + line.split("|")[2].strip(): line
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line}
    assert "| 0/4 (ln2) | 4/4 | q ×4 |" in rows["magnitude/**all**"]
    assert "| 2/2 | 2/2 | v ×2 |" in rows["beft/sst2"]
    assert len(json.loads(out.read_text())["results"]) == 8


def test_an_interrupted_study_computes_only_what_is_missing(study, monkeypatch, tmp_path):
    module, calls = study
    out = tmp_path / "study.json"
    run(module, monkeypatch, "--tasks", "sst2", "--seeds", "0", "--fractions", "0.1", "--out", str(out))
    assert calls == [("sst2", 0, None), ("sst2", 0, 0.1)]
    calls.clear()
    run(module, monkeypatch, "--tasks", "sst2", "--seeds", "0", "--fractions", "0.1", "0.5", "--out", str(out))
    assert calls == [("sst2", 0, None), ("sst2", 0, 0.5)]          # the saved 10 % case is not redone
    calls.clear()
    run(module, monkeypatch, "--tasks", "sst2", "--seeds", "0", "--fractions", "0.1", "0.5", "--out", str(out))
    assert calls == []                                              # nothing missing: no probe at all
    saved = json.loads(out.read_text())["results"]
    assert sorted(r["fraction"] for r in saved) == [0.1, 0.5]


def test_a_study_of_another_model_is_not_mixed_in(study, monkeypatch, tmp_path):
    module, _ = study
    out = tmp_path / "study.json"
    out.write_text(json.dumps({"model": "tiny-bert", "results": []}))
    with pytest.raises(SystemExit, match="tiny-bert"):
        run(module, monkeypatch, "--model", "minilm", "--tasks", "sst2", "--seeds", "0", "--out", str(out))
