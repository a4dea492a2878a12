"""CGMES (IEC 61970) grid models into pandapower, through pandapower's CIM converter.

Two gaps between real exports and the converter are closed here, at the edge:

* older exports (NEPLAN's ``61970-452`` profile URIs) name the equipment profile
  ``.../Equipment/3``, which the converter does not recognise: the profile header of such a
  file is rewritten to ``EquipmentCore`` in a temporary copy (the source is never touched);
* files without a steady-state hypothesis (SSH) leave loads without P/Q, equipment without an
  in-service flag and the external grid as a plain injection: the model is completed from the
  state variables (SV): load P/Q from ``SvPowerFlow`` of their terminal, the slack as an external
  grid at the ``SvVoltage`` of its node.
"""

from __future__ import annotations

import logging
import math
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from dsotp_streams.errors import ModelError

__all__ = ["cgmes_files", "load_cgmes"]

log = logging.getLogger(__name__)

_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_OLD_EQUIPMENT = ("61970-452/Equipment/", "61970-452/EquipmentCore/")


def cgmes_files(path: Path) -> list[Path]:
    """The XML (or zip) files of a CGMES model: a folder, or one file."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".xml", ".zip"))
    else:
        files = [path]
    if not files:
        raise ModelError(f"no CGMES files (*.xml, *.zip) in {path}")
    missing = [p for p in files if not p.exists()]
    if missing:
        raise ModelError(f"CGMES file not found: {missing[0]}")
    return files


def load_cgmes(path: Path, *, cgmes_version: str = "2.4.15") -> Any:
    """Read a CGMES model into a pandapower network that a power flow can run on."""
    files = cgmes_files(path)
    try:
        from pandapower.converter.cim.cim2pp.from_cim import from_cim
    except ImportError as exc:
        raise ModelError(f"pandapower's CIM converter is not importable: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="dsotp-cgmes-") as tmp:
        normalised = [_normalise_profile(f, Path(tmp)) for f in files]
        quiet = logging.getLogger("pandapower.converter.cim")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # it logs tracebacks for columns we complete below
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                net = from_cim(file_list=[str(f) for f in normalised], cgmes_version=cgmes_version)
        except Exception as exc:  # the converter raises bare Exception on bad input
            raise ModelError(f"cannot convert CGMES model {path}: {exc}") from exc
        finally:
            quiet.setLevel(level)
    state = _read_state_variables(files)
    _complete(net, state, path)
    return net


def _normalise_profile(file: Path, tmp: Path) -> Path:
    if file.suffix.lower() != ".xml":
        return file
    text = file.read_text(encoding="utf-8")
    old, new = _OLD_EQUIPMENT
    head, sep, rest = text.partition("</md:FullModel>")
    if old not in head:
        return file
    out = tmp / file.name
    out.write_text(head.replace(old, new) + sep + rest, encoding="utf-8")
    log.info("%s: equipment profile %s read as %s", file.name, old, new)
    return out


class _StateVariables:
    def __init__(self) -> None:
        self.flow_mw: dict[str, tuple[float, float]] = {}
        self.voltage: dict[str, tuple[float, float]] = {}


def _ref(element: ET.Element, tag: str) -> str | None:
    child = element.find(tag)
    if child is None:
        return None
    resource = child.get(f"{_RDF}resource", "")
    return resource.removeprefix("#") or None


def _read_state_variables(files: Sequence[Path]) -> _StateVariables:
    state = _StateVariables()
    for file in files:
        if file.suffix.lower() != ".xml":
            continue
        try:
            root = ET.parse(file).getroot()
        except ET.ParseError as exc:
            raise ModelError(f"{file.name} is not well-formed XML: {exc}") from exc
        cim = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
        cim = next(
            (f"{{{uri}}}" for prefix, uri in _namespaces(file) if prefix == "cim"),
            cim,
        )
        for flow in root.iter(f"{cim}SvPowerFlow"):
            terminal = _ref(flow, f"{cim}SvPowerFlow.Terminal")
            p = flow.findtext(f"{cim}SvPowerFlow.p")
            q = flow.findtext(f"{cim}SvPowerFlow.q")
            if terminal and p is not None and q is not None:
                state.flow_mw[terminal] = (float(p), float(q))
        for volt in root.iter(f"{cim}SvVoltage"):
            node = _ref(volt, f"{cim}SvVoltage.TopologicalNode")
            v = volt.findtext(f"{cim}SvVoltage.v")
            angle = volt.findtext(f"{cim}SvVoltage.angle")
            if node and v is not None:
                state.voltage[node] = (float(v), float(angle or 0.0))
    return state


def _namespaces(file: Path) -> list[tuple[str, str]]:
    return [ns for _event, ns in ET.iterparse(file, events=("start-ns",))]


def _complete(net: Any, state: _StateVariables, path: Path) -> None:
    for table in ("bus", "line", "trafo", "trafo3w", "load", "sgen", "gen", "switch", "shunt"):
        frame = net[table]
        if "in_service" in frame and len(frame):
            frame["in_service"] = frame["in_service"].fillna(True).astype(bool)
    if "closed" in net.switch and len(net.switch):
        net.switch["closed"] = net.switch["closed"].fillna(True).astype(bool)
    if "terminal" in net.load:
        for idx, terminal in net.load["terminal"].items():
            if math.isnan(float(net.load.at[idx, "p_mw"])) and terminal in state.flow_mw:
                net.load.at[idx, "p_mw"], net.load.at[idx, "q_mvar"] = state.flow_mw[terminal]
    missing = net.load.index[net.load["p_mw"].isna() | net.load["q_mvar"].isna()]
    if len(missing):
        names = ", ".join(str(n) for n in net.load.loc[missing, "name"])
        raise ModelError(f"{path}: loads without P/Q in SSH or SV: {names}")
    if len(net.ext_grid) == 0:
        _slack_from_injection(net, state, path)
    for column in ("max_i_ka",):
        if column in net.line:
            net.line[column] = net.line[column].where(net.line[column] > 0)


def _slack_from_injection(net: Any, state: _StateVariables, path: Path) -> None:
    import pandapower as pp

    rows = net.sgen.index[net.sgen.get("origin_class") == "ExternalNetworkInjection"]
    if not len(rows):
        raise ModelError(f"{path}: no external grid or ExternalNetworkInjection to act as slack")
    for idx in rows:
        bus = int(net.sgen.at[idx, "bus"])
        node = net.bus.at[bus, "origin_id"] if "origin_id" in net.bus else None
        v_kv, angle_deg = state.voltage.get(str(node), (float(net.bus.at[bus, "vn_kv"]), 0.0))
        pp.create_ext_grid(
            net,
            bus,
            vm_pu=v_kv / float(net.bus.at[bus, "vn_kv"]),
            va_degree=angle_deg,
            name=str(net.sgen.at[idx, "name"]),
        )
    net.sgen.drop(rows, inplace=True)
