"""InfluxDB: line protocol, v1 `/write` and v2 (influxdb-client) writers.

Both writers take rows of the shared schema (`contracts.storage`), encode them as line protocol
with nanosecond times, and raise `TransportError` when the database cannot take them now (worth a
retry) or `SinkRejectedError` when it refuses the data itself (a retry would not help).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import aiohttp

from dsotp_streams.contracts.storage import SCHEMA, Row
from dsotp_streams.errors import DsotpError, SinkRejectedError, TransportError
from dsotp_streams.settings import InfluxSettings

__all__ = ["InfluxV1Writer", "InfluxV2Writer", "SinkRejectedError", "make_writer", "to_lines"]

log = logging.getLogger(__name__)

_TAG_ESCAPE = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEASUREMENT_ESCAPE = str.maketrans({",": r"\,", " ": r"\ "})


def _field(value: float | int | str, kind: type) -> str:
    if kind is int:
        return f"{int(value)}i"
    if kind is str:
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    return repr(float(value))


def to_line(row: Row) -> str | None:
    """One row as a line of line protocol; None when it has no field to write."""
    kinds = SCHEMA[row.measurement].fields
    fields = ",".join(
        f"{key}={_field(value, kinds.get(key, float))}"
        for key, value in row.fields.items()
        if value is not None and (not isinstance(value, float) or value == value)
    )
    if not fields:
        return None
    tags = "".join(
        f",{key.translate(_TAG_ESCAPE)}={value.translate(_TAG_ESCAPE)}"
        for key, value in sorted(row.tags.items())
        if value
    )
    return f"{row.measurement.translate(_MEASUREMENT_ESCAPE)}{tags} {fields} {row.ts_ns}"


def to_lines(rows: Iterable[Row]) -> str:
    """Rows as one line-protocol body."""
    return "\n".join(line for line in map(to_line, rows) if line is not None)


class InfluxV1Writer:
    """POST /write?db=...&precision=ns (InfluxDB 1.x, and 2.x/3.x v1 compatibility)."""

    def __init__(self, settings: InfluxSettings) -> None:
        if not settings.url:
            raise DsotpError("InfluxDB v1 writer needs influx.url")
        self.url = settings.url.rstrip("/") + "/write"
        self.params = {"db": settings.database, "precision": "ns"}
        if settings.username:
            self.params["u"] = settings.username
            self.params["p"] = settings.password.get_secret_value() if settings.password else ""
        self.timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def write(self, rows: list[Row]) -> None:
        """Write one batch."""
        body = to_lines(rows)
        if not body:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.post(self.url, params=self.params, data=body) as response:
                if response.status == 204:
                    return
                text = (await response.text())[:300]
                raise _http_error(response.status, text)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"InfluxDB unreachable: {exc}") from exc

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class InfluxV2Writer:
    """The v2 write API through influxdb-client (InfluxDB 2.x/3.x, 1.8+, VictoriaMetrics)."""

    def __init__(self, settings: InfluxSettings) -> None:
        if not settings.url:
            raise DsotpError("InfluxDB v2 writer needs influx.url")
        self.settings = settings
        self._client: Any = None

    async def write(self, rows: list[Row]) -> None:
        """Write one batch."""
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        body = to_lines(rows)
        if not body:
            return
        s = self.settings
        if self._client is None:
            token = s.token.get_secret_value() if s.token else ""
            self._client = InfluxDBClientAsync(
                url=s.url or "", token=token, org=s.org, timeout=int(s.timeout_s * 1000)
            )
        try:
            await self._client.write_api().write(
                bucket=s.bucket, record=body, write_precision=WritePrecision.NS
            )
        except ApiException as exc:
            raise _http_error(exc.status or 0, str(exc.reason)) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"InfluxDB unreachable: {exc}") from exc

    async def close(self) -> None:
        """Close the client."""
        if self._client is not None:
            await self._client.close()
            self._client = None


def _http_error(status: int, text: str) -> DsotpError:
    """A client error (other than auth, missing database or throttling) means the data was
    refused and a retry cannot help; anything else may pass later."""
    if 400 <= status < 500 and status not in (401, 403, 404, 429):
        return SinkRejectedError(f"InfluxDB refused a batch: {status} {text}")
    return TransportError(f"InfluxDB write answered {status}: {text}")


def make_writer(settings: InfluxSettings) -> InfluxV1Writer | InfluxV2Writer:
    """The writer for the configured API."""
    return InfluxV1Writer(settings) if settings.api == "v1" else InfluxV2Writer(settings)
