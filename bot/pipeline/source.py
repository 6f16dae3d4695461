"""Where the pipeline reads files at a revision: a `Source` protocol and the local git implementation."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import subprocess
from dataclasses import dataclass
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


# The first line of every Git LFS pointer file (git-lfs spec v1); a pointer is under 1024 bytes.
LFS_POINTER = "version https://git-lfs.github.com/spec/v1"
_LFS_POINTER_MAX_BYTES = 1024
_LFS_OID = re.compile(r"^oid sha256:([0-9a-f]{64})$", re.MULTILINE)
_LFS_SIZE = re.compile(r"^size (\d+)$", re.MULTILINE)
LFS_INSTALL = (
    "install git-lfs (Debian/Ubuntu: `apt-get install git-lfs`; macOS: `brew install git-lfs`), then `git lfs install`"
)


@dataclass(frozen=True)
class LfsPointer:
    """A Git LFS pointer: the stored object's SHA-256 and its size in bytes."""

    oid: str
    size: int


def lfs_pointer(text: str) -> LfsPointer | None:
    """The LFS object a file's text points at, or None when the text is not an LFS pointer."""
    if not text.startswith(LFS_POINTER) or len(text.encode()) > _LFS_POINTER_MAX_BYTES:
        return None
    oid, size = _LFS_OID.search(text), _LFS_SIZE.search(text)
    return LfsPointer(oid.group(1), int(size.group(1))) if oid and size else None


def git_lfs_smudge(repo: Path, path: str, pointer_text: str, max_bytes: int) -> str:
    """The content of the LFS object `pointer_text` points at, through the `git lfs` command
    (from the clone's LFS store, fetched from its remote when missing).

    Raises:
        FileTooLargeError: the object is over `max_bytes` (from the pointer, before it is fetched).
        InputError: git-lfs is not installed (naming the install step), or the object cannot be had.
    """
    pointer = lfs_pointer(pointer_text)
    if pointer is None:
        return pointer_text
    if pointer.size > max_bytes:
        raise FileTooLargeError(path, pointer.size, max_bytes)
    result = subprocess.run(
        ["git", "-C", str(repo), "lfs", "smudge", "--", path], input=pointer_text.encode(), capture_output=True
    )
    error = result.stderr.decode("utf-8", "replace").strip()
    if result.returncode != 0 and "is not a git command" in error:
        raise InputError(f"stored in Git LFS, and the `git lfs` command is missing: {LFS_INSTALL}", path)
    if result.returncode != 0 or len(result.stdout) != pointer.size:
        lines = error.splitlines() or ["no content"]
        detail = next((line for line in lines if "rror" in line), lines[0])
        raise InputError(
            f"stored in Git LFS, and `git lfs` could not give its object ({detail}): run `git lfs pull`", path
        )
    return result.stdout.decode("utf-8", errors="replace")


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

    async def list_files(self, ref: str, directory: str) -> list[str]:
        """Every file under `directory` ('' for the root) at `ref`, as paths from the repository root
        (for globs such as promptfoo's `file://prompts/*.txt`)."""


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
        text = self._git("cat-file", "blob", sha)
        return git_lfs_smudge(self.repo, path, text, max_bytes) if text is not None else None

    async def changed_paths(self, base: str, head: str) -> list[str]:
        # Three dots: what the head branch changed since it forked, as a pull request's diff shows it.
        out = await asyncio.to_thread(self._git, "diff", "--name-status", "-z", "--no-renames", f"{base}...{head}")
        fields = (out or "").split("\0")
        return sorted({fields[i + 1] for i in range(0, len(fields) - 1, 2) if fields[i]})

    async def merge_base(self, base: str, head: str) -> str:
        found = await asyncio.to_thread(self._git, "merge-base", base, head, check=False)
        # Unrelated histories have none: the base itself is what the head is compared with.
        return found.strip() if found else base

    async def list_files(self, ref: str, directory: str) -> list[str]:
        if directory:
            check_path(directory)
        args = ["ls-tree", "-r", "-z", "--name-only", ref, "--", directory or "."]
        out = await asyncio.to_thread(self._git, "--literal-pathspecs", *args, check=False)
        return [path for path in (out or "").split("\0") if path]

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
        text = file.read_text(encoding="utf-8", errors="replace")
        # A checkout made without git-lfs holds pointers: read the objects as `git lfs` would have.
        return git_lfs_smudge(self.root, path, text, max_bytes) if lfs_pointer(text) else text

    async def changed_paths(self, base: str, head: str) -> list[str]:
        return []

    async def merge_base(self, base: str, head: str) -> str:
        return base

    async def list_files(self, ref: str, directory: str) -> list[str]:
        if directory:
            check_path(directory)
        return await asyncio.to_thread(self._walk, directory)

    def _walk(self, directory: str) -> list[str]:
        found = []
        # os.walk does not follow linked directories; linked files are left out (read_text refuses them).
        for top, dirs, files in os.walk(self.root / directory):
            dirs[:] = [d for d in dirs if d != ".git"]
            for name in files:
                if stat.S_ISREG(os.lstat(os.path.join(top, name)).st_mode):
                    found.append(Path(top, name).relative_to(self.root).as_posix())
        return sorted(found)


# The head revision of `evalbot eval` without `--head`: the checkout's files as they are on disk.
WORKING_TREE = "working tree"


class GitWorkingTreeSource(GitSource):
    """The base from git, the head from the working tree (committed or not, untracked files included)."""

    def __init__(self, repo: Path):
        super().__init__(repo)
        top = self._git("rev-parse", "--show-toplevel")
        assert top is not None  # check=True raises instead
        self.files = WorkTreeSource(Path(top.strip()))
        status = self._git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames") or ""
        # Each entry is "XY path"; a path that differs from HEAD in the index or on disk is uncommitted.
        self.uncommitted = {entry[3:] for entry in status.split("\0") if len(entry) > 3}
        # The uncommitted files this run read, for the report to name.
        self.read_uncommitted: set[str] = set()

    async def read_text(self, ref: str, path: str, max_bytes: int) -> str | None:
        if ref != WORKING_TREE:
            return await super().read_text(ref, path, max_bytes)
        text = await self.files.read_text(ref, path, max_bytes)
        if text is not None and path in self.uncommitted:
            self.read_uncommitted.add(path)
        return text

    async def list_files(self, ref: str, directory: str) -> list[str]:
        if ref != WORKING_TREE:
            return await super().list_files(ref, directory)
        return await self.files.list_files(ref, directory)

    async def changed_paths(self, base: str, head: str) -> list[str]:
        if head != WORKING_TREE:
            return await super().changed_paths(base, head)
        return await asyncio.to_thread(self._working_tree_changes, base)

    def _working_tree_changes(self, base: str) -> list[str]:
        # As a pull request from this checkout would show it: since the fork point, what is committed,
        # staged, modified on disk, or new and not ignored.
        fork = self._git("merge-base", base, "HEAD")
        assert fork is not None
        out = self._git("diff", "--name-status", "-z", "--no-renames", fork.strip()) or ""
        fields = out.split("\0")
        changed = {fields[i + 1] for i in range(0, len(fields) - 1, 2) if fields[i]}
        untracked = self._git("ls-files", "--others", "--exclude-standard", "-z") or ""
        return sorted(changed | {path for path in untracked.split("\0") if path})
