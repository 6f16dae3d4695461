"""Eval datasets in JSONL, JSON, YAML or CSV: rows with their line numbers and stable case ids."""

from __future__ import annotations

import csv
import hashlib
import io
import json
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


def parse_dataset(text: str, path: str) -> Dataset:
    """Parse a dataset file by its extension.

    Raises:
        InputError: naming the file, line and row of the first row that cannot be read, and any
            repeated case id.
    """
    fmt = dataset_format(path)
    raw = {"jsonl": _jsonl_rows, "json": _json_rows, "yaml": _yaml_rows, "csv": _csv_rows}[fmt](text, path)
    cases = []
    seen: dict[str, int] = {}
    for number, (line, fields) in enumerate(raw, start=1):
        if not isinstance(fields, dict):
            raise InputError(f"a row must be an object, not {type(fields).__name__}", path, line, number)
        cid = case_id(fields)
        if cid in seen:
            raise InputError(f"case id {cid!r} repeats row {seen[cid]}", path, line, number)
        seen[cid] = number
        cases.append(Case(id=cid, row=number, line=line, fields=fields))
    return Dataset(path=path, cases=tuple(cases))


def _jsonl_rows(text: str, path: str) -> list[tuple[int, Any]]:
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((line_no, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InputError(
                f"not valid JSON ({exc.msg} at column {exc.colno})", path, line_no, len(rows) + 1
            ) from None
    return rows


def _json_rows(text: str, path: str) -> list[tuple[int, Any]]:
    # json.loads gives no positions for array items; decode them one by one to keep each row's line.
    decoder = json.JSONDecoder()
    rows: list[tuple[int, Any]] = []
    index = _skip_space(text, 0)
    try:
        if text[index : index + 1] != "[":
            raise json.JSONDecodeError("a JSON dataset must be an array of objects", text, index)
        index = _skip_space(text, index + 1)
        if text[index : index + 1] == "]":
            return rows
        while True:
            value, end = decoder.raw_decode(text, index)
            rows.append((text.count("\n", 0, index) + 1, value))
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
        raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno})", path, exc.lineno, len(rows) + 1) from None
    return rows


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _yaml_rows(text: str, path: str) -> list[tuple[int, Any]]:
    data, node = load_yaml(text, path)
    if data is None:
        return []
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        raise InputError("a YAML dataset must be a list of mappings", path, 1)
    return [(item.start_mark.line + 1, value) for item, value in zip(node.value, data, strict=True)]


def _csv_rows(text: str, path: str) -> list[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[tuple[int, Any]] = []
    try:
        start = 2
        for record in reader:
            if None in record:
                raise InputError("more values than header columns", path, start, len(rows) + 1)
            if any(value is None for value in record.values()):
                raise InputError("fewer values than header columns", path, start, len(rows) + 1)
            rows.append((start, dict(record)))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"not valid CSV ({exc})", path, reader.line_num, len(rows) + 1) from None
    return rows
