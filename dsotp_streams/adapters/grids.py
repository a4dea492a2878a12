"""Grid models from where an agent spec says: pandapower's library, a JSON file, or CGMES."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

from dsotp_streams.adapters.cgmes import load_cgmes
from dsotp_streams.contracts.agent import GridSource, GridSpec
from dsotp_streams.core.grid import GridModel
from dsotp_streams.errors import ModelError

__all__ = ["load_grid", "load_pandapower_net", "resolve_path"]


def resolve_path(name: str, *, base_dir: Path | None, data_dir: Path | None) -> Path:
    """A spec's file path: ``{data_dir}`` expanded, relative paths against the agent file."""
    if "{data_dir}" in name:
        if data_dir is None:
            raise ModelError(f"{name!r} names {{data_dir}} but no data directory is set")
        name = name.replace("{data_dir}", str(data_dir.resolve()))
    path = Path(name)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def load_pandapower_net(
    spec: GridSpec, *, base_dir: Path | None = None, data_dir: Path | None = None
) -> Any:
    """Build the pandapower network a grid spec names."""
    try:
        if spec.source is GridSource.PANDAPOWER_NETWORK:
            networks = importlib.import_module("pandapower.networks")
            factory = getattr(networks, spec.name, None)
            if factory is None:
                raise ModelError(f"pandapower.networks has no network {spec.name!r}")
            with warnings.catch_warnings():
                # the library's stored nets trigger pandapower's own format deprecations
                warnings.simplefilter("ignore")
                net = factory(**spec.kwargs)
        else:
            path = resolve_path(spec.name, base_dir=base_dir, data_dir=data_dir)
            if not path.exists():
                raise ModelError(f"grid model {path} does not exist")
            if spec.source is GridSource.CGMES:
                net = load_cgmes(path, **spec.kwargs)
            else:
                net = importlib.import_module("pandapower").from_json(str(path))
    except ModelError:
        raise
    except Exception as exc:  # pandapower raises anything from KeyError to OSError
        raise ModelError(f"cannot load grid {spec.name!r}: {exc}") from exc
    if spec.ignore_phase_shift and len(net.trafo):
        net.trafo["shift_degree"] = 0.0
    return net


def load_grid(
    spec: GridSpec, *, base_dir: Path | None = None, data_dir: Path | None = None
) -> GridModel:
    """Load and convert the grid an agent spec names."""
    return GridModel.from_pandapower(
        load_pandapower_net(spec, base_dir=base_dir, data_dir=data_dir)
    )
