// dsotp live page: server-sent events in, canvas charts out. No build step, no library.
"use strict";
const state = { area: null, meta: null, points: [], bus: 0, latest: null, flisr: null, forecast: null };
window.dsotpLive = { points: 0, estimated: 0, last: null };

const $ = (id) => document.getElementById(id);

function colour(vm) {
  if (vm === null || vm === undefined) return "#555";
  const t = Math.max(-1, Math.min(1, (vm - 1.0) / 0.05));  // 0.95 blue .. 1.0 green .. 1.05 red
  const lerp = (a, b, f) => Math.round(a + (b - a) * f);
  return t < 0 ? `rgb(${lerp(76, 67, -t)},${lerp(175, 110, -t)},${lerp(80, 235, -t)})`
               : `rgb(${lerp(76, 239, t)},${lerp(175, 83, t)},${lerp(80, 80, t)})`;
}

function fit(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.height / (canvas._ratio || 1);
  canvas._ratio = ratio;
  canvas.width = w * ratio; canvas.height = h * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return [ctx, w, h];
}

function drawDiagram() {
  const canvas = $("diagram"); if (!state.meta) return;
  const [ctx, w, h] = fit(canvas); const pad = 28;
  const pos = {}; state.meta.buses.forEach((b, i) => { pos[b.name] = [pad + b.x * (w - 2 * pad), pad + b.y * (h - 2 * pad), i]; });
  const vm = state.latest ? state.latest.vm : [];
  ctx.lineWidth = 2;
  const faulted = new Set(state.flisr ? state.flisr.fault_lines : []);
  for (const l of state.meta.lines) {
    const a = pos[l.from], b = pos[l.to]; if (!a || !b) continue;
    ctx.strokeStyle = faulted.has(l.name) ? "#ff5252" : "#607080"; ctx.lineWidth = faulted.has(l.name) ? 4 : 2;
    ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
  }
  ctx.font = "11px system-ui"; ctx.textAlign = "center";
  for (const b of state.meta.buses) {
    const [x, y, i] = pos[b.name];
    ctx.fillStyle = colour(vm[i]); ctx.beginPath(); ctx.arc(x, y, i === state.bus ? 9 : 7, 0, 2 * Math.PI); ctx.fill();
    if (i === state.bus) { ctx.strokeStyle = "#fff"; ctx.lineWidth = 2; ctx.stroke(); }
    ctx.fillStyle = "#c9d3dd"; ctx.fillText(b.name, x, y - 11);
  }
  canvas.onclick = (ev) => {
    const r = canvas.getBoundingClientRect(); let best = null, dist = 400;
    for (const b of state.meta.buses) {
      const [x, y, i] = pos[b.name]; const d = (x - (ev.clientX - r.left)) ** 2 + (y - (ev.clientY - r.top)) ** 2;
      if (d < dist) { dist = d; best = i; }
    }
    if (best !== null) { state.bus = best; $("bus").value = best; redraw(); }
  };
  $("scale").innerHTML = [0.95, 0.975, 1.0, 1.025, 1.05].map((v) => `<span style="color:${colour(v)}">&#9632; ${v.toFixed(3)}</span>`).join("");
}

function axes(ctx, w, h, lo, hi, pad) {
  ctx.strokeStyle = "#2a333d"; ctx.fillStyle = "#8a96a3"; ctx.font = "11px system-ui"; ctx.textAlign = "right"; ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = lo + (hi - lo) * k / 4, y = h - pad - (h - 2 * pad) * k / 4;
    ctx.beginPath(); ctx.moveTo(pad + 10, y); ctx.lineTo(w - 8, y); ctx.stroke(); ctx.fillText(v.toFixed(4), pad + 6, y + 4);
  }
}

function range(values) {
  const v = values.filter((x) => x !== null && x !== undefined);
  if (!v.length) return [0.95, 1.05];
  let lo = Math.min(...v), hi = Math.max(...v); const m = Math.max(0.002, (hi - lo) * 0.1);
  return [lo - m, hi + m];
}

function drawSeries() {
  const canvas = $("series"); const [ctx, w, h] = fit(canvas); const pad = 44; const i = state.bus;
  const pts = state.points; if (!pts.length) return;
  const all = pts.flatMap((p) => [p.vm[i], p.meas[i], p.true[i]]);
  const [lo, hi] = range(all); axes(ctx, w, h, lo, hi, pad);
  const t0 = pts[0].t, t1 = Math.max(pts[pts.length - 1].t, t0 + 1);
  const X = (t) => pad + 10 + (w - pad - 18) * (t - t0) / (t1 - t0);
  const Y = (v) => h - pad - (h - 2 * pad) * (v - lo) / (hi - lo);
  const line = (key, style, dash) => {
    ctx.strokeStyle = style; ctx.setLineDash(dash); ctx.lineWidth = 2; ctx.beginPath(); let on = false;
    for (const p of pts) { const v = p[key][i]; if (v === null) { on = false; continue; } if (on) ctx.lineTo(X(p.t), Y(v)); else ctx.moveTo(X(p.t), Y(v)); on = true; }
    ctx.stroke(); ctx.setLineDash([]);
  };
  line("true", "#a5d6a7", [6, 4]); line("vm", "#4fc3f7", []);
  ctx.fillStyle = "#ffb74d";
  for (const p of pts) { const v = p.meas[i]; if (v !== null) { ctx.beginPath(); ctx.arc(X(p.t), Y(v), 2, 0, 2 * Math.PI); ctx.fill(); } }
  ctx.fillStyle = "#8a96a3"; ctx.textAlign = "left";
  ctx.fillText(new Date(t0).toISOString().slice(11, 19), pad + 10, h - pad + 16);
  ctx.textAlign = "right"; ctx.fillText(new Date(t1).toISOString().slice(11, 19) + " UTC", w - 8, h - pad + 16);
}

function drawProfile() {
  const canvas = $("profile"); const [ctx, w, h] = fit(canvas); const pad = 44; const p = state.latest; if (!p || !state.meta) return;
  const [lo, hi] = range([...p.vm, ...p.meas, ...p.true]); axes(ctx, w, h, lo, hi, pad);
  const n = p.vm.length, step = (w - pad - 18) / n;
  const Y = (v) => h - pad - (h - 2 * pad) * (v - lo) / (hi - lo);
  ctx.font = "10px system-ui"; ctx.textAlign = "center";
  for (let k = 0; k < n; k++) {
    const x = pad + 10 + step * (k + 0.5);
    if (p.vm[k] !== null) { ctx.fillStyle = "#4fc3f7"; ctx.fillRect(x - step * 0.3, Y(p.vm[k]), step * 0.25, h - pad - Y(p.vm[k])); }
    if (p.true[k] !== null) { ctx.fillStyle = "#a5d6a7"; ctx.fillRect(x, Y(p.true[k]), step * 0.25, h - pad - Y(p.true[k])); }
    if (p.meas[k] !== null) { ctx.fillStyle = "#ffb74d"; ctx.beginPath(); ctx.arc(x, Y(p.meas[k]), 3.5, 0, 2 * Math.PI); ctx.fill(); }
    ctx.fillStyle = "#8a96a3"; ctx.fillText(state.meta.buses[k].name, x, h - pad + 14);
  }
}

function drawForecast() {
  const canvas = $("forecast"); const f = state.forecast; const i = state.bus;
  $("fbus").textContent = state.meta ? state.meta.buses[i].name : "…";
  const mid = f && f.values["0.5"] ? f.values["0.5"][i] : null;
  $("fnote").hidden = Boolean(mid);
  canvas.hidden = !mid; if (!mid) return;
  const [ctx, w, h] = fit(canvas); const pad = 44;
  const lo = f.values[f.levels[0]][i], hi = f.values[f.levels[f.levels.length - 1]][i];
  const now = state.latest ? state.latest.t : f.times[0];
  const current = state.latest && state.latest.p ? state.latest.p[i] : null;
  const [vlo, vhi] = range([...lo, ...hi, current]);
  axes(ctx, w, h, vlo, vhi, pad);
  const t0 = f.times[0], t1 = f.times[f.times.length - 1] + f.step_ms;
  const X = (t) => pad + 10 + (w - pad - 18) * (t - t0) / (t1 - t0);
  const Y = (v) => h - pad - (h - 2 * pad) * (v - vlo) / (vhi - vlo);
  ctx.fillStyle = "rgba(126, 87, 194, 0.45)"; ctx.beginPath();
  f.times.forEach((t, k) => { const x = X(t + f.step_ms / 2); if (k) ctx.lineTo(x, Y(hi[k])); else ctx.moveTo(x, Y(hi[k])); });
  for (let k = f.times.length - 1; k >= 0; k--) ctx.lineTo(X(f.times[k] + f.step_ms / 2), Y(lo[k]));
  ctx.closePath(); ctx.fill();
  ctx.strokeStyle = "#d1c4e9"; ctx.lineWidth = 2; ctx.beginPath();
  f.times.forEach((t, k) => { const x = X(t + f.step_ms / 2); if (k) ctx.lineTo(x, Y(mid[k])); else ctx.moveTo(x, Y(mid[k])); });
  ctx.stroke();
  if (now >= t0 && now <= t1) {
    ctx.strokeStyle = "#8a96a3"; ctx.setLineDash([4, 4]); ctx.beginPath(); ctx.moveTo(X(now), pad / 2); ctx.lineTo(X(now), h - pad); ctx.stroke(); ctx.setLineDash([]);
    if (current !== null) { ctx.fillStyle = "#4fc3f7"; ctx.beginPath(); ctx.arc(X(now), Y(current), 5, 0, 2 * Math.PI); ctx.fill(); }
  }
  ctx.fillStyle = "#8a96a3"; ctx.textAlign = "left";
  ctx.fillText(new Date(t0).toISOString().slice(5, 16).replace("T", " "), pad + 10, h - pad + 16);
  ctx.textAlign = "right";
  ctx.fillText(`${new Date(t1).toISOString().slice(5, 16).replace("T", " ")} UTC (issued ${new Date(f.issued).toISOString().slice(11, 16)})`, w - 8, h - pad + 16);
}

function redraw() { drawDiagram(); drawSeries(); drawProfile(); drawForecast(); }

function showFlisr(e) {
  state.flisr = e; const box = $("flisr"); box.hidden = false;
  const steps = e.sequence.map((a) => `${a.step}. ${a.action} ${a.switch}`).join(" &rarr; ");
  const best = e.candidates.length ? ` (confidence ${(100 * e.candidates[0].confidence).toFixed(0)} %)` : "";
  box.innerHTML = `<b>FLISR</b> ${new Date(e.window_start).toISOString().slice(11, 19)} UTC &mdash; ${e.detected}.<br>` +
    `Fault in <b>${e.fault_section || "?"}</b>${best}; plan${e.advisory ? " (advisory)" : ""}: ${steps || "none"}; ` +
    `restored ${e.restored_mw.toFixed(2)} MW, unserved ${e.unserved_mw.toFixed(2)} MW` +
    (e.checks && "max_loading_percent" in e.checks ? `; power flow: max loading ${e.checks.max_loading_percent} %, V ${e.checks.vm_min_pu}&ndash;${e.checks.vm_max_pu} p.u.` : "");
  window.dsotpLive.flisr = e;
}

function accept(p) {
  if (p.type === "flisr") { if (p.area === state.area) showFlisr(p); return; }
  if (p.type === "forecast") { if (p.area === state.area) { state.forecast = p; window.dsotpLive.forecast = p; } return; }
  if (p.area !== state.area) return;
  state.points.push(p);
  const horizon = p.t - 300000; while (state.points.length && state.points[0].t < horizon) state.points.shift();
  if (p.vm.some((v) => v !== null)) { state.latest = p; window.dsotpLive.estimated += 1; }
  window.dsotpLive.points = state.points.length; window.dsotpLive.last = p;
  const stale = (p.stale || []).length ? ` · stale, not used: ${p.stale.join(", ")}` : "";
  const s = $("status"); s.textContent = p.status + (p.bad_data.length ? ` (${p.bad_data.length} bad)` : "") + stale;
  s.className = "badge " + (p.status === "ok" ? "ok" : p.status === "bad_data" ? "warn" : "bad");
}

async function counters() {
  try {
    const r = await (await fetch("/api/live/areas")).json(); const c = r.counters || {};
    $("counters").textContent = Object.entries(c).map(([k, v]) => `${k} ${typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(1)) : v}`).join(" · ");
  } catch (e) { /* the next poll will tell */ }
}

async function start() {
  // the page may be open before the first area is registered (its grid still loading)
  let areas = [];
  while (!areas.length) {
    try { areas = (await (await fetch("/api/live/areas")).json()).areas; } catch (e) { areas = []; }
    if (!areas.length) { $("area").textContent = "waiting for the grid..."; await new Promise((r) => setTimeout(r, 250)); }
  }
  state.area = areas[0]; $("area").textContent = state.area;
  state.meta = await (await fetch(`/api/live/${state.area}/meta`)).json();
  if (state.meta.flisr) showFlisr(state.meta.flisr);
  if (state.meta.forecast) accept(state.meta.forecast);
  const select = $("bus");
  state.meta.buses.forEach((b, i) => { const o = document.createElement("option"); o.value = i; o.textContent = b.name; select.appendChild(o); });
  select.onchange = () => { state.bus = Number(select.value); redraw(); };
  (await (await fetch(`/api/live/${state.area}/history`)).json()).points.forEach(accept);
  redraw();
  const events = new EventSource("/api/live/stream");
  let pending = false;
  events.onmessage = (m) => { accept(JSON.parse(m.data)); if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; redraw(); }); } };
  setInterval(counters, 2000); counters();
  window.addEventListener("resize", redraw);
}
start();
