"""docs/conformance.md stays true: every module and test it names exists, every row id is unique.

Tests get renamed and modules move; a conformance row that points at nothing proves nothing,
so the table is checked against the tree (by reading the files, not by importing them).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from support import REPO_ROOT

DOC = REPO_ROOT / "docs" / "conformance.md"
PACKAGE = REPO_ROOT / "daemon" / "mta_sts_policyd"
ROW_ID = re.compile(r"(?:STS|RPT|PF|DG)-[A-Za-z0-9.]+(?:-[a-z0-9]+)*")


def _rows() -> list[list[str]]:
    """The body rows of every table: one list of cells per row, header and rule lines skipped."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| ") or line.startswith(("| id ", "|---")):
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


@cache
def _functions(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def test_every_row_has_five_cells_and_a_unique_well_formed_id() -> None:
    rows = _rows()
    assert len(rows) > 50
    ids = [row[0] for row in rows]
    assert all(len(row) == 5 for row in rows), [row[0] for row in rows if len(row) != 5]
    assert [i for i in ids if not ROW_ID.fullmatch(i)] == []
    assert len(set(ids)) == len(ids), sorted(i for i in ids if ids.count(i) > 1)


def test_every_named_module_exists() -> None:
    missing = [
        (row[0], path)
        for row in _rows()
        for path in re.findall(r"`([a-z_/]+\.py)`", row[3])
        if not (PACKAGE / path).is_file()
    ]
    assert missing == []


def test_every_named_test_exists() -> None:
    missing = []
    for row in _rows():
        for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row[4]):
            file = REPO_ROOT / path
            if not file.is_file() or name not in _functions(file):
                missing.append((row[0], f"{path}::{name}"))
    assert missing == []


def test_ids_cited_in_the_tree_are_rows() -> None:
    """A `docs/conformance.md: ID` citation in code or tests must name a row that exists."""
    ids = {row[0] for row in _rows()}
    cited = re.compile(r"conformance\.md:\s*((?:" + ROW_ID.pattern + r"(?:,\s*)?)+)")
    unknown = []
    for folder in ("daemon", "tests", "bench", "postfix-examples", "systemd"):
        for file in sorted((REPO_ROOT / folder).rglob("*")):
            if file.suffix not in {".py", ".md", ".json", ".toml", ".cf", ".service"}:
                continue
            for match in cited.finditer(file.read_text(encoding="utf-8", errors="replace")):
                unknown += [
                    (str(file.relative_to(REPO_ROOT)), i)
                    for i in ROW_ID.findall(match.group(1))
                    if i not in ids
                ]
    assert unknown == []
