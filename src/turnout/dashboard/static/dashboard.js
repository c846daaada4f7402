// The turnout dashboard: polls /dashboard/data and renders it. Everything shown is set with
// textContent (never innerHTML): route and model names come from a config, reasons from
// upstreams, and none of it may run as markup.
"use strict";

const KEY = "turnout.dashboard.key"; // sessionStorage: this tab only, gone when it closes
const POLL_MS = 3000;
let timer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const ms = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} ms`);
const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`);
function usd(v) {
  const size = Math.abs(v);
  if (size >= 1) return `$${v.toFixed(2)}`;
  return `$${v.toFixed(size >= 0.01 || size === 0 ? 4 : 6)}`; // a request costs fractions of a cent
}
const clock = (at) => new Date(at * 1000).toLocaleTimeString([], { hour12: false });

function figure(label, value, attrs) {
  return el("div", { class: "figure" },
    el("div", { class: "label" }, label),
    el("div", { class: "value", ...(attrs || {}) }, value));
}

function chart(minutes) {
  const peak = Math.max(1, ...minutes.map((m) => m.requests));
  const bars = minutes.map((m) => {
    const part = (n, cls) => el("span", { class: cls, style: `height:${(64 * n) / peak}px` });
    const ok = m.requests - m.errors - m.fallbacks;
    return el("div", {
      class: "bar",
      title: `${clock(m.at)}: ${m.requests} requests, ${m.fallbacks} fallbacks, ${m.errors} errors`,
    }, part(Math.max(0, ok), "ok"), part(m.fallbacks, "fallback"), part(m.errors, "error"));
  });
  return el("div", {},
    el("div", { class: "chart" }, ...bars),
    el("div", { class: "legend" }, `requests per minute, last ${minutes.length} minutes:`,
      el("i", { class: "ok" }), "answered", el("i", { class: "fallback" }), "by a fallback",
      el("i", { class: "error" }), "errors"));
}

function targetRow(t) {
  const state = t.reason ? `${t.state} (${t.reason})` : t.state;
  return el("tr", { "data-model": t.model, "data-role": t.role, "data-state": t.state },
    el("td", {}, t.model),
    el("td", { class: "muted" }, t.provider),
    el("td", {}, el("span", { class: `badge ${t.role}` }, t.role)),
    el("td", { class: "state" }, state),
    el("td", { class: "num" }, ms(t.ttft_p50_ms)),
    el("td", { class: "num" }, ms(t.ttft_p95_ms)),
    el("td", { class: "num" }, pct(t.error_rate)),
    el("td", { class: "num" }, t.requests));
}

function rolloutLine(r) {
  if (!r) return el("span", {});
  const text = r.mode === "shadow"
    ? `shadow: ${r.candidate}, ${r.status}, ${r.shadow ? r.shadow.pairs : 0} pairs compared` +
      (r.shadow && r.shadow.flags.length ? ` (${r.shadow.flags.join("; ")})` : "")
    : `rollout: ${r.candidate}, ${r.status}, ${r.percent}% of requests` +
      (r.status === "running" ? ` (stage ${r.stage + 1} of ${r.stages.length})` : "");
  return el("p", { class: `rollout ${r.status}` }, text);
}

function routeCard(route, data) {
  const w = route.window, today = route.today;
  const active = route.targets.find((t) => t.model === route.active);
  const rate = w.fallback_rate;
  return el("section", { class: "card route", "data-route": route.name },
    el("h2", {}, route.name,
      el("span", { class: "sub" }, "active: ",
        el("strong", { class: "active-model" }, route.active || "none healthy"))),
    el("div", { class: "figures" },
      figure(`fallback rate (${data.window_minutes} min)`, pct(rate),
        { class: `value fallback-rate${rate ? " bad" : ""}`, "data-value": rate ?? "" }),
      figure(`requests (${data.window_minutes} min)`, w.requests, { class: "value requests" }),
      figure(`errors (${data.window_minutes} min)`, w.errors,
        { class: `value errors${w.errors ? " bad" : ""}` }),
      figure("TTFT p50 / p95 (active)",
        active ? `${ms(active.ttft_p50_ms)} / ${ms(active.ttft_p95_ms)}` : "–"),
      figure("spend today", usd(today.spend_usd),
        { class: "value spend", "data-value": today.spend_usd }),
      figure("saved vs baseline today", usd(today.savings_usd),
        { class: "value savings", "data-value": today.savings_usd })),
    rolloutLine(route.rollout),
    el("table", { class: "targets" },
      el("thead", {}, el("tr", {}, ...["model", "provider", "role", "state", "TTFT p50",
        "TTFT p95", "error rate", "requests"].map((h, i) => el("th", { class: i > 3 ? "num" : null }, h)))),
      el("tbody", {}, ...route.targets.map(targetRow))),
    chart(route.minutes));
}

function eventText(e) {
  switch (e.kind) {
    case "health":
      return `${e.model || `provider ${e.provider}`}: ${e.state}${e.reason ? ` (${e.reason})` : ""}`;
    case "budget":
      return `${e.period} budget of ${e.scope} ${e.name}: ${usd(e.spent_usd)} of ${usd(e.limit_usd)}`;
    case "reload":
      if (!e.ok) return `reload failed, still serving ${e.version}: ${e.error}`;
      return e.version === e.previous ? `config unchanged (${e.version})`
        : `config ${e.previous} → ${e.version}`;
    case "rollout": {
      const why = e.objective ? ` on ${e.objective} ${e.observed} > ${e.limit}` : "";
      return `${e.route}: ${e.candidate} ${e.action.replace("_", " ")}${why}, now ${e.percent}%`;
    }
    case "fallback": {
      const passed = e.passed.map((p) => `${p.model}=${p.reason}`).join(", ");
      const times = e.count > 1 ? ` ×${e.count}` : "";
      return `${e.route || "(other)"}: ${passed} → ${e.to || "nothing answered"}${times}`;
    }
    default:
      return JSON.stringify(e);
  }
}

function render(data) {
  const since = clock(data.counting_since);
  document.getElementById("config").textContent =
    `config ${data.config.version} · today's figures since ${since}`;
  const cards = data.routes.map((route) => routeCard(route, data));
  if (data.other) {
    const t = data.other.today;
    cards.push(el("section", { class: "card" }, el("h2", {}, "other names",
      el("span", { class: "sub" }, "models asked by name, unknown routes")),
      el("div", { class: "figures" }, figure("requests today", t.requests),
        figure("errors today", t.errors), figure("spend today", usd(t.spend_usd)))));
  }
  document.getElementById("routes").replaceChildren(...cards);
  const rows = data.events.map((e) => el("tr", { class: e.kind },
    el("td", { class: "muted" }, clock(e.at)), el("td", { class: "kind" }, e.kind),
    el("td", {}, eventText(e))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "none yet")));
  document.querySelector("#events tbody").replaceChildren(...rows);
  document.getElementById("events-card").hidden = false;
}

function status(text, live) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.className = live ? "live" : "stale";
}

function askForKey(message) {
  document.getElementById("login").hidden = false;
  document.getElementById("auth-error").textContent = message || "";
  document.getElementById("key").focus();
  status("needs an admin key", false);
}

async function poll() {
  clearTimeout(timer);
  const key = sessionStorage.getItem(KEY);
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  try {
    const response = await fetch("/dashboard/data", { headers, cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      let message = `refused (${response.status})`;
      try { message = (await response.json()).error.message; } catch (_) { /* keep it */ }
      if (key) sessionStorage.removeItem(KEY);
      askForKey(key ? message : "");
      return; // no polling until a key is entered
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    document.getElementById("login").hidden = true;
    status(`live · updated ${clock(Date.now() / 1000)}`, true);
  } catch (error) {
    status(`not updating: ${error.message}`, false);
  }
  timer = setTimeout(poll, POLL_MS);
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("key");
  const key = input.value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  input.value = "";
  poll();
});

poll();
