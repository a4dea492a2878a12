# %% [markdown]
# # Day-ahead load forecasts with quantile bands, against what came
#
# Real 2016 load profiles of the SimBench MV urban grid (shipped by the `simbench` package), per
# bus, 15 minutes. The pooled LightGBM quantile forecaster is trained on January to September and
# forecasts each day of October to December at midnight, with 10 %, 50 % and 90 % quantiles;
# seasonal naive (last week) is the baseline.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dsotp_streams.adapters.profiles import load_profiles
from dsotp_streams.core.forecasting import (
    QUANTILES,
    QuantileForecaster,
    SeasonalNaive,
    day_ahead_origins,
    score,
)

profiles = load_profiles("simbench:1-MV-urban--0-sw", nodes=30)
y, spd = profiles.values, profiles.steps_per_day
split = int(len(y) * 0.75) // spd * spd
model = QuantileForecaster(steps_per_day=spd).fit(y[:split], start=profiles.start)
naive = SeasonalNaive(spd).fit(y[:split])
origins = day_ahead_origins(len(y), spd, start=split)
ours = [model.predict(y, o) for o in origins]
base = [naive.predict(y, o, spd) for o in origins]
observed = np.concatenate([y[o : o + spd] for o in origins])
print(f"{len(origins)} day-ahead forecasts for {y.shape[1]} nodes")

# %% [markdown]
# ## Scores per model (mean over nodes, each node scaled by its mean load)

# %%
scale = np.mean(np.abs(y[:split]), axis=0)


def scores(forecasts: list[dict[float, np.ndarray]]) -> dict[str, float]:
    per_node = [
        score(observed[:, j] / scale[j],
              {a: np.concatenate([f[a] for f in forecasts])[:, j] / scale[j] for a in QUANTILES})
        for j in range(y.shape[1])
    ]
    return {k: float(np.mean([getattr(s, k) for s in per_node]))
            for k in ("nmae", "pinball", "crps", "coverage")}


pd.DataFrame({"seasonal naive": scores(base), "LightGBM quantile": scores(ours)}).T.round(4)

# %% [markdown]
# ## A week of forecasts for three nodes, with their 10-90 % bands

# %%
week = 7
t = pd.date_range(profiles.start, periods=len(y), freq="15min")[split : split + week * spd]
fig, axes = plt.subplots(3, 1, figsize=(13, 9), sharex=True)
for ax, node in zip(axes, [0, 7, 21], strict=True):
    lo = np.concatenate([f[QUANTILES[0]][:, node] for f in ours[:week]])
    mid = np.concatenate([f[0.5][:, node] for f in ours[:week]])
    hi = np.concatenate([f[QUANTILES[-1]][:, node] for f in ours[:week]])
    ax.fill_between(t, lo, hi, alpha=0.3, label="10-90 %")
    ax.plot(t, mid, label="median")
    ax.plot(t, observed[: week * spd, node], color="black", lw=0.8, label="what came")
    ax.set_ylabel(f"{profiles.nodes[node]} (MW)")
    ax.legend(loc="upper right")
plt.show()
