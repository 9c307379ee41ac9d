"""Dependencies run downward: training does not reach the batch job, the report does not reach training,
and inference (all that serving imports) reaches no training code. Imports inside functions count: a
lazy import is still a dependency."""

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@cache
def direct_imports(module: str) -> frozenset[str]:
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return frozenset(name for name in found if name.startswith(("pipeline.", "serving.")) and _exists(name))


def _exists(module: str) -> bool:
    base = ROOT / module.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _packages(module: str) -> list[str]:
    """The packages whose `__init__` runs when `module` is imported (pipeline.jobs.flag.job -> pipeline.jobs, pipeline.jobs.flag)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def reachable(module: str) -> set[str]:
    seen, todo = set(), [module, *_packages(module)]
    while todo:
        for name in direct_imports(todo.pop()):
            for reached in (name, *_packages(name)):
                if reached not in seen:
                    seen.add(reached)
                    todo.append(reached)
    return seen


def within(names: set[str], forbidden: set[str]) -> list[str]:
    """The names that are one of `forbidden` or inside one of those packages."""
    return sorted(name for name in names if any(name == f or name.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("pipeline.training.train", {"pipeline.jobs", "pipeline.report"}),
        ("pipeline.report", {"pipeline.training.train", "pipeline.jobs"}),
        ("pipeline.training.flag_eval", {"pipeline.jobs", "pipeline.training.train"}),
        ("pipeline.nudge", {"pipeline.jobs", "pipeline.training", "pipeline.report", "pipeline.tracking"}),
        ("pipeline.inference", {"pipeline.training", "pipeline.jobs", "pipeline.report", "pipeline.tracking"}),
        ("serving.service", {"pipeline.training", "pipeline.jobs", "pipeline.report", "pipeline.tracking"}),
    ],
)
def test_module_does_not_reach(module, forbidden):
    assert not within(reachable(module), forbidden), f"{module} reaches {within(reachable(module), forbidden)}"
