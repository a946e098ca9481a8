"""Offered load for the live latency run: the fleet's telemetry at N msg/s for S seconds.

Run as its own process by ``bench.live`` so that publishing (gmqtt, ``simulators.rate``) does not
share an interpreter with the latency probes. Prints ``publishing`` once the messages are built
and the clock starts, then one JSON object: ``sent``, ``acked``, ``elapsed_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson

from bench.backlog import telemetry
from simulators.rate import publish_at_rate

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Publish the load described on the command line; print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--rate", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--parks", required=True, help="comma-separated park ids")
    parser.add_argument("--connections", type=int, default=2)
    args = parser.parse_args(argv)
    count = max(1, round(args.rate * args.seconds))
    messages = telemetry(
        args.prefix,
        count,
        devices=args.devices,
        parks=args.parks.split(","),
        # Stamped as if sent in real time from now on: the collector sees live data.
        base_ms=int(time.time() * 1000),
        step_ms=1000 / args.rate,
    )
    print("publishing", flush=True)
    report = asyncio.run(
        publish_at_rate(
            messages,
            host=args.host,
            port=args.port,
            rate=args.rate,
            connections=args.connections,
            client_id=f"{args.prefix}-load",
        )
    )
    print(
        orjson.dumps(
            {"sent": report.sent, "acked": report.acked, "elapsed_s": report.elapsed_s}
        ).decode(),
        flush=True,
    )
    return 0 if report.acked == report.sent else 1


if __name__ == "__main__":
    sys.exit(main())
