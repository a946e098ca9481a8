"""Rules: the expression evaluator against libraries, cost per point, and fire latency under load.

1. ``evaluators``: the same four conditions evaluated by parkwatch's parser-to-closures
   (``rules/compile.py``), simpleeval (pre-parsed Python AST, walked per evaluation), lark (LALR
   parse once, a tree-walking ``Interpreter`` per evaluation) and cel-python (compiled CEL
   program; the fields converted to CEL types per evaluation, as its API requires). Baseline:
   simpleeval, the usual pick for "safe eval".
2. ``per_point``: the rules engine with the shipped pack over a simulated fleet's readings,
   decoded by the real decoder first; the decoder's cost per message, measured in the same run,
   is the baseline.
3. ``latency``: a collector with the pack against real Mosquitto and InfluxDB under a steady
   telemetry load; charger Faulted/Available messages on their own devices; latency from the
   message's arrival at the MQTT client (and from its publish) to the alert transition leaving
   the analytics stage, p50/p99.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from collector.adapters.mqtt import MqttSource
from collector.adapters.mqttparser import Publish
from collector.decode import Decoder
from collector.messages import RawMessage
from collector.metrics import Metrics
from parkwatch.clock import ParkClocks
from parkwatch.events import AlertState, AlertTransition, Output
from parkwatch.localservers import InfluxDB1, Mosquitto
from parkwatch.points import Point
from parkwatch.service import Collector
from parkwatch.settings import IngestSettings, ParksSettings, RulesSettings, load_settings
from rules.compile import compile_expr, window_id
from rules.engine import RulesEngine
from rules.expr import parse
from rules.windows import WINDOW_METHODS, Window

# -- 1. evaluators --------------------------------------------------------------------------

CONDITIONS = {
    "threshold": "cell_temp_max_c > 45",
    "range": "soc_pct < 10 or soc_pct > 90",
    "strings": 'status == "Faulted" and error_code != "NoError"',
    "windows": "avg_over_time(soc_pct, 15m) < 20 and rate(charged_kwh, 5m) * 3600 > 500",
}
SIMPLEEVAL = {
    "threshold": "cell_temp_max_c > 45",
    "range": "soc_pct < 10 or soc_pct > 90",
    "strings": 'status == "Faulted" and error_code != "NoError"',
    "windows": 'avg_over_time("soc_pct", 900000) < 20 and rate("charged_kwh", 300000) * 3600 > 500',
}
CEL = {
    "threshold": "cell_temp_max_c > 45.0",
    "range": "soc_pct < 10.0 || soc_pct > 90.0",
    "strings": 'status == "Faulted" && error_code != "NoError"',
    "windows": 'avg_over_time("soc_pct", 900000) < 20.0 && '
    'rate("charged_kwh", 300000) * 3600.0 > 500.0',
}
FIELDS: dict[str, Any] = {
    "cell_temp_max_c": 41.5,
    "soc_pct": 55.0,
    "charged_kwh": 1234.0,
    "status": "Charging",
    "error_code": "NoError",
}

LARK_GRAMMAR = r"""
?start: or_
?or_: and_ ("or" and_)*         -> or_
?and_: not_ ("and" not_)*       -> and_
?not_: "not" not_ -> not_ | cmp
?cmp: sum (CMP sum)?            -> cmp
?sum: product (ADD product)*    -> arith
?product: atom (MUL atom)*      -> arith
?atom: NUMBER -> number | STRING -> string | NAME "(" NAME "," DURATION ")" -> call
     | NAME -> field | "(" or_ ")"
CMP: "<=" | ">=" | "==" | "!=" | "<" | ">"
ADD: "+" | "-"
MUL: "*" | "/"
DURATION: /\d+(ms|s|m|h|d)/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"[^"]*"/
%import common.NUMBER
%ignore /\s+/
"""


def _windows() -> dict[str, Window]:
    windows: dict[str, Window] = {}
    for field, span in (("soc_pct", 900_000), ("charged_kwh", 300_000)):
        window = Window(span, extremes=False)
        for i in range(60):
            window.add(i * 10_000, 50.0 + i % 5 if field == "soc_pct" else 1000.0 + i)
        windows[window_id(field, span)] = window
    return windows


def _time_per_call(call: Callable[[], object], *, budget_s: float = 0.4) -> float:
    """Nanoseconds per call: the best of three timed runs sized to ``budget_s``."""
    count = 1
    while True:
        started = time.perf_counter()
        for _ in range(count):
            call()
        elapsed = time.perf_counter() - started
        if elapsed > budget_s / 10:
            break
        count *= 4
    count = max(1, int(count * budget_s / 10 / elapsed * 3))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e9


def _ours(name: str, windows: dict[str, Window]) -> tuple[Callable[[], object], float]:
    source = CONDITIONS[name]
    compile_ns = _time_per_call(lambda: compile_expr(parse(source), {}), budget_s=0.2)
    compiled = compile_expr(parse(source), {})
    return lambda: compiled(FIELDS, windows), compile_ns


def _simpleeval(name: str, windows: dict[str, Window]) -> tuple[Callable[[], object], float]:
    from simpleeval import SimpleEval  # noqa: PLC0415 - optional, benchmark only

    functions = {
        "avg_over_time": lambda f, ms: WINDOW_METHODS["avg_over_time"](windows[window_id(f, ms)]),
        "rate": lambda f, ms: WINDOW_METHODS["rate"](windows[window_id(f, ms)]),
    }
    evaluator = SimpleEval(names=FIELDS, functions=functions)
    source = SIMPLEEVAL[name]
    compile_ns = _time_per_call(lambda: evaluator.parse(source), budget_s=0.2)
    parsed = evaluator.parse(source)
    return lambda: evaluator.eval(source, previously_parsed=parsed), compile_ns


def _lark(name: str, windows: dict[str, Window]) -> tuple[Callable[[], object], float]:
    from lark import Lark, Token, Tree  # noqa: PLC0415
    from lark.visitors import Interpreter  # noqa: PLC0415

    ops: dict[str, Callable[[Any, Any], Any]] = {
        "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
        "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
        "/": lambda a, b: a / b,
    }  # fmt: skip
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

    class Evaluate(Interpreter[Any, Any]):
        def or_(self, tree: Tree[Any]) -> Any:
            return any(self.visit(child) for child in tree.children)

        def and_(self, tree: Tree[Any]) -> Any:
            return all(self.visit(child) for child in tree.children)

        def not_(self, tree: Tree[Any]) -> Any:
            return not self.visit(tree.children[0])

        def cmp(self, tree: Tree[Any]) -> Any:
            left, op, right = tree.children
            return ops[str(op)](self.visit(left), self.visit(right))

        def arith(self, tree: Tree[Any]) -> Any:
            children = tree.children
            value = self.visit(children[0])
            for i in range(1, len(children), 2):
                value = ops[str(children[i])](value, self.visit(children[i + 1]))
            return value

        def number(self, tree: Tree[Any]) -> Any:
            return float(str(tree.children[0]))

        def string(self, tree: Tree[Any]) -> Any:
            return str(tree.children[0])[1:-1]

        def field(self, tree: Tree[Any]) -> Any:
            return FIELDS.get(str(tree.children[0]))

        def call(self, tree: Tree[Any]) -> Any:
            func, field, duration = (str(child) for child in tree.children)
            unit = duration.lstrip("0123456789")
            span = int(duration[: len(duration) - len(unit)]) * units[unit]
            return WINDOW_METHODS[func](windows[window_id(field, span)])

    parser = Lark(LARK_GRAMMAR, parser="lalr")
    source = CONDITIONS[name]
    compile_ns = _time_per_call(lambda: parser.parse(source), budget_s=0.2)
    tree = parser.parse(source)
    assert isinstance(tree, Tree | Token)
    evaluate = Evaluate()
    return lambda: evaluate.visit(tree), compile_ns


def _cel(name: str, windows: dict[str, Window]) -> tuple[Callable[[], object], float]:
    import celpy  # noqa: PLC0415
    from celpy import celtypes  # noqa: PLC0415

    def window_fn(func: str) -> Callable[..., Any]:
        def call(field: Any, ms: Any) -> Any:
            value = WINDOW_METHODS[func](windows[window_id(str(field), int(ms))])
            return celtypes.DoubleType(value)

        return call

    env = celpy.Environment()
    source = CEL[name]
    compile_ns = _time_per_call(lambda: env.compile(source), budget_s=0.2)
    program = env.program(
        env.compile(source),
        functions={"avg_over_time": window_fn("avg_over_time"), "rate": window_fn("rate")},
    )

    def evaluate() -> object:
        activation = {
            key: celtypes.StringType(value)
            if isinstance(value, str)
            else celtypes.DoubleType(value)
            for key, value in FIELDS.items()
        }
        return program.evaluate(activation)

    return evaluate, compile_ns


def evaluators() -> dict[str, dict[str, tuple[float, float]]]:
    """``{condition: {evaluator: (ns per evaluation, ns per compile)}}``; checks they agree."""
    windows = _windows()
    makers = {"parkwatch": _ours, "simpleeval": _simpleeval, "lark": _lark, "cel-python": _cel}
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for name in CONDITIONS:
        results[name] = {}
        answers = set()
        for label, maker in makers.items():
            try:
                call, compile_ns = maker(name, windows)
            except ImportError:
                print(f"  {label} is not installed (pip install '.[dev]'); skipped")
                continue
            answers.add(bool(call()))
            results[name][label] = (_time_per_call(call), compile_ns)
        assert len(answers) == 1, f"{name}: the evaluators disagree: {answers}"
    return results


# -- 2. engine cost per point ---------------------------------------------------------------


def per_point(hours: float = 3.0) -> dict[str, float]:
    """Microseconds per point for the pack (and per message for the decoder), same readings."""
    from simulators.fleet import default_fleet  # noqa: PLC0415
    from simulators.generate import iter_messages  # noqa: PLC0415

    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    raw = [
        RawMessage(topic, payload, time.time(), n)
        for n, (topic, payload) in enumerate(
            iter_messages(default_fleet(), 0, start, hours * 3600, prefix="parks")
        )
    ]
    decoder = Decoder(IngestSettings(max_past_s=10 * 86400), Metrics(), topic_prefix="parks")
    started = time.perf_counter()
    decoded = [decoder.decode(message) for message in raw]
    decode_s = time.perf_counter() - started
    points = [p for p in decoded if isinstance(p, Point)]

    def run_engine() -> tuple[float, RulesEngine, int]:
        clocks = ParkClocks()
        engine = RulesEngine(RulesSettings(), ParksSettings(), clocks, CollectorRegistry())
        advanced: dict[str, int] = {}
        outputs: list[Output] = []
        emit = outputs.append
        started = time.perf_counter()
        for point in points:
            now = clocks.observe(point.park, point.ts_ms, 0.0)
            if now > advanced.get(point.park, -1):
                advanced[point.park] = now
                engine.advance(point.park, now, emit)
            engine.apply(point, emit)
        return time.perf_counter() - started, engine, len(outputs)

    rules_s, engine, transitions = min((run_engine() for _ in range(3)), key=lambda r: r[0])
    return {
        "points": len(points),
        "rules_loaded": len(engine.rules),
        "rule_evaluations": engine.evaluations / 1,
        "transitions": transitions,
        "rules_us_per_point": rules_s / len(points) * 1e6,
        "decode_us_per_message": decode_s / len(raw) * 1e6,
        "rules_vs_decode": rules_s / len(points) / (decode_s / len(raw)),
    }


# -- 3. fire latency under load -------------------------------------------------------------

RECEIVED: dict[str, float] = {}
PUBLISHED: dict[str, float] = {}
EMITTED: dict[str, float] = {}


class _StampingSource(MqttSource):
    """Notes when each trigger message reaches the MQTT client (before the inbox)."""

    def take_in(self, publishes: list[Publish]) -> None:
        for topic, payload, *_ in publishes:
            if b"Faulted" in payload:
                RECEIVED[topic.decode().split("/")[3]] = time.perf_counter()
        super().take_in(publishes)


def _paced_publisher(
    broker: tuple[str, int],
    messages: Callable[[int], tuple[str, bytes]],
    rate: float,
    count: int,
    sent: Callable[[int, tuple[str, bytes]], None] | None = None,
) -> threading.Thread:
    def publish() -> None:
        client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.connect(*broker)
        client.loop_start()
        started = time.perf_counter()
        infos = []
        for n in range(count):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # pacing the load
            message = messages(n)
            if sent is not None:
                sent(n, message)
            infos.append(client.publish(*message, qos=1))
        for info in infos:
            info.wait_for_publish(timeout=60)
        client.disconnect()
        client.loop_stop()

    thread = threading.Thread(target=publish, name="bench-publisher")
    thread.start()
    return thread


def _load_message(now_ms: int, n: int) -> tuple[str, bytes]:
    body = {"ts": now_ms + n, "pv_kw": 100.0 + n % 7, "load_kw": 300.0, "frequency_hz": 50.0}
    return f"parks/zhangjiang/microgrid/meter-{n % 200}/telemetry", orjson.dumps(body)


def _publish_load(broker: tuple[str, int], now_ms: int, rate: float, count: int) -> None:
    """The background load, in its own process (so it does not share the collector's GIL)."""
    _paced_publisher(broker, partial(_load_message, now_ms), rate, count).join()


def latency(load_rate: float = 3000.0, seconds: float = 10.0) -> dict[str, float]:
    """Fire latency p50/p99 (ms) under ``load_rate`` readings per second."""
    now_ms = int(time.time() * 1000)
    triggers = int(seconds * 20)

    def trigger(n: int) -> tuple[str, bytes]:
        body = {"ts": now_ms + n, "status": "Faulted", "error_code": "GroundFailure"}
        return f"parks/bench/charger/trig-{n}/telemetry", orjson.dumps(body)

    def sent(n: int, message: tuple[str, bytes]) -> None:
        PUBLISHED[f"trig-{n}"] = time.perf_counter()

    def observe(output: Output) -> None:
        if isinstance(output, AlertTransition) and output.alert.state is AlertState.FIRING:
            EMITTED.setdefault(output.alert.labels["device"], time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with Mosquitto(workdir / "broker") as broker, InfluxDB1(workdir / "influx") as influx:
            influx.create_database("bench")
            settings = load_settings(
                None,
                mqtt={"url": broker.url, "client_id": "bench-rules"},
                influx={"url": influx.url, "database": "bench"},
                spool={"directory": workdir / "spool"},
                deadletter={"path": workdir / "dead.jsonl"},
                state={"directory": workdir / "state"},
                http={"port": 0},
            )
            address = (broker.host, broker.port)
            service = Collector(settings, source_factory=_StampingSource)
            service.observe_outputs(observe)

            async def main() -> float:
                stop = asyncio.Event()
                running = asyncio.create_task(service.run(stop))
                await service.connected.wait()
                received = service.metrics.received
                loader = multiprocessing.get_context("spawn").Process(
                    target=_publish_load,
                    args=(address, now_ms, load_rate, int(load_rate * seconds)),
                )
                loader.start()
                started, first = time.perf_counter(), received._value.get()
                publisher = _paced_publisher(address, trigger, 20.0, triggers, sent)
                while len(EMITTED) < triggers or publisher.is_alive():
                    if running.done():
                        running.result()
                    await asyncio.sleep(0.05)
                rate = float(received._value.get() - first) / (time.perf_counter() - started)
                loader.join()
                publisher.join()
                stop.set()
                await running
                return rate

            rate = asyncio.run(main())
    from_receipt = sorted((EMITTED[d] - RECEIVED[d]) * 1000 for d in EMITTED)
    from_publish = sorted((EMITTED[d] - PUBLISHED[d]) * 1000 for d in EMITTED)

    def pct(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]

    return {
        "load_msgs_per_s": rate,
        "triggers": len(EMITTED),
        "receipt_to_transition_p50_ms": pct(from_receipt, 50),
        "receipt_to_transition_p99_ms": pct(from_receipt, 99),
        "publish_to_transition_p50_ms": pct(from_publish, 50),
        "publish_to_transition_p99_ms": pct(from_publish, 99),
    }


def main() -> None:
    """Run the three parts and print their figures."""
    print("1. one condition, evaluated (ns; compile = parse + build, once per rule and park)")
    for name, results in evaluators().items():
        base = results.get("simpleeval", (float("nan"), 0.0))[0]
        print(f"  {name}: {CONDITIONS[name]}")
        for label, (evaluate_ns, compile_ns) in results.items():
            ratio = base / evaluate_ns
            print(
                f"    {label:>11}: {evaluate_ns:9.0f} ns/eval ({ratio:5.1f}x simpleeval)"
                f"  compile {compile_ns / 1000:8.1f} us"
            )
    print("2. rules engine with the shipped pack, per point (simulated fleet, 3 h)")
    for key, value in per_point().items():
        print(f"  {key:>28}: {value:12.2f}")
    print("3. fire latency under load (real Mosquitto + InfluxDB, one collector)")
    for key, value in latency().items():
        print(f"  {key:>32}: {value:10.2f}")


if __name__ == "__main__":
    main()
