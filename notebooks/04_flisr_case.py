# %% [markdown]
# # A FLISR case, step by step
#
# A three-phase fault on Line 8-9 of the CIGRE MV grid: the PMU frames of the faulted window go
# to the fault detector, the planner locates the faulted section, isolates it and restores the
# healthy part through a tie switch, checked by a power flow.

# %%
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.pyplot as plt
import networkx as nx
import pandas as pd

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.contracts.agent import load_agent_spec
from dsotp_streams.contracts.messages import Window
from dsotp_streams.core.flisr import FaultDetector, FlisrPlanner, fault_state
from dsotp_streams.emulator import PmuFleet

REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
spec = load_agent_spec(REPO / "agents" / "cigre-mv.yaml")
spec = spec.model_copy(update={"emulator": spec.emulator.model_copy(update={"profiles": None})})
grid = load_grid(spec.grid)
fleet, detector, planner = PmuFleet(spec, grid), FaultDetector(spec, grid=grid), FlisrPlanner(grid, spec=spec.flisr)
t0 = datetime(2026, 3, 2, 12, tzinfo=UTC)


def window(ts, frames):
    return Window(area=spec.area, window_start=ts, period_s=0.1,
                  frames={f.device: f for f in frames}, closed_at=ts)


# %% [markdown]
# ## 1. Normal operation: the detector learns each branch's current

# %%
for k in range(20):
    instant = fleet.step(t0 + timedelta(milliseconds=100 * k))
    assert detector.observe(window(instant.truth.timestamp, instant.frames)) is None
v_prefault = instant.v
pd.Series(detector.baseline, name="pre-fault current (A)").round(1)

# %% [markdown]
# ## 2. The fault: what the PMUs see

# %%
far_end = grid.bus_index["Bus 9"]
ts = t0 + timedelta(seconds=3)
v_fault = fault_state(grid, v_prefault=v_prefault, bus=far_end)
observation = detector.observe(window(ts, fleet.frames_for(ts, v_fault)))
print(observation.trigger)
pd.DataFrame({"fault current seen": observation.passage}).sort_index()

# %% [markdown]
# ## 3. Location, isolation, restoration

# %%
event = planner.plan(observation, area=spec.area, v_prefault=v_prefault)
print(f"status {event.status}, fault in {event.fault_section}, planned in {event.runtime_ms:.0f} ms")
pd.DataFrame([c.model_dump() for c in event.candidates])

# %%
pd.DataFrame([a.model_dump() for a in event.sequence])

# %%
print("restored", event.restored_mw, "MW; unserved", event.unserved_mw, "MW")
pd.Series(event.checks, name="power-flow check of the plan")

# %% [markdown]
# ## 4. The grid after the plan
# Red: the isolated section; green dashed: the tie switch closed to restore the buses downstream.

# %%
names = {idx: name for name, idx in grid.named_buses}
pos = {}
for name, geo in zip(grid.bus_names, grid.net.bus.geo, strict=True):
    x, y = json.loads(geo)["coordinates"] if isinstance(geo, str) else (0, 0)
    pos[name] = (x, y)
graph = nx.Graph()
for ref in grid.branches.values():
    a, b = names.get(ref.from_bus), names.get(ref.to_bus)
    if a and b:
        graph.add_edge(a, b, name=ref.name)
ties = {a.line for a in event.sequence if a.purpose == "restore"}
tie_edges = [(r["from_bus"], r["to_bus"]) for _, r in grid.net.line.iterrows()
             if r["name"] in ties]
tie_edges = [(grid.bus_names[a], grid.bus_names[b]) for a, b in tie_edges]
colours = ["red" if graph.edges[e]["name"] in event.fault_lines else "grey" for e in graph.edges]
fig, ax = plt.subplots(figsize=(7, 7))
nx.draw_networkx(graph, pos, ax=ax, node_size=250, font_size=7, edge_color=colours, width=2.5)
nx.draw_networkx_edges(nx.Graph(tie_edges), pos, ax=ax, style="dashed", edge_color="green",
                       width=2.5)
ax.set_title(f"fault in {event.fault_section}: {len(event.sequence)} switching steps")
plt.show()
