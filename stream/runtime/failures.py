"""Whose fault a failure is: the one decision between "dead-letter the record and go on" and
"stop the worker before its offset moves" (processors/common/errors.py explains the two).

Tusk's own exceptions say it themselves (`TuskError.blame`); of the rest, what Faust, aiokafka
and confluent-kafka raise is the platform's (a broker or state store that failed), anything
else — a bug meeting one record — is the record's: it goes to the DLQ, replayable.
"""

from __future__ import annotations

from aiokafka.errors import KafkaError
from confluent_kafka import KafkaException
from faust.exceptions import FaustError

from processors.common.errors import Blame, TuskError

PLATFORM_ERRORS: tuple[type[BaseException], ...] = (FaustError, KafkaError, KafkaException)


def blame(e: BaseException) -> Blame:
    if isinstance(e, TuskError):
        return e.blame
    if isinstance(e, PLATFORM_ERRORS):
        return Blame.PLATFORM
    return Blame.RECORD


def is_platform_failure(e: BaseException) -> bool:
    return blame(e) is Blame.PLATFORM
