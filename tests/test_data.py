"""The data layer: local readers against the synthetic files of tests/data and (where present) the real ones,
seeded subsets, errors, and the task configs."""

import hashlib
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the hub

import beft.data.hub as hub  # noqa: E402
from beft.data import TaskData, load_task  # noqa: E402
from beft.data import readers  # noqa: E402
from beft.data.tasks import METRICS, REQUIRED_KEYS  # noqa: E402
from beft.errors import BeftError  # noqa: E402
from conftest import FIXTURES, REAL_DATA_DIR as DATA, needs_real_data as needs_data  # noqa: E402
from task_fixtures import ROWS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "task"


def cfg(task, **local_overrides):
    c = OmegaConf.load(CONF / f"{task}.yaml")
    for key, value in local_overrides.items():
        c.local[key] = value
    return c


def one_line_error(fn, *needles):
    """fn() raises a one-line BeftError naming every needle."""
    with pytest.raises(BeftError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert str(needle) in msg, f"{needle!r} not in: {msg}"
    return msg


_cache = {}


def full(task, root=DATA) -> TaskData:
    if (task, root) not in _cache:
        _cache[task, root] = load_task(cfg(task), str(root), None, 0)
    return _cache[task, root]


# ---- readers against the real files -------------------------------------------------------------------------

# task: (train rows, eval rows, train label counts, validation label counts), counts by class index
PUBLISHED = {
    "sst2": (67349, 872, {0: 29780, 1: 37569}, {0: 428, 1: 444}),
    "rte": (2490, 277, {0: 1249, 1: 1241}, {0: 146, 1: 131}),
    "cola": (8551, 1043, {0: 2528, 1: 6023}, {0: 322, 1: 721}),
    "cb": (250, 56, {0: 115, 1: 119, 2: 16}, {0: 23, 1: 28, 2: 5}),
    "wic": (5428, 638, {0: 2714, 1: 2714}, {0: 319, 1: 319}),
}


@needs_data
@pytest.mark.parametrize("task", sorted(PUBLISHED))
def test_published_row_counts_and_label_distributions(task):
    n_train, n_eval, train_counts, eval_counts = PUBLISHED[task]
    data = full(task)
    assert data.n_train_total == len(data.train) == n_train
    assert list(data.eval) == ["validation"] and len(data.eval["validation"]) == n_eval
    assert dict(Counter(x["label"] for x in data.train)) == train_counts
    assert dict(Counter(x["label"] for x in data.eval["validation"])) == eval_counts


@needs_data
def test_first_rows_match_the_files():
    # A header read as data (or a data row taken as the header) would shift these.
    assert full("sst2").train[0] == {"sentence": "hide new secretions from the parental units ", "label": 0}
    rte = full("rte").train[0]
    assert rte["sentence1"] == "No Weapons of Mass Destruction Found in Iraq Yet." and rte["label"] == 1
    assert full("cola").train[0]["sentence"].startswith("Our friends won't buy this analysis")
    assert full("cola").eval["validation"][0] == {"sentence": "The sailors rode the breeze clear of the rocks.",
                                                   "label": 1}
    cb = full("cb").eval["validation"][0]
    assert cb["hypothesis"] == "Valence was helping" and cb["label"] == 1  # contradiction
    assert full("wic").train[0] == {"word": "carry", "sentence1": "You must carry your camping gear .",
                                    "sentence2": "Sound carries well over water .", "label": 0}  # F


@pytest.mark.parametrize("task,fields", [
    ("sst2", {"sentence"}), ("cola", {"sentence"}), ("rte", {"sentence1", "sentence2"}),
    ("cb", {"premise", "hypothesis"}), ("wic", {"word", "sentence1", "sentence2"}),
])
def test_canonical_fields(task, fields):
    data = full(task, FIXTURES)
    for split in [data.train, *data.eval.values()]:
        assert all(set(x) == fields | {"label"} for x in split)
    assert set(cfg(task).text_fields) <= fields


@needs_data
def test_qnli_dev_reads_whole_with_quote_none():
    fields = {"question": "question", "sentence": "sentence", "label": "label"}
    rows = readers.read_glue_tsv(DATA / "QNLI" / "dev.tsv", fields, lambda v: v)
    assert len(rows) == 5463 and {x["label"] for x in rows} == {"entailment", "not_entailment"}


# task: (train file, evaluation file) under tests/data, as ROWS names them
FIXTURE_FILES = {"sst2": ("SST-2/train.tsv", "SST-2/dev.tsv"), "rte": ("RTE/train.tsv", "RTE/dev.tsv"),
                 "cola": ("CoLA/train.tsv", "CoLA/dev.tsv"), "cb": ("CB/train.jsonl", "CB/val.jsonl"),
                 "wic": ("WiC/WiC_dataset/train/train.data.txt", "WiC/WiC_dataset/dev/dev.data.txt")}


@pytest.mark.parametrize("task", sorted(FIXTURE_FILES))
def test_every_row_of_the_synthetic_files_is_read_with_both_classes(task):
    # A header read as data (CoLA has none), or a data row taken as the header, changes these counts.
    data = full(task, FIXTURES)
    train, dev = FIXTURE_FILES[task]
    assert data.n_train_total == len(data.train) == ROWS[train]
    assert len(data.eval["validation"]) == ROWS[dev]
    assert {x["label"] for x in data.train} == set(range(len(cfg(task).label_names)))


def test_the_synthetic_files_keep_their_quirks():
    assert full("sst2", FIXTURES).train[0]["sentence"].endswith(" ")          # the trailing space GLUE has
    assert any('"' in x["sentence"] for x in full("sst2", FIXTURES).train)    # bare quotes survive QUOTE_NONE
    assert any('"' in x["sentence2"] for x in full("rte", FIXTURES).train)
    wic = full("wic", FIXTURES).train[0]
    assert wic["sentence1"].endswith(" .") and set(wic) == {"word", "sentence1", "sentence2", "label"}


def test_source_records_files_and_sha256_of_what_was_read():
    source = full("rte", FIXTURES).source
    assert source["kind"] == "local" and source["dir"] == str(FIXTURES.resolve())
    assert source["files"] == {name: hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest()
                               for name in ("RTE/train.tsv", "RTE/dev.tsv")}
    assert len(full("wic", FIXTURES).source["files"]) == 4  # data + gold, train + dev


@needs_data
def test_source_records_files_and_sha256():
    source = full("rte").source
    assert source["kind"] == "local" and source["dir"] == str(DATA.resolve())
    # sha256 values as published in ../shared/data/SOURCES.md
    assert source["files"] == {
        "RTE/train.tsv": "41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c",
        "RTE/dev.tsv": "80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb",
    }
    assert len(full("wic").source["files"]) == 4  # data + gold, train + dev


# ---- seeded subsets ----------------------------------------------------------------------------------------

def test_subset_is_the_authors_permutation():
    whole, total = full("rte", FIXTURES).train, ROWS["RTE/train.tsv"]
    a = load_task(cfg("rte"), str(FIXTURES), 30, seed=0)
    assert len(a.train) == 30 and a.n_train_total == total
    assert a.eval["validation"] == full("rte", FIXTURES).eval["validation"]
    assert a.train == load_task(cfg("rte"), str(FIXTURES), 30, seed=0).train
    assert a.train != load_task(cfg("rte"), str(FIXTURES), 30, seed=1).train
    order = np.random.RandomState(0).permutation(total)[:30]
    assert a.train == [whole[i] for i in order]
    # ... which is what the authors' global-seed code draws
    state = np.random.get_state()
    try:
        np.random.seed(0)
        assert list(np.random.permutation(total)[:30]) == list(order)
    finally:
        np.random.set_state(state)


def test_subset_of_the_whole_split_and_too_large():
    cb = ROWS["CB/train.jsonl"]
    assert len(load_task(cfg("cb"), str(FIXTURES), cb, seed=3).train) == cb
    one_line_error(lambda: load_task(cfg("rte"), str(FIXTURES), 5000, 0),
                   f"regime.n=5000 is larger than the rte training split ({ROWS['RTE/train.tsv']} examples)")


@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_non_positive_n_train(n):
    one_line_error(lambda: load_task(cfg("rte"), str(FIXTURES), n, 0), f"regime.n={n}", "positive")


# ---- errors ------------------------------------------------------------------------------------------------

def test_missing_data_dir(tmp_path):
    one_line_error(lambda: load_task(cfg("sst2"), str(tmp_path / "nope"), None, 0),
                   tmp_path / "nope", "does not exist", "SST-2/train.tsv", "RTE/dev.tsv", "CB/train.jsonl")


def test_missing_task_file(tmp_path):
    one_line_error(lambda: load_task(cfg("rte"), str(tmp_path), None, 0),
                   tmp_path / "RTE" / "train.tsv", "train.tsv, dev.tsv", "rte", "hub", "without data_dir")


def test_missing_qnli_train_names_the_layout():
    assert (FIXTURES / "QNLI" / "dev.tsv").is_file()   # as in ../shared/data: the dev set without a train set
    one_line_error(lambda: load_task(cfg("qnli"), str(FIXTURES), None, 0), FIXTURES / "QNLI" / "train.tsv", "hub")


def test_missing_wic_gold_file(tmp_path):
    for split in ["train", "dev"]:
        (tmp_path / "WiC" / "WiC_dataset" / split).mkdir(parents=True)
        src = FIXTURES / "WiC" / "WiC_dataset" / split / f"{split}.data.txt"
        shutil.copy(src, tmp_path / "WiC" / "WiC_dataset" / split)
    one_line_error(lambda: load_task(cfg("wic"), str(tmp_path), None, 0),
                   tmp_path / "WiC" / "WiC_dataset" / "train" / "train.gold.txt", "train/train.data.txt")


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


def rte_dir(tmp_path, train_rows, dev_rows=("0\tA b.\tA.\tentailment",), dev_header=RTE_HEADER):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text(RTE_HEADER + "\n".join(train_rows) + "\n")
    (tmp_path / "RTE" / "dev.tsv").write_text(dev_header + "\n".join(dev_rows) + "\n")
    return str(tmp_path)


def test_small_local_dir_loads_with_stray_quotes(tmp_path):
    d = rte_dir(tmp_path, ['0\t"Quoted start.\tB\tnot_entailment', '1\tC "x" d\tD\tentailment'])
    data = load_task(cfg("rte"), d, None, 0)
    assert [x["label"] for x in data.train] == [1, 0] and data.train[0]["sentence1"] == '"Quoted start.'


def test_unknown_label(tmp_path):
    d = rte_dir(tmp_path, ["0\tA\tB\tentailment", "1\tC\tD\tmaybe"])
    one_line_error(lambda: load_task(cfg("rte"), d, None, 0),
                   tmp_path / "RTE" / "train.tsv", "line 3", "'maybe'", "valid: entailment, not_entailment")


def test_malformed_tsv_row(tmp_path):
    d = rte_dir(tmp_path, ["0\tA\tB\tentailment", "1\tC\tnot_entailment"])
    one_line_error(lambda: load_task(cfg("rte"), d, None, 0),
                   "malformed row", tmp_path / "RTE" / "train.tsv", "line 3", "expected 4")


def test_unlabelled_eval_file(tmp_path):
    d = rte_dir(tmp_path, ["0\tA\tB\tentailment"], dev_rows=["0\tA\tB"], dev_header="index\tsentence1\tsentence2\n")
    one_line_error(lambda: load_task(cfg("rte"), d, None, 0), tmp_path / "RTE" / "dev.tsv", "label",
                   "columns found: index, sentence1, sentence2")


def test_no_eval_split_configured(tmp_path):
    d = rte_dir(tmp_path, ["0\tA\tB\tentailment"])
    one_line_error(lambda: load_task(cfg("rte", eval={}), d, None, 0), "no labelled evaluation split", "validation")
    no_eval = cfg("rte")
    no_eval.hub.eval = []
    one_line_error(lambda: load_task(no_eval, None, None, 0), "no labelled evaluation split", "hub.eval")


def test_malformed_jsonl_and_cb_labels(tmp_path):
    (tmp_path / "CB").mkdir()
    good = '{"premise": "p", "hypothesis": "h", "label": "neutral", "idx": 0}'
    (tmp_path / "CB" / "val.jsonl").write_text(good + "\n")
    (tmp_path / "CB" / "train.jsonl").write_text(good + "\n{not json\n")
    one_line_error(lambda: load_task(cfg("cb"), str(tmp_path), None, 0),
                   "malformed row", tmp_path / "CB" / "train.jsonl", "line 2")
    (tmp_path / "CB" / "train.jsonl").write_text(good + '\n{"premise": "p", "label": "neutral"}\n')
    one_line_error(lambda: load_task(cfg("cb"), str(tmp_path), None, 0), "line 2", "'hypothesis'")
    (tmp_path / "CB" / "train.jsonl").write_text(good.replace("neutral", "unknown") + "\n")
    one_line_error(lambda: load_task(cfg("cb"), str(tmp_path), None, 0),
                   "'unknown'", "valid: entailment, contradiction, neutral")


def test_wic_gold_errors(tmp_path):
    split_dir = tmp_path / "WiC" / "WiC_dataset"
    for split in ["train", "dev"]:
        (split_dir / split).mkdir(parents=True)
        (split_dir / split / f"{split}.data.txt").write_text("go\tV\t0-1\tGo .\tWe go .\n" * 2)
        (split_dir / split / f"{split}.gold.txt").write_text("T\nF\n")
    assert [x["label"] for x in load_task(cfg("wic"), str(tmp_path), None, 0).train] == [1, 0]
    (split_dir / "train" / "train.gold.txt").write_text("T\nX\n")
    one_line_error(lambda: load_task(cfg("wic"), str(tmp_path), None, 0),
                   split_dir / "train" / "train.gold.txt", "line 2", "'X'", "valid: F, T")
    (split_dir / "train" / "train.gold.txt").write_text("T\n")
    one_line_error(lambda: load_task(cfg("wic"), str(tmp_path), None, 0), "2 rows", "1 labels")


def test_regression_label_must_be_a_number(tmp_path):
    (tmp_path / "STS-B").mkdir()
    head = "index\tsentence1\tsentence2\tscore\n"
    (tmp_path / "STS-B" / "dev.tsv").write_text(head + "0\ta\tb\t4.5\n")
    (tmp_path / "STS-B" / "train.tsv").write_text(head + "0\ta\tb\t2.25\n")
    assert load_task(cfg("stsb"), str(tmp_path), None, 0).train[0]["label"] == 2.25
    (tmp_path / "STS-B" / "train.tsv").write_text(head + "0\ta\tb\thigh\n")
    one_line_error(lambda: load_task(cfg("stsb"), str(tmp_path), None, 0), "line 2", "'high'", "not a number")


def test_bad_reader_and_reader_option(tmp_path):
    d = rte_dir(tmp_path, ["0\tA\tB\tentailment"])
    one_line_error(lambda: load_task(cfg("rte", reader="csv"), d, None, 0), "'csv'", "glue_tsv", "jsonl")
    one_line_error(lambda: load_task(cfg("rte", delimiter=","), d, None, 0), "'delimiter'", "header, columns")


def test_bad_task_config():
    bad = cfg("rte")
    bad.main_metric = "f1"
    one_line_error(lambda: load_task(bad, None, None, 0), "main_metric 'f1'", "accuracy")
    bad.metrics = ["acc"]
    one_line_error(lambda: load_task(bad, None, None, 0), "'acc'", "accuracy, f1, macro_f1")


# ---- the hub path, without the hub -------------------------------------------------------------------------

def fake_datasets(rows, names):
    def load_dataset(path, name, split):
        if split not in rows:
            raise ValueError(f'Unknown split "{split}". Should be one of {list(rows)}.')
        return SimpleNamespace(features={"label": SimpleNamespace(names=names)}, _fingerprint=f"fp-{split}",
                               to_list=lambda: [dict(r) for r in rows[split]])
    return SimpleNamespace(load_dataset=load_dataset, exceptions=SimpleNamespace(DatasetNotFoundError=LookupError))


def test_hub_loader_with_a_fake_datasets_module(monkeypatch):
    rows = {"train": [{"sentence1": "a", "sentence2": "b", "label": 1, "idx": 0}] * 3,
            "validation": [{"sentence1": "c", "sentence2": "d", "label": 0, "idx": 0}]}
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(rows, ["entailment", "not_entailment"]))
    data = load_task(cfg("rte"), None, 2, seed=0)
    assert len(data.train) == 2 and data.n_train_total == 3 and data.eval["validation"][0]["label"] == 0
    assert data.source == {"kind": "hub", "path": "nyu-mll/glue", "name": "rte",
                           "fingerprints": {"train": "fp-train", "validation": "fp-validation"}}
    no_split = cfg("rte")
    no_split.hub.eval = ["validation_matched"]
    one_line_error(lambda: load_task(no_split, None, None, 0), "no split 'validation_matched'", "'validation'")
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(rows, ["not_entailment", "entailment"]))
    one_line_error(lambda: load_task(cfg("rte"), None, None, 0), "label_names", "not_entailment")


def test_hub_unlabelled_split(monkeypatch):
    fake = ([{"sentence1": "a", "sentence2": "b", "label": 0}], {"validation": [{"label": -1}]}, {"kind": "hub"})
    monkeypatch.setattr(hub, "load_hub", lambda hub_cfg, names: fake)
    one_line_error(lambda: load_task(cfg("rte"), None, None, 0), "'validation'", "label -1", "unlabelled",
                   "0..1")


# ---- task configs ------------------------------------------------------------------------------------------

TASKS = ["cb", "cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wic"]
# docs/paper.md §B.2-B.4 (BERT-base); cb / wic sizes are our CoLA-fraction choice.
PAPER = {  # task: (lr, epochs, (low, medium, high))
    "cola": (7e-4, 16, (1710, 3420, 4275)), "mnli": (1e-4, 30, (1000, 5000, 9000)),
    "mrpc": (7e-4, 60, (367, 1191, 1835)), "qnli": (1e-4, 30, (1000, 5000, 9000)),
    "qqp": (4e-4, 30, (1000, 5000, 9000)), "rte": (1e-3, 30, (300, 900, 1200)),
    "sst2": (4e-4, 16, (1000, 5000, 11000)), "stsb": (1e-4, 60, (287, 1150, 2300)),
    "cb": (1e-3, 60, (50, 100, 125)), "wic": (1e-3, 16, (1086, 2171, 2714)),
}


DECODER_ONLY = ["boolq", "copa", "drop", "multirc", "record", "squad", "wsc"]  # prompted forms only (tests/test_decoder*)


def test_every_task_has_a_config():
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(TASKS + DECODER_ONLY)


@pytest.mark.parametrize("task", TASKS)
def test_task_config_schema(task):
    c = OmegaConf.to_container(cfg(task), resolve=True)
    assert all(k in c for k in REQUIRED_KEYS) and c["name"] == task
    assert c["kind"] in ("classification", "regression")
    assert set(c["metrics"]) <= set(METRICS) and c["main_metric"] in c["metrics"]
    assert (c["kind"] == "regression") == (c["label_names"] == [])
    assert all(isinstance(n, str) for n in c["label_names"])  # WiC's "False"/"True" must not become booleans
    assert 1 <= len(c["text_fields"]) <= 2 and set(c["text_fields"]) <= set(c["local"]["fields"])
    lr, epochs, sizes = PAPER[task]
    assert c["lr"] == pytest.approx(lr) and c["epochs"] == epochs
    assert (c["sizes"]["low"], c["sizes"]["medium"], c["sizes"]["high"]) == sizes
    assert c["hub"]["path"] in ("nyu-mll/glue", "aps/super_glue") and c["hub"]["eval"]
    assert list(c["local"]["eval"]) == c["hub"]["eval"]  # same split names from either source
    assert c["local"]["reader"] in readers.READERS and "label" in c["local"]["fields"]


def test_sha256_helper_matches_hashlib(tmp_path):
    from beft.data.tasks import _sha256
    (tmp_path / "f").write_bytes(b"x" * 3_000_000)
    assert _sha256(tmp_path / "f") == hashlib.sha256(b"x" * 3_000_000).hexdigest()
