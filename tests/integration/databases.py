"""Real time-series databases on loopback for the tests: InfluxDB 1.6.7 and VictoriaMetrics.

Each server can be killed (SIGKILL, like a crash) and started again on the same port and data.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Self

from dsotp_streams.adapters.influx import InfluxV1Writer
from dsotp_streams.contracts.storage import Row
from dsotp_streams.settings import InfluxSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """A server the tests start, stop or kill, and start again on the same port and data."""

    name = "server"
    start_timeout_s = 30.0
    stop_timeout_s = 15.0

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        """The server's environment (None: the tests')."""
        return None

    def start(self, timeout_s: float | None = None) -> None:
        timeout_s = timeout_s or self.start_timeout_s
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if self.ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} not ready in {timeout_s} s: {self.log.read_text()[-2000:]}"
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class TcpServer(_Server):
    """A server that is ready once its port accepts connections (the MQTT brokers)."""

    def ready(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return int(response.status), response.read()


def _post(url: str, data: bytes = b"", timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status), response.read()


class InfluxServer(_Server):
    """InfluxDB 1.x (`influxd`) with its own config, data and ports."""

    name = "influxd"

    def __init__(self, folder: Path, database: str = "dsotp") -> None:
        super().__init__(folder)
        self.database = database
        self.rpc_port = free_port()
        binary = shutil.which("influxd") or "/usr/bin/influxd"
        assert Path(binary).exists(), "influxdb is not installed: run scripts/test.sh"
        self.binary = binary
        conf = folder / "influxdb.conf"
        conf.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{folder}/meta"\n'
            f'[data]\n  dir = "{folder}/data"\n  wal-dir = "{folder}/wal"\n'
            "  query-log-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n",
            encoding="utf-8",
        )
        self.conf = conf

    def command(self) -> list[str]:
        return [self.binary, "-config", str(self.conf)]

    def ready(self) -> bool:
        status, _ = _get(f"{self.url}/ping")
        return status == 204

    def start(self, timeout_s: float = 30.0) -> None:
        super().start(timeout_s)
        self.query(f'CREATE DATABASE "{self.database}"', post=True)

    def query(self, q: str, *, post: bool = False) -> list[dict[str, Any]]:
        """InfluxQL; the series of the first statement."""
        params = urllib.parse.urlencode({"q": q, "db": self.database, "epoch": "ns"})
        if post:
            _status, body = _post(f"{self.url}/query?{params}")
        else:
            _status, body = _get(f"{self.url}/query?{params}")
        result = json.loads(body)["results"][0]
        if "error" in result:
            raise RuntimeError(f"InfluxQL error: {result['error']} in {q}")
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    def count(self, measurement: str, field: str) -> int:
        series = self.query(f'SELECT count("{field}") FROM "{measurement}"')
        return int(series[0]["values"][0][1]) if series else 0

    def fill(self, rows: list[Row], chunk: int = 5000) -> InfluxSettings:
        """Write rows through the platform's own v1 writer; the settings that read them back."""
        settings = InfluxSettings(url=self.url, database=self.database)
        writer = InfluxV1Writer(settings)

        async def write() -> None:
            for k in range(0, len(rows), chunk):
                await writer.write(rows[k : k + chunk])
            await writer.close()

        asyncio.run(write())
        return settings


class VictoriaServer(_Server):
    """VictoriaMetrics single node; accepts InfluxDB line protocol on /write and /api/v2/write."""

    name = "victoria-metrics"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        binary = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
        assert Path(binary).exists(), "victoria-metrics is not installed: run scripts/test.sh"
        self.binary = binary

    def command(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.folder}/data",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
        ]

    def ready(self) -> bool:
        status, _ = _get(f"{self.url}/health")
        return status == 200

    def count(self, metric: str) -> int:
        """Samples of every series of a metric (VictoriaMetrics names them measurement_field)."""
        _post(f"{self.url}/internal/force_flush")
        params = urllib.parse.urlencode(
            {"match[]": f'{{__name__="{metric}"}}', "start": "0", "end": str(2**31)}
        )
        _status, body = _get(f"{self.url}/api/v1/export?{params}", timeout=30)
        return sum(len(json.loads(line)["values"]) for line in body.splitlines() if line)


class S3Server(_Server):
    """An S3-compatible object store (moto's server, in memory) with one bucket: where a tansu
    broker keeps its log, so that the log outlives a broker restart."""

    name = "moto_server"

    def __init__(self, folder: Path, bucket: str = "tansu") -> None:
        super().__init__(folder)
        self.bucket = bucket
        binary = Path(sys.executable).parent / "moto_server"
        assert binary.exists(), "moto[server] is not installed: run scripts/test.sh"
        self.binary = str(binary)

    def command(self) -> list[str]:
        return [self.binary, "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        status, _ = _get(f"{self.url}/")
        return status == 200

    def start(self, timeout_s: float | None = None) -> None:
        super().start(timeout_s)
        request = urllib.request.Request(f"{self.url}/{self.bucket}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    @property
    def storage(self) -> str:
        """tansu's storage engine URL for the bucket."""
        return f"s3://{self.bucket}/"

    def client_env(self) -> dict[str, str]:
        """What tansu needs to reach the store (any keys: moto does not check them)."""
        return {
            "AWS_ENDPOINT": self.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "dsotp-test",
            "AWS_SECRET_ACCESS_KEY": "dsotp-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
