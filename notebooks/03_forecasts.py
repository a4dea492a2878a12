# %% [markdown]
# # Day-ahead load forecasts with quantile bands, against what came
#
# Real 2016 load profiles of the SimBench MV urban grid (shipped by the `simbench` package), per
# bus, 15 minutes. The pooled LightGBM quantile forecaster is trained on January to September and
# forecasts each day of October to December at midnight, with 10 %, 50 % and 90 % quantiles;
# seasonal naive (last week) is the baseline.

# %%
import matplotlib.pyplot as plt
import pandas as pd

from dsotp_streams.adapters.profiles import load_profiles
from dsotp_streams.core.forecasting import QUANTILES, QuantileForecaster, backtest

profiles = load_profiles("simbench:1-MV-urban--0-sw", nodes=30)
y, spd = profiles.values, profiles.steps_per_day
split = int(len(y) * 0.75) // spd * spd
model = QuantileForecaster(steps_per_day=spd).fit(y[:split], start=profiles.start)
result = backtest(model, y=y, steps_per_day=spd, split=split)
observed = result.observed
print(f"{len(result.origins)} day-ahead forecasts for {y.shape[1]} nodes")

# %% [markdown]
# ## Scores per model (mean over nodes, each node scaled by its mean load)

# %%
pd.DataFrame(
    {
        "seasonal naive": result.mean(result.naive_scores),
        "LightGBM quantile": result.mean(result.ours_scores),
    }
).T.round(4)

# %% [markdown]
# ## A week of forecasts for three nodes, with their 10-90 % bands

# %%
week = 7
t = pd.date_range(profiles.start, periods=len(y), freq="15min")[split : split + week * spd]
fig, axes = plt.subplots(3, 1, figsize=(13, 9), sharex=True)
for ax, node in zip(axes, [0, 7, 21], strict=True):
    lo = result.ours[QUANTILES[0]][: week * spd, node]
    mid = result.ours[0.5][: week * spd, node]
    hi = result.ours[QUANTILES[-1]][: week * spd, node]
    ax.fill_between(t, lo, hi, alpha=0.3, label="10-90 %")
    ax.plot(t, mid, label="median")
    ax.plot(t, observed[: week * spd, node], color="black", lw=0.8, label="what came")
    ax.set_ylabel(f"{profiles.nodes[node]} (MW)")
    ax.legend(loc="upper right")
plt.show()
