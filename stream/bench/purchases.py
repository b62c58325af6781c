"""A real purchase log for `make bench`: CDNOW (Fader & Hardie), as shipped by the `lifetimes`
package (a dev dependency): 23,570 customers of the 1997-Q1 cohort, 69,659 orders to mid-1998.

Each order becomes an `Order Completed` track event of `userId` cdnow-<customer>, at noon UTC of
its day, in date order (the log has no time of day), replayed with the event clock.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import orjson


def cdnow_master() -> Path:
    """The log's file inside the installed package (found without importing lifetimes)."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the lifetimes package (a dev dependency) is not installed: make setup")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "CDNOW_master.txt"


def cdnow_events(path: Path | None = None) -> list[bytes]:
    rows = []
    with open(path or cdnow_master()) as f:
        next(f)  # header: customer_id date number_of_cds dollar_value
        for i, line in enumerate(f):
            customer, day, cds, dollars = line.split()
            rows.append((day, i, customer, int(cds), float(dollars)))
    rows.sort()
    return [orjson.dumps({
        "type": "track", "event": "Order Completed", "userId": f"cdnow-{int(customer)}",
        "messageId": f"cdnow-{i}",
        "timestamp": datetime.strptime(day, "%Y%m%d").replace(hour=12, tzinfo=UTC).isoformat(),
        "properties": {"revenue": dollars, "quantity": cds, "currency": "USD"},
    }) for day, i, customer, cds, dollars in rows]
