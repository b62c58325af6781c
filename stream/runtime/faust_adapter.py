"""Where Tusk changes Faust's own behaviour: one place, each change explained.

Checked against faust-streaming 0.15.3 (pinned in pyproject.toml). `install()` refuses to patch
another version: the copied loop below must match the one it replaces.

The consumer's drain loop (`faust.transport.consumer.Consumer._drain_messages`) hands every
record to the topic conductor with

    await self.wait_first(callback(message), self.suspend_flow.wait())

so that a delivery blocked on a full stream buffer can be abandoned when a rebalance suspends
the flow. `wait_first` makes four tasks (the callback, the flow event, the service's stopped and
crashed events) and an `asyncio.wait` per record: on a backlog that is most of a bare agent's CPU.
Nearly every delivery completes without ever blocking (the buffer has room), so the adapter runs
the callback's first step inline and only falls back to `wait_first`, with the rest of the same
coroutine, when the delivery really has to wait. Behaviour kept: gap tracking for acked topics,
commit-every, the read offset, the per-100 yield to the event loop, flow suspension while blocked.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, cast

import faust
from faust.transport import consumer as faust_consumer
from faust.transport.consumer import CONSUMER_FETCHING
from mode import Service

log = logging.getLogger(__name__)

CHECKED_VERSION = "0.15.3"


@types.coroutine
def _rest_of(coro: Coroutine[Any, Any, Any], first: Any) -> Generator[Any, Any, Any]:
    """Drive `coro`, which has already run one step and yielded `first`, to its end.

    A plain delegation (what `yield from` does after its first step): whatever the task running
    this sends or throws goes to `coro`, whatever `coro` yields goes to that task.
    """
    value = first
    while True:
        try:
            sent = yield value
        except BaseException as exc:  # cancellation included: `coro` decides
            try:
                value = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _rest_of(coro, first)  # a coroutine object, as wait_first wants


async def _deliver(consumer: Any, callback: Any, message: Any) -> None:
    coro = callback(message)
    try:
        first = coro.send(None)
    except StopIteration:
        return  # delivered without waiting: the common case, no task made
    # The delivery waits (a full buffer): from here on it is Faust's own path, so a rebalance
    # that suspends the flow can still abandon it.
    await consumer.wait_first(_finish(coro, first), consumer.suspend_flow.wait())


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - replaces Faust's
    # Faust 0.15.3's loop, line for line, but for the `_deliver` call (see the module doc).
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator, getmany(timeout=1.0))
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        await _deliver(self, callback, message)
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                     offset, message.key, message.value)
                unset_flag(flag_consumer_fetching)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


def install() -> bool:
    """Swap in the cheaper drain loop; False (and Faust untouched) on an unchecked version."""
    if faust.__version__ != CHECKED_VERSION:
        log.warning("faust-streaming %s is not the checked %s: its consumer drain is left as it is",
                    faust.__version__, CHECKED_VERSION)
        return False
    faust_consumer.Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    return True
