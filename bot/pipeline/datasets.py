"""Eval datasets in JSONL, JSON, YAML or CSV: rows with their line numbers and stable case ids."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from bot.errors import InputError
from bot.pipeline.yamlio import load_yaml

FORMATS = ("jsonl", "json", "yaml", "csv")


@dataclass(frozen=True)
class Case:
    """One dataset row: its stable id, 1-based row number and line, and its fields."""

    id: str
    row: int
    line: int
    fields: dict[str, Any]

    @property
    def category(self) -> str | None:
        value = self.fields.get("category")
        return None if value is None else str(value)


@dataclass(frozen=True)
class Dataset:
    path: str
    cases: tuple[Case, ...]


def dataset_format(path: str) -> str:
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix == "yml":
        suffix = "yaml"
    if suffix == "ndjson":
        suffix = "jsonl"
    if suffix not in FORMATS:
        raise InputError(f"unknown dataset format {suffix or '(none)'!r}: use .jsonl, .json, .yaml or .csv", path)
    return suffix


def case_id(fields: dict[str, Any]) -> str:
    """The row's `id`, else a hash of its canonical JSON (stable across key order and formats)."""
    if fields.get("id") not in (None, ""):
        return str(fields["id"])
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def parse_dataset(text: str, path: str, max_rows: int | None = None) -> Dataset:
    """Parse a dataset file by its extension.

    Args:
        text: the file's text.
        path: the file's path (its extension gives the format).
        max_rows: refuse the file at its first row past this many (the base's `limits.max_cases`).

    Raises:
        InputError: naming the file, line and row of the first row that cannot be read, any
            repeated case id, and the first row past `max_rows`.
    """
    fmt = dataset_format(path)
    raw = {"jsonl": _jsonl_rows, "json": _json_rows, "yaml": _yaml_rows, "csv": _csv_rows}[fmt](text, path)
    cases = []
    seen: dict[str, int] = {}
    for number, (line, fields) in enumerate(raw, start=1):
        if max_rows is not None and number > max_rows:
            limit = f"more than {max_rows:,} rows (`limits.max_cases` in the base branch's .evalbot.yml)"
            raise InputError(limit, path, line, number)
        if not isinstance(fields, dict):
            raise InputError(f"a row must be an object, not {type(fields).__name__}", path, line, number)
        cid = case_id(fields)
        if cid in seen:
            raise InputError(f"case id {cid!r} repeats row {seen[cid]}", path, line, number)
        seen[cid] = number
        cases.append(Case(id=cid, row=number, line=line, fields=fields))
    return Dataset(path=path, cases=tuple(cases))


# The readers yield rows one by one, so a row cap stops reading at the first row past it.
def _jsonl_rows(text: str, path: str) -> Iterator[tuple[int, Any]]:
    count = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno})", path, line_no, count + 1) from None
        count += 1
        yield line_no, value


def _json_rows(text: str, path: str) -> Iterator[tuple[int, Any]]:
    # json.loads gives no positions for array items; decode them one by one to keep each row's line.
    decoder = json.JSONDecoder()
    count = 0
    index = _skip_space(text, 0)
    # Lines counted from the previous row on: counting from the start each time is quadratic.
    line, counted_to = 1, 0
    try:
        if text[index : index + 1] != "[":
            raise json.JSONDecodeError("a JSON dataset must be an array of objects", text, index)
        index = _skip_space(text, index + 1)
        if text[index : index + 1] == "]":
            return
        while True:
            value, end = decoder.raw_decode(text, index)
            count += 1
            line, counted_to = line + text.count("\n", counted_to, index), index
            yield line, value
            index = _skip_space(text, end)
            separator = text[index : index + 1]
            if separator == "]":
                break
            if separator != ",":
                raise json.JSONDecodeError("expected ',' or ']' after a row", text, index)
            index = _skip_space(text, index + 1)
        if text[_skip_space(text, index + 1) :]:
            raise json.JSONDecodeError("extra data after the array", text, _skip_space(text, index + 1))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno})", path, exc.lineno, count + 1) from None


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _yaml_rows(text: str, path: str) -> Iterator[tuple[int, Any]]:
    data, node = load_yaml(text, path)
    if data is None:
        return
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        raise InputError("a YAML dataset must be a list of mappings", path, 1)
    for item, value in zip(node.value, data, strict=True):
        yield item.start_mark.line + 1, value


def _csv_rows(text: str, path: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    count = 0
    try:
        start = 2
        for record in reader:
            if None in record:
                raise InputError("more values than header columns", path, start, count + 1)
            if any(value is None for value in record.values()):
                raise InputError("fewer values than header columns", path, start, count + 1)
            count += 1
            yield start, dict(record)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"not valid CSV ({exc})", path, reader.line_num, count + 1) from None
