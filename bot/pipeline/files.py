"""The one way the pipeline reads a repository file: path rules, size cap, LFS objects, parsing off the loop."""

from __future__ import annotations

import asyncio

from bot.errors import InputError
from bot.pipeline.config import CONFIG_PATH, Config, Limits, parse_config
from bot.pipeline.datasets import Dataset, parse_dataset
from bot.pipeline.source import LFS_POINTER, Source


async def read_file(source: Source, ref: str, path: str, limits: Limits) -> str | None:
    """The text of `path` at `ref`, or None when it does not exist there.

    Args:
        source: the repository.
        ref: the revision.
        path: a plain path relative to the repository root.
        limits: the base branch's limits (`max_file_mb` is checked before the file is read whole).

    Raises:
        InputError: for a path outside the repository, a directory, symbolic link or submodule, a
            file over `max_file_mb`, or a Git LFS pointer.
    """
    # Every Source refuses a path outside the repository itself (config validation did too), and
    # reads a Git LFS file's object; a pointer left is a source that could not, never parsed as data.
    text = await source.read_text(ref, path, limits.max_file_bytes)
    if text is not None and text.startswith(LFS_POINTER):
        raise InputError("stored in Git LFS, and its object could not be read (the pointer is all there is)", path)
    return text


async def read_config(source: Source, ref: str) -> Config | None:
    """`.evalbot.yml` at `ref`, or None when there is none; read under the default limits (it sets them)."""
    text = await read_file(source, ref, CONFIG_PATH, Limits())
    return None if text is None else await asyncio.to_thread(parse_config, text)


async def read_dataset(
    source: Source, ref: str, path: str, limits: Limits, capped: bool = True, id_field: str | None = None
) -> Dataset | None:
    """The dataset at `ref`, or None when it does not exist there; parsed off the event loop.

    Args:
        source: the repository.
        ref: the revision.
        path: the dataset's path.
        limits: the base branch's limits.
        capped: refuse more rows than `limits.max_cases` (eval cases; training data is not capped).
        id_field: the suite's `id_field` (see `parse_dataset`).
    """
    text = await read_file(source, ref, path, limits)
    if text is None:
        return None
    return await asyncio.to_thread(parse_dataset, text, path, limits.max_cases if capped else None, id_field)
