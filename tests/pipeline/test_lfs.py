"""Git LFS files read locally through `git lfs`: the object, not the pointer; a clear error without it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.errors import FileTooLargeError, InputError
from bot.pipeline.source import GitSource, LfsPointer, WorkTreeSource, lfs_pointer
from tests.conftest import GitRepo

ROWS = '{"id": "1", "question": "What is 2+2?", "expected": "4"}\n'
# scripts/install-test-tools.sh installs git-lfs (CI runs it, and fails on a skip).
pytestmark = pytest.mark.skipif(
    subprocess.run(["git", "lfs", "version"], capture_output=True).returncode != 0, reason="git-lfs is not installed"
)


@pytest.fixture
def lfs_repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "repo")
    repo.git("lfs", "install", "--local")
    repo.git("lfs", "track", "evals/*.jsonl")
    repo.write("evals/qa.jsonl", ROWS)
    repo.commit("rows in LFS", tag="head")
    return repo


def test_the_commit_holds_a_pointer(lfs_repo: GitRepo) -> None:
    stored = lfs_repo.git("cat-file", "blob", "head:evals/qa.jsonl")
    pointer = lfs_pointer(stored)
    assert pointer is not None and pointer.size == len(ROWS.encode())


async def test_git_source_reads_the_lfs_object(lfs_repo: GitRepo) -> None:
    assert await GitSource(lfs_repo.root).read_text("head", "evals/qa.jsonl", 10_000) == ROWS


async def test_the_object_size_is_checked_before_it_is_read(lfs_repo: GitRepo) -> None:
    with pytest.raises(FileTooLargeError):
        await GitSource(lfs_repo.root).read_text("head", "evals/qa.jsonl", 20)


async def test_a_checkout_without_git_lfs_holds_pointers_and_they_are_read(lfs_repo: GitRepo) -> None:
    (lfs_repo.root / "evals/qa.jsonl").write_text(lfs_repo.git("cat-file", "blob", "head:evals/qa.jsonl"))
    assert await WorkTreeSource(lfs_repo.root).read_text("", "evals/qa.jsonl", 10_000) == ROWS


async def test_an_object_missing_from_the_clone_is_an_error(lfs_repo: GitRepo) -> None:
    shutil.rmtree(lfs_repo.root / ".git" / "lfs" / "objects")
    with pytest.raises(InputError) as caught:
        await GitSource(lfs_repo.root).read_text("head", "evals/qa.jsonl", 10_000)
    assert caught.value.path == "evals/qa.jsonl"
    assert caught.value.message.startswith(
        "stored in Git LFS, and `git lfs` could not give its object (Error downloading"
    )
    assert caught.value.message.endswith("): run `git lfs pull`")


async def test_without_git_lfs_the_error_names_the_install_step(
    lfs_repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PATH with git and nothing else: `git lfs` is then an unknown command, as on a machine without it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = shutil.which("git")
    assert git is not None
    (bin_dir / "git").symlink_to(git)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert not any((Path(d) / "git-lfs").exists() for d in os.environ["PATH"].split(os.pathsep))
    with pytest.raises(InputError) as caught:
        await GitSource(lfs_repo.root).read_text("head", "evals/qa.jsonl", 10_000)
    assert caught.value.message == (
        "stored in Git LFS, and the `git lfs` command is missing: install git-lfs (Debian/Ubuntu: "
        "`apt-get install git-lfs`; macOS: `brew install git-lfs`), then `git lfs install`"
    )


@pytest.mark.parametrize(
    ("text", "pointer"),
    [
        (
            "version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 12\n",
            LfsPointer("ab" * 32, 12),
        ),
        ("version https://git-lfs.github.com/spec/v1\noid sha256:short\nsize 12\n", None),
        ("version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\n", None),
        ('{"version": "https://git-lfs.github.com/spec/v1"}', None),
    ],
)
def test_lfs_pointers_are_recognised_by_the_spec(text: str, pointer: LfsPointer | None) -> None:
    assert lfs_pointer(text) == pointer
