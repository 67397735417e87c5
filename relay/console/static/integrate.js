// Integrate page: copy-ready snippets with this relay's URL, a key and a model
// filled in, and a try-it box that streams a reply with chunk timings.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const root = $("integrate");
  const RELAY = root.dataset.relay;
  const REQUIRE = root.dataset.requireKeys === "yes";

  const key = () => $("int-key").value.trim() || (REQUIRE ? "mr-YOUR-KEY" : "any-key");
  const model = () => $("int-model").value;

  function snippets() {
    const K = key(), M = model(), V1 = `${RELAY}/v1`;
    const msg = '[{"role": "user", "content": "Hello"}]';
    return [
      ["curl: Chat Completions, streamed", "sh",
        `curl ${V1}/chat/completions \\\n  -H "Authorization: Bearer ${K}" -H "Content-Type: application/json" \\\n  -d '{"model": "${M}", "stream": true, "messages": ${msg}}'`],
      ["curl: Responses", "sh",
        `curl ${V1}/responses \\\n  -H "Authorization: Bearer ${K}" -H "Content-Type: application/json" \\\n  -d '{"model": "${M}", "input": "Hello"}'`],
      ["curl: Anthropic Messages", "sh",
        `curl ${V1}/messages \\\n  -H "x-api-key: ${K}" -H "anthropic-version: 2023-06-01" -H "Content-Type: application/json" \\\n  -d '{"model": "${M}", "max_tokens": 256, "messages": ${msg}}'`],
      ["OpenAI SDK, Python", "python",
        `from openai import OpenAI\n\nclient = OpenAI(base_url="${V1}", api_key="${K}")\n\n# not streamed\nreply = client.chat.completions.create(model="${M}", messages=${msg})\nprint(reply.choices[0].message.content)\n\n# streamed\nfor chunk in client.chat.completions.create(model="${M}", messages=${msg}, stream=True):\n    print(chunk.choices[0].delta.content or "", end="", flush=True)\n\n# Responses API\nprint(client.responses.create(model="${M}", input="Hello").output_text)`],
      ["OpenAI SDK, JavaScript", "js",
        `import OpenAI from "openai";\n\nconst client = new OpenAI({ baseURL: "${V1}", apiKey: "${K}" });\n\nconst stream = await client.chat.completions.create({\n  model: "${M}",\n  messages: [{ role: "user", content: "Hello" }],\n  stream: true,\n});\nfor await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? "");`],
      ["Anthropic SDK, Python", "python",
        `import anthropic\n\nclient = anthropic.Anthropic(base_url="${RELAY}", api_key="${K}")\n\nmessage = client.messages.create(model="${M}", max_tokens=256, messages=${msg})\nprint(message.content[0].text)\n\nwith client.messages.stream(model="${M}", max_tokens=256, messages=${msg}) as stream:\n    for text in stream.text_stream:\n        print(text, end="", flush=True)`],
      ["Anthropic SDK, JavaScript", "js",
        `import Anthropic from "@anthropic-ai/sdk";\n\nconst client = new Anthropic({ baseURL: "${RELAY}", apiKey: "${K}" });\n\nconst stream = client.messages.stream({\n  model: "${M}",\n  max_tokens: 256,\n  messages: [{ role: "user", content: "Hello" }],\n});\nstream.on("text", (text) => process.stdout.write(text));\nawait stream.finalMessage();`],
      ["Go (openai-go)", "go",
        `client := openai.NewClient(\n\toption.WithBaseURL("${V1}/"),\n\toption.WithAPIKey("${K}"),\n)\nstream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{\n\tModel:    "${M}",\n\tMessages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},\n})\nfor stream.Next() {\n\tif len(stream.Current().Choices) > 0 {\n\t\tfmt.Print(stream.Current().Choices[0].Delta.Content)\n\t}\n}`],
      ["LiteLLM", "python",
        `import litellm\n\nreply = litellm.completion(\n    model="openai/${M}",\n    api_base="${V1}",\n    api_key="${K}",\n    messages=${msg},\n)\nprint(reply.choices[0].message.content)`],
      ["Open WebUI (environment)", "sh",
        `OPENAI_API_BASE_URL=${V1}\nOPENAI_API_KEY=${K}\n# or Admin Panel → Settings → Connections → OpenAI API: URL ${V1}, key ${K}`],
      ["Claude Code", "sh",
        `export ANTHROPIC_BASE_URL=${RELAY}\nexport ANTHROPIC_AUTH_TOKEN=${K}\nexport ANTHROPIC_MODEL=${M}\nexport ANTHROPIC_SMALL_FAST_MODEL=${M}\nclaude`],
      ["Codex CLI (~/.codex/config.toml)", "toml",
        `model = "${M}"\nmodel_provider = "modelrelay"\n\n[model_providers.modelrelay]\nname = "ModelRelay"\nbase_url = "${V1}"\nenv_key = "MODELRELAY_API_KEY"\nwire_api = "responses"\n\n# then: export MODELRELAY_API_KEY=${K}`],
      ["Cursor", "text",
        `Settings → Models → OpenAI API Key: ${K}\n"Override OpenAI Base URL": ${V1}\nAdd model: ${M}\n(Cursor calls the URL from its own servers: the relay must be reachable from the internet.)`],
      ["Aider", "sh",
        `export OPENAI_API_BASE=${V1}\nexport OPENAI_API_KEY=${K}\naider --model openai/${M}`],
      ["Continue (config.yaml)", "yaml",
        `models:\n  - name: ${M} via ModelRelay\n    provider: openai\n    model: ${M}\n    apiBase: ${V1}\n    apiKey: ${K}\n    roles: [chat, edit, apply]`],
    ];
  }

  function render() {
    // Keep what the reader opened across re-renders (a key or model change).
    const openSet = new Set([...document.querySelectorAll("details.snippet-block[open]")].map((d) => d.dataset.title));
    const nodes = snippets().map(([title, lang, code], i) => {
      const id = `snip-${i}`;
      return MR.el("details", { class: "snippet-block", open: openSet.size ? openSet.has(title) : i < 3, "data-title": title },
        MR.el("summary", null, title),
        MR.el("div", { class: "snippet" },
          MR.el("pre", { id, "data-lang": lang, tabindex: "0", "aria-label": `${title} snippet` }, code),
          MR.el("button", { type: "button", class: "copy secondary", "data-copy": id,
            "aria-label": `Copy the ${title} snippet` }, "Copy")));
    });
    $("snippets").replaceChildren(...nodes);
  }

  async function createKey() {
    const note = $("int-key-note");
    try {
      const doc = await MR.api("POST", "/console/api/keys", { name: `integrate ${new Date().toISOString().slice(0, 16)}` });
      $("int-key").value = doc.key;
      note.textContent = `Key ${doc.prefix}… created and filled into the snippets below. It is shown only on this page: copy it now.`;
      render();
    } catch (e) {
      note.textContent = `Could not create a key: ${e.message}`;
    }
  }

  async function tryIt() {
    const output = $("try-output");
    const timings = $("try-timings");
    const status = $("try-status");
    output.textContent = "";
    timings.replaceChildren();
    status.textContent = "Sending…";
    $("try-send").disabled = true;
    let previous = 0;
    try {
      const result = await MR.streamChat({
        model: model(),
        prompt: $("try-prompt").value,
        key: $("int-key").value.trim(),
        onChunk: (text, ms) => {
          output.textContent += text;
          timings.append(MR.el("li", null, `${Math.round(ms)} ms (+${Math.round(ms - previous)} ms): ${JSON.stringify(text)}`));
          previous = ms;
        },
      });
      status.textContent = `Done: ${result.chunks} chunk(s) in ${Math.round(result.ms)} ms.`;
    } catch (e) {
      status.textContent = `The request failed: ${e.message}`;
    } finally {
      $("try-send").disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("int-key").addEventListener("input", render);
    $("int-model").addEventListener("change", render);
    $("int-create-key").addEventListener("click", createKey);
    $("try-send").addEventListener("click", tryIt);
    render();
  });

  // Models that appear later (a worker connected) join the list.
  document.addEventListener("mr-state", (event) => {
    const select = $("int-model");
    const have = new Set([...select.options].map((o) => o.value));
    const models = event.detail.models;
    if (!models.length || models.every((m) => have.has(m))) return;
    const current = have.has("your-model") ? models[0] : select.value;
    select.replaceChildren(...models.map((m) => MR.el("option", { selected: m === current }, m)));
    render();
  });
})();
