"""The task files of tests/data: small synthetic GLUE / SuperGLUE / SQuAD / DROP files in the layout of
../shared/data, written by this module, so the plumbing tests run on a fresh clone with no task files beside it.

Every sentence is made up here from small word lists (nothing is copied from the real data sets); the layouts
follow each reader of beft/data (a header or none, JSON lines, WiC's data + gold files, nested JSON, gzip).
`ROWS` holds the examples each file yields, which tests compare with. Regenerate after a change with

    python tests/task_fixtures.py            # rewrites tests/data/ (tests/test_task_fixtures.py checks it)
"""
from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent / "data"

NAMES = ["Alma", "Bruno", "Carla", "Dario", "Edith", "Femi", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Lars",
         "Mara", "Nils", "Olga", "Pavel"]
PLACES = ["Ashford", "Brimley", "Caston", "Dunmore", "Elwick", "Fenby", "Glenarm", "Holcombe", "Ivybridge",
          "Kelso", "Lindale", "Marden"]
NOUNS = ["apples", "lamps", "maps", "kettles", "bicycles", "letters", "candles", "baskets", "tickets", "chairs"]
VERBS = [("bought", "buy"), ("painted", "paint"), ("carried", "carry"), ("repaired", "repair"), ("sold", "sell"),
         ("counted", "count"), ("wrapped", "wrap"), ("cleaned", "clean")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Examples per split (after the reader: MultiRC counts answers, ReCoRD and SQuAD / DROP count questions). SST-2
# and RTE have at least their low-regime sizes (1,000, 300): tests run the default regime on them.
ROWS = {
    "SST-2/train.tsv": 1024, "SST-2/dev.tsv": 40,
    "CoLA/train.tsv": 120, "CoLA/dev.tsv": 40,
    "RTE/train.tsv": 320, "RTE/dev.tsv": 56, "RTE/train.jsonl": 96, "RTE/val.jsonl": 32,
    "QNLI/dev.tsv": 24,
    "CB/train.jsonl": 64, "CB/val.jsonl": 24,
    "COPA/train.jsonl": 64, "COPA/val.jsonl": 24,
    "WiC/WiC_dataset/train/train.data.txt": 96, "WiC/WiC_dataset/dev/dev.data.txt": 32,
    "BoolQ/FewGLUE_32dev/train.jsonl": 32, "BoolQ/val.jsonl": 24,
    "WSC/train.jsonl": 48, "WSC/val.jsonl": 24,
    "MultiRC/train.jsonl": 72, "MultiRC/val.jsonl": 36,
    "ReCoRD/train32.jsonl": 16, "ReCoRD/dev32.jsonl": 16,
    "SQuAD/dev-v1.1.json": 96,
    "DROP/drop_v0_dev.jsonl.gz": 72,
}
SQUAD_ARTICLES = 16   # titles, of which the split pool (train_share 0.25) puts TRAIN_ARTICLES in training
DROP_PASSAGES = 24


def _pool_share(text: str) -> float:
    """beft.data.tasks.split_pool's rule: a group trains iff this is below the task's train_share."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16 ** 8


def _tsv(rows: list[list[str]], header: list[str] | None = None) -> str:
    lines = (["\t".join(header)] if header else []) + ["\t".join(map(str, r)) for r in rows]
    return "\n".join(lines) + "\n"


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# ---- GLUE .tsv ----------------------------------------------------------------------------------------------

POSITIVE = ["warm", "funny", "clever", "moving", "charming", "bright", "gripping", "tender", "lively", "sharp"]
NEGATIVE = ["dull", "tedious", "clumsy", "flat", "bland", "shallow", "muddled", "tiresome", "limp", "stale"]
SUBJECTS = ["the film", "this movie", "the script", "the cast", "the story", "its ending", "the score",
            "the second half"]


def sst2(rng: random.Random, n: int) -> str:
    rows = []
    for i in range(n):
        label = i % 2
        words = POSITIVE if label else NEGATIVE
        a, b = rng.sample(words, 2)
        subject = rng.choice(SUBJECTS)
        form = i % 4
        if form == 0:
            text = f"{subject} is {a} and {b} "          # GLUE SST-2 sentences often end with a space
        elif form == 1:
            text = f"a {a} , {b} picture"
        elif form == 2:
            text = f"{subject} feels {a} from start to finish"
        else:
            text = f'the so-called " {a} " touch of {subject} is {b}'   # a bare quote: read with QUOTE_NONE
        rows.append([text, label])
    return _tsv(rows, ["sentence", "label"])


def cola(rng: random.Random, n: int) -> str:
    """No header: source, label, original label (* where unacceptable), sentence."""
    rows = []
    for i in range(n):
        name, noun, (past, _) = rng.choice(NAMES), rng.choice(NOUNS), rng.choice(VERBS)
        good = [name, past, "the", noun, "in", rng.choice(PLACES), "."]
        if i % 2:
            rows.append([f"syn{i % 5}", 1, "", " ".join(good)])
        else:
            bad = [good[2], good[3], name, "the", past, "in", good[5], "."]   # scrambled word order
            rows.append([f"syn{i % 5}", 0, "*", " ".join(bad)])
    return _tsv(rows)


def rte_pair(rng: random.Random, i: int) -> tuple[str, str, str]:
    name, other = rng.sample(NAMES, 2)
    (past, _), noun, place, day = rng.choice(VERBS), rng.choice(NOUNS), rng.choice(PLACES), rng.choice(DAYS)
    premise = f"{name} {past} {rng.choice(NUMBERS)} {noun} in {place} on {day}."
    if i % 2 == 0:
        return premise, f"{name} {past} {noun}.", "entailment"
    if i % 4 == 1:
        return premise, f"{other} {past} {noun} in {place}.", "not_entailment"
    return premise, f'{name} never "saw" {noun} in {place}.', "not_entailment"


def rte_tsv(rng: random.Random, n: int) -> str:
    return _tsv([[i, *rte_pair(rng, i)] for i in range(n)], ["index", "sentence1", "sentence2", "label"])


def qnli(rng: random.Random, n: int) -> str:
    rows = []
    for i in range(n):
        name, noun, place, (past, base) = rng.choice(NAMES), rng.choice(NOUNS), rng.choice(PLACES), rng.choice(VERBS)
        question = f"Where did {name} {base} the {noun}?"
        answer = f"{name} {past} the {noun} in {place}." if i % 2 == 0 else f'The "{noun}" were {rng.choice(DAYS)}\'s.'
        rows.append([i, question, answer, "entailment" if i % 2 == 0 else "not_entailment"])
    return _tsv(rows, ["index", "question", "sentence", "label"])


# ---- SuperGLUE JSON lines -----------------------------------------------------------------------------------

FILLER = ["The weather that week was mild and dry.", "Most of the shops in town close early on that day.",
          "A local paper mentioned the event in a short note.", "Several neighbours had planned the same trip.",
          "The road to the market had been repaired in the spring.", "Nobody remembered a busier week in years.",
          "Prices at the stalls were a little higher than usual.", "The town council had announced new rules."]


def rte_jsonl(rng: random.Random, n: int) -> str:
    """SuperGLUE RTE: long premises (several sentences), so that a few demonstrations fill a 512-token prompt."""
    rows = []
    for i in range(n):
        premise, hypothesis, label = rte_pair(rng, i)
        premise = " ".join([premise, *rng.sample(FILLER, 5)])
        rows.append({"premise": premise, "hypothesis": hypothesis, "label": label, "idx": i})
    return _jsonl(rows)


def cb(rng: random.Random, n: int) -> str:
    labels = ["entailment", "contradiction", "neutral"]
    rows = []
    for i in range(n):
        name, other, noun, place = *rng.sample(NAMES, 2), rng.choice(NOUNS), rng.choice(PLACES)
        label = labels[i % 3]
        premise = f"{name}: Did you hear about the {noun}? {other}: I think they were sent to {place}."
        hypothesis = {"entailment": f"the {noun} were sent to {place}",
                      "contradiction": f"the {noun} were not sent to {place}",
                      "neutral": f"the {noun} were sent on a {rng.choice(DAYS)}"}[label]
        rows.append({"premise": premise, "hypothesis": hypothesis, "label": label, "idx": i})
    return _jsonl(rows)


COPA_CASES = [  # premise, question, the more plausible alternative, the other one
    ("{n} left the window open all night.", "effect", "The room grew cold.", "The room grew warm."),
    ("{n} forgot the umbrella at home.", "effect", "{n} got wet in the rain.", "{n} stayed dry in the rain."),
    ("The kettle started to whistle.", "cause", "{n} had put it on the stove.", "{n} had filled the bath."),
    ("{n} missed the morning bus.", "cause", "{n} woke up late.", "{n} woke up early."),
    ("The bread was hard as stone.", "cause", "It had been left out for days.", "It was baked that morning."),
    ("{n} watered the plants every day.", "effect", "The plants grew tall.", "The plants dried out."),
    ("The lamp would not switch on.", "cause", "The bulb had burnt out.", "The bulb was brand new."),
    ("{n} practised the piano for months.", "effect", "{n} played well at the recital.",
     "{n} forgot how to play."),
]


def copa(rng: random.Random, n: int) -> str:
    rows = []
    for i in range(n):
        premise, question, right, wrong = COPA_CASES[i % len(COPA_CASES)]
        name = rng.choice(NAMES)
        label = rng.randrange(2)
        choices = [wrong, right] if label else [right, wrong]
        rows.append({"premise": premise.format(n=name), "choice1": choices[0].format(n=name),
                     "choice2": choices[1].format(n=name), "question": question, "label": label, "idx": i})
    return _jsonl(rows)


def boolq(rng: random.Random, n: int, start: int = 0) -> str:
    rows = []
    for i in range(n):
        place, other = rng.sample(PLACES, 2)
        count = rng.choice(NUMBERS)
        passage = (f"{place} is a small market town beside the river Wend. It has {count} stone bridges and a "
                   f"railway station that opened long ago. The nearest larger town is {other}.")
        question, label = ((f"is {place} beside the river wend", True) if i % 2 == 0
                           else (f"does {place} have an airport", False))
        rows.append({"question": question, "passage": passage, "idx": start + i, "label": label})
    return _jsonl(rows)


def wsc(rng: random.Random, n: int) -> str:
    """SuperGLUE WSC: `target` holds the noun phrase and the pronoun with their word indices."""
    rows = []
    for i in range(n):
        first, second = rng.sample(NAMES, 2)
        words = f"{first} thanked {second} because she had carried the {rng.choice(NOUNS)} home .".split()
        refers = i % 2 == 0
        span1 = second if refers else first
        rows.append({"text": " ".join(words),
                     "target": {"span2_index": 4, "span1_index": words.index(span1), "span1_text": span1,
                                "span2_text": "she"},
                     "idx": i, "label": refers})
    return _jsonl(rows)


# ---- WiC's original release: <split>.data.txt + <split>.gold.txt ---------------------------------------------

WIC_SENSES = {  # word, part of speech: two senses, each a few tokenised sentences using the word
    ("bank", "N"): (["She sat on the bank of the river .", "The boat drifted toward the muddy bank ."],
                    ["He opened an account at the bank .", "The bank closed at noon on Friday ."]),
    ("run", "V"): (["They run along the beach each morning .", "Children run across the yard ."],
                   ["She will run the shop while we travel .", "Who will run the meeting tomorrow ?"]),
    ("light", "N"): (["The light from the lamp was dim .", "Morning light filled the kitchen ."],
                     ["Can I borrow a light for my candle ?", "He struck a light in the dark hall ."]),
    ("note", "N"): (["She left a note on the table .", "I wrote a short note to my aunt ."],
                    ["The singer held the high note .", "Every note of the song was clear ."]),
}


def wic(rng: random.Random, n: int) -> tuple[str, str]:
    data, gold = [], []
    keys = list(WIC_SENSES)
    for i in range(n):
        word, pos = keys[i % len(keys)]
        senses = WIC_SENSES[(word, pos)]
        same = i % 2 == 0
        s1 = rng.choice(senses[0])
        s2 = rng.choice([s for s in senses[0] if s != s1]) if same else rng.choice(senses[1])
        index = f"{s1.split().index(word)}-{s2.split().index(word)}"
        data.append([word, pos, index, s1, s2])
        gold.append("T" if same else "F")
    return _tsv(data), "\n".join(gold) + "\n"


# ---- nested JSON: MultiRC, ReCoRD, SQuAD, DROP ---------------------------------------------------------------

def multirc(rng: random.Random, passages: int, start: int = 0) -> str:
    """SuperGLUE MultiRC: passage.questions[].answers[], 3 questions x 3 answers per passage."""
    rows = []
    for p in range(passages):
        name, place, noun = rng.choice(NAMES), rng.choice(PLACES), rng.choice(NOUNS)
        (past, _), day, count = rng.choice(VERBS), rng.choice(DAYS), rng.choice(NUMBERS)
        text = (f"Sent 1: {name} lived in {place}.<br>Sent 2: On {day} {name} {past} {count} {noun}.<br>"
                f"Sent 3: Afterwards {name} walked home along the river.<br>")
        qa = [(f"Where did {name} live?", [(place, 1), (rng.choice([x for x in PLACES if x != place]), 0),
                                           (f"Near {place}", 0)]),
              (f"On which day did {name} act?", [(day, 1), (f"On {day}", 1),
                                                 (rng.choice([d for d in DAYS if d != day]), 0)]),
              (f"How many {noun} were there?", [(count, 1), (rng.choice([c for c in NUMBERS if c != count]), 0),
                                                ("None", 0)])]
        questions, answer_idx = [], 0
        for q, (question, answers) in enumerate(qa):
            items = []
            for text_, label in answers:
                items.append({"text": text_, "idx": answer_idx, "label": label})
                answer_idx += 1
            questions.append({"question": question, "answers": items, "idx": q})
        rows.append({"idx": start + p, "version": 1.1, "passage": {"text": text, "questions": questions}})
    return _jsonl(rows)


def record(rng: random.Random, n: int, start: int = 0) -> str:
    """SuperGLUE ReCoRD: entities as inclusive character spans of the passage; the query's @placeholder is one."""
    rows = []
    for i in range(n):
        name, other = rng.sample(NAMES, 2)
        place = rng.choice(PLACES)
        text = (f"{name} opened a bakery in {place} last spring. Customers from {place} and beyond queue early, "
                f"and {other} now helps at the counter.\n@highlight\n{name} runs a bakery in {place}\n"
                f"@highlight\n{other} joined the shop")
        entities = []
        for entity in dict.fromkeys([name, place, other]):
            at = text.find(entity)
            while at != -1:
                entities.append({"start": at, "end": at + len(entity) - 1})
                at = text.find(entity, at + 1)
        entities.sort(key=lambda e: e["start"])
        answer_at = text.find(other)
        qas = [{"query": "Regulars say @placeholder greets everyone by name.",
                "answers": [{"start": answer_at, "end": answer_at + len(other) - 1, "text": other}],
                "idx": start + i}]
        rows.append({"source": "Synthetic", "passage": {"text": text, "entities": entities}, "qas": qas,
                     "idx": start + i})
    return _jsonl(rows)


def squad_titles(n: int, share: float = 0.25) -> list[str]:
    """n article titles of which exactly n // 4 fall in the split pool's training share (the first that do)."""
    wanted = {True: n // 4, False: n - n // 4}
    titles, i = [], 0
    while wanted[True] or wanted[False]:
        title = f"Synthetic_town_{i}"
        trains = _pool_share(title) < share
        if wanted[trains]:
            titles.append(title)
            wanted[trains] -= 1
        i += 1
    return titles


def squad(rng: random.Random) -> str:
    """The official SQuAD v1.1 layout: data[].paragraphs[].qas[] with answers[].text / answer_start."""
    data = []
    for a, title in enumerate(squad_titles(SQUAD_ARTICLES)):
        paragraphs = []
        for p in range(2):
            name, place, noun, day = rng.choice(NAMES), rng.choice(PLACES), rng.choice(NOUNS), rng.choice(DAYS)
            context = (f"The town of {place} holds a fair every {day}. {name} sells {noun} there, "
                       f"and the fair has run for {rng.choice(NUMBERS)} years.")
            qas = []
            for q, (question, answer) in enumerate([(f"Who sells {noun} at the fair?", name),
                                                    (f"On which day is the fair held?", day),
                                                    (f"What does {name} sell?", noun)]):
                qas.append({"answers": [{"answer_start": context.index(answer), "text": answer}] * (1 + q % 2),
                            "question": question, "id": f"{a:02d}{p}{q}"})
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": title, "paragraphs": paragraphs})
    return json.dumps({"data": data, "version": "1.1"}, ensure_ascii=False)


def drop(rng: random.Random) -> bytes:
    """DROP dev in the simple-evals form: gzip JSON lines of context / completion / ref_text ("|"-separated)."""
    rows = []
    for p in range(DROP_PASSAGES):
        home, away = rng.sample(PLACES, 2)
        a, b = rng.sample(range(1, 9), 2)
        passage = (f"In match {p + 1}, {home} scored {a} goals and {away} scored {b}. "
                   f"The second half was played in heavy rain.")
        for question, answers in [(f"How many goals did {home} score?", [str(a)]),
                                  ("How many goals were scored in all?", [str(a + b)]),
                                  ("Which team scored more goals?", [home if a > b else away,
                                                                     f"the {home if a > b else away} team"])]:
            rows.append({"context": f"Passage: {passage}\nQuestion: {question}\nAnswer:", "completion": answers[0],
                         "ref_text": "|".join(answers)})
    return gzip.compress(_jsonl(rows).encode(), mtime=0)


# ---- all of it ------------------------------------------------------------------------------------------------

def files() -> dict[str, bytes]:
    """Every fixture file: path under tests/data -> bytes. Each file has its own seeded stream."""
    def rng(name: str) -> random.Random:
        return random.Random(name)

    wic_train, wic_train_gold = wic(rng("wic-train"), ROWS["WiC/WiC_dataset/train/train.data.txt"])
    wic_dev, wic_dev_gold = wic(rng("wic-dev"), ROWS["WiC/WiC_dataset/dev/dev.data.txt"])
    text = {
        "SST-2/train.tsv": sst2(rng("sst2-train"), ROWS["SST-2/train.tsv"]),
        "SST-2/dev.tsv": sst2(rng("sst2-dev"), ROWS["SST-2/dev.tsv"]),
        "CoLA/train.tsv": cola(rng("cola-train"), ROWS["CoLA/train.tsv"]),
        "CoLA/dev.tsv": cola(rng("cola-dev"), ROWS["CoLA/dev.tsv"]),
        "RTE/train.tsv": rte_tsv(rng("rte-train"), ROWS["RTE/train.tsv"]),
        "RTE/dev.tsv": rte_tsv(rng("rte-dev"), ROWS["RTE/dev.tsv"]),
        "RTE/train.jsonl": rte_jsonl(rng("rte-train-jsonl"), ROWS["RTE/train.jsonl"]),
        "RTE/val.jsonl": rte_jsonl(rng("rte-val-jsonl"), ROWS["RTE/val.jsonl"]),
        "QNLI/dev.tsv": qnli(rng("qnli-dev"), ROWS["QNLI/dev.tsv"]),        # no train.tsv, as in ../shared/data
        "CB/train.jsonl": cb(rng("cb-train"), ROWS["CB/train.jsonl"]),
        "CB/val.jsonl": cb(rng("cb-val"), ROWS["CB/val.jsonl"]),
        "COPA/train.jsonl": copa(rng("copa-train"), ROWS["COPA/train.jsonl"]),
        "COPA/val.jsonl": copa(rng("copa-val"), ROWS["COPA/val.jsonl"]),
        "WiC/WiC_dataset/train/train.data.txt": wic_train, "WiC/WiC_dataset/train/train.gold.txt": wic_train_gold,
        "WiC/WiC_dataset/dev/dev.data.txt": wic_dev, "WiC/WiC_dataset/dev/dev.gold.txt": wic_dev_gold,
        "BoolQ/FewGLUE_32dev/train.jsonl": boolq(rng("boolq-train"), ROWS["BoolQ/FewGLUE_32dev/train.jsonl"]),
        "BoolQ/val.jsonl": boolq(rng("boolq-val"), ROWS["BoolQ/val.jsonl"], start=1000),
        "WSC/train.jsonl": wsc(rng("wsc-train"), ROWS["WSC/train.jsonl"]),
        "WSC/val.jsonl": wsc(rng("wsc-val"), ROWS["WSC/val.jsonl"]),
        "MultiRC/train.jsonl": multirc(rng("multirc-train"), ROWS["MultiRC/train.jsonl"] // 9),
        "MultiRC/val.jsonl": multirc(rng("multirc-val"), ROWS["MultiRC/val.jsonl"] // 9, start=1000),
        "ReCoRD/train32.jsonl": record(rng("record-train"), ROWS["ReCoRD/train32.jsonl"]),
        "ReCoRD/dev32.jsonl": record(rng("record-dev"), ROWS["ReCoRD/dev32.jsonl"], start=1000),
        "SQuAD/dev-v1.1.json": squad(rng("squad")),
    }
    out = {path: content.encode() for path, content in text.items()}
    out["DROP/drop_v0_dev.jsonl.gz"] = drop(rng("drop"))
    return out


def write(root: Path = HERE) -> list[Path]:
    written = []
    for rel, content in files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(path.relative_to(HERE.parent.parent))
