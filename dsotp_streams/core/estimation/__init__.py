"""State estimation: a fast WLS engine with bad-data detection, and pandapower as reference."""

from dsotp_streams.core.estimation.engine import Estimator
from dsotp_streams.core.estimation.measurements import Kind, MeasurementMap, MeasurementSet
from dsotp_streams.core.estimation.wls import WlsCache, WlsOptions, WlsResult, solve_wls

__all__ = [
    "Estimator",
    "Kind",
    "MeasurementMap",
    "MeasurementSet",
    "WlsCache",
    "WlsOptions",
    "WlsResult",
    "solve_wls",
]
