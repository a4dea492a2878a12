"""The layering of docs/architecture.md, read from the imports of the package's modules: the core
does no I/O and knows no broker, the runtimes never import the API (the composition hands them
their outputs), and nothing but the command line imports the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dsotp_streams"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("runtime"), ids=lambda p: p.name)
def test_runtime_never_imports_the_api(path: Path) -> None:
    assert not {m for m in _imports(path) if m.startswith("dsotp_streams.api")}


@pytest.mark.parametrize("path", _modules("core"), ids=lambda p: p.name)
def test_the_core_does_no_io(path: Path) -> None:
    forbidden = ("asyncio", "aiomqtt", "paho", "aiohttp", "aiokafka", "faust", "socket")
    found = {m for m in _imports(path) if m.split(".")[0] in forbidden}
    found |= {
        m
        for m in _imports(path)
        if m.startswith(("dsotp_streams.adapters", "dsotp_streams.runtime", "dsotp_streams.api"))
    }
    assert not found


def test_only_the_command_line_imports_the_command_line() -> None:
    users = [
        p.relative_to(PACKAGE)
        for p in PACKAGE.rglob("*.py")
        if "cli" not in p.relative_to(PACKAGE).parts and p.name != "__main__.py"
        if any(m.startswith("dsotp_streams.cli") for m in _imports(p))
    ]
    assert users == []
