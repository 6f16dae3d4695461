"""Where the pipeline reads files at a revision: a `Source` protocol and the local git implementation."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path
from typing import Protocol

from bot.errors import FileTooLargeError, InputError

# Characters of URL syntax: a path carrying them could address something else once put into a URL.
_URL_SYNTAX = (":", "?", "#", "%")


def path_problem(path: str) -> str | None:
    """Why `path` is not a plain relative path inside the repository, or None when it is one.

    Suite files are read with credentials that can reach other repositories (the GitHub API) or the
    whole disk (a checkout): only a canonical `dir/file` form, with nothing to resolve, is accepted.
    """
    if not path:
        return "the path is empty"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return "the path has a control character"
    if "\\" in path:
        return "the path has a backslash (use / between directories)"
    if path.startswith("/"):
        return "the path starts with / (write it relative to the repository root)"
    found = [ch for ch in _URL_SYNTAX if ch in path]
    if found:
        return f"the path has {found[0]!r} (no URL syntax: ':', '?', '#', '%')"
    segments = path.split("/")
    if "" in segments:
        return "the path has an empty segment ('//' or a trailing '/')"
    if ".." in segments or "." in segments:
        return "the path has a '.' or '..' segment (it must name a file inside the repository)"
    return None


def check_path(path: str) -> None:
    """Refuse a path that is not a plain relative path inside the repository.

    Raises:
        InputError: naming the path and what is wrong with it.
    """
    problem = path_problem(path)
    if problem is not None:
        raise InputError(f"not a path inside the repository: {problem}", path)


class Source(Protocol):
    """Files of one repository at two revisions. The GitHub layer implements it over the REST API."""

    async def read_text(self, ref: str, path: str, max_bytes: int) -> str | None:
        """The file's text at `ref`, or None when it does not exist there.

        Raises:
            FileTooLargeError: when the file has more than `max_bytes`, found before it is read whole.
            InputError: when `path` is not a plain relative path, or names a directory, a symbolic
                link or a submodule rather than a file.
        """

    async def changed_paths(self, base: str, head: str) -> list[str]:
        """Paths added, modified, deleted or renamed (both names) between `base` and `head`."""

    async def merge_base(self, base: str, head: str) -> str:
        """The commit `base...head` is compared from: what the head changed is measured from there."""


def not_a_file(path: str, kind: str) -> InputError:
    """The error for a suite path that names a directory, a symbolic link or a submodule."""
    return InputError(f"is a {kind}, not a file: name the file itself", path)


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

    async def read_text(self, ref: str, path: str, max_bytes: int) -> str | None:
        check_path(path)
        return await asyncio.to_thread(self._read, ref, path, max_bytes)

    def _read(self, ref: str, path: str, max_bytes: int) -> str | None:
        # The tree entry says what the path is and how big, before a byte of it is read.
        listing = self._git("--literal-pathspecs", "ls-tree", "-l", "-z", ref, "--", path, check=False)
        entry = next((e for e in (listing or "").split("\0") if e.endswith(f"\t{path}")), None)
        if entry is None:
            return None
        mode, kind, sha, size = entry.split("\t", 1)[0].split()
        if kind == "tree":
            raise not_a_file(path, "directory")
        if kind == "commit":
            raise not_a_file(path, "submodule")
        if mode == "120000":
            raise not_a_file(path, "symbolic link")
        if int(size) > max_bytes:
            raise FileTooLargeError(path, int(size), max_bytes)
        return self._git("cat-file", "blob", sha)

    async def changed_paths(self, base: str, head: str) -> list[str]:
        # Three dots: what the head branch changed since it forked, as a pull request's diff shows it.
        out = await asyncio.to_thread(self._git, "diff", "--name-status", "-z", "--no-renames", f"{base}...{head}")
        fields = (out or "").split("\0")
        return sorted({fields[i + 1] for i in range(0, len(fields) - 1, 2) if fields[i]})

    async def merge_base(self, base: str, head: str) -> str:
        found = await asyncio.to_thread(self._git, "merge-base", base, head, check=False)
        # Unrelated histories have none: the base itself is what the head is compared with.
        return found.strip() if found else base

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

    async def read_text(self, ref: str, path: str, max_bytes: int) -> str | None:
        check_path(path)
        file = self.root / path
        # Every component is looked at without following links: a linked directory could lead anywhere.
        for part in [*reversed(file.relative_to(self.root).parents[:-1]), Path(path)]:
            try:
                info = os.lstat(self.root / part)
            except FileNotFoundError:
                return None
            if stat.S_ISLNK(info.st_mode):
                raise not_a_file(str(part), "symbolic link")
        if stat.S_ISDIR(info.st_mode):
            raise not_a_file(path, "directory")
        if not stat.S_ISREG(info.st_mode):
            raise not_a_file(path, "special file")
        if info.st_size > max_bytes:
            raise FileTooLargeError(path, info.st_size, max_bytes)
        return file.read_text(encoding="utf-8", errors="replace")

    async def changed_paths(self, base: str, head: str) -> list[str]:
        return []

    async def merge_base(self, base: str, head: str) -> str:
        return base
