"""Background prefetch: batches built (and placed on devices) ahead of the training step.

``prefetch(iterator, size=2, put=fn, limit=n)`` runs one daemon thread that takes items from
``iterator``, applies ``put`` (e.g. ``jax.device_put`` with the data sharding) and keeps up to
``size`` of them ready in a queue, so the host work of the next batches (indexing, normalising,
augmenting, the host-to-device copy) overlaps the jitted step of the current one::

    batches = prefetch(ds.train_batches(128, seed, start_step=step),
                       put=lambda b: sharding.shard_batch(b, mesh), limit=phase.end - step)
    try:
        for batch in batches: ...
    finally:
        batches.close()

* Items come out in order and unchanged (``put`` aside): the batch of step ``t`` is still the
  pure function of ``(seed, t)`` the dataset defines.
* An exception raised by ``iterator`` or ``put`` is re-raised by the ``next()`` that would have
  returned that item (with its original traceback); the iteration then ends.
* ``limit`` caps the number of items taken from ``iterator`` (an infinite training stream need
  not be read past the phase end); the prefetcher raises ``StopIteration`` after them.
* ``close()`` (also on ``with`` exit, and when the prefetcher is garbage collected) stops the
  thread and waits for it; the thread closes ``iterator`` (a generator) on its way out. It is
  idempotent. Closing never leaves a thread behind unless ``iterator`` or ``put`` is blocked
  forever inside one call.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()  # the source is exhausted (or ``limit`` reached)
_POLL_S = 0.1  # how often a blocked producer checks for close()


class _Error:
    """An exception raised in the producer thread, carried to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


def _produce(
    source: Iterator[Any],
    put: Callable[[Any], Any] | None,
    limit: int | None,
    ready: queue.Queue,
    stop: threading.Event,
) -> None:
    """The producer thread's body (holds no reference to the ``Prefetcher``)."""

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    try:
        taken = 0
        while not stop.is_set() and (limit is None or taken < limit):
            try:
                item = next(source)
            except StopIteration:
                break
            taken += 1
            if put is not None:
                item = put(item)
            if not offer(item):
                return
        offer(_END)
    except BaseException as error:  # noqa: BLE001 - everything goes to the consumer
        offer(_Error(error))
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - closing a source must not mask the result
                pass


class Prefetcher(Iterator[T]):
    """Iterator over the items of another iterator, produced ahead by a background thread.

    Build it with ``prefetch``.
    """

    def __init__(
        self,
        iterator: Iterator[Any],
        *,
        size: int = 2,
        put: Callable[[Any], T] | None = None,
        limit: int | None = None,
        name: str = "jaxprune-prefetch",
    ):
        if size < 1:
            raise ValueError(f"prefetch size must be >= 1, got {size}")
        if limit is not None and limit < 0:
            raise ValueError(f"prefetch limit must be >= 0 or None, got {limit}")
        self._ready: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(
            target=_produce,
            args=(iter(iterator), put, limit, self._ready, self._stop),
            name=name,
            daemon=True,
        )
        self._thread.start()

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        while True:
            try:
                item = self._ready.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._ready.empty():
                    # The thread ended without a last word (it cannot, short of interpreter
                    # shutdown); never block forever.
                    self._finish()
                    raise StopIteration from None
        if item is _END:
            self._finish()
            raise StopIteration
        if isinstance(item, _Error):
            self._finish()
            raise item.error.with_traceback(item.error.__traceback__)
        return item

    def _finish(self) -> None:
        self._done = True
        self._thread.join()

    @property
    def alive(self) -> bool:
        """Whether the producer thread is still running."""
        return self._thread.is_alive()

    def close(self, timeout: float | None = None) -> None:
        """Stops the producer thread, drops the items it made ahead, and waits for it.

        Args:
          timeout: seconds to wait for the thread (None: until it ends; it ends as soon as its
            current ``next(iterator)`` / ``put`` call returns).
        """
        self._done = True
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._ready.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if sys.is_finalizing():
            return
        try:
            self.close(timeout=1.0)
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


def prefetch(
    iterator: Iterator[Any],
    size: int = 2,
    put: Callable[[Any], T] | None = None,
    *,
    limit: int | None = None,
) -> Prefetcher[T]:
    """Iterates over ``put(item)`` for the items of ``iterator``, prepared by a background thread.

    Args:
      iterator: the source, e.g. ``dataset.train_batches(...)`` (read only by the thread from
        now on; closed by it when the prefetcher ends or is closed).
      size: how many prepared items may wait (>= 1). Two hide one step of host work.
      put: applied to every item on the thread, e.g.
        ``lambda batch: jax.device_put(batch, data_sharding)``; None keeps the items as they are.
      limit: take at most this many items from ``iterator`` (None: until it is exhausted).

    Returns:
      A ``Prefetcher``: an iterator with ``close()`` (call it, or use ``with``, when stopping
      early, so the thread does not keep producing).
    """
    return Prefetcher(iterator, size=size, put=put, limit=limit)
