"""Benchmark collector.spool: one appender (an fsync per append) vs many (group commit), replay.

    python bench/spool.py [--dir DIR] [--payload-kib 64] [--seconds 3] [--appenders 64]

Run it on the disk the service will spool to: fsync latency is most of what is measured, and a
tmpfs would make it look free. The default run takes about 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from collector.spool import Spool

MB = 1e6


@dataclass(frozen=True, slots=True)
class Result:
    """What one phase did and how long it took."""

    records: int
    payload_bytes: int
    seconds: float
    fsyncs: int

    @property
    def per_second(self) -> float:
        """Records per second."""
        return self.records / self.seconds

    @property
    def mb_per_second(self) -> float:
        """Payload megabytes (10^6) per second."""
        return self.payload_bytes / MB / self.seconds


async def append_phase(spool: Spool, payload: bytes, appenders: int, seconds: float) -> Result:
    """``appenders`` tasks append ``payload`` back to back, each awaiting its own append."""
    count = 0
    fsyncs_before = spool.stats.fsyncs
    start = time.perf_counter()
    deadline = start + seconds

    async def appender() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await spool.append(payload)
            count += 1

    async with asyncio.TaskGroup() as group:
        for n in range(appenders):
            group.create_task(appender(), name=f"appender-{n}")
    elapsed = time.perf_counter() - start
    return Result(count, count * len(payload), elapsed, spool.stats.fsyncs - fsyncs_before)


async def replay_phase(spool: Spool, batch: int) -> Result:
    """Read ``batch`` records at a time and commit them, as the replayer does, until empty."""
    count = size = 0
    start = time.perf_counter()
    while records := await spool.read(batch):
        await spool.commit(records[-1].position)
        count += len(records)
        size += sum(len(r.payload) for r in records)
    return Result(count, size, time.perf_counter() - start, 0)


async def run(directory: Path, payload_kib: int, seconds: float, appenders: int) -> None:
    """Run the three phases on a fresh spool in ``directory`` and print a table."""
    payload = b"m,site=s1 kw=1.5 1700000000000000000\n" * (payload_kib * 1024 // 38 + 1)
    payload = payload[: payload_kib * 1024]
    async with Spool(directory, max_bytes=2**40) as spool:
        single = await append_phase(spool, payload, 1, seconds)
        group = await append_phase(spool, payload, appenders, seconds)
        replay = await replay_phase(spool, batch=64)

    print(f"spool in {directory}, payload {payload_kib} KiB\n")
    print(f"{'phase':<28}{'records':>9}{'records/s':>11}{'MB/s':>9}{'per fsync':>11}")
    for name, result in [
        ("(a) 1 appender", single),
        (f"(b) {appenders} appenders", group),
        ("replay (read 64 + commit)", replay),
    ]:
        per_fsync = f"{result.records / result.fsyncs:.1f}" if result.fsyncs else "-"
        print(
            f"{name:<28}{result.records:>9}{result.per_second:>11.0f}"
            f"{result.mb_per_second:>9.1f}{per_fsync:>11}"
        )
    print(f"\ngroup commit speed-up b/a: {group.per_second / single.per_second:.1f}x")


def main() -> None:
    """Parse the command line and run the benchmark in a temporary directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary spool")
    parser.add_argument("--payload-kib", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each append phase")
    parser.add_argument("--appenders", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-spool-") as tmp:
        asyncio.run(run(Path(tmp) / "spool", args.payload_kib, args.seconds, args.appenders))


if __name__ == "__main__":
    main()
