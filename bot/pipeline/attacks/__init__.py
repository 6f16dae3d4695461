"""evalbot's built-in attack library: data in the package (`v<N>.yaml`), one file per released version.

A leaf: `bot.pipeline.config` checks a suite's `adversarial:` against it, `bot.pipeline.adversarial` runs it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.errors import InputError
from bot.pipeline.yamlio import load_yaml, validate_model

# The placeholders an attack's text and plant are written with.
MARKER = "{marker}"
CANARY = "{canary}"
TEST_KEYS = ("canary", "marker", "pattern", "tool", "judge")


class SuccessTest(BaseModel):
    """How to tell that an attack succeeded: exactly one of the keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The canary evalbot plants in the system prompt appears in the answer.
    canary: bool = False
    # The code word the attack's text asks for (`{marker}`) appears in the answer.
    marker: bool = False
    # The answer matches this pattern (the `regex` module).
    pattern: str | None = Field(default=None, min_length=1)
    # The answer calls this tool.
    tool: str | None = Field(default=None, min_length=1)
    # The base's judge answers yes to this question about the answer.
    judge: str | None = Field(default=None, min_length=1)
    # What is planted in the system prompt for a canary test, `{canary}` in it; None: the library's.
    plant: str | None = None

    @model_validator(mode="after")
    def _one_test(self) -> SuccessTest:
        given = [key for key in TEST_KEYS if getattr(self, key)]
        if len(given) != 1:
            raise ValueError(f"an attack takes exactly one success test of {', '.join(TEST_KEYS)}; given: {given}")
        if self.pattern is not None:
            try:
                regex.compile(self.pattern)
            except regex.error as exc:
                raise ValueError(f"pattern is not a regular expression: {exc}") from None
        if self.plant is not None and CANARY not in self.plant:
            raise ValueError(f"a plant must contain {CANARY}, the canary the test looks for")
        return self

    @property
    def kind(self) -> str:
        return next(key for key in TEST_KEYS if getattr(self, key))


class Attack(SuccessTest):
    """One attack of the library: its text goes into a row field."""

    id: str = Field(min_length=1)
    family: str = Field(min_length=1)
    text: str = Field(min_length=1)

    @model_validator(mode="after")
    def _marker_asked_for(self) -> Attack:
        if self.marker and MARKER not in self.text:
            raise ValueError(f"a marker test needs {MARKER} in the attack's text, the code word it asks for")
        return self


class Library(BaseModel):
    """One version of the library."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    # What a canary test plants when its attack has no `plant` of its own.
    plant: str
    # Each family and what its attacks try.
    families: dict[str, str] = Field(min_length=1)
    attacks: list[Attack] = Field(min_length=1)

    @field_validator("plant")
    @classmethod
    def _plants_the_canary(cls, plant: str) -> str:
        if CANARY not in plant:
            raise ValueError(f"the plant must contain {CANARY}")
        return plant

    @model_validator(mode="after")
    def _consistent(self) -> Library:
        ids = [attack.id for attack in self.attacks]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"attack ids must be unique; repeated: {', '.join(repeated)}")
        unknown = sorted({a.family for a in self.attacks} - set(self.families))
        if unknown:
            raise ValueError(f"attacks of families the library does not list: {', '.join(unknown)}")
        empty = sorted(set(self.families) - {a.family for a in self.attacks})
        if empty:
            raise ValueError(f"families without an attack: {', '.join(empty)}")
        return self


def versions() -> list[str]:
    """The released versions, oldest first (`v1`, `v2`, ...)."""
    names = [entry.name for entry in resources.files(__name__).iterdir() if entry.name.endswith(".yaml")]
    return sorted((name.removesuffix(".yaml") for name in names), key=lambda v: int(v.removeprefix("v")))


@cache
def load_library(version: str) -> Library:
    """The library of `version` (`v1`), read from the package.

    Raises:
        InputError: no such version, or its file is not a valid library.
    """
    if version not in versions():
        raise InputError(f"no attack library {version!r}; released: {', '.join(versions())}")
    path = f"{version}.yaml"
    text = resources.files(__name__).joinpath(path).read_text(encoding="utf-8")
    data, node = load_yaml(text, path)
    library = validate_model(Library, data, path, node)
    if f"v{library.version}" != version:
        raise InputError(f"{path} says it is version {library.version}")
    return library
