# %% [markdown]
# # An hour of the emulated CIGRE MV grid: estimated against true, bus by bus
#
# The emulator runs a Newton-Raphson power flow per instant with loads following real SimBench
# profiles (here in real time: 15 minutes per profile step) and sends PMU frames with
# C37.118-class noise; the estimator sees only the frames. One window a second for one hour of
# simulated time, no broker, then accuracy tables and plots.

# %%
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.profiles import load_profiles
from dsotp_streams.contracts.agent import load_agent_spec
from dsotp_streams.contracts.messages import Window
from dsotp_streams.core.estimation import Estimator
from dsotp_streams.emulator import PmuFleet

REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
spec = load_agent_spec(REPO / "agents" / "cigre-mv.yaml")
spec = spec.model_copy(
    update={"emulator": spec.emulator.model_copy(update={"profile_step_s": 900.0})}
)
grid = load_grid(spec.grid)
profiles = load_profiles(spec.emulator.profiles).values if spec.emulator.profiles else None
# start the hour at 7:00 on a weekday, when the morning load rises
start_step = 4 * 96 + 28
fleet = PmuFleet(spec, grid, profiles[start_step:] if profiles is not None else None)
estimator = Estimator(spec, grid=grid)

t0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
rows = []
for k in range(3600):
    ts = t0 + timedelta(seconds=k)
    instant = fleet.step(ts)
    window = Window(area=spec.area, window_start=ts, period_s=1.0,
                    frames={f.device: f for f in instant.frames}, closed_at=ts)
    estimate = estimator.estimate(window, truth=instant.truth)
    for b in estimate.buses:
        rows.append((ts, b.bus, b.vm_pu, b.true_vm_pu, b.measured_vm_pu, estimate.status.value,
                     estimate.runtime_ms))
frame = pd.DataFrame(rows, columns=["time", "bus", "estimated", "true", "measured", "status",
                                    "runtime_ms"])
print(frame.status.value_counts().to_dict(), f"median estimation {frame.runtime_ms.median():.2f} ms")

# %% [markdown]
# ## Accuracy per bus (p.u.)

# %%
frame["error"] = (frame.estimated - frame.true).abs()
accuracy = frame.groupby("bus").agg(
    pmu=("measured", lambda s: s.notna().any()),
    mean_error=("error", "mean"),
    p99_error=("error", lambda s: float(np.quantile(s, 0.99))),
    max_error=("error", "max"),
)
accuracy.round(5)

# %% [markdown]
# ## Estimated vs true over the hour

# %%
fig, axes = plt.subplots(3, 1, figsize=(12, 8), sharex=True)
for ax, bus in zip(axes, ["Bus 1", "Bus 6", "Bus 11"], strict=True):
    part = frame[frame.bus == bus]
    ax.plot(part.time, part.true, color="black", lw=1, label="true")
    ax.plot(part.time, part.estimated, lw=0.8, label="estimated")
    if part.measured.notna().any():
        ax.plot(part.time, part.measured, ".", ms=1, alpha=0.4, label="measured")
    ax.set_ylabel(f"{bus} |V|")
    ax.legend(loc="upper right")
plt.show()

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.hist(frame.error, bins=60)
ax.set_xlabel("|V est - V true| (p.u.)")
ax.set_ylabel("bus-windows")
plt.show()
