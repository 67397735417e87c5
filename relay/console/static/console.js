// ModelRelay console: what every page shares. Theme, copy buttons, the JSON
// helper that sends the CSRF token, and the ONE live stream (Server-Sent
// Events) the page listens to. No secret is ever written to storage: only the
// theme preference goes to localStorage.
"use strict";

const MR = (() => {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || "";
  const csrf = meta("csrf-token");
  const relayUrl = meta("relay-url") || location.origin;

  // ---- theme: system -> light -> dark
  const THEME_KEY = "modelrelay-theme";
  function applyTheme(theme) {
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
    const button = document.getElementById("theme");
    if (button) {
      const label = `Theme: ${theme || "system"}`;
      button.textContent = label;
      button.setAttribute("aria-label", `${label} (switch)`);
    }
  }
  function initTheme() {
    let theme = null;
    try { theme = localStorage.getItem(THEME_KEY); } catch (e) { theme = null; }
    applyTheme(theme);
    document.getElementById("theme")?.addEventListener("click", () => {
      const order = [null, "light", "dark"];
      const current = document.documentElement.dataset.theme || null;
      const next = order[(order.indexOf(current) + 1) % order.length];
      try {
        if (next) localStorage.setItem(THEME_KEY, next); else localStorage.removeItem(THEME_KEY);
      } catch (e) { /* private mode: the choice lasts for this page */ }
      applyTheme(next);
    });
  }

  // ---- copy buttons: <button class="copy" data-copy="id-of-pre">
  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (e) {
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "sr-only";
      document.body.appendChild(area);
      area.select();
      const ok = document.execCommand("copy");
      area.remove();
      return ok;
    }
  }
  function initCopy() {
    document.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-copy]");
      if (!button) return;
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      const ok = await copyText(source.textContent);
      const label = button.textContent;
      button.textContent = ok ? "Copied" : "Select and copy";
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  }

  // ---- JSON calls with the CSRF token
  async function api(method, path, body) {
    const init = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let doc = null;
    try { doc = await response.json(); } catch (e) { doc = null; }
    if (response.status === 401) { toLogin(); }
    if (!response.ok) {
      const message = doc?.error?.message || `${response.status} ${response.statusText}`;
      throw new Error(message);
    }
    return doc;
  }

  function toLogin() {
    location.assign(`/console/login?next=${encodeURIComponent(location.pathname)}`);
  }

  // ---- the live stream: one EventSource per page
  let lastState = null;
  function setLive(text, cls) {
    const el = document.getElementById("live");
    if (!el) return;
    el.textContent = text;
    el.className = `live ${cls}`;
  }
  function connect() {
    const source = new EventSource("/console/events");
    source.addEventListener("open", () => setLive("live", "on"));
    source.addEventListener("state", (event) => {
      lastState = JSON.parse(event.data);
      setLive("live", "on");
      document.dispatchEvent(new CustomEvent("mr-state", { detail: lastState }));
    });
    source.addEventListener("series", (event) => {
      document.dispatchEvent(new CustomEvent("mr-series", { detail: JSON.parse(event.data) }));
    });
    source.addEventListener("expired", () => { source.close(); toLogin(); });
    source.addEventListener("restarting", () => setLive("relay restarting…", "off"));
    source.addEventListener("superseded", () => {
      source.close();
      setLive("paused (open in other tabs): reload to resume", "off");
    });
    source.addEventListener("error", () => {
      setLive("reconnecting…", "off");
      if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
      // Closed for good (e.g. 401 after the session ended, or 503): find out which.
      setTimeout(async () => {
        try {
          const response = await fetch("/console/api/state", { credentials: "same-origin" });
          if (response.status === 401) { toLogin(); return; }
        } catch (e) { /* relay down: try the stream again */ }
        connect();
      }, 3000);
    });
  }

  function fmtAgo(iso) {
    if (!iso) return "never";
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return new Date(iso).toLocaleDateString();
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Streams a chat completion through the relay; onChunk(text, msSinceSend) per content piece.
  async function streamChat({ model, prompt, key, onChunk, signal }) {
    const headers = { "Content-Type": "application/json" };
    if (key) headers.Authorization = `Bearer ${key}`;
    const started = performance.now();
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers,
      signal,
      credentials: "omit", // the relay's inference API never sees the console cookie
      body: JSON.stringify({
        model, stream: true, max_tokens: 64, messages: [{ role: "user", content: prompt }],
      }),
    });
    if (!response.ok) {
      let message = `${response.status}`;
      try { message = (await response.json()).error?.message || message; } catch (e) { /* keep */ }
      throw new Error(message);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let chunks = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          let doc;
          try { doc = JSON.parse(data); } catch (e) { continue; }
          if (doc.error) throw new Error(doc.error.message || "error event");
          const text = doc.choices?.[0]?.delta?.content;
          if (text) { chunks += 1; onChunk(text, performance.now() - started); }
        }
      }
    }
    return { chunks, ms: performance.now() - started };
  }

  document.addEventListener("DOMContentLoaded", () => {
    initTheme();
    initCopy();
    if (document.body.dataset.page !== "login") connect();
  });

  return { api, el, fmtAgo, relayUrl, streamChat, copyText, get state() { return lastState; } };
})();
