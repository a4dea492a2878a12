"""The switch states of one area's grid, and the grid model that follows from them.

Switch names are those FLISR uses: a switch's own name in the model, else `<line>@<bus>` for
the end of a line at a bus (each line end is switchable, as a ring main unit's is). A line end
without a switch of its own in the model gets one (closed) when the topology is built, so that
opening it leaves every branch in place and only adds an auxiliary bus, as pandapower models an
open line switch: the estimator's branch and bus maps keep their meaning.
"""

from __future__ import annotations

import copy
from typing import Any

import pandapower as pp
import pandapower.topology as top

from dsotp_streams.core.grid import GridModel, unique_names
from dsotp_streams.errors import TopologyError

__all__ = ["Topology"]


class Topology:
    """Which switches are open; a change builds the grid model anew (tens of milliseconds on
    CIGRE MV: once per switching, not per window)."""

    def __init__(self, net: Any) -> None:
        self.net = copy.deepcopy(net)
        bus_name = dict(
            zip(self.net.bus.index, unique_names(self.net.bus, prefix="Bus"), strict=True)
        )
        self.switch_of: dict[str, int] = {}  # name -> row of net.switch
        for element, prefix, ends in (
            ("line", "Line", ("from_bus", "to_bus")),
            ("trafo", "Trafo", ("hv_bus", "lv_bus")),
        ):
            table = getattr(self.net, element)
            names = unique_names(table, prefix=prefix)
            et = element[0]
            for idx, name in zip(table.index, names, strict=True):
                for end in ends:
                    bus = int(table.at[idx, end])
                    sw = self.net.switch
                    rows = sw.index[(sw.et == et) & (sw.element == idx) & (sw.bus == bus)]
                    if len(rows):
                        row = int(rows[0])
                    elif element == "line":
                        row = int(pp.create_switch(self.net, bus=bus, element=idx, et="l"))
                    else:
                        continue
                    self.switch_of[f"{name}@{bus_name[bus]}"] = row
                    label = self.net.switch.at[row, "name"]
                    if isinstance(label, str) and label:
                        self.switch_of[label] = row
        for row, label in self.net.switch["name"].items():
            if isinstance(label, str) and label:
                self.switch_of.setdefault(label, int(row))  # bus-bus switches by their name
        self.bus_name = bus_name

    def closed(self, switch: str) -> bool:
        """A switch's state."""
        return bool(self.net.switch.at[self._row(switch), "closed"])

    def _row(self, switch: str) -> int:
        row = self.switch_of.get(switch)
        if row is None:
            raise TopologyError(f"unknown switch {switch!r}")
        return row

    def change(self, switch: str, *, closed: bool) -> GridModel | None:
        """Set one switch; the new grid model, or None when it was in that state already.

        A change that would leave buses without supply is refused (TopologyError, the model
        unchanged): the estimator models one energised grid per external grid, so a switching
        that de-energises a section has to wait until the section is dead in the model too.
        """
        row = self._row(switch)
        if bool(self.net.switch.at[row, "closed"]) == closed:
            return None
        self.net.switch.at[row, "closed"] = closed
        try:
            dead = sorted(int(b) for b in top.unsupplied_buses(self.net))
            if dead:
                names = ", ".join(self.bus_name.get(b, str(b)) for b in dead[:10])
                raise TopologyError(
                    f"{'closing' if closed else 'opening'} {switch} leaves {len(dead)} bus(es) "
                    f"without supply ({names}): not applied"
                )
            return GridModel.from_pandapower(self.net)
        except TopologyError:
            self.net.switch.at[row, "closed"] = not closed
            raise
        except Exception as exc:  # a power flow that fails on the new topology
            self.net.switch.at[row, "closed"] = not closed
            raise TopologyError(f"switching {switch}: no model of the new topology: {exc}") from exc
