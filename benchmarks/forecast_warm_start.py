"""How long a restarted pipeline takes to read its forecast history back from the store.

Run: .venv/bin/python benchmarks/forecast_warm_start.py [--days 2] [--influx-days 1]

A store is filled with the estimates of the demo area (15 buses) at the demo's 10 windows/s:
`--days` of them in DuckDB (generated in SQL: 13 million `state` rows a day) and
`--influx-days` at 1 window/s in InfluxDB 1.6.7 (started on loopback, written through the
platform's v1 writer). Timed: `bus_loads` (the mean load per bus and 15 minutes, one GROUP BY in
the store) and the whole `WindowProcessor.warm_start` (query, regular series, `seed`); the
baseline, run on the same store, fetches the rows and averages them in NumPy. Printed: seconds,
rows/s, the ratio, and the time for the default 56 days of history at the demo rate.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsotp_streams.adapters.grids import load_grid  # noqa: E402
from dsotp_streams.adapters.results import InfluxResults  # noqa: E402
from dsotp_streams.adapters.store import DuckStore  # noqa: E402
from dsotp_streams.contracts.agent import load_agent_spec  # noqa: E402
from dsotp_streams.runtime.stages import LoadHistory, WindowProcessor  # noqa: E402
from tests.integration.databases import InfluxServer  # noqa: E402
from tests.integration.history import state_rows  # noqa: E402

log = logging.getLogger("benchmarks.forecast_warm_start")
STEP_S = 900.0
HISTORY_DAYS = 56


def fill_duckdb(store: DuckStore, area: str, buses: list[str], start_s: int, days: float) -> int:
    """`state` rows at 10 windows/s for `days`, generated inside DuckDB."""
    windows = int(days * 86400 * 10)
    names = ", ".join(f"'{b}'" for b in buses)
    store.query(
        "INSERT INTO state (ts_ns, time, area, bus, vm_pu, va_deg, p_mw, q_mvar) "
        "SELECT ts, make_timestamptz(ts // 1000), ?, bus, 1.0, 0.0, p, 0.3 * p FROM ("
        f"  SELECT (? + w * 100000000) AS ts, b.bus AS bus,"
        "   0.3 * (1 + 0.4 * sin(2 * pi() * ((? + w / 10) % 86400) / 86400)) AS p"
        f"  FROM range(?) AS r(w), (SELECT unnest([{names}]) AS bus) AS b)",
        [area, start_s * 1_000_000_000, start_s, windows],
    )
    return windows * len(buses)


def fetch_and_average(store: DuckStore, area: str, since_ns: int) -> int:
    """The baseline: every row to Python, averaged per bus and step in NumPy."""
    rows = store.query(
        "SELECT ts_ns, bus, p_mw FROM state WHERE area = ? AND ts_ns >= ?", [area, since_ns]
    )
    ts = np.fromiter((r["ts_ns"] for r in rows), dtype=np.int64, count=len(rows))
    p = np.fromiter((r["p_mw"] for r in rows), dtype=float, count=len(rows))
    names = sorted({r["bus"] for r in rows})
    column = {b: j for j, b in enumerate(names)}
    bus = np.fromiter((column[r["bus"]] for r in rows), dtype=np.int64, count=len(rows))
    slot = ts // int(STEP_S * 1e9)
    key = (slot - slot.min()) * len(names) + bus
    sums = np.bincount(key, weights=p)
    counts = np.bincount(key)
    return int(np.count_nonzero(counts)) if len(sums) else 0


def timed(label: str, rows: int, call: object) -> float:
    start = time.perf_counter()
    result = call()  # type: ignore[operator]
    seconds = time.perf_counter() - start
    log.info("  %-44s %8.2f s  %7.1f M rows/s  (%s)", label, seconds, rows / seconds / 1e6, result)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=2.0, help="DuckDB history at 10 windows/s")
    parser.add_argument("--influx-days", type=float, default=1.0, help="InfluxDB at 1 window/s")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    spec = load_agent_spec(REPO / "agents" / "cigre-mv.yaml")
    grid = load_grid(spec.grid)
    buses = [name for name, _idx in grid.named_buses]
    now = datetime.now(tz=UTC)
    since_ns = int((now - timedelta(days=HISTORY_DAYS)).timestamp() * 1e9)

    with tempfile.TemporaryDirectory() as folder:
        store = DuckStore(Path(folder) / "store.duckdb", memory_limit="64MB")
        start_s = int((now - timedelta(days=args.days)).timestamp())
        begin = time.perf_counter()
        rows = fill_duckdb(store, spec.area, buses, start_s, args.days)
        log.info(
            "DuckDB: %s state rows (%g days at 10 windows/s, %d buses) written in %.1f s",
            f"{rows:,}",
            args.days,
            len(buses),
            time.perf_counter() - begin,
        )
        query = timed(
            "bus_loads (GROUP BY in the store)",
            rows,
            lambda: len(store.bus_loads(spec.area, since_ns=since_ns, step_s=STEP_S)),
        )
        baseline = timed(
            "baseline: fetch the rows, average in NumPy",
            rows,
            lambda: fetch_and_average(store, spec.area, since_ns),
        )
        whole = timed(
            "WindowProcessor.warm_start (query and seed)",
            rows,
            lambda: warm(spec, grid, folder, store),
        )
        log.info(
            "  GROUP BY in the store %.1fx faster than the baseline; %d days at the demo rate: "
            "about %.0f s in the worker thread (estimation goes on meanwhile)",
            baseline / query,
            HISTORY_DAYS,
            whole * HISTORY_DAYS / args.days,
        )
        store.close()

        if args.influx_days > 0:
            server = InfluxServer(Path(folder) / "influx")
            server.start()
            try:
                start = now - timedelta(days=args.influx_days)
                history = state_rows(spec.area, buses, start, int(args.influx_days * 86400), 1)
                begin = time.perf_counter()
                reader = InfluxResults(server.fill(history))
                log.info(
                    "InfluxDB 1.6.7: %s state rows (%g days at 1 window/s) written in %.1f s",
                    f"{len(history):,}",
                    args.influx_days,
                    time.perf_counter() - begin,
                )
                timed(
                    "bus_loads (InfluxQL GROUP BY time(15m))",
                    len(history),
                    lambda: len(reader.bus_loads(spec.area, since_ns=since_ns, step_s=STEP_S)),
                )
                timed(
                    "WindowProcessor.warm_start (query and seed)",
                    len(history),
                    lambda: warm(spec, grid, folder, reader),
                )
            finally:
                server.stop()


def warm(spec: object, grid: object, folder: str, history: LoadHistory) -> int:
    processor = WindowProcessor(spec, grid, Path(folder), history)  # type: ignore[arg-type]
    return processor.warm_start(datetime.now(tz=UTC))


if __name__ == "__main__":
    main()
