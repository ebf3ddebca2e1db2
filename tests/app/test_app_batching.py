"""The micro-batcher: gathering, working off the event loop, errors, shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.batching import BatcherClosedError, MicroBatcher


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_concurrent_requests_share_one_call_and_keep_their_order():
    calls: list[list[int]] = []
    release = threading.Event()

    def process(items):
        calls.append(list(items))
        release.wait(10)
        return [item * 10 for item in items]

    async def main():
        batcher = MicroBatcher(process, max_batch=8, max_wait_ms=50)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(0))
        while not calls:  # the first item is being processed alone ...
            await asyncio.sleep(0.001)
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0.05)  # ... while the loop keeps accepting (we are running here)
        assert batcher.depth == 5
        release.set()
        results = await asyncio.gather(first, *rest)
        await batcher.stop()
        return results

    results = run(main())
    assert [r.value for r in results] == [0, 10, 20, 30, 40, 50]
    assert calls == [[0], [1, 2, 3, 4, 5]]
    assert [r.batch_size for r in results] == [1, 5, 5, 5, 5, 5]


def test_batches_are_capped_at_max_batch():
    calls: list[int] = []
    gate = threading.Event()

    def process(items):
        gate.wait(10)
        calls.append(len(items))
        return items

    async def main():
        batcher = MicroBatcher(process, max_batch=4, max_wait_ms=0)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(10)]
        await asyncio.sleep(0.02)
        gate.set()
        await asyncio.gather(*tasks)
        await batcher.stop()

    run(main())
    assert sum(calls) == 10 and max(calls) <= 4


def test_a_forming_batch_waits_for_requests_still_being_prepared():
    calls: list[list[str]] = []

    def process(items):
        calls.append(list(items))
        return items

    async def main():
        batcher = MicroBatcher(process, max_batch=8, max_wait_ms=10_000)
        await batcher.start()
        with batcher.expecting():  # a second request is decoding
            first = asyncio.create_task(batcher.submit("a"))
            await asyncio.sleep(0.05)
            assert not calls  # the batch waits for it ...
        second = asyncio.create_task(batcher.submit("b"))
        await asyncio.gather(first, second)
        await batcher.stop()

    run(main())
    assert calls == [["a", "b"]]  # ... and both share one call


def test_a_lone_request_is_not_held_for_max_wait():
    async def main():
        batcher = MicroBatcher(lambda items: items, max_batch=8, max_wait_ms=600_000)
        await batcher.start()
        result = await asyncio.wait_for(batcher.submit("only"), timeout=10)
        await batcher.stop()
        return result

    assert run(main()).value == "only"


def test_an_error_in_process_reaches_every_request_of_the_batch_and_the_next_batch_works():
    def process(items):
        if "bad" in items:
            raise RuntimeError("boom")
        return items

    async def main():
        batcher = MicroBatcher(process, max_batch=8, max_wait_ms=0)
        await batcher.start()
        failed = await asyncio.gather(batcher.submit("bad"), return_exceptions=True)
        ok = await batcher.submit("good")
        await batcher.stop()
        return failed, ok

    failed, ok = run(main())
    assert isinstance(failed[0], RuntimeError) and ok.value == "good"


def test_submit_after_stop_is_refused():
    async def main():
        batcher = MicroBatcher(lambda items: items)
        await batcher.start()
        await batcher.stop()
        with pytest.raises(BatcherClosedError):
            await batcher.submit(1)

    run(main())


def test_preparation_runs_in_a_bounded_pool_and_is_announced():
    """Decoding beside the encoder is capped at `prepare_threads` at once (16 decoders starved the encoder's
    OpenMP team), and an item being prepared holds a forming batch (up to max_wait)."""
    running, peak, lock = [0], [0], threading.Lock()
    calls: list[list[str]] = []

    def decode(name: str) -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.01)
        with lock:
            running[0] -= 1
        return name

    def process(items):
        calls.append(list(items))
        return items

    async def request(batcher, name: str):
        return await batcher.submit(await batcher.prepare(decode, name))

    async def main():
        batcher = MicroBatcher(process, max_batch=16, max_wait_ms=10_000, prepare_threads=2)
        await batcher.start()
        results = await asyncio.gather(*(request(batcher, f"r{i}") for i in range(8)))
        await batcher.stop()
        return results

    results = run(main())
    assert [r.value for r in results] == [f"r{i}" for i in range(8)]
    assert peak[0] == 2
    assert sum(map(len, calls)) == 8 and len(calls) <= 2  # announced items were waited for, not sent one by one


def test_preparation_threads_default_to_one_per_eight_cores():
    from app.batching import default_prepare_threads

    assert [default_prepare_threads(cores) for cores in (1, 2, 8, 16, 64)] == [1, 1, 1, 2, 8]
    assert MicroBatcher(lambda items: items).prepare_threads >= 1


def test_preparing_on_a_stopped_batcher_is_refused():
    async def main():
        batcher = MicroBatcher(lambda items: items)
        with pytest.raises(BatcherClosedError):
            await batcher.prepare(str, 1)

    run(main())


def test_stop_fails_the_batch_still_forming_and_the_preparation_it_dropped():
    # A request gathered into a batch that waited for another still decoding was lost by stop(): it waited for ever.
    async def scenario():
        batcher = MicroBatcher(lambda items: [i * 2 for i in items], max_batch=8, max_wait_ms=2000)
        await batcher.start()
        gate, decoding = threading.Event(), threading.Event()

        def decode():
            decoding.set()
            gate.wait(10)
            return 1

        busy = asyncio.create_task(batcher.prepare(decode))  # the one preparation thread, busy
        queued_decode = asyncio.create_task(batcher.prepare(lambda: 2))  # waits for that thread
        await asyncio.to_thread(decoding.wait, 10)
        gathered = asyncio.create_task(batcher.submit(21))
        await asyncio.sleep(0.1)  # taken by the collector, which waits for the items being prepared
        threading.Timer(0.2, gate.set).start()  # stop() waits for the running preparation, loop blocked
        await batcher.stop()
        for task in (gathered, queued_decode):
            with pytest.raises(BatcherClosedError):
                await asyncio.wait_for(task, 3)
        assert await busy == 1  # a preparation already running finishes

    run(scenario())
