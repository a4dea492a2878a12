"""Turn a window of frames into a measurement set in per unit, plus pseudo-measurements."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from itertools import compress
from typing import Any

import numpy as np

from dsotp_streams.contracts.agent import AgentSpec, DeviceAccuracy, SigmaSpec
from dsotp_streams.contracts.frames import Measurand, Phase
from dsotp_streams.contracts.messages import Window
from dsotp_streams.core.grid import BoolArray, FloatArray, GridModel, IntArray
from dsotp_streams.errors import SpecError

__all__ = ["Kind", "MeasurementMap", "MeasurementSet", "Side"]

_ANGLES = (Measurand.VOLTANGLE, Measurand.CURRANGLE)
_PHASE_SHIFT = {Phase.A: 0.0, Phase.B: 2.0 * math.pi / 3.0, Phase.C: -2.0 * math.pi / 3.0}


class Kind(IntEnum):
    """Measurement function kinds."""

    VM = 0
    VA = 1
    P_INJ = 2
    Q_INJ = 3
    P_FLOW = 4
    Q_FLOW = 5
    I_MAG = 6
    I_ANG = 7
    LOAD_SCALE = 8  # the prior of the load-scale state (see MeasurementSet.load_share)


ANGLE_KINDS = (Kind.VA, Kind.I_ANG)


class Side(IntEnum):
    """Branch end a flow measurement sits at."""

    FROM = 0
    TO = 1


@dataclass(frozen=True)
class MeasurementSet:
    """Measurements of one window: kind, element, side, value and sigma (all per unit).

    `load_share` is the part of a nominal pseudo-injection that is load (injection sign): with
    a load-scale state s (a `Kind.LOAD_SCALE` prior row present), such a measurement reads
    value + (s - 1) * load_share, so one extra state scales every nominal load at once.
    """

    kind: IntArray
    element: IntArray
    side: IntArray
    value: FloatArray
    sigma: FloatArray
    label: tuple[str, ...]
    pseudo: BoolArray
    load_share: FloatArray

    @cached_property
    def exact(self) -> BoolArray:
        """Zero-injection constraints: physics, not measurements."""
        return np.array([lbl.endswith((":zero_p", ":zero_q")) for lbl in self.label], dtype=bool)

    @cached_property
    def never_bad(self) -> BoolArray:
        """Rows bad-data removal leaves alone: zero injections and the load-scale prior."""
        never: BoolArray = self.exact | (self.kind == Kind.LOAD_SCALE)
        return never

    @property
    def size(self) -> int:
        """Number of measurements."""
        return len(self.kind)

    def without(self, index: int) -> MeasurementSet:
        """The same set with one measurement removed."""
        keep = np.arange(self.size) != index
        return MeasurementSet(
            kind=self.kind[keep],
            element=self.element[keep],
            side=self.side[keep],
            value=self.value[keep],
            sigma=self.sigma[keep],
            label=tuple(lbl for i, lbl in enumerate(self.label) if i != index),
            pseudo=self.pseudo[keep],
            load_share=self.load_share[keep],
        )


@dataclass(frozen=True)
class _Channel:
    kind_mag: Kind
    kind_ang: Kind
    element: int
    side: Side
    bus: int
    is_bus: bool
    accuracy: DeviceAccuracy


class MeasurementMap:
    """Built once per agent: which reading of which device maps to which measurement function."""

    def __init__(self, spec: AgentSpec, *, grid: GridModel) -> None:
        self.grid = grid
        self.sigmas: SigmaSpec = spec.estimator.sigmas
        self.v_factor = spec.voltage_basis.to_line_to_line
        self._channels: dict[tuple[str, str], _Channel] = {}
        for device in spec.devices:
            if device.bus not in grid.bus_index:
                raise SpecError(f"device {device.id}: bus {device.bus!r} is not in the grid")
            bus = grid.bus_index[device.bus]
            accuracy = device.accuracy or spec.estimator.accuracy
            self._channels[(device.id, device.bus)] = _Channel(
                Kind.VM, Kind.VA, bus, Side.FROM, bus, True, accuracy
            )
            for name in device.branches:
                ref = grid.branches.get(name)
                if ref is None:
                    raise SpecError(f"device {device.id}: branch {name!r} is not in the grid")
                if bus == ref.from_bus:
                    side = Side.FROM
                elif bus == ref.to_bus:
                    side = Side.TO
                else:
                    raise SpecError(f"device {device.id}: branch {name!r} does not touch its bus")
                self._channels[(device.id, name)] = _Channel(
                    Kind.I_MAG, Kind.I_ANG, ref.index, side, bus, False, accuracy
                )
        self.load_scale = spec.estimator.load_scale
        self._load_share = self._load_shares()
        self._nominal_pseudo = self._pseudo_injections()
        self._pseudo = self._nominal_pseudo
        self._pseudo_cache: _PseudoRows | None = None

    def _load_shares(self) -> dict[tuple[Kind, int], float]:
        """Per bus, the nominal load in its pseudo-injection (injection sign, pu)."""
        p, q = self.grid.nominal_load_pu()
        out: dict[tuple[Kind, int], float] = {}
        for bus in np.flatnonzero((p != 0.0) | (q != 0.0)).tolist():
            out[(Kind.P_INJ, bus)] = float(p[bus])
            out[(Kind.Q_INJ, bus)] = float(q[bus])
        return out

    def _pseudo_injections(self) -> list[tuple[Kind, int, float, float, str]]:
        grid, s = self.grid, self.sigmas
        p_nom, q_nom = grid.nominal_injection_pu()
        gross = np.zeros(grid.n_bus)
        np.add.at(gross, grid.load_bus, np.hypot(grid.load_p_pu, grid.load_q_pu))
        np.add.at(gross, grid.sgen_bus, np.hypot(grid.sgen_p_pu, grid.sgen_q_pu))
        out: list[tuple[Kind, int, float, float, str]] = []
        names = {idx: name for name, idx in grid.bus_index.items()}
        slacks = set(grid.slacks.tolist())
        for slack, v_slack in zip(grid.slacks, grid.v_slacks, strict=True):
            # the substation's set-point, unless a PMU measures it: keeps a slack that no
            # measurement touches from becoming a weakly observable, slowly converging state
            vm = float(abs(v_slack))
            name = names.get(int(slack), f"aux {slack}")
            out.append((Kind.VM, int(slack), vm, s.pseudo_slack_vm_rel * vm, f"{name}:pseudo_vm"))
        for bus in range(grid.n_bus):
            if bus in slacks:
                continue
            name = names.get(bus, f"aux {bus}")
            if gross[bus] == 0.0:
                sigma = s.zero_injection_mw / grid.base_mva
                out.append((Kind.P_INJ, bus, 0.0, sigma, f"{name}:zero_p"))
                out.append((Kind.Q_INJ, bus, 0.0, sigma, f"{name}:zero_q"))
            else:
                sigma = s.pseudo_rel * gross[bus] + s.pseudo_floor_mw / grid.base_mva
                out.append((Kind.P_INJ, bus, float(p_nom[bus]), sigma, f"{name}:pseudo_p"))
                out.append((Kind.Q_INJ, bus, float(q_nom[bus]), sigma, f"{name}:pseudo_q"))
        return out

    def set_pseudo_injections(
        self, forecasts: dict[str, tuple[float, float, float]] | None
    ) -> None:
        """Pseudo P/Q injections from forecasts: bus name -> (p_mw, q_mvar, sigma_mw), consumption
        positive; buses without a forecast keep the nominal pseudo-measurement. None resets."""
        self._pseudo = self._nominal_pseudo  # built once at start-up: grid and sigmas are fixed
        if not forecasts:
            return
        base = self.grid.base_mva
        updated = []
        for kind, bus, value, sigma, label in self._nominal_pseudo:
            name = label.rsplit(":", 1)[0]
            forecast = forecasts.get(name)
            if forecast is not None and label.endswith((":pseudo_p", ":pseudo_q")):
                p_mw, q_mvar, sigma_mw = forecast
                load = p_mw if kind is Kind.P_INJ else q_mvar
                floor = self.sigmas.pseudo_floor_mw / base
                value = -load / base
                # a forecast never outweighs the PMUs: its band may be narrow (a regular load,
                # or a model trained on another grid), the load of one bus is not that certain
                sigma = max(sigma_mw / base, self.sigmas.forecast_rel * abs(value), floor)
                label = label.replace(":pseudo_", ":forecast_")
            updated.append((kind, bus, value, sigma, label))
        self._pseudo = updated

    @property
    def pseudo_injections(self) -> list[tuple[Kind, int, float, float, str]]:
        """The pseudo and zero injections in use (kind, bus, value pu, sigma pu, label)."""
        return self._pseudo

    @pseudo_injections.setter
    def pseudo_injections(self, rows: list[tuple[Kind, int, float, float, str]]) -> None:
        self._pseudo = rows

    @property
    def uses_forecast(self) -> bool:
        """True while pseudo injections come from a forecast."""
        return self._pseudo is not self._nominal_pseudo

    def _pseudo_rows(self) -> _PseudoRows:
        """The pseudo and zero injections in use as arrays, made once per set of them."""
        rows = self._pseudo
        cached = self._pseudo_cache
        if cached is not None and cached.source is rows:
            return cached
        share = np.zeros(len(rows))
        if self.load_scale:
            for i, (kind, bus, _value, _sigma, label) in enumerate(rows):
                if label.endswith((":pseudo_p", ":pseudo_q")):
                    share[i] = self._load_share.get((kind, bus), 0.0)
        self._pseudo_cache = cached = _PseudoRows(
            source=rows,
            kind=np.array([r[0] for r in rows], dtype=np.int64),
            element=np.array([r[1] for r in rows], dtype=np.int64),
            value=np.array([r[2] for r in rows], dtype=float),
            sigma=np.array([r[3] for r in rows], dtype=float),
            label=tuple(r[4] for r in rows),
            share=share,
            key=np.array([int(r[0]) * self.grid.n_bus + r[1] for r in rows], dtype=np.int64),
        )
        return cached

    def build(self, window: Window) -> MeasurementSet:
        """Average phases per channel, convert to per unit, add pseudo and zero injections.

        The pseudo rows are arrays made once per set of pseudo-measurements and masked by what
        is measured: building a window's set was 2.4 ms of Oberrhein's 4.9 ms per window when
        they were Python rows (`benchmarks/estimation.py`)."""
        sums: dict[tuple[str, str, Measurand], list[float]] = {}
        for device, frame in window.frames.items():
            for reading in frame.readings:
                key = (device, reading.component, reading.measurand)
                value = reading.data
                if reading.measurand in _ANGLES:
                    value = _wrap(value + _PHASE_SHIFT[reading.phase])
                values = sums.get(key)
                if values is None:
                    sums[key] = [value]
                else:
                    values.append(value)
        rows: list[tuple[Kind, int, int, float, float, str, bool]] = []
        grid, s = self.grid, self.sigmas
        for (device, component, measurand), values in sums.items():
            channel = self._channels.get((device, component))
            if channel is None:
                continue
            if measurand in _ANGLES:
                if len(values) == 1:
                    value = values[0]
                else:
                    value = math.atan2(sum(map(math.sin, values)), sum(map(math.cos, values)))
            else:
                value = sum(values) / len(values)
            label = f"{device}:{component}:{measurand.value}"
            vn_kv = float(grid.vn_kv[channel.bus])
            acc = channel.accuracy
            if channel.is_bus and measurand is Measurand.VOLTMAGNITUDE:
                vm = value * self.v_factor / (vn_kv * 1000.0)
                rows.append((Kind.VM, channel.element, 0, vm, acc.vm_rel * vm, label, False))
            elif channel.is_bus and measurand is Measurand.VOLTANGLE:
                rows.append((Kind.VA, channel.element, 0, value, acc.va_rad, label, False))
            elif channel.is_bus and measurand in (Measurand.ACTIVEPOWER, Measurand.REACTIVEPOWER):
                kind = Kind.P_INJ if measurand is Measurand.ACTIVEPOWER else Kind.Q_INJ
                pu = -3.0 * value / 1e6 / grid.base_mva  # consumption measured, injection modelled
                sigma = acc.pq_rel * abs(pu) + s.pq_floor_mw / grid.base_mva
                rows.append((kind, channel.element, 0, pu, sigma, label, False))
            elif not channel.is_bus and measurand is Measurand.CURRMAGNITUDE:
                i_pu = value / 1000.0 / grid.i_base_ka(channel.bus)
                sigma = acc.im_rel * i_pu + s.im_floor_ka / grid.i_base_ka(channel.bus)
                rows.append((Kind.I_MAG, channel.element, channel.side, i_pu, sigma, label, False))
            elif not channel.is_bus and measurand is Measurand.CURRANGLE:
                rows.append(
                    (Kind.I_ANG, channel.element, channel.side, value, acc.ia_rad, label, False)
                )
            elif not channel.is_bus and measurand in (
                Measurand.ACTIVEPOWER,
                Measurand.REACTIVEPOWER,
            ):
                kind = Kind.P_FLOW if measurand is Measurand.ACTIVEPOWER else Kind.Q_FLOW
                pu = 3.0 * value / 1e6 / grid.base_mva
                sigma = acc.pq_rel * abs(pu) + s.pq_floor_mw / grid.base_mva
                rows.append((kind, channel.element, channel.side, pu, sigma, label, False))
        _drop_noise_level_currents(rows)
        n = grid.n_bus
        measured = [int(k) * n + e for k, e, *_ in rows if k in (Kind.P_INJ, Kind.Q_INJ, Kind.VM)]
        pseudo = self._pseudo_rows()
        keep = ~np.isin(pseudo.key, measured) if measured else np.ones(len(pseudo.key), bool)
        share = pseudo.share[keep]
        prior: list[tuple[Kind, int, int, float, float, str, bool]] = []
        if np.any(share):
            # the prior of the load-scale state: loads at their nominal size, give or take this
            prior = [(Kind.LOAD_SCALE, 0, 0, 1.0, s.load_scale, "load_scale:prior", True)]
        kept = int(np.sum(keep))

        def column(i: int, middle: np.ndarray, dtype: Any) -> np.ndarray:
            """Column i of the measured rows, the kept pseudo rows' `middle`, the prior."""
            head: np.ndarray = np.array([r[i] for r in rows], dtype=dtype)
            tail: np.ndarray = np.array([r[i] for r in prior], dtype=dtype)
            return np.concatenate([head, middle.astype(dtype, copy=False), tail])

        return MeasurementSet(
            kind=column(0, pseudo.kind[keep], np.int64),
            element=column(1, pseudo.element[keep], np.int64),
            side=column(2, np.zeros(kept, dtype=np.int64), np.int64),
            value=column(3, pseudo.value[keep], float),
            sigma=column(4, pseudo.sigma[keep], float),
            label=(
                tuple(r[5] for r in rows)
                + tuple(compress(pseudo.label, keep.tolist()))
                + tuple(r[5] for r in prior)
            ),
            pseudo=column(6, np.ones(kept, dtype=bool), bool),
            load_share=np.concatenate([np.zeros(len(rows)), share, np.zeros(len(prior))]),
        )


@dataclass(frozen=True)
class _PseudoRows:
    source: list[tuple[Kind, int, float, float, str]]  # the rows these arrays were made from
    kind: IntArray
    element: IntArray
    value: FloatArray
    sigma: FloatArray
    label: tuple[str, ...]
    share: FloatArray  # load share of each nominal pseudo-injection (0: none)
    key: IntArray  # kind * n_bus + bus: masked by what is measured


def _drop_noise_level_currents(rows: list[tuple[Kind, int, int, float, float, str, bool]]) -> None:
    """Drop currents below twice their sigma (an open switch, an idle line), angle and magnitude.

    Their angle is noise, and |I| has a kink at zero that slows Gauss-Newton to linear
    convergence; what they say (no flow) the topology and the injections already say.
    """
    tiny = {(e, sd) for k, e, sd, v, sigma, *_ in rows if k is Kind.I_MAG and v < 2.0 * sigma}
    rows[:] = [r for r in rows if not (r[0] in (Kind.I_MAG, Kind.I_ANG) and (r[1], r[2]) in tiny)]


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi
