// pusher-compat dashboard: polls the JSON API once a second (?refresh=<ms> to change that,
// at least 100); no dependencies.
"use strict";

const KINDS = {
  connection_opened: "connection", connection_closed: "connection",
  channel_occupied: "subscription", channel_vacated: "subscription",
  member_added: "subscription", member_removed: "subscription",
  subscription_count: "subscription", cache_miss: "subscription",
  client_event: "client", api_message: "api",
};
const LOG_ROWS = 500;
const REFRESH_MS = Math.max(100, Number(new URLSearchParams(location.search).get("refresh")) || 1000);
const state = { app: null, after: 0, history: 0 };
const $ = (selector) => document.querySelector(selector);

async function api(path, options) {
  const response = await fetch(`/dashboard/api/${path}`, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    window.location.reload(); // session gone: back to the login form
    throw new Error("logged out");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function cell(row, content) {
  const td = row.insertCell();
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  return td;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// -- charts ---------------------------------------------------------------------------------

function drawChart(canvas, points, color, label) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight || Number(canvas.getAttribute("height"));
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 34, right = 6, top = 8, bottom = 18;
  const plotW = width - left - right, plotH = height - top - bottom;
  const max = Math.max(1, ...points.map((p) => p[1]));
  const t0 = points.length ? points[0][0] : 0;
  const t1 = points.length ? points[points.length - 1][0] : 1;
  const x = (t) => left + (t1 > t0 ? ((t - t0) / (t1 - t0)) * plotW : plotW);
  const y = (v) => top + plotH - (v / max) * plotH;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7280";
  ctx.strokeStyle = "#e3e5ea";
  ctx.lineWidth = 1;
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    ctx.beginPath();
    ctx.moveTo(left, y(value));
    ctx.lineTo(width - right, y(value));
    ctx.stroke();
    ctx.fillText(Number.isInteger(value) ? String(value) : value.toFixed(1), 2, y(value) + 4);
  }
  if (points.length) {
    ctx.fillText(new Date(t0 * 1000).toLocaleTimeString(), left, height - 4);
    const end = new Date(t1 * 1000).toLocaleTimeString();
    ctx.fillText(end, width - right - ctx.measureText(end).width, height - 4);
  } else {
    ctx.fillText(label || "no data yet", left + 8, top + plotH / 2);
    return;
  }
  ctx.beginPath();
  points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.stroke();
  ctx.lineTo(x(t1), y(0));
  ctx.lineTo(x(t0), y(0));
  ctx.closePath();
  ctx.globalAlpha = 0.12;
  ctx.fillStyle = color;
  ctx.fill();
  ctx.globalAlpha = 1;
}

async function refreshSeries() {
  const { samples } = await api(`${state.app}/series`);
  drawChart($("#chart-connections"), samples.map((s) => [s.time, s.connections]), "#5b4dd6");
  drawChart($("#chart-messages"), samples.map((s) => [s.time, s.messages]), "#0f9d8a");
  const last = samples[samples.length - 1];
  $("#rate").textContent = last ? last.messages : 0;
}

async function refreshHistory() {
  const { recorded, rows } = await api(`${state.app}/history`);
  const note = $("#history-note");
  if (!recorded) note.textContent = "Statistics are not recorded (set [server] stats_path).";
  else if (!rows.length) note.textContent = "No statistics recorded yet.";
  else note.textContent = `${rows.length} interval(s); line: peak connections.`;
  drawChart($("#chart-history"), rows.map((r) => [r.time, r.connections_peak]), "#5b4dd6",
            recorded ? "nothing recorded yet" : "not recorded");
}

// -- channels -------------------------------------------------------------------------------

async function refreshChannels() {
  const { connections, channels } = await api(`${state.app}/channels`);
  $("#connections").textContent = connections;
  $("#channel-count").textContent = channels.length;
  const body = $("#channels tbody");
  body.replaceChildren();
  for (const channel of channels) {
    const row = body.insertRow();
    row.dataset.channel = channel.name;
    cell(row, element("code", channel.name));
    cell(row, channel.type);
    cell(row, String(channel.subscription_count)).className = "subscriptions";
    const members = channel.members
      ? channel.members.map((m) => m.user_info && m.user_info.name
        ? `${m.user_info.name} (${m.user_id})` : String(m.user_id)).join(", ")
      : "";
    cell(row, element("span", channel.members ? `${channel.user_count}: ${members}` : "—",
                      "members"));
  }
  $("#no-channels").hidden = channels.length > 0;
}

// -- debug console --------------------------------------------------------------------------

function details(event) {
  const skip = new Set(["seq", "time", "name", "channel"]);
  return Object.entries(event).filter(([key]) => !skip.has(key))
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join("  ");
}

function applyFilters() {
  const hidden = new Set([...document.querySelectorAll(".filters input")]
    .filter((box) => !box.checked).map((box) => box.dataset.kind));
  for (const row of document.querySelectorAll("#log tbody tr")) {
    row.hidden = hidden.has(row.dataset.kind);
  }
}

async function refreshEvents() {
  const { events } = await api(`${state.app}/events?after=${state.after}`);
  const body = $("#log tbody");
  for (const event of events) {
    state.after = Math.max(state.after, event.seq);
    const kind = KINDS[event.name] || "other";
    const row = body.insertRow(0);
    row.dataset.kind = kind;
    row.dataset.event = event.event || "";
    cell(row, new Date(event.time * 1000).toLocaleTimeString());
    cell(row, element("span", event.name, `tag ${kind}`));
    cell(row, event.channel || "");
    cell(row, element("code", details(event)));
  }
  while (body.rows.length > LOG_ROWS) body.deleteRow(-1);
  if (events.length) applyFilters();
}

// -- test events ----------------------------------------------------------------------------

async function sendTestEvent(submit) {
  submit.preventDefault();
  const status = $("#trigger-status");
  status.className = "muted";
  status.textContent = "sending…";
  try {
    await api(`${state.app}/trigger`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        channel: $("#trigger-channel").value.trim(),
        event: $("#trigger-event").value.trim(),
        data: $("#trigger-data").value,
      }),
    });
    status.textContent = "sent";
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  }
}

// -- main loop ------------------------------------------------------------------------------

async function tick() {
  try {
    await Promise.all([refreshChannels(), refreshEvents(), refreshSeries()]);
    if (Date.now() - state.history > 60000) {
      state.history = Date.now();
      await refreshHistory();
    }
    $("#status").textContent = "";
  } catch (error) {
    $("#status").textContent = `offline: ${error.message}`;
  }
  setTimeout(tick, REFRESH_MS);
}

async function main() {
  const { apps } = await api("apps");
  const select = $("#app");
  for (const app of apps) {
    select.append(new Option(`${app.id} (${app.key})`, app.id));
  }
  state.app = apps.length ? apps[0].id : null;
  select.addEventListener("change", () => {
    state.app = select.value;
    state.after = 0;
    state.history = 0;
    $("#log tbody").replaceChildren();
  });
  $("#trigger-form").addEventListener("submit", sendTestEvent);
  $("#log-clear").addEventListener("click", () => $("#log tbody").replaceChildren());
  for (const box of document.querySelectorAll(".filters input")) {
    box.addEventListener("change", applyFilters);
  }
  if (state.app) tick();
}

main();
