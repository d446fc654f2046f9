"""Readers for the nested reading-comprehension files of ../shared/data (SQuAD, DROP, MultiRC, ReCoRD).

Same contract as `beft.data.readers`: `read(path, fields, label_fn) -> list[dict]`, each example flattened to
the hub schema's field names first, then picked by `fields` (canonical name -> flattened key), so the task
configs read like every other task. Bad rows are one-line errors naming the file and the line (or article).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from beft.data.text_files import json_lines, read_gzip_text, read_text
from beft.errors import BeftError


def _pick(flat: dict, fields: Mapping[str, str], path: Path, where: str, label_fn) -> dict:
    example = {}
    for name, key in fields.items():
        if key not in flat:
            raise BeftError(f"malformed row in {path} {where}: no {key!r} field; fields found: {', '.join(flat)}")
        example[name] = flat[key]
    if "label" in example:
        try:
            example["label"] = label_fn(example["label"])
        except ValueError as err:
            raise BeftError(f"{path} {where}: {err}") from None
    return example


def _field(record: dict, path: Path, where: str, *keys):
    value = record
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise BeftError(f"malformed row in {path} {where}: no {'.'.join(keys)!r}")
        value = value[key]
    return value


def read_squad_json(path: Path, fields: Mapping[str, str], label_fn) -> list[dict]:
    """The official SQuAD v1.1 JSON (`data[].paragraphs[].qas[]`): one example per question, with its article
    title, context and every gold answer text (the hub's `answers: {text: [...]}` form)."""
    try:
        data = json.loads(read_text(path))
    except ValueError as err:
        raise BeftError(f"{path} is not the SQuAD JSON format (data[].paragraphs[].qas[]): {err}") from None
    examples = []
    for a, article in enumerate(_field(data, path, "(top level)", "data")):
        where = f"article {a}"
        title = _field(article, path, where, "title")
        for paragraph in _field(article, path, where, "paragraphs"):
            context = _field(paragraph, path, where, "context")
            for qa in _field(paragraph, path, where, "qas"):
                answers = [_field(ans, path, where, "text") for ans in _field(qa, path, where, "answers")]
                flat = {"id": qa.get("id"), "title": title, "context": context,
                        "question": _field(qa, path, where, "question"), "answers": {"text": answers}}
                examples.append(_pick(flat, fields, path, where, label_fn))
    return examples


def read_drop_jsonl_gz(path: Path, fields: Mapping[str, str], label_fn) -> list[dict]:
    """DROP dev in the simple-evals form: gzip JSON lines whose `context` is "Passage: …\\nQuestion: …\\nAnswer:"
    and whose `ref_text` lists every accepted answer separated by "|". Split back into passage, question and the
    hub's `answers_spans: {spans: [...]}`."""
    examples = []
    for line_no, record in json_lines(path, read_gzip_text(path)):
        where = f"line {line_no}"
        context = str(_field(record, path, where, "context"))
        if not context.startswith("Passage: ") or "\nQuestion: " not in context:
            raise BeftError(f"malformed row in {path} {where}: context is not 'Passage: …\\nQuestion: …\\nAnswer:'")
        passage, question = context[len("Passage: "):].rsplit("\nQuestion: ", 1)
        question = question.removesuffix("\nAnswer:").removesuffix("Answer:").strip()
        spans = [s.strip() for s in str(_field(record, path, where, "ref_text")).split("|") if s.strip()]
        flat = {"passage": passage, "question": question, "answers_spans": {"spans": spans}}
        examples.append(_pick(flat, fields, path, where, label_fn))
    return examples


def read_multirc_jsonl(path: Path, fields: Mapping[str, str], label_fn) -> list[dict]:
    """SuperGLUE MultiRC (`passage.questions[].answers[]`): one example per (question, answer) pair."""
    examples = []
    for line_no, record in json_lines(path, read_text(path)):
        where = f"line {line_no}"
        paragraph = _field(record, path, where, "passage", "text")
        for question in _field(record, path, where, "passage", "questions"):
            for answer in _field(question, path, where, "answers"):
                flat = {"paragraph": paragraph, "question": _field(question, path, where, "question"),
                        "answer": _field(answer, path, where, "text"), "label": answer.get("label"),
                        "idx": answer.get("idx")}
                examples.append(_pick(flat, fields, path, where, label_fn))
    return examples


def read_record_jsonl(path: Path, fields: Mapping[str, str], label_fn) -> list[dict]:
    """SuperGLUE ReCoRD (`passage.entities[]` as inclusive character spans, `qas[]`): one example per query, with
    the entity strings and the gold answer strings."""
    examples = []
    for line_no, record in json_lines(path, read_text(path)):
        where = f"line {line_no}"
        text = _field(record, path, where, "passage", "text")
        entities = [text[e["start"]:e["end"] + 1] for e in _field(record, path, where, "passage", "entities")]
        for qa in _field(record, path, where, "qas"):
            flat = {"passage": text, "query": _field(qa, path, where, "query"), "entities": entities,
                    "answers": [a["text"] for a in _field(qa, path, where, "answers")]}
            examples.append(_pick(flat, fields, path, where, label_fn))
    return examples


NESTED_READERS = {"squad_json": read_squad_json, "drop_jsonl_gz": read_drop_jsonl_gz,
                  "multirc_jsonl": read_multirc_jsonl, "record_jsonl": read_record_jsonl}
