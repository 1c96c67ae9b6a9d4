"""Tests share helpers through helper modules and conftest fixtures, never by importing another
test module or a conftest (pytest may collect a test module twice under two names)."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def test_no_test_imports_a_test_module_or_a_conftest():
    offenders = sorted(
        f"{path.relative_to(TESTS.parent)} imports {name}"
        for path in TESTS.rglob("*.py")
        for name in imported_names(path)
        if any(part.startswith("test_") or part == "conftest" for part in name.split("."))
    )
    assert offenders == []
