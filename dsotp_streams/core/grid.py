"""Grid models: load a pandapower network once and keep the admittance matrices the engines use."""

from __future__ import annotations

import copy
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from dsotp_streams.core.linalg import DENSE_MAX_BUSES, Matrix, Ops, dense_ops, sparse_ops
from dsotp_streams.errors import ModelError

__all__ = ["BranchRef", "GridModel", "unique_names"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class BranchRef:
    """A line or transformer in the internal branch order."""

    name: str
    index: int
    from_bus: int
    to_bus: int
    rating_from_ka: float | None = None
    rating_to_ka: float | None = None
    element: str = "line"  # "line" or "trafo"


_FROZEN = "frozen_gen"


def _run_pf(net: Any) -> None:
    import pandapower as pp

    try:
        with warnings.catch_warnings():
            # pandapower warns about its own data formats (e.g. older tap characteristics)
            warnings.simplefilter("ignore")
            pp.runpp(net, numba=False, calculate_voltage_angles=True)
    except Exception as exc:  # pandapower raises its own and numpy errors
        raise ModelError(f"initial power flow failed: {exc}") from exc


def _freeze_generators(net: Any) -> None:
    """Voltage-controlled generators become fixed P/Q injections at their power-flow result."""
    import pandapower as pp

    gens = net.gen[net.gen.in_service]
    for idx, row in gens.iterrows():
        pp.create_sgen(
            net,
            int(row["bus"]),
            p_mw=float(net.res_gen.at[idx, "p_mw"]),
            q_mvar=float(net.res_gen.at[idx, "q_mvar"]),
            name=f"gen {row['name'] if isinstance(row['name'], str) else idx}",
            type=_FROZEN,
        )
    net.gen.loc[gens.index, "in_service"] = False
    log.info("%d PV generators held at their power-flow P/Q for estimation", len(gens))


def _positive(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def _ratings_ka(element: str, table: Any) -> list[tuple[float | None, float | None]]:
    """Thermal ratings at both ends in kA (lines: max_i_ka x parallel; trafos: from sn_mva)."""
    out: list[tuple[float | None, float | None]] = []
    for _idx, row in table.iterrows():
        parallel = float(row.get("parallel", 1) or 1)
        if element == "line":
            rating = _positive(row.get("max_i_ka", math.nan))
            both = rating * parallel if rating else None
            out.append((both, both))
        else:
            sn = _positive(row.get("sn_mva", math.nan))
            if sn is None:
                out.append((None, None))
                continue
            hv = sn * parallel / (math.sqrt(3.0) * float(row["vn_hv_kv"]))
            lv = sn * parallel / (math.sqrt(3.0) * float(row["vn_lv_kv"]))
            out.append((hv, lv))
    return out


def unique_names(frame: Any, *, prefix: str) -> list[str]:
    """Element names of a pandapower table, made unique (index appended) where they clash."""
    names: list[str] = []
    for idx, name in zip(frame.index, frame["name"], strict=True):
        text = str(name) if isinstance(name, str) and name else f"{prefix} {idx}"
        names.append(text)
    if len(set(names)) != len(names):
        names = [f"{n} [{i}]" for n, i in zip(names, frame.index, strict=True)]
    return names


@dataclass(frozen=True)
class GridModel:
    """A grid converted once: admittances, bus and branch maps, nominal injections (per unit)."""

    net: Any
    base_mva: float
    ops: Ops
    ybus: Matrix
    yf: Matrix
    yt: Matrix
    cf: Matrix
    ct: Matrix
    f_bus: IntArray
    t_bus: IntArray
    vn_kv: FloatArray
    bus_names: tuple[str, ...]
    bus_index: dict[str, int]
    branches: dict[str, BranchRef]
    load_p_pu: FloatArray
    load_q_pu: FloatArray
    sgen_p_pu: FloatArray
    sgen_q_pu: FloatArray
    load_bus: IntArray
    sgen_bus: IntArray
    sgen_fixed: BoolArray  # generators held at their power-flow P/Q (no weather profile)
    slacks: IntArray  # one reference bus per island (an external grid)
    v_slacks: ComplexArray
    island: IntArray  # island number of every bus
    v_nominal: ComplexArray  # power flow at nominal injections: the estimator's start

    @property
    def slack(self) -> int:
        """The first island's reference bus."""
        return int(self.slacks[0])

    @property
    def slack_of(self) -> IntArray:
        """The reference bus of every bus's island."""
        out: IntArray = self.slacks[self.island]
        return out

    @property
    def n_bus(self) -> int:
        """Buses in the internal model (including auxiliary buses of open switches)."""
        return int(self.ybus.shape[0])

    @property
    def named_buses(self) -> list[tuple[str, int]]:
        """The network's own buses as (name, internal index)."""
        return [(name, self.bus_index[name]) for name in self.bus_names]

    def i_base_ka(self, bus: int) -> float:
        """Current base at an internal bus."""
        return self.base_mva / (math.sqrt(3.0) * float(self.vn_kv[bus]))

    def nominal_load_pu(self) -> tuple[FloatArray, FloatArray]:
        """The loads' part of the nominal injections per internal bus (injection sign)."""
        p = np.zeros(self.n_bus)
        q = np.zeros(self.n_bus)
        np.add.at(p, self.load_bus, -self.load_p_pu)
        np.add.at(q, self.load_bus, -self.load_q_pu)
        return p, q

    def nominal_injection_pu(self) -> tuple[FloatArray, FloatArray]:
        """Net injections (generation positive) per internal bus at nominal loads and generation."""
        p, q = self.nominal_load_pu()
        np.add.at(p, self.sgen_bus, self.sgen_p_pu)
        np.add.at(q, self.sgen_bus, self.sgen_q_pu)
        return p, q

    @classmethod
    def from_pandapower(cls, net: Any) -> GridModel:
        """Convert a pandapower network (one power flow builds its internal model)."""

        net = copy.deepcopy(net)
        if not len(net.ext_grid[net.ext_grid.in_service]):
            raise ModelError("the grid has no external grid in service to act as slack")
        _run_pf(net)
        if len(net.gen[net.gen.in_service]):
            _freeze_generators(net)
            _run_pf(net)
        ppci = net._ppc["internal"]
        base_mva = float(ppci["baseMVA"])
        n = int(ppci["bus"].shape[0])
        bus_lookup = np.asarray(net._pd2ppc_lookups["bus"], dtype=np.int64)
        branch = ppci["branch"]
        f_bus = branch[:, 0].real.astype(np.int64)
        t_bus = branch[:, 1].real.astype(np.int64)
        nbr = len(f_bus)
        rows = np.arange(nbr)
        cf = sp.csr_matrix((np.ones(nbr), (rows, f_bus)), shape=(nbr, n))
        ct = sp.csr_matrix((np.ones(nbr), (rows, t_bus)), shape=(nbr, n))

        bus_names = unique_names(net.bus, prefix="Bus")
        bus_index = {
            name: int(bus_lookup[idx]) for name, idx in zip(bus_names, net.bus.index, strict=True)
        }
        branches: dict[str, BranchRef] = {}
        lookups = net._pd2ppc_lookups["branch"]
        for element, prefix in (("line", "Line"), ("trafo", "Trafo")):
            if element not in lookups:
                continue
            start, _end = lookups[element]
            table = getattr(net, element)
            ratings = _ratings_ka(element, table)
            for pos, name in enumerate(unique_names(table, prefix=prefix)):
                k = start + pos
                r_from, r_to = ratings[pos]
                branches[name] = BranchRef(
                    name, k, int(f_bus[k]), int(t_bus[k]), r_from, r_to, element
                )

        in_load = net.load[net.load.in_service]
        in_sgen = net.sgen[net.sgen.in_service]
        scale_load = in_load["scaling"].to_numpy(float) if "scaling" in in_load else 1.0
        scale_sgen = in_sgen["scaling"].to_numpy(float) if "scaling" in in_sgen else 1.0
        ext = net.ext_grid[net.ext_grid.in_service]
        n_islands, island = connected_components(sp.csr_matrix(ppci["Ybus"]) != 0, directed=False)
        slacks = np.full(n_islands, -1, dtype=np.int64)
        v_slacks = np.zeros(n_islands, dtype=complex)
        for bus, vm_pu, va_deg in zip(ext.bus, ext.vm_pu, ext.va_degree, strict=True):
            internal = int(bus_lookup[int(bus)])
            if internal < 0 or internal >= n or slacks[island[internal]] >= 0:
                continue  # out of the internal model, or a second slack in the same island
            slacks[island[internal]] = internal
            v_slacks[island[internal]] = float(vm_pu) * np.exp(1j * math.radians(float(va_deg)))
        if np.any(slacks < 0):
            raise ModelError(f"{int(np.sum(slacks < 0))} energised island(s) have no slack")
        ops = dense_ops if n <= DENSE_MAX_BUSES else sparse_ops
        return cls(
            net=net,
            base_mva=base_mva,
            ops=ops,
            ybus=ops.matrix(ppci["Ybus"]),
            yf=ops.matrix(ppci["Yf"]),
            yt=ops.matrix(ppci["Yt"]),
            cf=ops.matrix(cf),
            ct=ops.matrix(ct),
            f_bus=f_bus,
            t_bus=t_bus,
            vn_kv=ppci["bus"][:, 9].real.astype(float),
            bus_names=tuple(bus_names),
            bus_index=bus_index,
            branches=branches,
            load_p_pu=in_load.p_mw.to_numpy(float) * scale_load / base_mva,
            load_q_pu=in_load.q_mvar.to_numpy(float) * scale_load / base_mva,
            sgen_p_pu=in_sgen.p_mw.to_numpy(float) * scale_sgen / base_mva,
            sgen_q_pu=in_sgen.q_mvar.to_numpy(float) * scale_sgen / base_mva,
            load_bus=bus_lookup[in_load.bus.to_numpy(int)],
            sgen_bus=bus_lookup[in_sgen.bus.to_numpy(int)],
            sgen_fixed=(in_sgen.get("type", "") == _FROZEN).to_numpy(bool),
            slacks=slacks,
            v_slacks=v_slacks,
            island=island.astype(np.int64),
            v_nominal=ppci["bus"][:, 7].real * np.exp(1j * np.radians(ppci["bus"][:, 8].real)),
        )
