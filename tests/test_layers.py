"""bot/'s layers, read from its modules' imports (function-level imports included): no import cycle, and
no module imports a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

BOT = Path(__file__).resolve().parent.parent / "bot"

# Each layer, and the packages it must never import.
FORBIDDEN = {
    "bot.engine": ("bot.pipeline", "bot.store", "bot.github", "bot.web", "bot.cli"),
    "bot.pipeline": ("bot.store", "bot.github", "bot.web", "bot.cli"),
    "bot.store": ("bot.github", "bot.web"),
    "bot": ("bot.cli",),
}
# `python -m bot` runs the CLI: the entry point is the one module above it.
ENTRY_POINT = "bot.__main__"

# bot/github from the bottom up: a module imports its own rank or below, never above. The API calls know
# nothing of evalbot's state; the state may use the API's types; a job's context holds both; liveness
# (heartbeats, hand-over, waiting for Redis) serves the flows; the registry and the webhook, the two
# entry points (worker and web process), import the flows and are imported by none.
GITHUB_RANKS = (
    ("bot.github", "bot.github.constants", "bot.github.metrics"),
    ("bot.github.api",),
    ("bot.github.state",),
    ("bot.github.context",),
    ("bot.github.worker", "bot.github.worker.liveness"),
    ("bot.github.flows",),
    ("bot.github.worker.registry", "bot.github.webhook"),
)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in BOT.rglob("*.py"):
        parts = list(path.relative_to(BOT.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The bot modules `module` imports anywhere in its file, each resolved to the deepest module that exists."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                found.add(name)
    return found


MODULES = _modules()
EDGES = {module: _imports(module, path, MODULES) for module, path in MODULES.items()}


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in EDGES.items()
        if module != ENTRY_POINT
        for layer, above in FORBIDDEN.items()
        if _inside(module, layer)
        for target in targets
        if any(_inside(target, package) for package in above)
    )
    assert upward == []


_RANK = {name: rank for rank, names in enumerate(GITHUB_RANKS) for name in names}


def _github_rank(module: str) -> int | None:
    """The rank of the longest GITHUB_RANKS name that is `module` or a package holding it (`bot.github`
    itself: only its `__init__`)."""
    for name in sorted(_RANK, key=len, reverse=True):
        if module == name or (name != "bot.github" and _inside(module, name)):
            return _RANK[name]
    return None


def test_every_github_module_has_a_rank() -> None:
    assert [m for m in MODULES if _inside(m, "bot.github") and _github_rank(m) is None] == []


def test_no_github_module_imports_a_rank_above_its_own() -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in EDGES.items()
        if _inside(module, "bot.github")
        for target in targets
        if _inside(target, "bot.github") and (_github_rank(target) or 0) > (_github_rank(module) or 0)
    )
    assert upward == []


def test_no_import_cycle() -> None:
    reach: dict[str, set[str]] = {}
    for start in EDGES:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for target in EDGES[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        reach[start] = seen
    cycles = sorted({" -> ".join(sorted(m for m in reach[a] if a in reach[m])) for a in EDGES if a in reach[a]})
    assert cycles == []
