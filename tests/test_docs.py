"""The error messages the docs quote are the ones genlab prints: every ``$ genlab ...`` line in the
docs followed by a ``genlab COMMAND: error: ...`` line is run, and the quoted message must match
(``...`` stands for any text)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from genlab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def quoted_errors() -> list[tuple[str, str, str]]:
    found = []
    for doc in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]):
        lines = doc.read_text(encoding="utf-8").splitlines()
        for cmd, out in zip(lines, lines[1:]):
            if cmd.startswith("$ genlab ") and re.match(r"genlab \w+: error: ", out):
                found.append((doc.name, cmd[2:], out))
    return found


def test_the_docs_quote_some_errors():
    assert len(quoted_errors()) >= 2  # the scan itself works


@pytest.mark.parametrize("doc,command,expected", quoted_errors())
def test_quoted_error_messages_are_current(doc, command, expected, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main(shlex.split(command)[1:])
    err = capsys.readouterr().err.strip()
    assert code == 2
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    assert re.fullmatch(pattern, err), f"{doc} quotes:\n{expected}\ngenlab prints:\n{err}"
