# %% [markdown]
# # Replaying the DPsim CIGRE MV recording with the CGMES model
#
# The LF Energy SOGNO project recorded 301 frames from the DPsim real-time simulator running the
# CIGRE MV benchmark grid (`../shared/datasets/sogno-cigre-mv/`, Apache-2.0). The recording holds
# every node's voltage phasor. Here the platform estimates the grid state from five of the fifteen
# nodes (the SOGNO PMU at N0, the feeder heads N1 and N12, the feeder ends N11 and N14), with the
# CGMES model of the same grid, and we compare the estimate with the recorded voltages of the ten
# nodes it did not see. No broker is involved: `dsotp_streams.replay` runs the same core offline.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import dsotp_streams
from dsotp_streams.settings import Settings

REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
DATA = Settings().data_dir / "sogno-cigre-mv"
estimates = list(
    dsotp_streams.replay(
        DATA / "dpsim_powerflow_record_cigre.jsonl",
        columns=DATA / "dpsim_powerflow_record_cigre.columns.txt",
        agent=REPO / "agents" / "sogno-cigre-mv.yaml",
        data_dir=DATA.parent,
    )
)
print(f"{len(estimates)} windows estimated;", pd.Series([e.status.value for e in estimates]).value_counts().to_dict())

# %% [markdown]
# ## Measured, estimated and recorded voltages
# `measured_vm_pu` is what the five PMUs sent, `vm_pu` the estimate, `true_vm_pu` the recorded
# voltage of every node (the reference the estimate is compared with).

# %%
rows = [
    {"time": e.window_start, "bus": b.bus, "estimated": b.vm_pu, "measured": b.measured_vm_pu,
     "recorded": b.true_vm_pu}
    for e in estimates
    for b in e.buses
]
frame = pd.DataFrame(rows)
fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
for ax, bus in zip(axes, ["N1", "N7", "N11"], strict=True):
    part = frame[frame.bus == bus]
    ax.plot(part.time, part.recorded, color="black", lw=1, label="recorded (DPsim)")
    ax.plot(part.time, part.estimated, label="estimated")
    if part.measured.notna().any():
        ax.plot(part.time, part.measured, ".", ms=3, label="measured (PMU)")
    ax.set_title(bus)
    ax.set_ylabel("|V| (p.u.)")
    ax.legend()
fig.autofmt_xdate()
plt.show()

# %% [markdown]
# ## Accuracy per node

# %%
frame["error"] = (frame.estimated - frame.recorded).abs()
table = frame.groupby("bus").agg(
    measured=("measured", lambda s: s.notna().any()),
    mean_error_pu=("error", "mean"),
    max_error_pu=("error", "max"),
)
table.sort_values("max_error_pu", ascending=False)

# %% [markdown]
# ## Residuals and bad data
# The weighted residual sum chi2 of every window against its threshold, and the measurements the
# largest-normalised-residual test removed.

# %%
quality = pd.DataFrame(
    {"time": e.window_start, "chi2": e.chi2, "threshold": e.chi2_threshold,
     "bad_data": ", ".join(e.bad_data)}
    for e in estimates
)
fig, ax = plt.subplots(figsize=(12, 3.5))
ax.plot(quality.time, quality.chi2, label="chi2")
ax.plot(quality.time, quality.threshold, "--", label="threshold (99 %)")
ax.set_ylabel("weighted residual sum")
ax.legend()
plt.show()
flagged = quality[quality.bad_data != ""]
print(f"{len(flagged)} windows with measurements removed as bad data")
flagged.head(10)
