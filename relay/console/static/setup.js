// Setup wizard: platform -> backend -> install -> configure -> connect (waits on
// the live stream for the named worker) -> test (a real streamed completion)
// -> keep it running. Every command is built from the choices, filled in.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const root = $("setup");
  const SECRET = root.dataset.secret;
  const RELAY = root.dataset.relay;
  const STEPS = ["platform", "backend", "install", "configure", "connect", "test", "persist"];
  const BACKENDS = {
    llama: { url: "http://127.0.0.1:8080", name: "llama-server",
      start: "llama-server -hf ggml-org/SmolLM2-135M-Instruct-GGUF --port 8080",
      note: "llama-server's default port 8080 is also the relay's: on one box, move one of them." },
    ollama: { url: "http://127.0.0.1:11434", name: "Ollama",
      start: "ollama pull smollm2:135m && ollama serve" },
    vllm: { url: "http://127.0.0.1:8000", name: "vLLM",
      start: "vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --port 8000" },
    lmstudio: { url: "http://127.0.0.1:1234", name: "LM Studio",
      start: "lms get smollm2-135m-instruct && lms server start --port 1234" },
  };
  let step = 0;
  let waitingSince = null;
  let hintTimer = null;
  let connected = null;

  const choice = (name) => document.querySelector(`input[name="${name}"]:checked`)?.value;
  const q = (text) => (/^[A-Za-z0-9_./:@=-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`);
  const psq = (text) => `"${text.replaceAll('"', '`"')}"`;
  const workerName = () => $("worker-name").value.trim() || "gpu-box-1";
  const concurrency = () => Math.max(1, parseInt($("concurrency").value, 10) || 1);
  const backendUrl = () => $("backend-url").value.trim() || BACKENDS[choice("backend")].url;

  function detectPlatform() {
    const ua = `${navigator.userAgentData?.platform || ""} ${navigator.platform || ""} ${navigator.userAgent}`;
    if (/win/i.test(ua)) return "windows";
    if (/mac|iphone|ipad/i.test(ua)) return "macos";
    return "linux";
  }

  function agentBin() {
    const how = choice("install");
    const win = choice("platform") === "windows";
    if (how === "source") return win ? "C:\\modelrelay\\Scripts\\agent.exe" : ".venv/bin/agent";
    return "agent";
  }

  function render() {
    const platform = choice("platform");
    const backend = BACKENDS[choice("backend")];
    const win = platform === "windows";
    $("backend-start").textContent = backend.start + (backend.note ? `\n# ${backend.note}` : "");
    const install = {
      pipx: "# from a checkout of the ModelRelay repository\npipx install .\nagent --version",
      uv: "# from a checkout of the ModelRelay repository\nuv tool install .\nagent --version",
      container: "# from a checkout of the ModelRelay repository\ndocker build -f contrib/docker/Dockerfile.agent -t modelrelay-agent .",
      source: win
        ? "py -3.11 -m venv C:\\modelrelay\nC:\\modelrelay\\Scripts\\pip install -c requirements.lock .\nC:\\modelrelay\\Scripts\\agent.exe --version"
        : "python3.11 -m venv .venv\n.venv/bin/pip install -c requirements.lock .\n.venv/bin/agent --version",
    }[choice("install")];
    $("install-cmd").textContent = install;

    const name = workerName();
    const url = backendUrl();
    const n = concurrency();
    const flags = [
      ["--proxy-url", RELAY], ["--worker-secret", SECRET], ["--backend-url", url],
      ["--worker-name", name], ["--max-concurrency", String(n)],
    ];
    if (choice("install") === "container") {
      const hostUrl = url.replace("127.0.0.1", "host.docker.internal").replace("localhost", "host.docker.internal");
      $("cfg-flags").textContent = `docker run --rm --add-host=host.docker.internal:host-gateway \\\n  modelrelay-agent agent run ${flags.map(([f, v]) => `${f} ${q(f === "--backend-url" ? hostUrl : v)}`).join(" ")}`;
    } else if (win) {
      $("cfg-flags").textContent = `${agentBin()} run ${flags.map(([f, v]) => `${f} ${psq(v)}`).join(" ")}`;
    } else {
      $("cfg-flags").textContent = `${agentBin()} run ${flags.map(([f, v]) => `${f} ${q(v)}`).join(" ")}`;
    }
    const env = [["PROXY_URL", RELAY], ["WORKER_SECRET", SECRET], ["BACKEND_URL", url],
      ["WORKER_NAME", name], ["MAX_CONCURRENCY", String(n)]];
    $("cfg-env").textContent = win
      ? env.map(([k, v]) => `$env:${k} = ${psq(v)}`).join("\n") + `\n${agentBin()} run`
      : env.map(([k, v]) => `export ${k}=${q(v)}`).join("\n") + `\n${agentBin()} run`;
    const tomlStr = (v) => JSON.stringify(v);
    $("cfg-toml").textContent = [
      "[agent]", `proxy_url = ${tomlStr(RELAY)}`, `worker_secret = ${tomlStr(SECRET)}`,
      `backend_url = ${tomlStr(url)}`, `worker_name = ${tomlStr(name)}`, `max_concurrency = ${n}`,
    ].join("\n");

    $("persist-linux").hidden = platform !== "linux";
    $("persist-macos").hidden = platform !== "macos";
    $("persist-windows").hidden = platform !== "windows";
    const bin = choice("install") === "source" ? "/opt/modelrelay/bin/agent" : "/usr/local/bin/agent";
    $("persist-systemd").textContent = [
      "[Unit]", `Description=ModelRelay agent (${name})`, "After=network-online.target",
      "Wants=network-online.target", "", "[Service]", "Type=exec", "DynamicUser=yes",
      `Environment=PROXY_URL=${RELAY}`, `Environment=WORKER_SECRET=${SECRET}`,
      `Environment=BACKEND_URL=${url}`, `Environment=WORKER_NAME=${name}`,
      `Environment=MAX_CONCURRENCY=${n}`, `ExecStart=${bin} run`, "KillSignal=SIGTERM",
      "TimeoutStopSec=45", "Restart=on-failure", "RestartPreventExitStatus=2", "", "[Install]",
      "WantedBy=multi-user.target", "",
      "# chmod 600 the unit (it holds the secret), then:",
      "# systemctl daemon-reload && systemctl enable --now modelrelay-agent",
    ].join("\n");
    const xml = (v) => v.replaceAll("&", "&amp;").replaceAll("<", "&lt;");
    $("persist-launchd").textContent = [
      '<?xml version="1.0" encoding="UTF-8"?>',
      '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
      '<plist version="1.0"><dict>',
      "  <key>Label</key><string>dev.modelrelay.agent</string>",
      "  <key>ProgramArguments</key><array><string>/Users/YOU/.local/bin/agent</string><string>run</string></array>",
      "  <key>EnvironmentVariables</key><dict>",
      ...env.map(([k, v]) => `    <key>${k}</key><string>${xml(v)}</string>`),
      "  </dict>",
      "  <key>RunAtLoad</key><true/>",
      "  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>",
      "  <key>ExitTimeOut</key><integer>45</integer>",
      "</dict></plist>",
      "<!-- chmod 600 it, then: launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/dev.modelrelay.agent.plist -->",
    ].join("\n");
    $("persist-nssm").textContent = [
      `nssm install ModelRelayAgent ${agentBin() === "agent" ? "agent.exe" : agentBin()} run`,
      "nssm set ModelRelayAgent AppEnvironmentExtra `",
      ...env.map(([k, v], i) => `  ${k}=${v}${i < env.length - 1 ? " `" : ""}`),
      "nssm set ModelRelayAgent AppStopMethodConsole 45000",
      "nssm set ModelRelayAgent AppExit 0 Exit",
      "nssm start ModelRelayAgent",
    ].join("\n");
    for (const span of document.querySelectorAll(".relay-url")) span.textContent = RELAY;
    for (const span of document.querySelectorAll(".backend-url")) span.textContent = url;
  }

  function show(index) {
    step = Math.max(0, Math.min(STEPS.length - 1, index));
    STEPS.forEach((name, i) => {
      $(`step-${name}`).hidden = i !== step;
      const button = document.querySelector(`[data-goto="${name}"]`);
      if (i === step) button.setAttribute("aria-current", "step"); else button.removeAttribute("aria-current");
    });
    $("prev").disabled = step === 0;
    $("next").disabled = step === STEPS.length - 1;
    if (STEPS[step] === "connect") startWaiting();
    render();
    $(`h-${STEPS[step]}`).setAttribute("tabindex", "-1");
  }
  function go(index) {
    show(index);
    $(`h-${STEPS[step]}`).focus();
  }

  function startWaiting() {
    if (waitingSince === null) {
      waitingSince = Date.now();
      clearTimeout(hintTimer);
      hintTimer = setTimeout(() => { if (!connected) $("connect-hints").hidden = false; }, 15000);
    }
    checkConnected(MR.state);
  }

  function checkConnected(state) {
    const name = workerName();
    const worker = state?.workers.find((w) => w.name === name);
    if (!worker) {
      connected = null;
      if (STEPS[step] === "connect") {
        $("connect-status").textContent = `Waiting for a worker named “${name}” to connect…`;
        $("connect-models").replaceChildren();
      }
      return;
    }
    connected = worker;
    $("connect-hints").hidden = true;
    $("connect-status").textContent = `Connected: “${name}” serves ${worker.all_models && !worker.models.length ? "all models" : `${worker.models.length} model(s)`}.`;
    $("connect-models").replaceChildren(...worker.models.map((m) => MR.el("li", null, m)));
    const select = $("test-model");
    const current = select.value;
    select.replaceChildren(...worker.models.map((m) => MR.el("option", { selected: m === current }, m)));
    $("test-key-wrap").hidden = !state.require_api_keys;
  }
  document.addEventListener("mr-state", (event) => checkConnected(event.detail));

  async function runTest() {
    const output = $("test-output");
    const status = $("test-status");
    output.textContent = "";
    status.textContent = "Sending…";
    $("test-send").disabled = true;
    try {
      const result = await MR.streamChat({
        model: $("test-model").value,
        prompt: "Say hello in five words.",
        key: $("test-key").value.trim(),
        onChunk: (text) => { output.textContent += text; },
      });
      status.textContent = `Streamed ${result.chunks} chunk(s) in ${Math.round(result.ms)} ms. It works.`;
    } catch (e) {
      status.textContent = `The request failed: ${e.message}`;
    } finally {
      $("test-send").disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelector(`input[name="platform"][value="${detectPlatform()}"]`).checked = true;
    $("platform-detected").textContent = `Detected from this browser: ${detectPlatform()}. Change it if the GPU box differs.`;
    document.querySelector('input[name="backend"][value="llama"]').checked = true;
    document.querySelector('input[name="install"][value="pipx"]').checked = true;
    $("backend-url").value = BACKENDS.llama.url;
    for (const radio of document.querySelectorAll('input[name="backend"]')) {
      radio.addEventListener("change", () => { $("backend-url").value = BACKENDS[radio.value].url; render(); });
    }
    for (const input of document.querySelectorAll('input[name="platform"], input[name="install"], #backend-url, #concurrency')) {
      input.addEventListener("input", render);
      input.addEventListener("change", render);
    }
    $("worker-name").addEventListener("input", () => { waitingSince = null; render(); checkConnected(MR.state); });
    for (const button of document.querySelectorAll("[data-goto]")) {
      button.addEventListener("click", () => go(STEPS.indexOf(button.dataset.goto)));
    }
    $("prev").addEventListener("click", () => go(step - 1));
    $("next").addEventListener("click", () => go(step + 1));
    $("test-send").addEventListener("click", runTest);
    $("again").addEventListener("click", () => {
      const match = /^(.*?)(\d+)$/.exec(workerName());
      $("worker-name").value = match ? `${match[1]}${Number(match[2]) + 1}` : `${workerName()}-2`;
      waitingSince = null;
      connected = null;
      $("test-output").textContent = "";
      $("test-status").textContent = "";
      go(STEPS.indexOf("install"));
    });
    show(0);
  });
})();
