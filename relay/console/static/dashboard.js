// Dashboard: renders each `state` event (tiles, workers, keys) and each
// `series` event (per-model charts). Actions go through MR.api (CSRF token).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const { el, api, fmtAgo } = MR;

  function fmtUptime(s) {
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  async function act(button, method, path, done) {
    button.disabled = true;
    try {
      await api(method, path);
      if (done) done();
    } catch (e) {
      button.disabled = false;
      alertError(e.message);
    }
  }
  function alertError(message) {
    const box = $("keys-error");
    box.textContent = message;
    box.hidden = false;
  }

  function workerRow(w) {
    const models = w.all_models
      ? (w.models.length ? `all models (${w.models.join(", ")})` : "all models")
      : (w.models.join(", ") || "none");
    const bar = el("span");
    bar.style.width = `${Math.min(100, (100 * w.in_flight) / w.max_concurrent)}%`;
    const state = [];
    if (w.draining) state.push(el("span", { class: "badge warn" }, "draining"));
    if (w.cordoned) state.push(el("span", { class: "badge danger" }, "cordoned"));
    if (!state.length) state.push(el("span", { class: "badge ok" }, "ready"));
    const name = encodeURIComponent(w.name);
    const actions = el("div", { class: "actions" },
      w.cordoned
        ? el("button", { type: "button", class: "secondary", "data-action": "uncordon",
            "aria-label": `Uncordon ${w.name}`,
            onclick: (e) => act(e.currentTarget, "DELETE", `/console/api/workers/${name}/cordon`) },
          "Uncordon")
        : el("button", { type: "button", class: "secondary", "data-action": "cordon",
            "aria-label": `Cordon ${w.name}`,
            onclick: (e) => act(e.currentTarget, "POST", `/console/api/workers/${name}/cordon`) },
          "Cordon"),
      el("button", { type: "button", class: "danger", "data-action": "drain",
          "aria-label": `Drain ${w.name}`, disabled: w.draining,
          onclick: (e) => act(e.currentTarget, "POST",
            `/console/api/workers/${encodeURIComponent(w.id)}/drain`) },
        "Drain"));
    return el("tr", { "data-worker": w.name },
      el("th", { scope: "row" }, w.name),
      el("td", { "data-label": "Models" }, models),
      el("td", { "data-label": "Load" }, el("span", { class: "load", role: "img",
          "aria-label": `${w.in_flight} of ${w.max_concurrent} in flight` }, bar),
        ` ${w.in_flight}/${w.max_concurrent}`),
      el("td", { "data-label": "State" }, state),
      el("td", { class: "wide" }, fmtAgo(w.connected_since)),
      el("td", { class: "wide" }, fmtAgo(w.last_heard)),
      el("td", { "data-label": "Served" }, String(w.requests_served)),
      el("td", { class: "wide" }, String(w.backend_errors)),
      el("td", { "data-label": "Actions" }, actions));
  }

  let confirmAction = null;
  function keyRow(k) {
    const revoke = k.revoked
      ? el("span", { class: "badge danger" }, "revoked")
      : el("button", { type: "button", class: "danger", "aria-label": `Revoke key ${k.name}`,
          onclick: () => {
            $("confirm-text").textContent =
              `Revoke the key "${k.name}" (${k.prefix}…)? Clients using it are refused from the next request.`;
            confirmAction = async () => {
              try { await api("DELETE", `/console/api/keys/${k.id}`); } catch (e) { alertError(e.message); }
            };
            $("confirm").showModal();
          } }, "Revoke");
    return el("tr", { "data-key": k.id },
      el("th", { scope: "row" }, k.name),
      el("td", { "data-label": "Key" }, el("code", null, `${k.prefix}…`)),
      el("td", { class: "wide" }, fmtAgo(k.created_at)),
      el("td", { "data-label": "Last used" }, fmtAgo(k.last_used_at)),
      el("td", { "data-label": "Requests" }, String(k.requests)),
      el("td", { "data-label": "Tokens in/out" }, `${k.tokens_in} / ${k.tokens_out}`),
      el("td", { "data-label": "Actions" }, revoke));
  }

  document.addEventListener("mr-state", (event) => {
    const s = event.detail;
    $("t-version").textContent = s.version;
    $("t-uptime").textContent = fmtUptime(s.uptime_s);
    $("t-workers").textContent = String(s.workers.length);
    $("t-models").textContent = s.any_model && !s.models.length ? "any" : String(s.models.length);
    $("t-queue").textContent = String(s.queue_depth);
    $("t-inflight").textContent = String(s.in_flight);
    $("t-rps").textContent = s.requests_per_s.toFixed(1);
    $("t-errors").textContent = `${(s.error_rate * 100).toFixed(1)} %`;
    $("no-workers").hidden = s.workers.length > 0;
    $("workers-wrap").hidden = s.workers.length === 0;
    // Re-rendering must not steal keyboard focus: put it back on the same button.
    const focused = document.activeElement?.closest?.("tr[data-worker]") ? {
      worker: document.activeElement.closest("tr").dataset.worker,
      action: document.activeElement.dataset.action,
    } : null;
    $("workers").replaceChildren(...s.workers.map(workerRow));
    if (focused) {
      const row = [...$("workers").rows].find((r) => r.dataset.worker === focused.worker);
      const again = row?.querySelector(`[data-action="${focused.action === "cordon" ? "uncordon" : focused.action === "uncordon" ? "cordon" : focused.action}"]`)
        || row?.querySelector(`[data-action="${focused.action}"]`);
      again?.focus();
    }
    const connected = new Set(s.workers.map((w) => w.name));
    const away = s.cordons.filter((n) => !connected.has(n));
    const note = $("cordons-note");
    note.hidden = away.length === 0;
    note.replaceChildren(`Cordoned, not connected: ${away.join(", ")} `,
      ...away.map((n) => el("button", { type: "button", class: "secondary",
        "aria-label": `Uncordon ${n}`,
        onclick: (e) => act(e.currentTarget, "DELETE", `/console/api/workers/${encodeURIComponent(n)}/cordon`) },
        `Uncordon ${n}`)));
    if (s.keys !== null) {
      $("no-keys").hidden = s.keys.length > 0;
      $("keys-wrap").hidden = s.keys.length === 0;
      $("keys").replaceChildren(...s.keys.map(keyRow));
    }
  });

  // ---- charts: small inline SVG line charts, one row per model
  const NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }
  function chart(title, ends, lines, unit) {
    const W = 300, H = 80, P = 4;
    const all = lines.flatMap((l) => l.values.filter((v) => v !== null));
    const max = Math.max(1e-9, ...all);
    const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `${title}: latest ${lines.map((l) => `${l.name} ${fmt(last(l.values), unit)}`).join(", ")}` });
    root.append(svg("line", { class: "axis", x1: 0, y1: H - P, x2: W, y2: H - P }));
    const n = Math.max(ends.length, 2);
    for (const [i, line] of lines.entries()) {
      let d = "";
      line.values.forEach((v, j) => {
        if (v === null) return;
        const x = (j / (n - 1)) * W;
        const y = H - P - (v / max) * (H - 2 * P - 10);
        d += `${d ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
      });
      if (d) root.append(svg("path", { class: `s${i + 1}`, d }));
    }
    const label = svg("text", { x: 2, y: 10 });
    label.textContent = `max ${fmt(max, unit)}`;
    root.append(label);
    const legend = lines.map((l) => `${l.name} ${fmt(last(l.values), unit)}`).join(" · ");
    return el("figure", null, el("figcaption", null, `${title} — ${legend}`), root);
  }
  const last = (values) => { for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i]; return null; };
  function fmt(v, unit) {
    if (v === null || v === undefined) return "–";
    if (unit === "ms") return v >= 1000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`;
    if (unit === "/s") return `${v.toFixed(2)}/s`;
    return String(Math.round(v));
  }

  document.addEventListener("mr-series", (event) => {
    const s = event.detail;
    const models = Object.keys(s.models);
    $("no-traffic").hidden = models.length > 0;
    const col = (rows, i) => rows.map((r) => (r ? r[i] : null));
    $("charts").replaceChildren(...models.map((model) => {
      const rows = s.models[model];
      const rate = rows.map((r) => (r ? r[0] / s.period_s : 0));
      const errors = rows.map((r) => (r ? r[1] : 0));
      return el("div", { class: "model-charts", "data-model": model },
        el("h3", null, model),
        el("div", { class: "chart-row" },
          chart("Requests", s.ends, [{ name: "rate", values: rate }], "/s"),
          chart("Errors", s.ends, [{ name: "errors", values: errors }], ""),
          chart("Latency", s.ends, [{ name: "p50", values: col(rows, 2) }, { name: "p95", values: col(rows, 3) }], "ms"),
          chart("Time to first token", s.ends, [{ name: "p50", values: col(rows, 4) }, { name: "p95", values: col(rows, 5) }], "ms"),
          chart("Queue wait", s.ends, [{ name: "p50", values: col(rows, 6) }, { name: "p95", values: col(rows, 7) }], "ms")));
    }));
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("confirm").addEventListener("close", async () => {
      const action = confirmAction;
      confirmAction = null;
      if ($("confirm").returnValue === "ok" && action) await action();
    });
    $("new-key").addEventListener("submit", async (event) => {
      event.preventDefault();
      $("keys-error").hidden = true;
      const name = $("key-name").value.trim();
      try {
        const doc = await api("POST", "/console/api/keys", { name });
        $("new-secret-value").textContent = doc.key;
        $("new-secret").hidden = false;
        $("key-name").value = "";
      } catch (e) {
        alertError(e.message);
      }
    });
  });
})();
