"""Where the pipeline reads files at a revision: a `Source` protocol and the local git implementation."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Protocol

from bot.errors import InputError


class Source(Protocol):
    """Files of one repository at two revisions. The GitHub layer implements it over the REST API."""

    async def read_text(self, ref: str, path: str) -> str | None:
        """The file's text at `ref`, or None when it does not exist there."""

    async def changed_paths(self, base: str, head: str) -> list[str]:
        """Paths added, modified, deleted or renamed (both names) between `base` and `head`."""


class GitSource:
    """A local git repository: `evalbot eval --repo DIR --base REF --head REF`."""

    def __init__(self, repo: Path):
        self.repo = repo
        if not (repo / ".git").exists() and self._git("rev-parse", "--git-dir", check=False) is None:
            raise InputError(f"{repo} is not a git repository")

    def resolve(self, ref: str) -> str:
        """The commit SHA of `ref`.

        Raises:
            InputError: when the ref names no commit.
        """
        sha = self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if not sha:
            raise InputError(f"{ref!r} is not a commit in {self.repo}")
        return sha.strip()

    async def read_text(self, ref: str, path: str) -> str | None:
        return await asyncio.to_thread(self._git, "show", f"{ref}:{path}", check=False)

    async def changed_paths(self, base: str, head: str) -> list[str]:
        # Three dots: what the head branch changed since it forked, as a pull request's diff shows it.
        out = await asyncio.to_thread(self._git, "diff", "--name-status", "-z", "--no-renames", f"{base}...{head}")
        fields = (out or "").split("\0")
        return sorted({fields[i + 1] for i in range(0, len(fields) - 1, 2) if fields[i]})

    def _git(self, *args: str, check: bool = True) -> str | None:
        result = subprocess.run(
            ["git", "-C", str(self.repo), *args], capture_output=True, text=True, encoding="utf-8", errors="replace"
        )
        if result.returncode != 0:
            if check:
                raise InputError(f"git {args[0]} failed: {result.stderr.strip()}")
            return None
        return result.stdout


class WorkTreeSource:
    """A checkout's files as they are on disk (`evalbot validate`); there is one revision, ''."""

    def __init__(self, root: Path):
        self.root = root

    async def read_text(self, ref: str, path: str) -> str | None:
        file = self.root / path
        return file.read_text(encoding="utf-8") if file.is_file() else None

    async def changed_paths(self, base: str, head: str) -> list[str]:
        return []
