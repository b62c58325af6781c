"""Send a JSON-lines file to a topic as it is, line by line, with a progress bar.

Records are keyed like the collector keys them: by the event's routing identifier
(processors.ingest.identifiers.input_key, with the identity.yaml rules), so an event lands on the
partition that resolves it and a person's events keep their order; lines that are not JSON go
unkeyed, exactly as sent, for the DLQ to keep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from processors.ingest.identifiers import IdentityRules, input_key
from stream.kafka.clients import connect, produce_waiting, producer
from stream.runtime.settings import Settings


def line_key(line: bytes, rules: IdentityRules) -> bytes | None:
    try:
        return input_key(orjson.loads(line), rules)
    except orjson.JSONDecodeError:
        return None


def produce_lines(settings: Settings, lines: list[bytes], topic: str,
                  progress: bool = False) -> dict[str, Any]:
    """Produce each line (bytes kept exactly, so malformed input reaches the DLQ as sent).
    KafkaAccessError at once when the broker refuses the login (deliveries would wait minutes)."""
    connect(settings)
    prod = producer(settings)
    rules = settings.identity_rules()
    tally = {"delivered": 0, "failed": 0}
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            tally["delivered"] += 1
        else:
            tally["failed"] += 1
            if len(errors) < 3:
                errors.append(str(err))

    with Progress(TextColumn("[bold]producing"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), disable=not progress, transient=True) as bar:
        task = bar.add_task("produce", total=len(lines))
        for i, line in enumerate(lines):
            produce_waiting(prod, topic, line, line_key(line, rules), on_delivery=on_delivery)
            prod.poll(0)
            if i % 1000 == 0:
                bar.update(task, completed=i)
        remaining = prod.flush(60)
        bar.update(task, completed=len(lines))
    tally["failed"] += remaining
    counts: dict[str, Any] = {"topic": topic, "lines": len(lines), **tally}
    if errors:
        counts["errors"] = errors
    return counts


def read_lines(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return [line.rstrip(b"\r\n") for line in f if line.strip()]


def produce_file(settings: Settings, path: Path, topic: str, progress: bool = True) -> dict[str, Any]:
    return produce_lines(settings, read_lines(path), topic, progress)
