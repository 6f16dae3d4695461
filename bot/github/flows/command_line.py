"""Slash commands in pull request comments: parsing, pure (who may do what is decided in the job)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Literal

CommandName = Literal["eval", "approve", "approve_cancel", "help"]

# A "Re-run" of evalbot/evals or of the check suite in the Checks tab: the clicker's `/eval`, as replies quote it.
RERUN_RAW = "Re-run (Checks tab)"

_FENCE = re.compile(r"^\s*(```|~~~)")
# `/approve 1a2b3c4 [reason]`: a commit as GitHub abbreviates it (7 hex digits) up to the full SHA.
_SHA_PREFIX = re.compile(r"[0-9a-f]{7,40}")


@dataclass(frozen=True)
class Command:
    """A command to act on. `suites`/`models`/`budget_usd` belong to /eval; `reason` and `sha` (the commit
    the approver means, when named) to /approve."""

    name: CommandName
    suites: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    budget_usd: float | None = None
    reason: str = ""
    sha: str = ""
    raw: str = ""


@dataclass(frozen=True)
class Refusal:
    """A line that looks like a command but is not one evalbot takes, with the reason for the reply."""

    reason: str
    raw: str = ""
    show_help: bool = field(default=True)


def command_line(body: str) -> str | None:
    """The first line that starts with `/`, outside code blocks and quoted lines."""
    in_fence = False
    for line in body.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        stripped = line.strip()
        if in_fence or stripped.startswith(">") or line.startswith("    "):
            continue
        if stripped.startswith("/"):
            return stripped
    return None


def parse_command(body: str) -> Command | Refusal | None:
    """The command a comment gives, a Refusal for a malformed or unknown one, or None for no command."""
    line = command_line(body)
    if line is None:
        return None
    head, _, rest = line.partition(" ")
    rest = rest.strip()
    word = head[1:].lower()
    if word == "help":
        return Command("help", raw=line)
    if word == "approve":
        if rest.lower() == "cancel":
            return Command("approve_cancel", raw=line)
        first, _, reason = rest.partition(" ")
        if _SHA_PREFIX.fullmatch(first.lower()):
            return Command("approve", reason=reason.strip(), sha=first.lower(), raw=line)
        return Command("approve", reason=rest, raw=line)
    if word == "eval":
        return _parse_eval(rest, line)
    return Refusal(f"`/{word}` is not an evalbot command", raw=line)


def _parse_eval(rest: str, line: str) -> Command | Refusal:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        return Refusal(f"cannot read `/eval` arguments: {exc}", raw=line)
    suites: list[str] = []
    models: list[str] = []
    budget: float | None = None
    i = 0
    while i < len(words):
        word = words[i]
        option, _, value = word.partition("=")
        if option in ("--models", "--budget"):
            if not value:
                if i + 1 >= len(words):
                    return Refusal(f"`{option}` needs a value", raw=line)
                value = words[i + 1]
                i += 1
            if option == "--models":
                models += [m for m in value.split(",") if m]
            else:
                try:
                    budget = float(value.lstrip("$"))
                except ValueError:
                    return Refusal(f"`--budget` takes an amount in USD, not {value!r}", raw=line)
        elif word.startswith("--"):
            return Refusal(f"unknown option `{word}` for `/eval`", raw=line)
        else:
            suites.append(word)
        i += 1
    return Command("eval", suites=tuple(suites), models=tuple(models), budget_usd=budget, raw=line)
