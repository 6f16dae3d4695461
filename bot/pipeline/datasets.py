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

from bot.errors import InputError, InputErrors
from bot.pipeline.yamlio import load_yaml

FORMATS = ("jsonl", "json", "yaml", "csv")
# The row field a case id comes from when a suite sets no `id_field`; rows without it get a hash.
DEFAULT_ID_FIELD = "id"
# Rows listed as unreadable per file: past this many, the file is refused at the next one.
MAX_ROW_ERRORS = 500


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
    # The field case ids come from, and how many rows lack it and are named by a hash instead.
    id_field: str = DEFAULT_ID_FIELD
    hashed_ids: int = 0


def dataset_format(path: str) -> str:
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix == "yml":
        suffix = "yaml"
    if suffix == "ndjson":
        suffix = "jsonl"
    if suffix not in FORMATS:
        raise InputError(f"unknown dataset format {suffix or '(none)'!r}: use .jsonl, .json, .yaml or .csv", path)
    return suffix


def case_id(fields: dict[str, Any], id_field: str = DEFAULT_ID_FIELD) -> str | None:
    """The row's value of `id_field` as text, or None when it has none (absent, null or empty)."""
    value = fields.get(id_field)
    return None if value in (None, "") else str(value)


def row_hash(fields: dict[str, Any]) -> str:
    """A 12-character hash of the row's canonical JSON (stable across key order and formats)."""
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def id_field_candidates(rows: list[dict[str, Any]]) -> list[str]:
    """Fields that could name the cases: called `id` or `*_id`/`*Id`, a scalar in every row, never repeated.

    `id` comes first, then the others in the first row's field order.
    """
    if not rows:
        return []
    names = [name for name in rows[0] if name.lower() == "id" or name.lower().endswith("_id") or name.endswith("Id")]
    found = []
    for name in sorted(names, key=lambda n: n.lower() != "id"):
        values = [row.get(name) for row in rows]
        if all(isinstance(v, str | int) and v != "" for v in values) and len(set(map(str, values))) == len(rows):
            found.append(name)
    return found


def parse_dataset(text: str, path: str, max_rows: int | None = None, id_field: str | None = None) -> Dataset:
    """Parse a dataset file by its extension.

    Args:
        text: the file's text.
        path: the file's path (its extension gives the format).
        max_rows: refuse the file at its first row past this many (the base's `limits.max_cases`).
        id_field: the suite's `id_field`: every row must carry a case id in it. None: ids come from
            `id` where rows have one, else from a hash of the row.

    Raises:
        InputErrors: every row that cannot be read (up to MAX_ROW_ERRORS): JSONL and CSV rows are read
            one by one, so a bad row does not hide the next; a JSON or YAML syntax error stops the file.
            Rows without an id in an explicit `id_field`, both lines of a repeated case id, and the
            first row past `max_rows` (which stops the file) are listed too, each with line and row.
    """
    fmt = dataset_format(path)
    raw = {"jsonl": _jsonl_rows, "json": _json_rows, "yaml": _yaml_rows, "csv": _csv_rows}[fmt](text, path)
    field_name = id_field or DEFAULT_ID_FIELD
    cases = []
    errors: list[InputError] = []
    hashed = 0
    seen: dict[str, Case] = {}
    try:
        for number, (line, fields) in enumerate(raw, start=1):
            if max_rows is not None and number > max_rows:
                limit = f"more than {max_rows:,} rows (`limits.max_cases` in the base branch's .evalbot.yml)"
                errors.append(InputError(limit, path, line, number))
                break
            if len(errors) >= MAX_ROW_ERRORS:
                errors.append(InputError(f"more than {MAX_ROW_ERRORS} rows cannot be read: stopped here", path, line))
                break
            problem = _row_problem(fields, field_name, id_field is not None)
            if problem is not None:
                errors.append(InputError(problem, path, line, number))
                continue
            cid = case_id(fields, field_name)
            if cid is None:
                cid, hashed = row_hash(fields), hashed + 1
            if cid in seen:
                first = seen[cid]
                errors.append(
                    InputError(f"case id {cid!r} repeats line {first.line} (row {first.row})", path, line, number)
                )
                continue
            case = Case(id=cid, row=number, line=line, fields=fields)
            seen[cid] = case
            cases.append(case)
    except InputError as exc:  # a syntax error that stops the file: listed after the rows before it
        errors.append(exc)
    if errors:
        raise InputErrors(errors)
    return Dataset(path=path, cases=tuple(cases), id_field=field_name, hashed_ids=hashed)


def _row_problem(fields: Any, field_name: str, explicit: bool) -> str | None:
    """What is wrong with one row, or None: not an object (a reader's own error too), or no usable case id."""
    if isinstance(fields, _BadRow):
        return fields.message
    if not isinstance(fields, dict):
        return f"a row must be an object, not {type(fields).__name__}"
    if explicit and case_id(fields, field_name) is None:
        state = "is empty" if field_name in fields else "is missing"
        return f"case id field '{field_name}' (the suite's id_field) {state}"
    if explicit and isinstance(fields[field_name], dict | list):
        return f"case id field '{field_name}' must be a string or a number"
    return None


@dataclass(frozen=True)
class _BadRow:
    """A row a reader could not parse, yielded in its place so that the rows after it are still read."""

    message: str


# The readers yield rows one by one, so a row cap stops reading at the first row past it.
def _jsonl_rows(text: str, path: str) -> Iterator[tuple[int, Any]]:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        value: Any
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            value = _BadRow(f"not valid JSON ({exc.msg} at column {exc.colno})")
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
            count += 1
            if None in record:
                yield start, _BadRow("more values than header columns")
            elif any(value is None for value in record.values()):
                yield start, _BadRow("fewer values than header columns")
            else:
                yield start, dict(record)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"not valid CSV ({exc})", path, reader.line_num, count + 1) from None
