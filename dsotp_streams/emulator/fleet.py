"""Emulate one area's PMUs: profiles -> power flow -> noisy phasor frames and the true state."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from dsotp_streams.contracts.agent import AgentSpec, DeviceSpec
from dsotp_streams.contracts.frames import Measurand, Phase, PmuFrame, Reading
from dsotp_streams.contracts.messages import SwitchState, TrueState, Window
from dsotp_streams.core.flisr import fault_state
from dsotp_streams.core.grid import ComplexArray, FloatArray, GridModel
from dsotp_streams.core.placement import Sample
from dsotp_streams.core.powerflow import run_power_flow
from dsotp_streams.core.topology import Topology
from dsotp_streams.errors import SpecError

__all__ = [
    "TVE_SIGMA_FACTOR",
    "EmulatedInstant",
    "PmuFleet",
    "candidate_pmus",
    "placement_samples",
]

# P(TVE > k sigma) = exp(-k^2 / 2): k = 3.72 puts 99.9 % of frames inside the TVE bound.
TVE_SIGMA_FACTOR = 3.72


@dataclass(frozen=True)
class EmulatedInstant:
    """One reporting instant: a frame per device and the true state behind them."""

    frames: list[PmuFrame]
    truth: TrueState
    v: ComplexArray
    switched: list[SwitchState] = field(default_factory=list)  # breaker states that changed


class PmuFleet:
    """All emulated PMUs of one area, stepping through time."""

    def __init__(
        self, spec: AgentSpec, grid: GridModel, profiles: FloatArray | None = None
    ) -> None:
        """`profiles` (steps x columns, any scale): load i follows column i modulo the count,
        normalised to its mean, one step per `emulator.profile_step_s` seconds."""
        self.spec = spec
        self.grid = grid
        self._profiles: FloatArray | None = None
        if profiles is not None and len(profiles):
            cols = profiles[:, np.arange(len(grid.load_p_pu)) % profiles.shape[1]]
            mean = np.mean(np.abs(cols), axis=0)
            self._profiles = cols / np.where(mean > 1e-9, mean, 1.0)
        e = spec.emulator
        self.rng = np.random.default_rng(e.seed)
        self.sigma = e.tve_percent / 100.0 / TVE_SIGMA_FACTOR
        self.v_factor = spec.voltage_basis.to_line_to_line
        self._t0: float | None = None
        self._load_ou = np.zeros(len(grid.load_p_pu))
        self._wind_ou = 0.0
        self._last_t = 0.0
        self._v: ComplexArray | None = None
        self._faults: list[tuple[float, float, int, str]] = []
        self._switchings: list[tuple[float, str, bool]] = []
        self._topology: Topology | None = None
        self._place_devices()
        self._is_wind = np.array(
            [str(t).upper() in ("WP", "WIND") for t in grid.net.sgen[grid.net.sgen.in_service].type]
        )

    def _place_devices(self) -> None:
        spec, grid = self.spec, self.grid
        self._devices = []
        for device in spec.devices:
            bus = grid.bus_index[device.bus]
            branches = []
            for name in device.branches:
                ref = grid.branches[name]
                branches.append((name, ref.index, ref.from_bus == bus))
            self._devices.append((device.id, device.bus, bus, branches))

    def _profile_step(self, t_s: float, t_abs: float | None) -> int:
        """The profile row for an instant (t_s after the first, t_abs since the epoch)."""
        e = self.spec.emulator
        assert self._profiles is not None
        if e.profile_clock == "wall" and t_abs is not None:
            moment = datetime.fromtimestamp(t_abs, tz=UTC)
            year = datetime(moment.year, 1, 1, tzinfo=UTC).timestamp()
            return int((t_abs - year) / e.profile_step_s) % len(self._profiles)
        return int(t_s / e.profile_step_s) % len(self._profiles)

    def _pv_factor(self, t_s: float, t_abs: float | None) -> float:
        e = self.spec.emulator
        if e.profile_clock == "wall" and t_abs is not None:
            hour = (t_abs % 86400.0) / 3600.0  # the sun by the hour of day (UTC)
            return max(0.0, math.sin(math.pi * (hour - 6.0) / 12.0))
        return max(0.0, math.sin(2.0 * math.pi * t_s / e.profile_period_s + 0.5))

    def expected_bus_loads_mw(self, times: list[datetime]) -> tuple[list[str], FloatArray]:
        """The net load (MW, consumption positive) of every named bus at each time, without
        the emulator's noise: what a platform that estimated this grid then would have stored
        (wind at its mean). Meaningful with `profile_clock: wall`."""
        g = self.grid
        names = [name for name, _idx in g.named_buses]
        index = np.array([idx for _name, idx in g.named_buses])
        out = np.empty((len(times), len(names)))
        for k, when in enumerate(times):
            t_abs = when.timestamp()
            load_factor: FloatArray | float = 1.0
            if self._profiles is not None:
                load_factor = self._profiles[self._profile_step(0.0, t_abs)]
            p, _q = self._net_injections(load_factor, 0.6, self._pv_factor(0.0, t_abs))
            out[k] = -p[index] * g.base_mva
        return names, out

    def injections(self, t_s: float, t_abs: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Net injections (per unit) at t_s seconds after start (t_abs: since the epoch):
        daily-like swing plus noise."""
        e = self.spec.emulator
        dt = max(0.0, t_s - self._last_t)
        self._last_t = t_s
        tau = max(e.profile_period_s / 10.0, 1e-6)
        decay = math.exp(-dt / tau)
        spread = math.sqrt(max(0.0, 1.0 - decay**2))
        self._load_ou = self._load_ou * decay + spread * self.rng.standard_normal(
            len(self._load_ou)
        )
        self._wind_ou = self._wind_ou * decay + spread * float(self.rng.standard_normal())
        phase = 2.0 * math.pi * t_s / e.profile_period_s
        if self._profiles is not None:
            step = self._profile_step(t_s, t_abs)
            load_factor = self._profiles[step] * (1.0 + 0.02 * self._load_ou)
        else:
            load_factor = 1.0 + e.load_variation * (0.7 * math.sin(phase) + 0.3 * self._load_ou)
        wind_factor = min(1.0, max(0.0, 0.6 + 0.3 * self._wind_ou))
        return self._net_injections(load_factor, wind_factor, self._pv_factor(t_s, t_abs))

    def _net_injections(
        self, load_factor: FloatArray | float, wind_factor: float, pv_factor: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Net P and Q injections per bus (per unit, generation positive) for these factors."""
        g = self.grid
        gen_factor = np.where(g.sgen_fixed, 1.0, np.where(self._is_wind, wind_factor, pv_factor))
        p = np.zeros(g.n_bus)
        q = np.zeros(g.n_bus)
        np.add.at(p, g.load_bus, -g.load_p_pu * load_factor)
        np.add.at(q, g.load_bus, -g.load_q_pu * load_factor)
        np.add.at(p, g.sgen_bus, g.sgen_p_pu * gen_factor)
        np.add.at(q, g.sgen_bus, g.sgen_q_pu * gen_factor)
        return p, q

    def schedule_fault(self, line: str, *, at_s: float, duration_s: float = 0.3) -> None:
        """A three-phase fault on `line` (at its far end from the source), `at_s` seconds after
        the first instant, for `duration_s` (then the protection and the crew are assumed done)."""
        ref = self.grid.branches.get(line)
        if ref is None:
            raise SpecError(f"no branch {line!r} to put a fault on")
        depth = self._depths()
        far = max((ref.from_bus, ref.to_bus), key=lambda b: depth.get(b, 0))
        self._faults.append((at_s, at_s + duration_s, far, line))

    def schedule_switching(self, switch: str, *, closed: bool, at_s: float) -> None:
        """Open or close a switch `at_s` seconds after the first instant: the grid's power flow
        follows from then on and the instant reports the switch's new state (as a device
        reporting a breaker's status does). An unknown switch raises at once."""
        if self._topology is None:
            self._topology = Topology(self.grid.net)
        self._topology.closed(switch)  # unknown: TopologyError now, not mid-run
        self._switchings.append((at_s, switch, closed))
        self._switchings.sort()

    def _switch_due(self, ts: datetime, elapsed_s: float) -> list[SwitchState]:
        done = []
        while self._switchings and self._switchings[0][0] <= elapsed_s:
            _at, switch, closed = self._switchings.pop(0)
            assert self._topology is not None
            grid = self._topology.change(switch, closed=closed)
            if grid is not None:
                self.grid = grid
                self._v = None  # another bus count: a cold start of the power flow
                self._place_devices()
            done.append(SwitchState(switch=switch, closed=closed, timestamp=ts))
        return done

    def _depths(self) -> dict[int, int]:
        import networkx as nx

        g = self.grid
        graph = nx.Graph()
        graph.add_nodes_from(range(g.n_bus))
        for f, t in zip(g.f_bus, g.t_bus, strict=True):
            graph.add_edge(int(f), int(t))
        out: dict[int, int] = {}
        for slack in g.slacks:
            out |= dict(nx.single_source_shortest_path_length(graph, int(slack)))
        return out

    def step(self, ts: datetime) -> EmulatedInstant:
        """Frames of every device and the true state at instant ts."""
        t = ts.timestamp()
        if self._t0 is None:
            self._t0 = t
        switched = self._switch_due(ts, t - self._t0) if self._switchings else []
        p, q = self.injections(t - self._t0, t)
        v = run_power_flow(self.grid, p_pu=p, q_pu=q, v0=self._v)
        self._v = v
        for start, end, bus, _line in self._faults:
            if start <= t - self._t0 < end:
                v = fault_state(self.grid, v_prefault=v, bus=bus)
        return EmulatedInstant(self._frames(ts, v), self._truth(ts, v), v, switched)

    def frames_for(self, ts: datetime, v: ComplexArray) -> list[PmuFrame]:
        """The frames the fleet would send for a given state (with its noise)."""
        return self._frames(ts, v)

    def _noisy(self, phasor: complex) -> tuple[float, float]:
        mag = abs(phasor) * (1.0 + self.sigma * float(self.rng.standard_normal()))
        ang = math.atan2(phasor.imag, phasor.real) + self.sigma * float(self.rng.standard_normal())
        return mag, ang

    def _frames(self, ts: datetime, v: ComplexArray) -> list[PmuFrame]:
        g = self.grid
        i_from = g.yf @ v
        i_to = g.yt @ v
        freq = self.spec.emulator.frequency_hz
        frames = []
        for device_id, bus_name, bus, branches in self._devices:
            v_base = float(g.vn_kv[bus]) * 1000.0 / self.v_factor
            vm, va = self._noisy(complex(v[bus]) * v_base)
            readings = [
                Reading(
                    component=bus_name, measurand=Measurand.VOLTMAGNITUDE, phase=Phase.A, data=vm
                ),
                Reading(component=bus_name, measurand=Measurand.VOLTANGLE, phase=Phase.A, data=va),
            ]
            i_base_a = g.i_base_ka(bus) * 1000.0
            for name, index, at_from in branches:
                im, ia = self._noisy(complex(i_from[index] if at_from else i_to[index]) * i_base_a)
                readings.append(
                    Reading(
                        component=name, measurand=Measurand.CURRMAGNITUDE, phase=Phase.A, data=im
                    )
                )
                readings.append(
                    Reading(component=name, measurand=Measurand.CURRANGLE, phase=Phase.A, data=ia)
                )
            readings.append(
                Reading(
                    component=bus_name,
                    measurand=Measurand.FREQUENCY,
                    phase=Phase.A,
                    data=freq + 0.002 * float(self.rng.standard_normal()),
                )
            )
            frames.append(PmuFrame(device=device_id, timestamp=ts, readings=readings))
        return frames

    def _truth(self, ts: datetime, v: ComplexArray) -> TrueState:
        g = self.grid
        named = g.named_buses
        return TrueState(
            area=self.spec.area,
            timestamp=ts,
            vm_pu={name: float(abs(v[idx])) for name, idx in named},
            va_deg={name: math.degrees(float(np.angle(v[idx]))) for name, idx in named},
        )


def candidate_pmus(grid: GridModel, *, lines_per_pmu: int = 2) -> list[DeviceSpec]:
    """A PMU at every named bus: its voltage phasor and the currents of up to `lines_per_pmu`
    lines leaving it (the candidates of a placement search)."""
    lines_at: dict[int, list[str]] = {}
    for ref in grid.branches.values():
        if ref.element == "line":
            lines_at.setdefault(ref.from_bus, []).append(ref.name)
    out = []
    for k, (name, idx) in enumerate(grid.named_buses):
        ident = "pmu-" + re.sub(r"[^A-Za-z0-9_.\-]", "-", name)
        out.append(
            DeviceSpec(id=f"{ident}-{k}", bus=name, branches=lines_at.get(idx, [])[:lines_per_pmu])
        )
    return out


def placement_samples(
    spec: AgentSpec, *, grid: GridModel, candidates: list[DeviceSpec], count: int, seed: int
) -> list[Sample]:
    """`count` emulated instants spread over one load-profile period, a frame per candidate."""
    emulator = spec.emulator.model_copy(update={"seed": seed})
    fleet = PmuFleet(spec.model_copy(update={"devices": candidates, "emulator": emulator}), grid)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    spacing_s = spec.emulator.profile_period_s / max(count, 1)
    named = [idx for _name, idx in grid.named_buses]
    out = []
    for k in range(count):
        instant = fleet.step(t0 + timedelta(seconds=k * spacing_s))
        window = Window(
            area=spec.area,
            window_start=instant.truth.timestamp,
            period_s=1.0 / spec.window.rate_hz,
            frames={f.device: f for f in instant.frames},
            closed_at=instant.truth.timestamp,
        )
        out.append(Sample(window=window, true_vm_pu=np.abs(instant.v[named])))
    return out
