"""The decoder tasks' local files (SQuAD, DROP, WSC, MultiRC, ReCoRD): every row read (the synthetic files of
tests/data; the published counts of the real ones where present), and disjoint training / evaluation pools where
only a dev set exists."""
import gzip
import json

import pytest
from omegaconf import OmegaConf

from beft.data import load_prompted
from beft.decoder.spec import section
from beft.errors import BeftError
from conftest import REPO
from task_fixtures import ROWS


def prompted(task: str, data_dir, n_train=None, n_eval=None, seed=0):
    spec = section(OmegaConf.load(REPO / "conf" / "task" / f"{task}.yaml"))
    return load_prompted(spec, str(data_dir), n_train, n_eval, seed)


@pytest.mark.parametrize("task, by, total", [("squad", "title", ROWS["SQuAD/dev-v1.1.json"]),
                                             ("drop", "passage", ROWS["DROP/drop_v0_dev.jsonl.gz"])])
def test_dev_only_tasks_split_into_disjoint_pools(data_dir, task, by, total):
    data = prompted(task, data_dir)
    train, evals = data.train, data.eval["validation"]
    assert len(train) + len(evals) == total                       # every dev question lands in one pool
    assert not {ex[by] for ex in train} & {ex[by] for ex in evals}  # no article / passage in both
    pool = data.source["split_pool"]
    assert pool["examples"] == {"train": len(train), "validation": len(evals)} and 0.1 < len(train) / total < 0.4
    again = prompted(task, data_dir, seed=5)                      # the pools do not depend on the seed
    assert {ex[by] for ex in again.train} == {ex[by] for ex in train}


def test_squad_and_drop_examples_carry_every_gold_answer(data_dir):
    squad = prompted("squad", data_dir)
    raw = json.loads((data_dir / "SQuAD" / "dev-v1.1.json").read_text())["data"]
    read = sorted((ex["title"], ex["context"], ex["question"], ex["answers"]["text"])
                  for ex in squad.train + squad.eval["validation"])
    assert read == sorted((article["title"], paragraph["context"], qa["question"], [a["text"] for a in qa["answers"]])
                          for article in raw for paragraph in article["paragraphs"] for qa in paragraph["qas"])
    assert any(len(answers) > 1 for *_, answers in read)                     # every gold answer, repeats kept
    with gzip.open(data_dir / "DROP" / "drop_v0_dev.jsonl.gz", "rt") as f:
        raw = json.loads(f.readline())
    drop = prompted("drop", data_dir)
    everything = drop.train + drop.eval["validation"]
    passage, question = raw["context"][len("Passage: "):].rsplit("\nQuestion: ", 1)
    match = next(ex for ex in everything if ex["passage"] == passage)
    assert match["question"] == question.removesuffix("\nAnswer:")
    assert match["answers_spans"]["spans"] == raw["ref_text"].split("|")


def test_wsc_multirc_record_fields(data_dir):
    wsc = prompted("wsc", data_dir)
    assert len(wsc.train) == ROWS["WSC/train.jsonl"] and len(wsc.eval["validation"]) == ROWS["WSC/val.jsonl"]
    assert wsc.train[0].keys() >= {"text", "span1_text", "span2_text"}        # read from the nested target
    assert {ex["label"] for ex in wsc.train} == {0, 1}                        # JSON booleans mapped to classes
    multirc = prompted("multirc", data_dir)                                    # one example per (question, answer)
    assert multirc.n_train_total == ROWS["MultiRC/train.jsonl"]
    assert len(multirc.eval["validation"]) == ROWS["MultiRC/val.jsonl"]
    raw = [json.loads(line) for line in (data_dir / "MultiRC" / "val.jsonl").read_text().splitlines()]
    assert sum(ex["label"] for ex in multirc.eval["validation"]) == sum(
        a["label"] for r in raw for q in r["passage"]["questions"] for a in q["answers"])
    record = prompted("record", data_dir)
    assert len(record.train) == ROWS["ReCoRD/train32.jsonl"]
    for ex in record.train:   # the inclusive character spans give the entity strings the answers are among
        assert set(ex["answers"]) <= set(ex["entities"]), ex["query"][:40]
        assert all(entity in ex["passage"] for entity in ex["entities"])


def test_wsc_multirc_record_counts_and_fields(real_data_dir):
    data_dir = real_data_dir
    wsc = prompted("wsc", data_dir)
    assert len(wsc.train) == 554 and len(wsc.eval["validation"]) == 104
    assert sum(ex["label"] for ex in wsc.eval["validation"]) == 38              # "104 (38 True)", SOURCES.md
    assert wsc.train[0].keys() >= {"text", "span1_text", "span2_text"}        # read from the nested target
    multirc = prompted("multirc", data_dir)
    assert multirc.n_train_total == 27_243 and len(multirc.eval["validation"]) == 4_848
    assert sum(ex["label"] for ex in multirc.eval["validation"]) == 2_075
    record = prompted("record", data_dir)
    assert len(record.train) == 32 and len(record.eval["validation"]) == 32
    for ex in record.train:   # the inclusive character spans give the entity strings the answers are among
        assert set(ex["answers"]) <= set(ex["entities"]), ex["query"][:40]


def test_a_split_pool_that_leaves_a_split_empty_is_one_line(data_dir, tmp_path):
    from beft.data.tasks import split_pool

    rows = [{"title": "a"}, {"title": "b"}]
    with pytest.raises(BeftError, match="train_share"):
        split_pool({"train": rows, "validation": rows}, {"by": "title", "train_share": 1.5}, "squad")
    with pytest.raises(BeftError, match="not a field"):
        split_pool({"train": rows, "validation": rows}, {"by": "context", "train_share": 0.5}, "squad")
