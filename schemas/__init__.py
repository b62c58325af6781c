"""JSON Schemas of every message and config file; load(name) returns one as a dict."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@cache
def load(name: str) -> dict[str, Any]:
    """load("touchpoint") → the parsed schemas/touchpoint.schema.json."""
    with open(HERE / f"{name}.schema.json", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data
