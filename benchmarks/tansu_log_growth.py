"""How tansu's produce -> consume round trip grows with the length of a partition (its memory
storage), which is what limits long scale-out runs on tansu (see benchmarks/soak_scaleout.py).

Run: .venv/bin/python benchmarks/tansu_log_growth.py [--steps 5] [--records 20000]

Fills one partition with 5 kB records in steps and, before each step, times 30 round trips of a
small record from an acks=all producer to a consumer waiting at the tail (20 ms fetch wait).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from dsotp_streams.adapters.kafka import LocalKafka

log = logging.getLogger("benchmarks.tansu_log_growth")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def round_trip_ms(producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> float:
    times = []
    for _ in range(30):
        start = time.perf_counter()
        await producer.send_and_wait("growth", b"probe", partition=0)
        while True:
            batch = await consumer.getmany(timeout_ms=5000)
            if any(r.value == b"probe" for records in batch.values() for r in records):
                break
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def measure(args: argparse.Namespace) -> None:
    broker = LocalKafka(port=free_port())
    broker.start()
    await broker.wait_ready()
    server = broker.url.split("://")[1]
    producer = AIOKafkaProducer(bootstrap_servers=server, acks="all", linger_ms=2)
    consumer = AIOKafkaConsumer(
        "growth", bootstrap_servers=server, auto_offset_reset="latest", fetch_max_wait_ms=20
    )
    await producer.start()
    await consumer.start()
    try:
        base = await round_trip_ms(producer, consumer)
        log.info("%9s %14s %8s", "records", "round_trip_ms", "ratio")
        log.info("%9d %14.1f %8.2f", 0, base, 1.0)
        for step in range(1, args.steps + 1):
            sends = [
                await producer.send("growth", b"x" * 5000, partition=0) for _ in range(args.records)
            ]
            await asyncio.gather(*sends)
            while await consumer.getmany(timeout_ms=300):
                pass
            ms = await round_trip_ms(producer, consumer)
            log.info("%9d %14.1f %8.2f", step * args.records, ms, ms / base)
    finally:
        await producer.stop()
        await consumer.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--records", type=int, default=20_000, help="records per step")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
