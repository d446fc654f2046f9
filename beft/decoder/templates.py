"""Prompt templates of the decoder tasks (docs/paper.md §C.6), one small function per task.

A template turns one example (hub field names) into a `Prompted`: the prompt, the candidate texts that follow
it, and which candidates are correct. Generation tasks (SQuAD, DROP) give their gold answers, and the one
candidate they train on is the first answer followed by a newline. A candidate is appended to its prompt
as is, so the space between them belongs to the candidate (" great"): that way a BPE tokenizer splits
prompt + candidate exactly as it splits the joined text.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from beft.errors import choices_error


@dataclass
class Prompted:
    prompt: str
    candidates: list[str]                   # appended to the prompt; generation: [training target]
    gold: list[int]                         # indices of the correct candidates (ReCoRD may have several)
    answers: list[str] = field(default_factory=list)  # generation: every gold answer (the best one counts)

    def demonstration(self) -> str:
        """The example solved, as an in-context demonstration."""
        return (self.prompt + self.candidates[self.gold[0]]).rstrip("\n")


@dataclass(frozen=True)
class Template:
    kind: str                               # choice | generation
    fields: tuple[str, ...]                 # example fields it reads
    render: Callable[[dict], Prompted]


def _sst2(ex):
    # GLUE sentences end with a space; stripping it avoids a double space before "It was".
    return Prompted(f"{ex['sentence'].strip()} It was", [" terrible", " great"], [ex["label"]])


def _rte(ex):
    return Prompted(f"{ex['premise']}\nDoes this mean that \"{ex['hypothesis']}\" is true? Yes or No?\n",
                    ["Yes", "No"], [ex["label"]])           # entailment, not_entailment


def _cb(ex):
    return Prompted(f"Suppose {ex['premise']} Can we infer that \"{ex['hypothesis']}\"? Yes, No, or Maybe?\n",
                    ["Yes", "No", "Maybe"], [ex["label"]])  # entailment, contradiction, neutral


def _boolq(ex):
    question = ex["question"].strip()
    question = question[:1].upper() + question[1:]
    return Prompted(f"{ex['passage']} {question}?\n", ["No", "Yes"], [ex["label"]])


def _wic(ex):
    return Prompted(f"Does the word \"{ex['word']}\" have the same meaning in these two sentences? Yes, No?\n"
                    f"{ex['sentence1']}\n{ex['sentence2']}\n", ["No", "Yes"], [ex["label"]])


def _wsc(ex):
    return Prompted(f"{ex['text']}\nIn the previous sentence, does the pronoun \"{ex['span2_text'].lower()}\" "
                    f"refer to {ex['span1_text']}? Yes or No?\n", ["No", "Yes"], [ex["label"]])


def _multirc(ex):
    return Prompted(f"{ex['paragraph']}\nQuestion: {ex['question']}\nI found this answer \"{ex['answer']}\". "
                    f"Is that correct? Yes or No?\n", ["No", "Yes"], [ex["label"]])


def _lower_first_word(text: str) -> str:
    first, _, rest = text.partition(" ")
    if first == "I" or first.startswith("I'"):
        return text
    return first.lower() + (" " + rest if rest else "")


def _copa(ex):
    premise = ex["premise"].strip()
    premise = premise[:-1] if premise.endswith(".") else premise
    connector = "so" if ex["question"] == "effect" else "because"
    return Prompted(f"{premise} {connector}", [" " + _lower_first_word(ex[c]) for c in ("choice1", "choice2")],
                    [ex["label"]])


def _record(ex):
    # GPT-3's ReCoRD format: highlights become "- " bullets, then "- " + the query with a candidate entity.
    passage = ex["passage"].replace("@highlight\n", "- ")
    entities = list(dict.fromkeys(ex["entities"]))          # unique, in order
    for answer in ex["answers"][:1]:
        if answer not in entities:                          # never expected; keeps the gold scorable
            entities.append(answer)
    gold = [i for i, entity in enumerate(entities) if entity in ex["answers"]]
    return Prompted(f"{passage}\n-", [" " + ex["query"].replace("@placeholder", e) for e in entities], gold)


def _generation(prompt: str, answers: list[str]) -> Prompted:
    answers = [str(a) for a in answers]
    return Prompted(prompt, [f" {answers[0]}\n"], [0], answers)


def _squad(ex):
    return _generation(f"Title: {ex['title']}\nContext: {ex['context']}\nQuestion: {ex['question']}\nAnswer:",
                       ex["answers"]["text"])


def _drop(ex):
    return _generation(f"Passage: {ex['passage']}\nQuestion: {ex['question']}\nAnswer:",
                       ex["answers_spans"]["spans"])


TEMPLATES: dict[str, Template] = {
    "sst2": Template("choice", ("sentence", "label"), _sst2),
    "rte": Template("choice", ("premise", "hypothesis", "label"), _rte),
    "cb": Template("choice", ("premise", "hypothesis", "label"), _cb),
    "boolq": Template("choice", ("passage", "question", "label"), _boolq),
    "wic": Template("choice", ("word", "sentence1", "sentence2", "label"), _wic),
    "wsc": Template("choice", ("text", "span1_text", "span2_text", "label"), _wsc),
    "multirc": Template("choice", ("paragraph", "question", "answer", "label"), _multirc),
    "copa": Template("choice", ("premise", "choice1", "choice2", "question", "label"), _copa),
    "record": Template("choice", ("passage", "query", "entities", "answers"), _record),
    "squad": Template("generation", ("title", "context", "question", "answers"), _squad),
    "drop": Template("generation", ("passage", "question", "answers_spans"), _drop),
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise choices_error("decoder template", name, TEMPLATES)
    return TEMPLATES[name]
