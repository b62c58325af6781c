"""docs/architecture.md names real files: a moved or renamed module fails here, not in a reader's hands."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PATH = re.compile(r"\b((?:stream|processors|tests)/[\w/]*?)(?:\{([\w,]+)\}|(\w+))\.py\b")


def named_files(text: str) -> set[str]:
    """Every `dir/file.py` and `dir/{a,b}.py` the text names."""
    found = set()
    for folder, choices, name in PATH.findall(text):
        for n in choices.split(",") if choices else [name]:
            found.add(f"{folder}{n}.py")
    return found


def test_every_file_the_architecture_doc_names_exists() -> None:
    named = named_files((REPO / "docs" / "architecture.md").read_text())
    assert len(named) > 20  # the data flow alone names more
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_named_files_reads_both_spellings() -> None:
    assert named_files("see stream/api/web.py and processors/privacy/{protocol,requests}.py") == {
        "stream/api/web.py", "processors/privacy/protocol.py", "processors/privacy/requests.py"}
