"""Data quality gates on a large dataset: parse, schema and drift of N rows against a base of N rows.

Prints rows/s for each stage and in all. Usage: python bench/bench_data.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import time

from bot.pipeline.config import DataGates
from bot.pipeline.data_quality import check
from bot.pipeline.datasets import parse_dataset
from bot.pipeline.prompts import parse_prompt

SCHEMA = """
type: object
required: [id, guest_request, category, nights_stayed, expected]
properties:
  id: {type: string}
  guest_request: {type: string, minLength: 5}
  category: {enum: [booking, cancellation, complaint, facility, adversarial]}
  nights_stayed: {type: integer, minimum: 0}
  expected: {type: string}
"""
PROMPT = parse_prompt('version: "1.0.0"\nmodel: m\nuser_prompt_template: "{guest_request}"\n', "p.yaml")


def jsonl(rows: int, seed: int, complaint_share: float) -> str:
    rng = random.Random(seed)
    others = ["booking", "cancellation", "facility", "adversarial"]
    lines = []
    for i in range(rows):
        category = "complaint" if rng.random() < complaint_share else rng.choice(others)
        row = {
            "id": f"c{i}",
            "guest_request": f"guest request {rng.randint(0, 10**9)} about {category}",
            "category": category,
            "nights_stayed": rng.randint(0, 60),
            "expected": rng.choice(["yes", "no", "escalate"]),
        }
        lines.append(json.dumps(row))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    base_text, head_text = jsonl(args.rows, 1, 0.2), jsonl(args.rows, 2, 0.65)

    started = time.perf_counter()
    base, head = parse_dataset(base_text, "base.jsonl"), parse_dataset(head_text, "head.jsonl")
    parsed = time.perf_counter()
    result = check("bench", head, base, DataGates(), PROMPT, schema=("s.yaml", SCHEMA))
    checked = time.perf_counter()

    rows = args.rows
    print(f"rows: {rows} head + {rows} base")
    print(f"parse (both files):         {parsed - started:.2f} s  ({2 * rows / (parsed - started):,.0f} rows/s)")
    print(
        f"schema + diff + drift + anomalies: {checked - parsed:.2f} s  ({rows / (checked - parsed):,.0f} head rows/s)"
    )
    print(f"in all:                     {checked - started:.2f} s  ({rows / (checked - started):,.0f} head rows/s)")
    drifted = [d.column for d in result.drift if d.drifted]
    print(f"findings: {[f.gate for f in result.findings]}; drifted columns: {drifted}")


if __name__ == "__main__":
    main()
