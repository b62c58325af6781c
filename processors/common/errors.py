"""One root for Tusk's exceptions, and whose fault a failure is.

Every exception Tusk raises derives from `TuskError`, so a caller can catch Tusk's own failures
apart from Python's and the libraries'. Each class says whose fault it is (`blame`):

  RECORD    the record (or request, or file) is at fault: keep it, with a reason (the DLQ for a
            stream record, a 4xx for a request, a sentence for a command) and go on
  PLATFORM  Kafka, the state store or the process is at fault: do not move past the record;
            stop (the worker crashes before its offset is committed, so a restart replays it)
            or retry

`stream.runtime.failures.blame(exception)` is the decision itself, made in one place (it adds what
the libraries raise: Faust's and Kafka's errors are the platform's).
"""

from __future__ import annotations

from enum import StrEnum


class Blame(StrEnum):
    RECORD = "record"
    PLATFORM = "platform"


class TuskError(Exception):
    """The root of every exception Tusk raises."""

    blame: Blame = Blame.RECORD


class PlatformError(TuskError):
    """Kafka, the state store or the process failed: never the record's fault."""

    blame = Blame.PLATFORM


class DeliveryFailed(PlatformError):
    """The broker did not take a record (after librdkafka's own retries)."""
