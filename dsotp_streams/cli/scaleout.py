"""Service commands of `dsotp`: the MQTT <-> Kafka bridge, the faust workers, the REST API."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from dsotp_streams.cli.common import KafkaOpt, settings_from_flags, stderr, stop_on_signals

__all__ = ["register"]

log = logging.getLogger("dsotp_streams.scaleout")
console = stderr


def register(app: typer.Typer) -> None:
    """Add `bridge`, `worker` and `api` to the CLI."""

    @app.command()
    def api(
        store: Annotated[
            Path | None,
            typer.Option("--store", help="DuckDB file to serve (read-only; without InfluxDB)"),
        ] = None,
        agents_dir: Annotated[
            Path | None, typer.Option("--agents-dir", help="the agent specs to list")
        ] = None,
        host: Annotated[str | None, typer.Option("--host")] = None,
        port: Annotated[int | None, typer.Option("--port")] = None,
        no_auth: Annotated[
            bool, typer.Option("--no-auth", help="serve without a token (local use only)")
        ] = False,
        export_openapi: Annotated[
            Path | None,
            typer.Option("--export-openapi", help="write the OpenAPI document here and exit"),
        ] = None,
    ) -> None:
        """The REST API over the store: areas, state, forecasts, FLISR, quality, metrics."""
        import uvicorn

        from dsotp_streams.adapters.results import results_from_settings
        from dsotp_streams.api.rest import create_api, openapi_document
        from dsotp_streams.contracts.agent import load_agent_specs
        from dsotp_streams.errors import DsotpError

        if export_openapi is not None:
            export_openapi.write_text(openapi_document(), encoding="utf-8")
            console.print(f"OpenAPI document written to {export_openapi}")
            return
        settings = settings_from_flags(agents_dir=agents_dir)
        cfg = settings.api
        token = cfg.token.get_secret_value() if cfg.token else None
        if token is None and not no_auth:
            raise DsotpError("set DSOTP_API__TOKEN (or pass --no-auth for local use)")
        specs = {a: s for a, (s, _p) in load_agent_specs(settings.agents_dir).items()}
        results = results_from_settings(settings, store)
        service = create_api(store=results, specs=specs, token=token, max_page=cfg.max_page)
        uvicorn.run(service, host=host or cfg.host, port=port or cfg.port, log_level="warning")

    @app.command()
    def bridge(
        kafka_url: KafkaOpt = None,
        mqtt_url: Annotated[
            str | None, typer.Option("--mqtt-url", help="mqtt://user:pass@host:port")
        ] = None,
        duration: Annotated[float | None, typer.Option("--duration", help="stop after S")] = None,
    ) -> None:
        """Carry PMU frames MQTT -> Kafka (batched per area) and results Kafka -> MQTT."""
        from dsotp_streams.adapters.mqtt import endpoint_from_settings
        from dsotp_streams.runtime.bridge import Bridge

        settings = settings_from_flags(kafka_url=kafka_url, mqtt_url=mqtt_url)

        async def serve() -> None:
            stop = asyncio.Event()
            stop_on_signals(stop)
            if duration is not None:
                asyncio.get_running_loop().call_later(duration, stop.set)
            service = Bridge(settings=settings, endpoint=endpoint_from_settings(settings.mqtt))
            await service.run(stop)
            stats = service.stats
            console.print(
                f"bridge: {stats.frames_in} frames in, {stats.frames_out} to Kafka in "
                f"{stats.batches_out} batches, {stats.dead_letters} dead letters, "
                f"{stats.results_out} results to MQTT ({stats.duplicates_dropped} duplicates "
                "dropped)"
            )

        asyncio.run(serve())

    @app.command()
    def worker(
        kafka_url: KafkaOpt = None,
        agents_dir: Annotated[
            Path | None, typer.Option("--agents-dir", help="the agent specs to serve")
        ] = None,
    ) -> None:
        """A faust worker serving every area of the agent specs (Kafka consumer group)."""
        import faust

        from dsotp_streams.runtime.scaleout import create_worker

        settings = settings_from_flags(kafka_url=kafka_url, agents_dir=agents_dir)
        service = create_worker(settings)
        runner = faust.Worker(
            service.app,
            loglevel=settings.log_level.upper(),
            quiet=True,
            redirect_stdouts=False,
        )
        runner.execute_from_commandline()
