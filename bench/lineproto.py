"""Line-protocol encoding: parkwatch's encoder against influxdb-client's ``Point`` (baseline)."""

from __future__ import annotations

import time
from typing import Any

from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from collector.lineproto import LineEncoder

FIELDS: dict[str, Any] = {
    "pv_kw": 120.5,
    "load_kw": 300.25,
    "grid_import_kw": 179.75,
    "grid_export_kw": 0.0,
    "pv_kwh": 123456.5,
    "load_kwh": 99999.25,
    "frequency_hz": 50.01,
}
TAGS = (("device", "meter 1"), ("park", "caohejing"))


def _per_point_us(func: Any, count: int) -> float:
    started = time.perf_counter()
    for n in range(count):
        func(n)
    return (time.perf_counter() - started) / count * 1e6


def _same_point(a: str, b: str) -> bool:
    """Equal as points: same series and time, same field values (order and 0.0/0 aside)."""
    head_a, head_b = a.rsplit(" ", 2)[0], b.rsplit(" ", 2)[0]
    fields_a, ts_a = a.rsplit(" ", 2)[1:]
    fields_b, ts_b = b.rsplit(" ", 2)[1:]

    def values(text: str) -> dict[str, float]:
        return {k: float(v) for k, v in (item.split("=") for item in text.split(","))}

    return head_a == head_b and ts_a == ts_b and values(fields_a) == values(fields_b)


def run(count: int = 50_000) -> dict[str, float]:
    """Microseconds per point for both encoders, and the speed-up."""

    encoder = LineEncoder()

    def ours(n: int) -> str:
        return encoder.encode("microgrid", TAGS, FIELDS, 1_700_000_000_000 + n)

    def baseline(n: int) -> str:
        # influxdb-client is untyped here; the baseline is the library used as documented.
        point = Point("microgrid").time(  # type: ignore[no-untyped-call]
            1_700_000_000_000 + n, WritePrecision.MS
        )
        for key, value in TAGS:
            point.tag(key, value)
        for key, value in FIELDS.items():
            point.field(key, value)
        return str(point.to_line_protocol())

    assert _same_point(ours(0), baseline(0)), (ours(0), baseline(0))
    base_us = _per_point_us(baseline, count)
    ours_us = _per_point_us(ours, count)
    return {
        "influxdb_client_point_us": base_us,
        "line_encoder_us": ours_us,
        "speedup_vs_point": base_us / ours_us,
    }


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:>28}: {value:8.2f}")
