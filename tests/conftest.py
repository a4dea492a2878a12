"""Shared fixtures: the agent spec, the converted grid, the shared reference data."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.contracts.agent import AgentSpec, load_agent_spec
from dsotp_streams.core.grid import GridModel
from dsotp_streams.settings import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def data_dir(settings: Settings) -> Path:
    path = settings.data_dir / "sogno-cigre-mv"
    assert path.is_dir(), f"shared reference data not found at {path}: set DSOTP_DATA_DIR"
    return path


@pytest.fixture(scope="session")
def spec() -> AgentSpec:
    return load_agent_spec(REPO / "agents" / "cigre-mv.yaml")


@pytest.fixture(scope="session")
def grid(spec: AgentSpec) -> GridModel:
    return load_grid(spec.grid)
