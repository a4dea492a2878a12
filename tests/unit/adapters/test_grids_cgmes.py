"""Grid sources: CGMES through pandapower's converter, checked against the published result."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from dsotp_streams.adapters.grids import load_grid, load_pandapower_net, resolve_path
from dsotp_streams.contracts.agent import GridSource, GridSpec
from dsotp_streams.core.powerflow import run_power_flow
from dsotp_streams.errors import ModelError

CGMES = GridSpec(source=GridSource.CGMES, name="{data_dir}/sogno-cigre-mv/cim")


def _reference_voltages(data_dir: Path) -> dict[str, complex]:
    lines = (data_dir / "cim" / "CIGRE-MV-NoTap.csv").read_text().splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    values = [float(v) for v in lines[1].split(",")]
    row = dict(zip(header, values, strict=True))
    nodes = {h.split(".")[0] for h in header if h != "time"}
    return {n: complex(row[f"{n}.real"], row[f"{n}.imag"]) for n in nodes}


@pytest.mark.parametrize("ignore_shift", [False, True])
def test_cgmes_power_flow_matches_published_result(data_dir: Path, ignore_shift: bool) -> None:
    spec = CGMES.model_copy(update={"ignore_phase_shift": ignore_shift})
    grid = load_grid(spec, data_dir=data_dir.parent)
    assert len(grid.bus_names) == 15
    assert len(grid.net.load) == 18 and len(grid.net.ext_grid) == 1
    p, q = grid.nominal_injection_pu()
    v = run_power_flow(grid, p_pu=p, q_pu=q)
    ref = _reference_voltages(data_dir)
    shift = 0.0 if ignore_shift else -30.0  # Dy5-like 30 degree shift the reference ignores
    dvm = dva = 0.0
    for name, v_ref in ref.items():
        idx = grid.bus_index[name]
        vn_v = grid.vn_kv[idx] * 1e3
        dvm = max(dvm, abs(abs(v[idx]) - abs(v_ref) / vn_v))
        va_ref = math.degrees(np.angle(v_ref)) + (shift if name != "N0" else 0.0)
        dva = max(dva, abs(math.degrees(np.angle(v[idx])) - va_ref))
    assert dvm < 1e-5
    assert dva < 1e-3


def test_cgmes_source_files_are_untouched(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "cim"
    shutil.copytree(data_dir / "cim", copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    load_pandapower_net(GridSpec(source=GridSource.CGMES, name=str(copy)))
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


def test_cgmes_with_breaker_gets_its_slack_and_switch(data_dir: Path) -> None:
    # pandapower alone reads this export without a slack; the SV completion adds it
    grid = load_grid(GridSpec(source=GridSource.CGMES, name=str(data_dir / "cim-with-breaker")))
    assert list(grid.net.switch["name"]) == ["S1"]
    assert len(grid.net.ext_grid) == 1
    vm = grid.net.res_bus.vm_pu.to_numpy()
    assert 0.9 < vm.min() < vm.max() <= 1.0


def test_cgmes_without_a_slack_is_a_model_error(data_dir: Path, tmp_path: Path) -> None:
    for src in (data_dir / "cim").iterdir():
        text = src.read_text(encoding="utf-8")
        text = text.replace("cim:ExternalNetworkInjection", "cim:EnergyConsumer")
        (tmp_path / src.name).write_text(text, encoding="utf-8")
    with pytest.raises(ModelError, match=r"slack|SSH or SV"):
        load_pandapower_net(GridSpec(source=GridSource.CGMES, name=str(tmp_path)))


def test_cgmes_missing_folder_and_broken_xml(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_pandapower_net(GridSpec(source=GridSource.CGMES, name=str(tmp_path / "nope")))
    (tmp_path / "bad_EQ.xml").write_text("<rdf:RDF")
    with pytest.raises(ModelError):
        load_pandapower_net(GridSpec(source=GridSource.CGMES, name=str(tmp_path)))


def test_resolve_path_expands_data_dir(tmp_path: Path) -> None:
    assert resolve_path("{data_dir}/x", base_dir=None, data_dir=tmp_path) == tmp_path / "x"
    # a relative data directory is the caller's, not the agent file's
    relative = resolve_path("{data_dir}/x", base_dir=tmp_path / "agents", data_dir=Path("d"))
    assert relative == Path("d").resolve() / "x"
    assert resolve_path("m.json", base_dir=tmp_path, data_dir=None) == tmp_path / "m.json"
    with pytest.raises(ModelError, match="data_dir"):
        resolve_path("{data_dir}/x", base_dir=None, data_dir=None)
