"""Generate the Grafana dashboards of dsotp-streams (InfluxQL, so InfluxDB 1.x, 2.x with a DBRP
mapping and 3.x all serve them). Run: .venv/bin/python deploy/grafana/build_dashboards.py

The JSON it writes is committed; a test checks it is current and runs every query against a
real InfluxDB filled by the platform's sink.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "dsotp-overview.json"
DS = {"type": "influxdb", "uid": "dsotp-influxdb"}
AREA = '"area" =~ /^$area$/'
BUS = '"bus" =~ /^$bus$/'


def _target(ref: str, query: str, alias: str) -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": DS,
        "rawQuery": True,
        "query": query,
        "alias": alias,
        "resultFormat": "time_series",
    }


def _panel(
    pid: int,
    title: str,
    kind: str,
    grid: tuple[int, int, int, int],
    targets: list[dict[str, Any]],
    unit: str = "none",
    **extra: Any,
) -> dict[str, Any]:
    x, y, w, h = grid
    panel: dict[str, Any] = {
        "id": pid,
        "title": title,
        "type": kind,
        "datasource": DS,
        "targets": targets,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
    }
    panel.update(extra)
    return panel


def overview() -> dict[str, Any]:
    """Measured vs estimated voltages, estimation quality, rates and lag, loading, forecasts."""
    t = "$timeFilter"
    panels = [
        _panel(
            1,
            "Voltage at $bus: estimated, measured, true (p.u.)",
            "timeseries",
            (0, 0, 16, 9),
            [
                _target(
                    "A",
                    f'SELECT mean("vm_pu") FROM "state" WHERE {AREA} AND {BUS} AND {t} '
                    'GROUP BY time($__interval), "bus" fill(none)',
                    "estimated $tag_bus",
                ),
                _target(
                    "B",
                    f'SELECT mean("measured_vm_pu") FROM "state" WHERE {AREA} AND {BUS} '
                    f'AND {t} GROUP BY time($__interval), "bus" fill(none)',
                    "measured $tag_bus",
                ),
                _target(
                    "C",
                    f'SELECT mean("true_vm_pu") FROM "state" WHERE {AREA} AND {BUS} AND {t} '
                    'GROUP BY time($__interval), "bus" fill(none)',
                    "true $tag_bus",
                ),
            ],
            unit="none",
            repeat="bus",
            repeatDirection="v",
        ),
        _panel(
            2,
            "Voltage profile, latest (p.u.)",
            "bargauge",
            (16, 0, 8, 9),
            [
                _target(
                    "A",
                    f'SELECT last("vm_pu") FROM "state" WHERE {AREA} AND {t} GROUP BY "bus"',
                    "$tag_bus",
                ),
            ],
            options={"orientation": "horizontal", "displayMode": "gradient"},
        ),
        _panel(
            3,
            "Chi-square of the weighted residuals vs its threshold",
            "timeseries",
            (0, 9, 12, 8),
            [
                _target(
                    "A",
                    f'SELECT mean("chi2") FROM "se_quality" WHERE {AREA} AND {t} '
                    "GROUP BY time($__interval) fill(none)",
                    "chi2",
                ),
                _target(
                    "B",
                    f'SELECT mean("chi2_threshold") FROM "se_quality" WHERE {AREA} AND {t} '
                    "GROUP BY time($__interval) fill(none)",
                    "threshold",
                ),
            ],
        ),
        _panel(
            4,
            "Measurements not used: bad data removed, stale channels dropped",
            "timeseries",
            (12, 9, 6, 8),
            [
                _target(
                    "A",
                    f'SELECT sum("n_bad_data") FROM "se_quality" WHERE {AREA} AND {t} '
                    "GROUP BY time($__interval) fill(0)",
                    "bad data removed",
                ),
                _target(
                    "B",
                    f'SELECT sum("n_dropped") FROM "se_quality" WHERE {AREA} AND {t} '
                    "GROUP BY time($__interval) fill(0)",
                    "stale (frozen device)",
                ),
            ],
        ),
        _panel(
            5,
            "Last bad-data flags",
            "table",
            (18, 9, 6, 8),
            [
                {
                    **_target(
                        "A",
                        f'SELECT "bad_data", "chi2" FROM "se_quality" WHERE {AREA} AND '
                        f'"n_bad_data" > 0 AND {t} ORDER BY time DESC LIMIT 20',
                        "",
                    ),
                    "resultFormat": "table",
                },
            ],
        ),
        _panel(
            6,
            "Estimates per second by status",
            "timeseries",
            (0, 17, 8, 8),
            [
                _target(
                    "A",
                    f'SELECT count("ok") FROM "se_quality" WHERE {AREA} AND {t} '
                    'GROUP BY time(1s), "status" fill(0)',
                    "$tag_status",
                ),
            ],
            unit="reqps",
        ),
        _panel(
            7,
            "Lag and estimation time",
            "timeseries",
            (8, 17, 8, 8),
            [
                _target(
                    "A",
                    f'SELECT mean("lag_ms") FROM "se_quality" WHERE {AREA} AND {t} '
                    "GROUP BY time($__interval) fill(none)",
                    "lag",
                ),
                _target(
                    "B",
                    f'SELECT mean("runtime_ms") FROM "se_quality" WHERE {AREA} AND {t} '
                    "GROUP BY time($__interval) fill(none)",
                    "estimation",
                ),
            ],
            unit="ms",
        ),
        _panel(
            8,
            "PMU frames per second",
            "timeseries",
            (16, 17, 8, 8),
            [
                _target(
                    "A",
                    f'SELECT count("value") FROM "pmu" WHERE {AREA} AND '
                    "\"measurand\" = 'voltmagnitude' AND " + t + ' GROUP BY time(1s), "device" '
                    "fill(0)",
                    "$tag_device",
                ),
            ],
            unit="reqps",
        ),
        _panel(
            9,
            "Branch loading (%)",
            "timeseries",
            (0, 25, 12, 8),
            [
                _target(
                    "A",
                    f'SELECT max("loading_percent") FROM "branch" WHERE {AREA} AND {t} '
                    'GROUP BY time($__interval), "line" fill(none)',
                    "$tag_line",
                ),
            ],
            unit="percent",
        ),
        _panel(
            10,
            "Load forecast at $bus with 10-90 % band (MW)",
            "timeseries",
            (12, 25, 12, 8),
            [
                _target(
                    "A",
                    f'SELECT mean("value") FROM "forecast" WHERE {AREA} AND "node" =~ '
                    "/^$bus$/ AND \"quantity\" = 'p_mw' AND " + t + " GROUP BY time($__interval), "
                    '"quantile" fill(none)',
                    "q$tag_quantile",
                ),
                _target(
                    "B",
                    f'SELECT mean("p_mw") FROM "state" WHERE {AREA} AND {BUS} AND {t} '
                    "GROUP BY time($__interval) fill(none)",
                    "estimated",
                ),
            ],
            unit="mwatt",
        ),
        _panel(
            11,
            "Load relative to the model's nominal loads (estimated load scale)",
            "timeseries",
            (0, 33, 12, 8),
            [
                _target(
                    "A",
                    f'SELECT mean("load_scale") FROM "se_quality" WHERE {AREA} AND {t} '
                    "GROUP BY time($__interval) fill(none)",
                    "load scale",
                ),
            ],
            unit="percentunit",
        ),
    ]
    variables = [
        {
            "name": "area",
            "type": "query",
            "datasource": DS,
            "refresh": 1,
            "includeAll": False,
            "query": 'SHOW TAG VALUES FROM "state" WITH KEY = "area"',
        },
        {
            "name": "bus",
            "type": "query",
            "datasource": DS,
            "refresh": 1,
            "includeAll": True,
            "multi": True,
            "query": 'SHOW TAG VALUES FROM "state" WITH KEY = "bus" WHERE ' + AREA,
        },
    ]
    annotations = [
        {
            "name": "FLISR events",
            "datasource": DS,
            "enable": True,
            "iconColor": "red",
            "query": f'SELECT "text" FROM "flisr" WHERE {AREA} AND $timeFilter',
            "textColumn": "text",
            "tagsColumn": "kind",
        },
    ]
    return {
        "uid": "dsotp-overview",
        "title": "dsotp: measured vs estimated",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "tags": ["dsotp"],
        "panels": panels,
        "templating": {"list": variables},
        "annotations": {"list": annotations},
    }


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(overview(), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
