"""A micro-batcher: concurrent requests become one large judge call.

RL trainers send rewards requests one rollout (or a few) at a time, many at once: OpenRLHF posts each sample as its
own HTTP request as soon as it is generated. Judging each request alone would cost a criteria turn per sample and keep
the backend at batch size 1. The batcher waits a few milliseconds after the first pending request (or until enough
items are pending), merges everything that arrived, judges it with ONE :meth:`~cerm.Judge.ajudge_batch` (samples of
the same prompt share one criteria set even across requests), and hands each request its own results. While a batch
is being judged, new requests queue up and form the next batch, so batches grow with load.

One request never fails another: if the merged judge call raises (it should not: callers validate each request with
:func:`cerm.validate_item` first, and failed generations come back as ``Status.ERROR`` judgments, not exceptions), the
batch is judged again request by request, so the exception reaches only the request it belongs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from cerm._reward_judge import RewardJudge
from cerm._ties import TieBreak
from cerm._types import Judgment
from cerm.integrations._common import Grouping, Outcome

logger = logging.getLogger("cerm")

Pair = tuple[str | None, str, str | None]  # (query or None, response, reason when the query is None)


@dataclass
class _Pending:
    pairs: list[Pair]
    future: asyncio.Future[list[Outcome]]


@dataclass
class BatchStats:
    """Counters for the health endpoint and for tests: how many judge calls served how many items."""

    batches: int = 0
    items: int = 0
    requests: int = 0
    largest_batch: int = 0
    recent_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1024))  # items per batch, latest last
    #: Items whose judgment was ERROR (a generation failed), and judge calls that raised.
    errored_items: int = 0
    failed_calls: int = 0


class MicroBatcher:
    """Merge concurrent :meth:`submit` calls into large judge calls.

    Args:
        judge: the judge (its async API is used; the backend's work runs off the event loop).
        max_batch_items: stop collecting once this many (query, response) items are pending.
        max_wait_s: how long to wait for more requests after the first one arrives (0 = judge what is queued now).
        tie_break: a :class:`~cerm.TieBreak` (off by default): samples of one prompt in a batch whose scores tie get
            more chains (``scope="all"``, see :class:`~cerm.integrations.CermRewardFunc` for the cost). Only samples
            judged in the same batch are compared: a group split across batches is untied within each part.

    Use inside a running event loop: ``await start()`` once, ``await aclose()`` at shutdown.
    """

    def __init__(
        self,
        judge: RewardJudge,
        *,
        max_batch_items: int = 256,
        max_wait_s: float = 0.01,
        tie_break: TieBreak | None = None,
    ) -> None:
        if max_batch_items < 1:
            raise ValueError(f"max_batch_items must be >= 1, got {max_batch_items}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if tie_break is not None and not isinstance(tie_break, TieBreak):
            raise TypeError(f"tie_break must be a cerm.TieBreak or None, got {type(tie_break).__name__}")
        self.judge = judge
        self.tie_break = tie_break
        self.max_batch_items = max_batch_items
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="cerm-micro-batcher")

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker  # the cancellation we just asked for; anything else propagates
            self._worker = None

    async def submit(self, pairs: Sequence[Pair]) -> list[Outcome]:
        """Judge these items together with whatever else is pending; results in the same order."""
        if self._queue is None or self._worker is None:
            raise RuntimeError("MicroBatcher.start() has not been awaited")
        if self._worker.done():
            raise RuntimeError("the micro-batcher's worker has stopped")
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(list(pairs), future))
        return await future

    async def _collect(self, first: _Pending) -> list[_Pending]:
        assert self._queue is not None
        batch, size = [first], len(first.pairs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch_items:
            try:
                pending = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    pending = await asyncio.wait_for(self._queue.get(), timeout)
                except asyncio.TimeoutError:  # (TimeoutError itself only from Python 3.11)
                    break
            batch.append(pending)
            size += len(pending.pairs)
        return batch

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = await self._collect(await self._queue.get())
            batch = [p for p in batch if not p.future.done()]  # the client went away (request cancelled)
            if not batch:
                continue
            try:
                outcomes = await self._judge([pair for pending in batch for pair in pending.pairs])
            except Exception as exc:
                self.stats.failed_calls += 1
                if len(batch) == 1:
                    logger.exception("judging a request of %d items failed", len(batch[0].pairs))
                    if not batch[0].future.done():
                        batch[0].future.set_exception(exc)
                    continue
                logger.warning(
                    "a merged judge call of %d requests raised (%s); judging them one by one", len(batch), exc
                )
                for pending in batch:
                    await self._judge_alone(pending)
                continue
            self._record(batch, outcomes)
            start = 0
            for pending in batch:
                end = start + len(pending.pairs)
                if not pending.future.done():
                    pending.future.set_result(outcomes[start:end])
                start = end

    async def _judge(self, pairs: list[Pair]) -> list[Outcome]:
        grouping = Grouping.build(pairs)
        if not grouping.items:
            results: list[list[Judgment]] = []
        elif self.tie_break is None:
            results = await self.judge.ajudge_batch(grouping.items)
        else:
            decided = await self.judge.adecide_batch(grouping.items, self.tie_break, scope="all")
            results = [judgments for judgments, _ in decided]
        return grouping.scatter(results)

    async def _judge_alone(self, pending: _Pending) -> None:
        if pending.future.done():
            return
        try:
            outcomes = await self._judge(pending.pairs)
        except Exception as exc:
            self.stats.failed_calls += 1
            logger.exception("judging a request of %d items failed", len(pending.pairs))
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        self._record([pending], outcomes)
        if not pending.future.done():
            pending.future.set_result(outcomes)

    def _record(self, batch: list[_Pending], outcomes: list[Outcome]) -> None:
        size = len(outcomes)
        self.stats.batches += 1
        self.stats.items += size
        self.stats.requests += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, size)
        self.stats.recent_sizes.append(size)
        self.stats.errored_items += sum(1 for o in outcomes if isinstance(o, Judgment) and o.errored)
        logger.debug("judged %d items from %d requests in one batch", size, len(batch))
