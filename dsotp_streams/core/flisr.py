"""Fault location, isolation and service restoration (FLISR) on the grid model's topology.

Pure and synchronous. The topology is pandapower's: lines, transformers, switches. Switchable
points are the model's switches and, with `switchable: all_lines`, a remote-controlled switch at
each end of every line (as ring main units give). A *section* is what lies between switchable
points; a fault is located to a section from fault passage indications (PMU branch currents far
above their pre-fault value), isolated by opening the switches on the section's boundary, and the
healthy part downstream is restored through normally-open tie switches, a plan being accepted
only when a power flow shows no overload, voltages within limits and radial operation.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import networkx as nx
import numpy as np

from dsotp_streams.contracts.agent import AgentSpec, FlisrSpec
from dsotp_streams.contracts.frames import Measurand
from dsotp_streams.contracts.messages import FlisrEvent, FlisrLocation, SwitchAction, Window
from dsotp_streams.core.grid import ComplexArray, GridModel, unique_names

__all__ = ["FaultDetector", "FaultObservation", "FlisrPlanner", "fault_state"]

Node = tuple[str, Any]  # ("bus", pp index) or ("line"|"trafo", pp index)


@dataclass(frozen=True)
class _End:
    """A line or transformer end: a switch (real or virtual) or a solid connection."""

    element: Node
    bus: int
    switch: str | None  # name of the switch, None if the end cannot be switched
    closed: bool
    real: bool  # a switch of the model (False: a virtual line-end switch)


@dataclass(frozen=True)
class FaultObservation:
    """What a faulted window showed: fault passage per measured branch, bus voltages."""

    window_start: datetime
    trigger: str
    passage: dict[str, bool]  # branch name -> fault current seen
    vm_pu: dict[str, float]


@dataclass
class _Plan:
    ties: tuple[str, ...]
    restored_buses: set[int]
    restored_mw: float
    checks: dict[str, float | bool] = field(default_factory=dict)


class FlisrPlanner:
    """The topology of one area, and the FLISR logic on it."""

    def __init__(self, grid: GridModel, *, spec: FlisrSpec) -> None:
        self.grid = grid
        self.spec = spec
        net = grid.net
        self.net = net
        self.bus_name = dict(zip(net.bus.index, grid.bus_names, strict=True))
        self.line_name = {
            idx: ref
            for idx, ref in zip(net.line.index, unique_names(net.line, prefix="Line"), strict=True)
        }
        self.trafo_name = {
            idx: ref
            for idx, ref in zip(
                net.trafo.index, unique_names(net.trafo, prefix="Trafo"), strict=True
            )
        }
        self.element_of = {name: ("line", idx) for idx, name in self.line_name.items()}
        self.element_of |= {name: ("trafo", idx) for idx, name in self.trafo_name.items()}
        self.sources = {int(b) for b in net.ext_grid[net.ext_grid.in_service].bus}
        loads = net.load[net.load.in_service]
        scaling = loads.get("scaling", 1.0)
        self.load_mw: dict[int, float] = (loads.p_mw * scaling).groupby(loads.bus).sum().to_dict()
        self.ends: list[_End] = []
        switches = net.switch
        for idx, row in net.line.iterrows():
            if not bool(row.in_service):
                continue
            for bus in (int(row.from_bus), int(row.to_bus)):
                sw = switches[
                    (switches.et == "l") & (switches.element == idx) & (switches.bus == bus)
                ]
                name = self._end_name(("line", idx), bus)
                if len(sw):
                    label = sw["name"].iloc[0]
                    real_name = label if isinstance(label, str) and label else name
                    self.ends.append(
                        _End(("line", idx), bus, real_name, bool(sw.closed.iloc[0]), True)
                    )
                elif spec.switchable == "all_lines":
                    self.ends.append(_End(("line", idx), bus, name, True, False))
                else:
                    self.ends.append(_End(("line", idx), bus, None, True, False))
        for idx, row in net.trafo.iterrows():
            if not bool(row.in_service):
                continue
            for bus in (int(row.hv_bus), int(row.lv_bus)):
                sw = switches[
                    (switches.et == "t") & (switches.element == idx) & (switches.bus == bus)
                ]
                name = self._end_name(("trafo", idx), bus)
                if len(sw):
                    self.ends.append(_End(("trafo", idx), bus, name, bool(sw.closed.iloc[0]), True))
                else:
                    self.ends.append(_End(("trafo", idx), bus, None, True, False))
        # buses joined by closed bus-bus switches act as one node
        self.bus_alias: dict[int, int] = {}
        for _idx, sw in switches[(switches.et == "b") & switches.closed].iterrows():
            self.bus_alias[int(sw.element)] = self.bus_alias.get(int(sw.bus), int(sw.bus))
        self.normal = self._graph(open_ends=set(), closed_ties=set())

    # ---------------------------------------------------------------- topology
    def _end_name(self, element: Node, bus: int) -> str:
        return f"{self.name_of(element)}@{self.bus_name[bus]}"

    def name_of(self, element: Node) -> str:
        """The published name of a line or transformer."""
        return self.line_name[element[1]] if element[0] == "line" else self.trafo_name[element[1]]

    def _bus(self, bus: int) -> Node:
        return ("bus", self.bus_alias.get(bus, bus))

    def _graph(self, *, open_ends: set[str], closed_ties: set[str]) -> nx.Graph:
        """Buses and elements as nodes; an end is an edge while its switch is closed."""
        graph = nx.Graph()
        graph.add_nodes_from(self._bus(int(b)) for b in self.net.bus.index)
        for end in self.ends:
            closed = (end.closed or end.switch in closed_ties) and end.switch not in open_ends
            if closed:
                graph.add_edge(end.element, self._bus(end.bus))
        return graph

    def energized(self, graph: nx.Graph) -> set[int]:
        """Buses connected to a source."""
        out: set[int] = set()
        for source in self.sources:
            out |= {
                n[1] for n in nx.node_connected_component(graph, self._bus(source)) if n[0] == "bus"
            }
        return {b for b in self.net.bus.index if self._bus(int(b))[1] in out}

    def section_of(self, element: Node) -> set[Node]:
        """The element and everything reachable from it without crossing a switchable end."""
        solid = nx.Graph()
        solid.add_node(element)
        for end in self.ends:
            if end.switch is None:
                solid.add_edge(end.element, self._bus(end.bus))
        return set(nx.node_connected_component(solid, element))

    def section_label(self, section: set[Node]) -> str:
        """A readable section name: its lines (or transformers)."""
        names = sorted(self.name_of(n) for n in section if n[0] in ("line", "trafo"))
        return " + ".join(names) if names else "?"

    # ---------------------------------------------------------------- location
    def locate(
        self, observation: FaultObservation, *, v_prefault: ComplexArray | None = None
    ) -> list[FlisrLocation]:
        """Sections that explain the most fault passage indications, ranked (and weighted) by how
        well a fault there reproduces the measured voltage sags from the pre-fault state."""
        measured = {
            name: flag for name, flag in observation.passage.items() if name in self.element_of
        }
        scores: dict[str, tuple[int, float, list[str]]] = {}
        for element in [("line", i) for i in self.line_name] + [
            ("trafo", i) for i in self.trafo_name
        ]:
            if not self.normal.has_node(element) or self.normal.degree(element) < 2:
                continue  # not in circuit (a normally-open tie) or a dangling end
            path = self._path_elements(element)
            score = sum((name in path) == flag for name, flag in measured.items())
            sag = min(
                (
                    observation.vm_pu.get(self.bus_name[b], math.inf)
                    for b in self._element_buses(element)
                ),
                default=math.inf,
            )
            label = self.section_label(self.section_of(element))
            known = scores.get(label)
            if known is None or (score, -sag) > (known[0], -known[1]):
                lines = sorted(self.name_of(n) for n in self.section_of(element) if n[0] != "bus")
                scores[label] = (score, sag, lines)
        if not scores:
            return []
        top = max(sc[0] for sc in scores.values())
        best = {label: sc for label, sc in scores.items() if sc[0] == top}
        weights = self._voltage_match(best, observation, v_prefault)
        total = sum(weights.values())
        ranked = sorted(best, key=lambda label: -weights[label])
        return [
            FlisrLocation(
                section=label, lines=best[label][2], confidence=round(weights[label] / total, 4)
            )
            for label in ranked
        ]

    def _voltage_match(
        self,
        best: dict[str, tuple[int, float, list[str]]],
        observation: FaultObservation,
        v_prefault: ComplexArray | None,
    ) -> dict[str, float]:
        """Weights of sections that explain the indications equally well: how closely a fault
        at each reproduces the measured voltage sags (uniform without voltages or a state)."""
        grid = self.grid
        measured = {
            grid.bus_index[b]: v for b, v in observation.vm_pu.items() if b in grid.bus_index
        }
        if len(best) == 1 or v_prefault is None or not measured:
            return dict.fromkeys(best, 1.0)
        idx = np.array(list(measured))
        vm = np.array(list(measured.values()))
        sse: dict[str, float] = {}
        for label, (_score, _sag, lines) in best.items():
            errors = []
            for line in lines:
                element = self.element_of[line]
                far = max(self._element_buses(element), key=self._depth)
                internal = grid.bus_index[self.bus_name[far]]
                v_fault = fault_state(grid, v_prefault=v_prefault, bus=internal)
                errors.append(float(np.sum((np.abs(v_fault[idx]) - vm) ** 2)))
            sse[label] = min(errors)
        floor = min(sse.values())
        sigma2 = 0.02**2 * len(idx)  # a few per cent of voltage per measured bus
        return {label: math.exp(-(e - floor) / (2 * sigma2)) for label, e in sse.items()}

    def _element_buses(self, element: Node) -> list[int]:
        return [end.bus for end in self.ends if end.element == element]

    def _path_elements(self, element: Node) -> set[str]:
        """Lines and transformers between the element's source and the element, itself included."""
        for source in self.sources:
            node = self._bus(source)
            if nx.has_path(self.normal, node, element):
                path = nx.shortest_path(self.normal, node, element)
                return {self.name_of(n) for n in path if n[0] != "bus"}
        return {self.name_of(element)}

    # ---------------------------------------------------------------- isolation, restoration
    def plan(
        self,
        observation: FaultObservation,
        *,
        area: str,
        load_mw: Mapping[str, float] | None = None,
        v_prefault: ComplexArray | None = None,
    ) -> FlisrEvent:
        """Locate, isolate, restore: one FlisrEvent, never an exception for a bad case."""
        started = time.perf_counter()
        if not any(observation.passage.values()):
            return FlisrEvent(
                area=area,
                window_start=observation.window_start,
                detected=observation.trigger,
                status="not_located",
                advisory=not self.spec.publish_commands,
                reason="no PMU saw fault current: the fault is upstream of every measured branch "
                "or outside the area",
                runtime_ms=(time.perf_counter() - started) * 1e3,
            )
        candidates = self.locate(observation, v_prefault=v_prefault)
        base: dict[str, Any] = {
            "area": area,
            "window_start": observation.window_start,
            "detected": observation.trigger,
            "candidates": candidates,
            "advisory": not self.spec.publish_commands,
        }
        if not candidates:
            return FlisrEvent(
                **base,
                status="not_located",
                reason="no section explains the indications",
                runtime_ms=(time.perf_counter() - started) * 1e3,
            )
        located = candidates[0]
        element = self.element_of[located.lines[0]]
        section = self.section_of(element)
        loads = self._loads(load_mw)
        boundary = [
            end
            for end in self.ends
            if end.switch is not None
            and end.closed
            and ((end.element in section) != (self._bus(end.bus) in section))
        ]
        open_ends = {e.switch for e in boundary if e.switch}
        after = self._graph(open_ends=open_ends, closed_ties=set())
        energized = self.energized(after)
        section_buses = {n[1] for n in section if n[0] == "bus"}
        dead = {int(b) for b in self.net.bus.index} - energized - section_buses
        plan = self._best_restoration(open_ends, energized, dead, section, loads)
        order = sorted(boundary, key=lambda e: self._depth(e.bus))
        sequence = [
            SwitchAction(
                step=k + 1,
                action="open",
                switch=e.switch or "",
                line=self.name_of(e.element),
                bus=self.bus_name[e.bus],
                purpose="isolate",
            )
            for k, e in enumerate(order)
        ]
        for tie in plan.ties:
            end = next(e for e in self.ends if e.switch == tie)
            sequence.append(
                SwitchAction(
                    step=len(sequence) + 1,
                    action="close",
                    switch=tie,
                    line=self.name_of(end.element),
                    bus=self.bus_name[end.bus],
                    purpose="restore",
                )
            )
        unserved = dead - plan.restored_buses
        unserved_mw = sum(loads.get(b, 0.0) for b in unserved | section_buses)
        return FlisrEvent(
            **base,
            status="planned",
            fault_section=located.section,
            fault_lines=located.lines,
            sequence=sequence,
            restored_mw=round(plan.restored_mw, 4),
            unserved_mw=round(unserved_mw, 4),
            unserved_buses=sorted(self.bus_name[b] for b in unserved | section_buses),
            checks=plan.checks,
            runtime_ms=(time.perf_counter() - started) * 1e3,
        )

    def _loads(self, load_mw: Mapping[str, float] | None) -> dict[int, float]:
        if not load_mw:
            return {int(b): float(p) for b, p in self.load_mw.items()}
        index = {name: idx for idx, name in self.bus_name.items()}
        return {index[n]: max(0.0, float(p)) for n, p in load_mw.items() if n in index}

    def _depth(self, bus: int) -> int:
        for source in self.sources:
            node = self._bus(source)
            if nx.has_path(self.normal, node, self._bus(bus)):
                return int(nx.shortest_path_length(self.normal, node, self._bus(bus)))
        return 10**6

    def _best_restoration(
        self,
        open_ends: set[str],
        energized: set[int],
        dead: set[int],
        section: set[Node],
        loads: dict[int, float],
    ) -> _Plan:
        """The tie switches to close that restore the most load and pass the power flow."""
        ties = sorted(
            end.switch
            for end in self.ends
            if end.real and not end.closed and end.switch is not None and end.element not in section
        )
        plans: list[_Plan] = []
        for size in range(0, min(self.spec.max_ties, len(ties)) + 1):
            for combo in itertools.combinations(ties, size):
                graph = self._graph(open_ends=open_ends, closed_ties=set(combo))
                if not _is_forest(graph):
                    continue
                now = self.energized(graph)
                restored = dead & now
                if size and not restored:
                    continue
                plans.append(_Plan(combo, restored, sum(loads.get(b, 0.0) for b in restored)))
        plans.sort(key=lambda p: (-p.restored_mw, len(p.ties)))
        for plan in plans:
            checks = self._power_flow_check(open_ends, set(plan.ties), section)
            plan.checks = checks
            if checks.get("passed"):
                return plan
        fallback = _Plan((), set(), 0.0)
        fallback.checks = plans[-1].checks if plans else {"passed": False}
        return fallback

    def _power_flow_check(
        self, open_ends: set[str], ties: set[str], section: set[Node]
    ) -> dict[str, float | bool]:
        import pandapower as pp

        net = copy.deepcopy(self.net)
        for element in section:
            if element[0] in ("line", "trafo"):
                net[element[0]].at[element[1], "in_service"] = False
        for end in self.ends:
            if end.real and (end.switch in open_ends or end.switch in ties):
                mask = (
                    (net.switch.bus == end.bus)
                    & (net.switch.element == end.element[1])
                    & (net.switch.et == ("l" if end.element[0] == "line" else "t"))
                )
                net.switch.loc[mask, "closed"] = end.switch in ties
            elif end.switch in open_ends and end.element[0] == "line":
                net.line.at[end.element[1], "in_service"] = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pp.runpp(net, numba=False, calculate_voltage_angles=True)
        except Exception as exc:  # pandapower raises its own and numpy errors
            return {"passed": False, "power_flow": False, "error": str(exc)[:200]}  # type: ignore[dict-item]
        vm = net.res_bus.vm_pu.to_numpy(float)
        vm = vm[np.isfinite(vm)]
        loading = np.concatenate(
            [
                net.res_line.loading_percent.to_numpy(float),
                net.res_trafo.loading_percent.to_numpy(float),
            ]
        )
        loading = loading[np.isfinite(loading)]
        max_loading = float(loading.max()) if len(loading) else 0.0
        vmin, vmax = (float(vm.min()), float(vm.max())) if len(vm) else (1.0, 1.0)
        s = self.spec
        passed = (
            max_loading <= s.max_loading_percent and s.vm_min_pu <= vmin and vmax <= s.vm_max_pu
        )
        return {
            "passed": passed,
            "power_flow": True,
            "max_loading_percent": round(max_loading, 2),
            "vm_min_pu": round(vmin, 4),
            "vm_max_pu": round(vmax, 4),
            "radial": True,
        }


def _is_forest(graph: nx.Graph) -> bool:
    edges = int(graph.number_of_edges())
    return edges == int(graph.number_of_nodes()) - int(nx.number_connected_components(graph))


class FaultDetector:
    """Watches windows for fault signs: overcurrent against each branch's pre-fault current,
    undervoltage at PMU buses, a loaded branch whose current collapses (a breaker trip), devices
    that stop reporting, estimates failing in a row; the first such window becomes a
    FaultObservation (located from fault passage when there is any)."""

    def __init__(self, spec: AgentSpec, *, grid: GridModel) -> None:
        self.spec = spec.flisr
        self.grid = grid
        self.v_factor = spec.voltage_basis.to_line_to_line
        self.channels = {(d.id, b) for d in spec.devices for b in d.branches}
        self.device_bus = {d.id: d.bus for d in spec.devices}
        self.baseline: dict[str, float] = {}
        self._last_case: dict[bool, datetime] = {}  # by "fault passage seen"
        self._seen: set[str] = set()
        self._failed_estimates = 0
        self._waited = 0  # windows a fault seen without every PMU has waited for them

    def observe(self, window: Window) -> FaultObservation | None:
        """A FaultObservation for a faulted window (once per cooldown), else None."""
        currents: dict[str, list[float]] = {}
        volts: dict[str, list[float]] = {}
        for device, frame in window.frames.items():
            bus = self.device_bus.get(device)
            for r in frame.readings:
                if (
                    r.measurand is Measurand.CURRMAGNITUDE
                    and (device, r.component) in self.channels
                ):
                    currents.setdefault(r.component, []).append(r.data)
                elif r.measurand is Measurand.VOLTMAGNITUDE and r.component == bus:
                    idx = self.grid.bus_index.get(bus)
                    if idx is not None:
                        vn_v = float(self.grid.vn_kv[idx]) * 1e3
                        volts.setdefault(bus, []).append(r.data * self.v_factor / vn_v)
        i_now = {k: sum(v) / len(v) for k, v in currents.items()}
        vm = {k: sum(v) / len(v) for k, v in volts.items()}
        passage = {
            k: i > self.spec.overcurrent_factor * max(self.baseline.get(k, i), 1e-3)
            for k, i in i_now.items()
        }
        low = sorted(b for b, v in vm.items() if v < self.spec.undervoltage_pu)
        # a branch whose current collapsed from a real load: its breaker (or one upstream) tripped
        tripped = sorted(
            k
            for k, i in i_now.items()
            if self.baseline.get(k, 0.0) > 1.0 and i < 0.05 * self.baseline[k]
        )
        # devices that reported in the last window kept and not in this one
        lost = sorted(self._seen - set(window.frames)) if self._seen else []
        failing = self._failed_estimates >= self.spec.failed_estimates
        if not any(passage.values()) and not low and not tripped and not lost and not failing:
            self._waited = 0
            self._seen = set(window.frames)
            for k, i in i_now.items():  # learn the normal currents (slow average)
                old = self.baseline.get(k)
                self.baseline[k] = i if old is None else 0.9 * old + 0.1 * i
            return None
        # a window whose frames from some PMUs came late shows a fault only in part: located
        # from the rest, the furthest overcurrent is missing and the section wrong (seen on a
        # loaded machine: Line 1-2 for a fault on Line 8-9), and a late frame looks like a lost
        # device; wait a few windows for a complete one (the last complete window stays the
        # reference, so a device that is really gone is still reported, after the wait)
        if window.missing_devices and self._waited < self.spec.incomplete_wait_windows:
            self._waited += 1
            return None
        self._waited = 0
        self._seen = set(window.frames)
        # one case per fault: a case without fault passage (lost devices, a trip, failing
        # estimates) must not hold back the case of a fault that PMUs do see, so each kind
        # has its own cooldown
        located = any(passage.values())
        last = self._last_case.get(located)
        if last is not None and (window.window_start - last).total_seconds() < self.spec.cooldown_s:
            return None
        self._last_case[located] = window.window_start
        parts = []
        if any(passage.values()):
            parts.append("overcurrent on " + ", ".join(sorted(k for k, f in passage.items() if f)))
        if low:
            parts.append("undervoltage at " + ", ".join(low))
        if tripped:
            parts.append("current lost on " + ", ".join(tripped) + " (breaker trip?)")
        if lost:
            parts.append("devices lost: " + ", ".join(lost))
        if failing:
            parts.append(f"{self._failed_estimates} estimates in a row failed")
        return FaultObservation(window.window_start, "; ".join(parts), passage, vm)

    def estimate_status(self, ok: bool) -> None:
        """Tell the detector whether the last window's estimate succeeded."""
        self._failed_estimates = 0 if ok else self._failed_estimates + 1


def fault_state(
    grid: GridModel, *, v_prefault: ComplexArray, bus: int, r_fault_pu: float = 1e-3
) -> ComplexArray:
    """Bus voltages during a three-phase fault at an internal bus: loads as constant impedances
    at their pre-fault voltages, sources held at their voltage, a fault resistance to ground."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    s_inj = v_prefault * np.conj(grid.ybus @ v_prefault)
    y_shunt = -np.conj(s_inj) / np.maximum(np.abs(v_prefault) ** 2, 1e-6)
    y_shunt[grid.slacks] = 0.0
    y_shunt[bus] += 1.0 / r_fault_pu
    free = np.setdiff1d(np.arange(grid.n_bus), grid.slacks)
    v = v_prefault.copy()
    v[grid.slacks] = grid.v_slacks
    y = sp.csr_matrix(grid.ybus) + sp.diags(y_shunt, format="csr")
    rhs = -(y[free][:, grid.slacks] @ v[grid.slacks])
    v[free] = spla.spsolve(sp.csc_matrix(y[free][:, free]), rhs)
    out: ComplexArray = v
    return out
