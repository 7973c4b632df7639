// Hearth console: one page, views chosen by the URL fragment, only Hearth's public API.
// No build step and no dependency: plain DOM calls, fetch() and a small SSE reader.
"use strict";

const KEY = "hearth.key";
const ADMIN_KEY = "hearth.admin";
const state = { models: [], mode: null };

// ---- DOM helpers ----------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else if (k === "height") node.style.height = v; // CSSOM: the CSP forbids style attributes
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

let uid = 0;
// A labelled control: returns [label, control]; the control gets a fresh id.
function field(text, control) {
  if (!control.id) control.id = "f" + ++uid;
  return [el("label", { for: control.id, text }), control];
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
}

// ---- API --------------------------------------------------------------------------------------

class ApiError extends Error {}

function headers(admin, extra) {
  const h = Object.assign({}, extra || {});
  const token = admin ? sessionStorage.getItem(ADMIN_KEY) : sessionStorage.getItem(KEY);
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function failure(resp) {
  let message = resp.status + " " + resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (e) { /* not JSON: keep the status line */ }
  return new ApiError(message);
}

// JSON in, JSON out; a non-2xx answer throws the API's own error message.
async function api(path, opts) {
  opts = opts || {};
  const init = { method: opts.method || (opts.body !== undefined || opts.form ? "POST" : "GET") };
  if (opts.form) {
    init.body = opts.form;
    init.headers = headers(opts.admin);
  } else {
    init.headers = headers(opts.admin, opts.body !== undefined ? { "Content-Type": "application/json" } : {});
    if (opts.body !== undefined) init.body = JSON.stringify(opts.body);
  }
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  return resp.json();
}

// Server-sent events from a fetch body (so the bearer header can be sent). The body is parsed as
// SSE whatever its Content-Type says. onEvent(eventName, data) per event; returns at the end.
async function sse(path, init, onEvent) {
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, data.join("\n"));
    }
  }
}

// Run an async action from a button; its error goes to the error banner.
function action(fn) {
  return async (ev) => {
    if (ev && ev.preventDefault) ev.preventDefault();
    const button = ev && ev.currentTarget instanceof HTMLButtonElement ? ev.currentTarget : null;
    showError("");
    if (button) button.disabled = true;
    try {
      await fn(ev);
    } catch (e) {
      showError(e instanceof ApiError ? e.message : "Error: " + e.message);
    } finally {
      if (button) button.disabled = false;
    }
  };
}

async function loadModels() {
  state.models = (await api("/v1/models")).data;
  return state.models;
}

// ---- sign-in ----------------------------------------------------------------------------------

async function detectMode() {
  const resp = await fetch("/v1/models", { headers: headers(false) });
  if (resp.ok) {
    state.mode = sessionStorage.getItem(KEY) ? "key" : "open";
    state.models = (await resp.json()).data;
    return true;
  }
  if (resp.status === 401) {
    if (sessionStorage.getItem(KEY)) showError((await failure(resp)).message);
    sessionStorage.removeItem(KEY);
    return false;
  }
  throw await failure(resp);
}

function signInView(main) {
  const key = el("input", { type: "password", autocomplete: "off", required: true });
  const form = el("form", { class: "panel", onsubmit: action(async () => {
    sessionStorage.setItem(KEY, key.value.trim());
    if (await detectMode()) route();
  }) },
    el("h1", { text: "Sign in" }),
    el("p", { class: "muted", text: "This Hearth requires an API key. It is kept in this tab only." }),
    ...field("API key", key),
    el("button", { type: "submit", text: "Sign in" }));
  main.append(form);
  key.focus();
}

// ---- chat playground --------------------------------------------------------------------------

// JSON text typed by the user; a parse error names the field instead of a bare SyntaxError.
function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(`${what} is not valid JSON: ${e.message}`);
  }
}

// A JSON value written as a Python literal (true/false/null become True/False/None).
function pyLiteral(value, indent) {
  const pad = " ".repeat(indent + 4), end = " ".repeat(indent);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return "[\n" + value.map((v) => pad + pyLiteral(v, indent + 4)).join(",\n") + ",\n" + end + "]";
  }
  const keys = Object.keys(value);
  if (!keys.length) return "{}";
  return "{\n" + keys.map((k) => pad + JSON.stringify(k) + ": " + pyLiteral(value[k], indent + 4)).join(",\n") + ",\n" + end + "}";
}

function curlOf(path, body) {
  const json = JSON.stringify(body).replace(/'/g, "'\\''");
  return `curl ${location.origin}${path} \\\n  -H "Authorization: Bearer $HEARTH_API_KEY" \\\n` +
    `  -H "Content-Type: application/json" \\\n  -d '${json}'`;
}

function pythonOf(body) {
  return `import os\n\nfrom openai import OpenAI\n\n` +
    `client = OpenAI(base_url="${location.origin}/v1", api_key=os.environ.get("HEARTH_API_KEY", "none"))\n` +
    `response = client.chat.completions.create(**${pyLiteral(body, 0)})\n` +
    (body.stream ? `for chunk in response:\n    print(chunk)\n` : `print(response.choices[0].message)\n`);
}

// A schema built from rows of (name, type, required): the "build" half of "paste or build".
function schemaBuilder(onBuild) {
  const rows = el("div", { class: "builder" });
  let n = 0;
  function addRow(name, type, required) {
    n += 1;
    const nameIn = el("input", { value: name || "", placeholder: "field" });
    const typeIn = el("select", {}, ["string", "integer", "number", "boolean", "string list"]
      .map((t) => el("option", { value: t, text: t, selected: t === type })));
    const req = el("input", { type: "checkbox", checked: required !== false });
    const row = el("div", { class: "row builder-row" },
      el("div", {}, ...field(`Field ${n} name`, nameIn)), el("div", {}, ...field(`Field ${n} type`, typeIn)),
      el("label", { class: "inline" }, req, ` required`),
      el("button", { type: "button", class: "secondary", "aria-label": `Remove field ${n}`, text: "Remove",
        onclick: () => row.remove() }));
    row.read = () => ({ name: nameIn.value.trim(), type: typeIn.value, required: req.checked });
    rows.append(row);
  }
  function build() {
    const properties = {}, required = [];
    for (const row of rows.children) {
      const f = row.read();
      if (!f.name) continue;
      properties[f.name] = f.type === "string list" ? { type: "array", items: { type: "string" } } : { type: f.type };
      if (f.required) required.push(f.name);
    }
    if (!required.length && !Object.keys(properties).length) throw new ApiError("add at least one named field to build a schema");
    onBuild({ type: "object", properties, required, additionalProperties: false });
  }
  addRow("city", "string");
  addRow("population", "integer");
  return el("details", { class: "builder-box" }, el("summary", { text: "Build a schema" }), rows,
    el("div", { class: "row" },
      el("button", { type: "button", class: "secondary", text: "Add field", onclick: () => addRow("", "string") }),
      el("button", { type: "button", class: "secondary", text: "Use built schema", onclick: action(build) })));
}

function chatView(main) {
  const chatModels = state.models.filter((m) => (m.capabilities || []).includes("chat"));
  const model = el("select", {}, chatModels.map((m) => el("option", { value: m.id, text: m.id })));
  const system = el("textarea", { rows: 2, placeholder: "You are a helpful assistant." });
  const temperature = el("input", { type: "number", min: 0, max: 2, step: 0.1, value: 0.7 });
  const maxTokens = el("input", { type: "number", min: 1, max: 4096, value: 128 });
  const seed = el("input", { type: "number", placeholder: "random" });
  const schemaOn = el("input", { type: "checkbox" });
  const schema = el("textarea", { rows: 6, text: pretty({
    type: "object", properties: { city: { type: "string" }, population: { type: "integer" } },
    required: ["city", "population"], additionalProperties: false }) });
  const builder = schemaBuilder((built) => { schema.value = pretty(built); schemaOn.checked = true; });
  const tools = el("textarea", { rows: 4, placeholder: '[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]' });
  const toolChoice = el("select", {}, ["auto", "required", "none"].map((v) => el("option", { value: v, text: v })));
  const exampleTool = () => {
    tools.value = pretty([{ type: "function", function: { name: "get_weather", description: "Current weather of a city",
      parameters: { type: "object", properties: { city: { type: "string", maxLength: 40 } }, required: ["city"], additionalProperties: false } } }]);
  };
  const messages = el("div", { class: "messages", "aria-live": "polite" });
  const input = el("textarea", { rows: 3, placeholder: "Ask something (Ctrl+Enter sends)" });
  const structured = el("div", {});
  const snippet = el("pre", { class: "snippet", hidden: true });
  const history = [];

  // The exact body sent for the next turn (the message being typed included).
  function request(stream, pending) {
    const msgs = [];
    if (system.value.trim()) msgs.push({ role: "system", content: system.value.trim() });
    msgs.push(...history);
    if (pending) msgs.push({ role: "user", content: pending });
    const body = { model: model.value, messages: msgs, temperature: Number(temperature.value),
      max_tokens: Number(maxTokens.value) };
    if (seed.value !== "") body.seed = Number(seed.value);
    if (schemaOn.checked) {
      body.response_format = { type: "json_schema",
        json_schema: { name: "console", schema: parseJson(schema.value, "JSON schema"), strict: true } };
    }
    if (tools.value.trim()) {
      body.tools = parseJson(tools.value, "Tools");
      if (toolChoice.value !== "auto") body.tool_choice = toolChoice.value;
    }
    if (stream) { body.stream = true; body.stream_options = { include_usage: true }; }
    return body;
  }

  const send = action(async () => {
    const text = input.value.trim();
    if (!text) return;
    const body = request(true, text);
    history.push({ role: "user", content: text });
    messages.append(el("div", { class: "msg user", text }));
    input.value = "";
    const answer = el("div", { class: "msg assistant" });
    const stats = el("div", { class: "stats" });
    messages.append(answer, stats);
    structured.replaceChildren();
    const t0 = performance.now();
    let first = null, content = "", usage = null, report = null, rag = null;
    const calls = [];
    await sse("/v1/chat/completions", { method: "POST",
      headers: headers(false, { "Content-Type": "application/json" }), body: JSON.stringify(body) },
    (event, data) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      if (chunk.citations || chunk.refusal) rag = chunk;
      for (const choice of chunk.choices || []) {
        const delta = choice.delta || {};
        if (delta.content) {
          if (first === null) first = performance.now();
          content += delta.content;
          answer.textContent = content;
        }
        for (const call of delta.tool_calls || []) {
          if (first === null) first = performance.now();
          const slot = calls[call.index] || (calls[call.index] = { id: "", name: "", arguments: "" });
          if (call.id) slot.id = call.id;
          if (call.function && call.function.name) slot.name += call.function.name;
          if (call.function && call.function.arguments) slot.arguments += call.function.arguments;
          answer.textContent = calls.map((c) => `${c.name}(${c.arguments}`).join("\n");
        }
        if (choice.schema_report) report = choice.schema_report;
      }
    });
    const end = performance.now();
    if (calls.length) {
      history.push({ role: "assistant", content: content || null, tool_calls: calls.map((c) => (
        { id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } })) });
      answer.replaceChildren(el("div", { class: "muted", text: "Tool calls the model made:" }),
        el("pre", { class: "toolcalls", text: calls.map((c) => {
          let args = c.arguments;
          try { args = JSON.stringify(JSON.parse(c.arguments)); } catch (e) { /* keep the raw text */ }
          return `${c.name}(${args})  ${c.id}`;
        }).join("\n") }));
      if (content) answer.prepend(content);
    } else {
      history.push({ role: "assistant", content });
    }
    if (rag) answer.append(ragExtra(rag));
    const parts = [];
    if (usage) parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
    if (first !== null) parts.push(`TTFT ${Math.round(first - t0)} ms`);
    if (usage && first !== null && end > first) {
      parts.push(`${(usage.completion_tokens / ((end - first) / 1000)).toFixed(1)} tok/s`);
    }
    stats.textContent = parts.join(" · ");
    if (body.response_format) {
      let parsed;
      try { parsed = JSON.parse(content); } catch (e) { parsed = null; }
      structured.append(el("h2", { text: "Validated object" }),
        el("pre", { class: "validated", text: parsed === null ? "(not valid JSON)" : pretty(parsed) }));
    }
    if (report) {
      structured.append(el("h2", { text: "schema_report" }),
        el("p", { class: report.valid ? "ok" : "bad", text: report.valid ? "valid against the schema" : "NOT valid: " + (report.errors || []).join("; ") }),
        el("pre", { class: "report", text: pretty(report) }));
    }
  });
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) send(ev); });

  function copy(kind) {
    return action(async () => {
      const body = request(false, input.value.trim() || "Hello!");
      const text = kind === "curl" ? curlOf("/v1/chat/completions", body) : pythonOf(body);
      snippet.textContent = text;
      snippet.hidden = false;
      snippet.setAttribute("aria-label", kind === "curl" ? "curl command" : "Python code");
      if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text).catch(() => {});
    });
  }

  main.append(el("h1", { text: "Chat playground" }), el("div", { class: "grid" },
    el("div", { class: "panel" },
      ...field("Model", model), ...field("System prompt", system),
      el("div", { class: "row" }, el("div", {}, ...field("Temperature", temperature)),
        el("div", {}, ...field("Max tokens", maxTokens)), el("div", {}, ...field("Seed", seed))),
      el("label", { class: "inline" }, schemaOn, " JSON-schema mode"), ...field("JSON schema", schema), builder,
      ...field("Tools (JSON array, optional)", tools),
      el("div", { class: "row" }, el("div", {}, ...field("Tool choice", toolChoice)),
        el("button", { type: "button", class: "secondary", text: "Example tool", onclick: exampleTool })),
      el("div", { class: "row" },
        el("button", { type: "button", class: "secondary", onclick: copy("curl"), text: "Copy as curl" }),
        el("button", { type: "button", class: "secondary", onclick: copy("python"), text: "Copy as Python" }))),
    el("div", { class: "panel" }, messages, ...field("Message", input),
      el("button", { type: "button", id: "send", onclick: send, text: "Send" }), structured, snippet)));
}

// Citations (each opens its chunk with the quote highlighted) or the refusal of a RAG answer.
function ragExtra(body) {
  const box = el("div", { class: "rag" });
  if (body.refusal) {
    box.append(el("div", { class: "msg refusal", text: "Refused: " + body.refusal.message + ` (${body.refusal.reason})` }));
    return box;
  }
  const chunk = el("div", {});
  for (const c of body.citations || []) {
    box.append(el("button", { type: "button", class: "cite secondary",
      "aria-label": `Open citation ${c.number} from ${c.document_id}`,
      onclick: action(() => openChunk(c, chunk)), text: `[${c.number}] ${c.document_id}` }));
  }
  if (body.confidence !== undefined) box.append(el("span", { class: "muted", text: ` confidence ${Number(body.confidence).toFixed(2)}` }));
  box.append(chunk);
  return box;
}

async function openChunk(c, into) {
  const path = `/v1/collections/${encodeURIComponent(c.collection)}/documents/${encodeURIComponent(c.document_id)}/chunks`;
  const chunks = (await api(path)).data;
  const found = chunks.find((x) => x.chunk_id === c.chunk_id);
  if (!found) throw new ApiError(`chunk ${c.chunk_id} is no longer in ${c.document_id}`);
  const text = found.text;
  into.replaceChildren(el("div", { class: "panel chunk", role: "region", "aria-label": "Cited chunk" },
    el("div", { class: "muted", text: `${c.document_id} · chunk ${found.ord}${found.page ? " · page " + found.page : ""}` }),
    text.slice(0, c.start), el("mark", { text: text.slice(c.start, c.end) }), text.slice(c.end)));
}

// ---- documents --------------------------------------------------------------------------------

function documentsView(main) {
  const list = el("ul", {});
  const name = el("input", { placeholder: "handbook"});
  const detail = el("div", { class: "panel" }, el("p", { class: "muted", text: "Choose a collection." }));

  async function refresh() {
    const cols = (await api("/v1/collections")).data;
    list.replaceChildren(...cols.map((c) => el("li", {}, el("a", { href: "#documents", onclick: action(() => open(c.name)),
      text: `${c.name}${c.documents !== undefined ? ` (${c.documents} docs)` : ""}` }))));
    if (!cols.length) list.append(el("li", { class: "muted", text: "No collections yet." }));
    return cols;
  }

  async function open(col) {
    state.collection = col;
    const docs = el("tbody", {});
    const progress = el("div", { class: "uploads" });
    const fileInput = el("input", { type: "file", multiple: true, accept: ".txt,.md,.pdf,text/plain,text/markdown,application/pdf" });
    const drop = el("div", { class: "drop", tabindex: 0 }, "Drop TXT, MD or PDF files here, or ", ...field("choose files", fileInput));
    const listDocs = async () => {
      const data = (await api(`/v1/collections/${encodeURIComponent(col)}/documents`)).data;
      docs.replaceChildren(...data.map((d) => el("tr", {}, el("td", { text: d.id }), el("td", { text: d.title || "" }),
        el("td", { text: d.status }), el("td", { text: d.chunks }))));
    };
    const upload = action(async (files) => {
      await Promise.all([...files].map((f) => uploadOne(col, f, progress)));
      await listDocs();
      await refresh();
    });
    fileInput.addEventListener("change", () => upload(fileInput.files));
    drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("keydown", (ev) => { if (ev.target === drop && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); fileInput.click(); } });
    drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); upload(ev.dataTransfer.files); });

    const query = el("input", { placeholder: "search this collection" });
    const modeBox = el("fieldset", { class: "row" }, el("legend", { class: "muted", text: "Mode" }),
      ["dense", "lexical", "hybrid"].map((m) => el("label", {}, el("input", { type: "radio", name: "mode", value: m, checked: m === "hybrid" }), " " + m)));
    const hits = el("tbody", {});
    const caption = el("caption", { class: "muted" });
    const search = action(async () => {
      const mode = modeBox.querySelector("input:checked").value;
      const res = await api("/v1/retrieve", { body: { collection: col, query: query.value, mode, top_k: 5 } });
      caption.textContent = `${res.data.length} hits, ${res.mode} mode: score is the ${res.mode === "hybrid" ? "fused rank score (RRF)" : res.mode === "lexical" ? "BM25 score" : "cosine similarity"}`;
      hits.replaceChildren(...res.data.map((h) => el("tr", {}, el("td", { text: String(h.rank) }), el("td", { class: "score", text: h.score.toFixed(4) }),
        el("td", { text: h.dense_score === undefined || h.dense_score === null ? "" : Number(h.dense_score).toFixed(3) }),
        el("td", { text: h.title || h.document_id }), el("td", { class: "chunk", text: h.text }))));
    });
    const question = el("input", { placeholder: "Ask a question about these documents" });
    const answer = el("div", { class: "answer" });
    const ask = action(async () => {
      answer.replaceChildren(el("p", { class: "muted", text: "Thinking…" }));
      const res = await api("/v1/chat/completions", { body: { model: "rag/" + col, max_tokens: 96,
        temperature: 0, messages: [{ role: "user", content: question.value }] } });
      const msg = res.choices[0].message;
      answer.replaceChildren(el("div", { class: "msg assistant" + (res.refusal ? " refusal" : ""), text: msg.content || "" }), ragExtra(res));
    });
    detail.replaceChildren(el("h2", { text: "Collection " + col }), drop, progress,
      el("div", { class: "tablewrap" }, el("table", { class: "documents" }, el("thead", {}, el("tr", {},
        el("th", { text: "Document" }), el("th", { text: "Title" }), el("th", { text: "Status" }), el("th", { text: "Chunks" }))), docs)),
      el("h2", { text: "Search" }), el("form", { onsubmit: search }, ...field("Query", query), modeBox, el("button", { type: "submit", text: "Search" })),
      el("div", { class: "tablewrap" }, el("table", { class: "hits" }, caption, el("thead", {}, el("tr", {}, el("th", { text: "Rank" }), el("th", { text: "Score" }),
        el("th", { text: "Cosine" }), el("th", { text: "Document" }), el("th", { text: "Text" }))), hits)),
      el("h2", { text: "Ask (grounded answer)" }), el("form", { onsubmit: ask }, ...field("Question", question), el("button", { type: "submit", text: "Ask" })), answer);
    await listDocs();
  }

  const create = action(async () => {
    await api("/v1/collections", { body: { name: name.value.trim() } });
    await refresh();
    await open(name.value.trim());
  });
  main.append(el("h1", { text: "Documents" }), el("div", { class: "grid" },
    el("div", { class: "panel" }, el("h2", { text: "Collections" }), list,
      el("form", { onsubmit: create }, ...field("New collection", name), el("button", { type: "submit", text: "Create" }))),
    detail));
  // Back on the page: the collection opened last (or the first one) is open again.
  return refresh().then((cols) => {
    const again = cols.find((c) => c.name === state.collection) || cols[0];
    return again ? open(again.name) : undefined;
  });
}

// One file: multipart upload, then its job's progress events until done.
async function uploadOne(col, file, into) {
  const bar = el("progress", { max: 100, value: 0, "aria-label": "Upload of " + file.name });
  const label = el("span", { class: "pct", text: "0%" });
  into.append(el("div", { class: "upload" }, el("span", { text: file.name + " " }), label, bar));
  const form = new FormData();
  form.append("file", file, file.name);
  const job = await api(`/v1/collections/${encodeURIComponent(col)}/documents`, { form });
  try {
    const last = await followJob(job, bar, label);
    if (last.failed) throw new ApiError(last.error || "the document could not be ingested");
  } catch (e) {
    label.classList.add("bad");
    throw e instanceof ApiError ? new ApiError(`${file.name}: ${e.message}`) : e;
  }
}

// ---- tasks ------------------------------------------------------------------------------------

// Follows a job's progress events into a <progress> bar; returns the finished job.
async function followJob(job, bar, label) {
  let last = job;
  const show = (j) => {
    const pct = Math.max(0, Math.min(100, Math.round(j.progress || 0)));
    bar.value = pct;
    label.textContent = `${pct}% ${j.status}${j.stage ? " · " + j.stage : ""}`;
  };
  show(job);
  await sse(`/v1/jobs/${encodeURIComponent(job.id)}/events`, { headers: headers(false) }, (event, data) => {
    last = JSON.parse(data);
    show(last);
  });
  if (last.status !== "succeeded") throw new ApiError(`job ${last.id} ${last.status}: ${last.error || "no error recorded"}`);
  return last;
}

// The text with the given [start, end) spans marked (overlapping spans: the first one wins).
function highlighted(text, spans) {
  const out = [];
  let at = 0;
  for (const s of spans.slice().sort((a, b) => a.start - b.start)) {
    if (s.start < at || s.end <= s.start || s.end > text.length) continue;
    out.push(text.slice(at, s.start), el("mark", { title: s.name, text: text.slice(s.start, s.end) }),
      el("sub", { class: "muted", text: s.name }));
    at = s.end;
  }
  out.push(text.slice(at));
  return out;
}

function classifierPanel() {
  const cname = el("input", { value: "intents" });
  const csv = el("input", { type: "file", accept: ".csv,text/csv" });
  const threshold = el("input", { type: "number", min: 0, max: 1, step: 0.01, placeholder: "chosen by training" });
  const created = el("div", {});
  const createClassifier = action(async () => {
    if (!csv.files.length) throw new ApiError("choose a CSV file with columns text,label");
    const form = new FormData();
    form.append("name", cname.value.trim());
    if (threshold.value !== "") form.append("abstain_threshold", threshold.value);
    form.append("file", csv.files[0], csv.files[0].name);
    const out = await api("/v1/classifiers", { form });
    const labels = out.labels ? Object.keys(out.labels).length : null;
    created.replaceChildren(el("p", { class: "ok created", text: out.job
      ? `Training ${out.name || cname.value} as job ${out.job.id || out.job}: see Jobs.`
      : `Classifier ${out.name || cname.value} version ${out.version ?? "?"} ready${labels ? ` (${labels} labels)` : ""}.` }));
  });
  const tryText = el("input", { placeholder: "Text to classify" });
  const result = el("div", {});
  const classify = action(async () => {
    const res = await api("/v1/classify", { body: { classifier: cname.value.trim(), input: tryText.value } });
    const p = res.data[0];
    const scores = Object.entries(p.scores || {}).sort((a, b) => b[1] - a[1]);
    result.replaceChildren(
      el("p", { class: "prediction" + (p.abstained ? " abstained" : "") }, "Label: ",
        el("strong", { class: "label", text: p.abstained ? "(abstained)" : p.label }),
        el("span", { class: "confidence", text: ` · confidence ${Number(p.confidence).toFixed(3)}` }),
        ` · ${p.abstained ? "below the abstention threshold: no label given" : "source " + p.source}`),
      el("table", { class: "scores" }, el("thead", {}, el("tr", {}, el("th", { text: "Label" }), el("th", { text: "Score" }), el("th", { text: "" }))),
        el("tbody", {}, scores.map(([l, s]) => el("tr", {}, el("td", { text: l }), el("td", { text: Number(s).toFixed(3) }),
          el("td", {}, el("meter", { min: 0, max: 1, value: s, "aria-label": `score of ${l}` })))))));
  });
  return el("section", { class: "panel", "aria-labelledby": "h-classifier" }, el("h2", { id: "h-classifier", text: "Classifier from CSV" }),
    el("form", { onsubmit: createClassifier }, ...field("Name", cname), ...field("CSV (text,label)", csv),
      ...field("Abstain below confidence (optional)", threshold), el("button", { type: "submit", text: "Create classifier" })), created,
    el("form", { onsubmit: classify }, ...field("Try an input", tryText), el("button", { type: "submit", text: "Classify" })), result);
}

function extractionPanel() {
  const exSchema = el("textarea", { rows: 6, text: pretty({ type: "object",
    properties: { name: { type: "string", maxLength: 40 }, email: { type: ["string", "null"], maxLength: 60 } },
    required: ["name", "email"], additionalProperties: false }) });
  const exText = el("textarea", { rows: 3, text: "Please reply to Alice Moreau at alice.moreau@example.com before Friday." });
  const exOut = el("div", { class: "extraction" });
  const extract = action(async () => {
    const text = exText.value;
    exOut.replaceChildren(el("p", { class: "muted", text: "Extracting…" }));
    const res = await api("/v1/extract", { body: { schema: parseJson(exSchema.value, "Schema"), input: text } });
    const r = res.data[0];
    const fields = Object.entries(r.fields || {});
    const spans = fields.filter(([, f]) => Array.isArray(f.span)).map(([name, f]) => ({ name, start: f.span[0], end: f.span[1] }));
    exOut.replaceChildren(
      el("p", { class: r.valid ? "ok" : "bad", text: r.valid ? "Valid against the schema" : "Not valid against the schema" }),
      table(fields.map(([name, f]) => ({ field: name, value: f.value, confidence: f.confidence === null ? "" : Number(f.confidence).toFixed(3),
        source: f.source, span: Array.isArray(f.span) ? `${f.span[0]}–${f.span[1]}` : "(not in the text)", valid: f.valid })),
      ["field", "value", "confidence", "source", "span", "valid"]),
      el("h3", { text: "Source spans" }),
      el("p", { class: "spans", role: "region", "aria-label": "Source spans" }, ...highlighted(text, spans)),
      el("details", {}, el("summary", { text: "Raw model output" }), el("pre", { text: r.raw || "" })));
  });
  return el("section", { class: "panel", "aria-labelledby": "h-extract" }, el("h2", { id: "h-extract", text: "Extraction" }),
    el("form", { onsubmit: extract }, ...field("Schema", exSchema), ...field("Text", exText), el("button", { type: "submit", text: "Extract" })), exOut);
}

function workflowPanel() {
  const wfName = el("select", {});
  const about = el("p", { class: "muted" });
  const wfInput = el("textarea", { rows: 4 });
  const wfOut = el("pre", { class: "wf-response", hidden: true });
  const rows = el("div", { class: "wf-rows" });
  const definition = el("textarea", { rows: 6, placeholder: '{"name": "triage", "text": "message", "classify": {...}, "gate": {...}, "extract": {"schema": {...}}}' });
  let specs = [];
  const pick = () => {
    const spec = specs.find((w) => w.name === wfName.value);
    if (!spec) return;
    about.textContent = spec.description || "";
    const example = {};
    for (const k of spec.inputs || [spec.text]) example[k] = "";
    example[spec.text] = "";
    wfInput.value = pretty(example);
  };
  async function loadList(select) {
    specs = (await api("/v1/workflows")).data || [];
    wfName.replaceChildren(...specs.map((w) => el("option", { value: w.name, text: w.name, selected: w.name === select })));
    pick();
  }
  async function loadRows() {
    const data = (await api(`/v1/workflows/${encodeURIComponent(wfName.value)}/results?limit=20`)).data || [];
    rows.replaceChildren(el("h3", { text: `Stored rows of ${wfName.value}` }), data.length
      ? table(data.map((r) => ({ id: r.id, intent: r.output && r.output.intent, confidence: r.output && r.output.confidence,
        low_confidence: r.output && r.output.low_confidence, fields: r.output && r.output.fields, input: r.input,
        processed: r.processed_at ? new Date(r.processed_at * 1000).toISOString().slice(0, 19) : "" })),
      ["id", "intent", "confidence", "low_confidence", "fields", "input", "processed"])
      : el("p", { class: "muted", text: "No stored runs yet." }));
  }
  wfName.addEventListener("change", action(async () => { pick(); await loadRows(); }));
  const runWorkflow = action(async () => {
    wfOut.hidden = false;
    wfOut.textContent = "Running…";
    const res = await api(`/v1/workflows/${encodeURIComponent(wfName.value)}/run`, { body: { input: parseJson(wfInput.value, "Input") } });
    wfOut.textContent = pretty(res);
    await loadRows();
  });
  const save = action(async () => {
    const out = await api("/v1/workflows", { body: parseJson(definition.value, "Workflow definition") });
    await loadList(out.name);
    await loadRows();
  });
  const panel = el("section", { class: "panel", "aria-labelledby": "h-workflow" }, el("h2", { id: "h-workflow", text: "Workflow run" }),
    el("form", { onsubmit: runWorkflow }, ...field("Workflow", wfName), about, ...field("Input (JSON object)", wfInput),
      el("button", { type: "submit", text: "Run" })), wfOut, rows,
    el("details", {}, el("summary", { text: "Save a workflow" }),
      el("form", { onsubmit: save }, ...field("Workflow definition (JSON)", definition), el("button", { type: "submit", text: "Save workflow" }))));
  panel.load = async () => { await loadList(); if (specs.length) await loadRows(); };
  return panel;
}

function analysisPanel() {
  const anCol = el("select", {});
  const anDoc = el("select", {});
  const boxes = [["summary", "Summaries"], ["action_items", "Action items"], ["risks", "Risks"]]
    .map(([value, text]) => el("label", { class: "inline" }, el("input", { type: "checkbox", value, checked: true }), " " + text));
  const progress = el("div", {});
  const anOut = el("div", { class: "analysis" });
  async function loadDocs() {
    if (!anCol.value) return anDoc.replaceChildren();
    const docs = (await api(`/v1/collections/${encodeURIComponent(anCol.value)}/documents`)).data || [];
    anDoc.replaceChildren(...docs.map((d) => el("option", { value: d.id, text: d.title ? `${d.title} (${d.id})` : d.id })));
  }
  anCol.addEventListener("change", action(loadDocs));
  const show = (results) => {
    const parts = [];
    const fallback = (r) => r.meta && r.meta.fallback ? " (extractive fallback)" : "";
    if (results.summary) {
      const s = results.summary;
      parts.push(el("h3", { text: "Summaries" + fallback(s) }), el("dl", { class: "summary" },
        ["short", "medium", "detailed"].map((k) => [el("dt", { text: k }), el("dd", { text: s[k] })])));
    }
    if (results.action_items) {
      const items = results.action_items.action_items || [];
      parts.push(el("h3", { text: `Action items (${items.length})` + fallback(results.action_items) }),
        items.length ? table(items, ["title", "owner", "due_date"]) : el("p", { class: "muted", text: "None found." }));
    }
    if (results.risks) {
      const risks = results.risks.risks || [];
      parts.push(el("h3", { text: `Risks (${risks.length})` + fallback(results.risks) }),
        risks.length ? table(risks, ["severity", "description"]) : el("p", { class: "muted", text: "None found." }));
    }
    anOut.replaceChildren(...parts);
  };
  const analyze = action(async () => {
    if (!anDoc.value) throw new ApiError("choose a collection with a document to analyze");
    const tasks = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
    const base = `/v1/collections/${encodeURIComponent(anCol.value)}/documents/${encodeURIComponent(anDoc.value)}`;
    const bar = el("progress", { max: 100, value: 0, "aria-label": "Analysis progress" });
    const label = el("span", { class: "pct", text: "0%" });
    progress.replaceChildren(el("div", { class: "upload" }, label, bar));
    anOut.replaceChildren();
    const job = await api(base + "/analyze", { body: { tasks } });
    await followJob(job, bar, label);
    show((await api(base + "/analysis")).results || {});
  });
  const panel = el("section", { class: "panel", "aria-labelledby": "h-analysis" }, el("h2", { id: "h-analysis", text: "Document analysis" }),
    el("form", { onsubmit: analyze }, ...field("Collection", anCol), ...field("Document", anDoc),
      el("fieldset", { class: "row" }, el("legend", { class: "muted", text: "Analyses" }), boxes),
      el("button", { type: "submit", text: "Analyze" })), progress, anOut);
  panel.load = async () => {
    const cols = (await api("/v1/collections")).data || [];
    anCol.replaceChildren(...cols.map((c) => el("option", { value: c.name, text: c.name })));
    await loadDocs();
  };
  return panel;
}

async function tasksView(main) {
  const workflows = workflowPanel();
  const analysis = analysisPanel();
  main.append(el("h1", { text: "Tasks" }), el("div", { class: "grid" },
    el("div", { class: "stack" }, classifierPanel()),
    el("div", { class: "stack" }, extractionPanel(), workflows, analysis)));
  await Promise.all([workflows.load(), analysis.load()]);
}

// ---- jobs, usage, benchmarks, admin ------------------------------------------------------------

function table(rows, columns) {
  return el("div", { class: "tablewrap" }, el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { text: c })))),
    el("tbody", {}, rows.map((r) => el("tr", {}, columns.map((c) => {
      const v = r[c];
      return el("td", { text: v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v) });
    }))))));
}

async function jobsView(main) {
  const status = el("select", {}, ["", "queued", "running", "succeeded", "failed", "dead", "cancelled"]
    .map((v) => el("option", { value: v, text: v || "any" })));
  const list = el("div", {});
  const dead = el("div", {});
  const post = (j, verb) => action(async () => { await api(`/v1/jobs/${encodeURIComponent(j.id)}/${verb}`, { body: {} }); await load(); });
  function row(j) {
    const actions = [];
    if (j.status === "queued" || j.status === "running") actions.push(el("button", { type: "button", class: "secondary small", text: "Cancel", "aria-label": "Cancel " + j.id, onclick: post(j, "cancel") }));
    if (j.status === "dead" || j.status === "cancelled") actions.push(el("button", { type: "button", class: "secondary small", text: "Retry", "aria-label": "Retry " + j.id, onclick: post(j, "retry") }));
    return el("tr", {}, el("td", { text: j.id }), el("td", { text: j.kind }), el("td", { class: "status-" + j.status, text: j.status }),
      el("td", { text: j.stage || "" }),
      el("td", {}, el("progress", { max: 100, value: j.progress || 0, "aria-label": `Progress of ${j.id}` }), ` ${j.progress || 0}%`),
      el("td", { text: `${j.attempts}/${j.max_attempts}` }), el("td", { text: j.error || "" }), el("td", {}, actions));
  }
  async function load() {
    const q = status.value ? "?status=" + encodeURIComponent(status.value) : "";
    const jobs = (await api("/v1/jobs" + q)).data || [];
    list.replaceChildren(jobs.length ? el("div", { class: "tablewrap" }, el("table", { class: "jobs" },
      el("thead", {}, el("tr", {}, ["id", "kind", "status", "stage", "progress", "attempts", "error", ""].map((c) => el("th", { text: c })))),
      el("tbody", {}, jobs.map(row)))) : el("p", { class: "muted", text: "No jobs." }));
    const letters = (await api("/v1/jobs?status=dead")).data || [];
    dead.replaceChildren(letters.length ? el("ul", { class: "dead" }, letters.map((j) => el("li", {},
      el("strong", { text: j.id }), ` (${j.kind}, ${j.attempts} attempts): `, el("span", { class: "bad", text: j.error || "no error recorded" }), " ",
      el("button", { type: "button", class: "secondary small", text: "Retry " + j.id, onclick: post(j, "retry") }))))
      : el("p", { class: "muted", text: "No dead letters." }));
  }
  status.addEventListener("change", action(load));
  main.append(el("h1", { text: "Jobs" }), el("div", { class: "panel" }, el("div", { class: "row" }, el("div", {}, ...field("Status", status)),
    el("button", { type: "button", class: "secondary", onclick: action(load), text: "Refresh" })), list,
    el("h2", { text: "Dead letters" }),
    el("p", { class: "muted", text: "Durable jobs that spent their attempts, with the last error. Retry puts one back in the queue with fresh attempts." }), dead));
  await load();
}

// ---- charts: inline SVG built with DOM calls (presentation attributes, no style: the CSP) -------

const PALETTE = ["#9a3412", "#1d4ed8", "#15803d", "#7e22ce", "#b45309", "#0f766e", "#be123c", "#4d7c0f"];

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, v);
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function fmt(v) {
  return v >= 1e6 ? (v / 1e6).toFixed(1) + "M" : v >= 1e4 ? Math.round(v / 1e3) + "k" : v >= 100 ? String(Math.round(v)) : String(+v.toFixed(2));
}

function legend(names) {
  return el("ul", { class: "legend" }, names.map((n, i) => el("li", {},
    svg("svg", { width: 12, height: 12, "aria-hidden": "true" }, svg("rect", { width: 12, height: 12, fill: PALETTE[i % PALETTE.length] })), " " + n)));
}

// The smallest 1, 2 or 5 × 10^k at or above v: a round top for an axis.
function niceMax(v) {
  const step = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 2.5, 5, 10].map((m) => m * step).find((m) => m >= v);
}

// Axes frame of a W×H chart with the y scale 0..max (rounded up); returns [root svg, y(value)].
function frame(title, top, width, height, pad) {
  const max = niceMax(top);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart" }, svg("title", {}, title));
  const y = (v) => height - pad.bottom - (height - pad.top - pad.bottom) * (v / max);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), stroke: "#d0d0cc" }),
      svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#444" }, fmt(v)));
  }
  return [root, y];
}

// Grouped bars: groups = [{label, values: {series: number}}].
function barChart(title, groups, series) {
  const width = 720, height = 240, pad = { left: 48, right: 8, top: 10, bottom: 36 };
  const max = Math.max(1, ...groups.flatMap((g) => series.map((s) => g.values[s] || 0)));
  const [root, y] = frame(title, max, width, height, pad);
  const slot = (width - pad.left - pad.right) / Math.max(1, groups.length);
  const bar = Math.max(2, Math.min(28, (slot - 8) / Math.max(1, series.length)));
  groups.forEach((g, gi) => {
    const x0 = pad.left + gi * slot + (slot - bar * series.length) / 2;
    series.forEach((s, si) => {
      const v = g.values[s] || 0;
      root.append(svg("rect", { x: x0 + si * bar, y: y(v), width: bar - 1, height: Math.max(0, y(0) - y(v)),
        fill: PALETTE[si % PALETTE.length], class: "bar" }, svg("title", {}, `${g.label} · ${s}: ${v}`)));
    });
    root.append(svg("text", { x: pad.left + gi * slot + slot / 2, y: height - pad.bottom + 16, "text-anchor": "middle", "font-size": 11, fill: "#444" }, g.label));
  });
  return el("figure", { class: "chart" }, root, legend(series));
}

// Lines over numeric x: series = [{name, points: [[x, y], ...]}].
function lineChart(title, series, xLabel) {
  const width = 720, height = 260, pad = { left: 48, right: 12, top: 10, bottom: 40 };
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const max = Math.max(1e-9, ...series.flatMap((s) => s.points.map((p) => p[1])));
  const [root, y] = frame(title, max, width, height, pad);
  const lo = Math.min(...xs), hi = Math.max(...xs);
  const x = (v) => pad.left + (width - pad.left - pad.right) * (hi === lo ? 0.5 : (v - lo) / (hi - lo));
  for (const v of [...new Set(xs)].sort((a, b) => a - b)) {
    root.append(svg("text", { x: x(v), y: height - pad.bottom + 16, "text-anchor": "middle", "font-size": 11, fill: "#444" }, String(v)));
  }
  root.append(svg("text", { x: width / 2, y: height - 4, "text-anchor": "middle", "font-size": 11, fill: "#444" }, xLabel));
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const pts = s.points.slice().sort((a, b) => a[0] - b[0]);
    root.append(svg("polyline", { points: pts.map((p) => `${x(p[0])},${y(p[1])}`).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    for (const p of pts) root.append(svg("circle", { cx: x(p[0]), cy: y(p[1]), r: 3.5, fill: color }, svg("title", {}, `${s.name} at ${p[0]}: ${p[1]}`)));
  });
  return el("figure", { class: "chart" }, root, legend(series.map((s) => s.name)));
}

// Distributions from percentiles: per row a min–max whisker, a p50–p90 box, a p99 tick.
function rangeChart(title, rows, unit) {
  const width = 720, rowH = 22, pad = { left: 200, right: 60, top: 8, bottom: 24 };
  const height = pad.top + pad.bottom + rowH * rows.length;
  const max = Math.max(1, ...rows.map((r) => r.d.max || r.d.p99 || 0));
  const x = (v) => pad.left + (width - pad.left - pad.right) * (v / max);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart" }, svg("title", {}, title));
  rows.forEach((r, i) => {
    const cy = pad.top + i * rowH + rowH / 2, d = r.d, color = PALETTE[(r.color ?? i) % PALETTE.length];
    root.append(svg("text", { x: pad.left - 6, y: cy + 4, "text-anchor": "end", "font-size": 11, fill: "#222" }, r.label),
      svg("line", { x1: x(d.min ?? d.median), x2: x(d.max ?? d.p99), y1: cy, y2: cy, stroke: "#666" }),
      svg("rect", { x: x(d.median), y: cy - 6, width: Math.max(1, x(d.p90) - x(d.median)), height: 12, fill: color },
        svg("title", {}, `${r.label}: p50 ${d.median} · p90 ${d.p90} · p99 ${d.p99} · max ${d.max} ${unit}`)),
      svg("line", { x1: x(d.p99), x2: x(d.p99), y1: cy - 8, y2: cy + 8, stroke: "#111", "stroke-width": 2 }),
      svg("text", { x: width - pad.right + 4, y: cy + 4, "font-size": 11, fill: "#444" }, `p50 ${fmt(d.median)}`));
  });
  root.append(svg("text", { x: pad.left, y: height - 6, "font-size": 11, fill: "#444" }, `0 – ${fmt(max)} ${unit}; box p50–p90, tick p99, line min–max`));
  return el("figure", { class: "chart" }, root);
}

async function usageView(main) {
  const days = el("select", {}, [7, 30, 90, 366].map((d) => el("option", { value: d, text: `last ${d} days`, selected: d === 30 })));
  const metric = el("select", {}, [["tokens", "tokens"], ["requests", "requests"]].map(([v, t]) => el("option", { value: v, text: t })));
  const body = el("div", {});
  async function load() {
    const res = await api(`/v1/usage?days=${days.value}`);
    const rows = res.days || [];
    const value = (r) => metric.value === "requests" ? Number(r.requests || 0) : Number(r.prompt_tokens || 0) + Number(r.completion_tokens || 0);
    const models = [...new Set(rows.map((r) => r.model))].sort();
    const dates = [...new Set(rows.map((r) => r.date))].sort();
    const groups = dates.map((d) => ({ label: d.slice(5), values: Object.fromEntries(rows.filter((r) => r.date === d).map((r) => [r.model, value(r)])) }));
    const parts = [];
    if (rows.length) {
      parts.push(barChart(metric.value === "requests" ? "Requests per day and model" : "Tokens per day and model", groups, models),
        table(rows.map((r) => ({ date: r.date, model: r.model, requests: r.requests, prompt_tokens: r.prompt_tokens,
          completion_tokens: r.completion_tokens, seconds: r.seconds, cost: r.cost })),
        ["date", "model", "requests", "prompt_tokens", "completion_tokens", "seconds", "cost"]),
        el("p", { class: "muted", text: `Estimated cost: ${res.total_cost} ${res.currency || ""}` }));
    } else {
      parts.push(el("p", { class: "muted", text: "No usage recorded in this period." }));
    }
    const tasks = Object.entries(res.tasks || {});
    if (tasks.length) {
      parts.push(el("h2", { text: "Per task" }), table(tasks.map(([task, t]) => ({ task, ...t })), ["task", ...Object.keys(tasks[0][1])]));
    }
    body.replaceChildren(...parts);
  }
  days.addEventListener("change", action(load));
  metric.addEventListener("change", action(load));
  main.append(el("h1", { text: "Usage" }), el("div", { class: "panel" },
    el("div", { class: "row" }, el("div", {}, ...field("Period", days)), el("div", {}, ...field("Chart", metric))), body));
  await load();
}

// Scalar figures of a result line, nested ones flattened one level ("ttft_ms.median").
function figuresText(figures) {
  const out = [];
  for (const [k, v] of Object.entries(figures || {})) {
    if (typeof v === "number") out.push(`${k}=${Number.isInteger(v) ? v : v.toFixed(3)}`);
    else if (v && typeof v === "object" && typeof v.median === "number") out.push(`${k}.p50=${v.median.toFixed(1)}`);
  }
  return out.slice(0, 8).join(" ");
}

// Plots drawn from the serve suite's result lines: throughput vs concurrency, TTFT/TPOT spread.
function servePlots(records) {
  const serve = records.filter((r) => r.suite === "serve" && r.figures && typeof r.figures.output_throughput === "number"
    && r.figures.ttft_ms && r.settings && r.settings.concurrency);
  if (!serve.length) return [];
  const label = (r) => r.settings.label;
  const name = (r) => r.backend + (label(r) && label(r) !== r.backend && label(r).length <= 24 ? ` (${label(r)})` : "");
  const latest = new Map(); // one point per (series, concurrency): the newest line
  for (const r of serve) latest.set(`${name(r)}|${r.settings.concurrency}`, r);
  // The series of the newest runs only (at most six), so the plots stay readable.
  const newest = [...new Set([...latest.values()].sort((a, b) => String(b.time).localeCompare(String(a.time))).map(name))].slice(0, 6);
  for (const [k, r] of latest) if (!newest.includes(name(r))) latest.delete(k);
  const series = new Map();
  for (const r of latest.values()) {
    if (!series.has(name(r))) series.set(name(r), []);
    series.get(name(r)).push([r.settings.concurrency, r.figures.output_throughput]);
  }
  const rows = [...latest.values()].sort((a, b) => name(a).localeCompare(name(b)) || a.settings.concurrency - b.settings.concurrency);
  const names = [...series.keys()];
  const dist = (key) => rows.filter((r) => r.figures[key]).map((r) => ({ label: `${name(r)} c${r.settings.concurrency}`,
    d: r.figures[key], color: names.indexOf(name(r)) }));
  return [
    el("h2", { text: "Throughput vs concurrency" }),
    lineChart("Output tokens/s vs concurrency (serve suite)", [...series].map(([n, points]) => ({ name: n, points })), "concurrent requests"),
    el("h2", { text: "TTFT distribution" }), rangeChart("Time to first token (ms) per backend and concurrency", dist("ttft_ms"), "ms"),
    el("h2", { text: "TPOT distribution" }), rangeChart("Time per output token (ms) per backend and concurrency", dist("tpot_ms"), "ms"),
  ];
}

async function benchmarksView(main) {
  const res = await api("/v1/benchmarks");
  const records = res.data || [];
  const suite = el("select", {}, ["", ...new Set(records.map((r) => r.suite))].map((s) => el("option", { value: s, text: s || "all suites" })));
  const rowsBox = el("div", {});
  // All suites: the newest three lines of each; one suite: all its latest lines.
  const showRows = () => {
    const seen = {};
    const picked = records.slice().reverse().filter((r) => suite.value ? r.suite === suite.value : (seen[r.suite] = (seen[r.suite] || 0) + 1) <= 3);
    const rows = picked.map((r) => ({
      suite: r.suite, benchmark: r.benchmark, time: (r.time || "").slice(0, 16).replace("T", " "), model: r.model,
      backend: r.backend, git: r.git_sha, figures: figuresText(r.figures) }));
    rowsBox.replaceChildren(rows.length ? table(rows, ["suite", "benchmark", "time", "model", "backend", "git", "figures"])
      : el("p", { class: "muted", text: "No benchmark results yet: run python -m benchmarks." }));
  };
  suite.addEventListener("change", showRows);
  showRows();
  const plots = el("div", {}, servePlots(records));
  for (const name of res.plots || []) {
    const resp = await fetch("/v1/benchmarks/plots/" + encodeURIComponent(name), { headers: headers(false) });
    if (!resp.ok) throw await failure(resp);
    plots.append(el("h2", { text: name }), el("img", { class: "plot", alt: "Benchmark plot " + name, src: URL.createObjectURL(await resp.blob()) }));
  }
  if (!plots.children.length) plots.append(el("p", { class: "muted", text: "No plots: run python -m benchmarks to draw them." }));
  main.append(el("h1", { text: "Benchmarks" }),
    el("section", { class: "panel", "aria-label": "Plots" }, plots),
    el("section", { class: "panel", "aria-label": "Latest results" }, el("h2", { text: "Latest results" }), ...field("Suite", suite), rowsBox));
}

// /health, /ready (the full figures with the admin key) and the models with their load state.
async function enginePanel(into) {
  const health = await fetch("/health").then((r) => r.json()).catch(() => ({ status: "unreachable" }));
  const resp = await fetch("/ready", { headers: headers(true) });
  const ready = await resp.json().catch(() => ({}));
  const stats = ready.stats || {};
  const facts = [
    ["/health", `${health.status || "?"} (engine ${health.engine || "?"})`],
    ["/ready", resp.ok ? "ready" : (ready.error && ready.error.message) || resp.status],
    ["generator", `${ready.model || "?"} on ${ready.backend || "?"}`],
    ["embedding model", ready.embedding_model || "?"],
  ];
  if (ready.stats !== undefined) {
    facts.push(["running sequences", stats.running ?? ready.inflight_sequences], ["queue depth (waiting)", stats.waiting],
      ["KV cells used", stats.kv_cells_total ? `${stats.kv_cells_used} of ${stats.kv_cells_total}` : ""],
      ["uptime", ready.uptime_s !== undefined ? `${ready.uptime_s} s` : ""]);
  } else {
    facts.push(["running, queue depth", "shown with the admin key"]);
  }
  const models = await loadModels().catch(() => state.models);
  into.replaceChildren(el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v === undefined || v === null ? "" : String(v) })])),
    el("h3", { text: "Models" }),
    table(models.map((m) => ({ model: m.id, state: m.state || "", capabilities: (m.capabilities || []).join(", "),
      format: m.format || "", context: m.max_model_len || "" })), ["model", "state", "capabilities", "format", "context"]));
}

async function adminView(main) {
  const key = el("input", { type: "password", autocomplete: "off" });
  const body = el("div", {}, el("p", { class: "muted", text: "Unlock with the admin key (HEARTH_ADMIN_KEY) to manage tenants, keys and limits." }));
  const engine = el("div", {});
  const once = el("pre", { class: "once", hidden: true, role: "status" });
  async function load() {
    const tenants = (await api("/v1/admin/tenants", { admin: true })).data;
    const tname = el("input", { placeholder: "acme" });
    const parts = [el("h2", { text: "Tenants" }), table(tenants, ["name", "id", "created_at"]),
      el("form", { onsubmit: action(async () => { await api("/v1/admin/tenants", { admin: true, body: { name: tname.value.trim() } }); await load(); }) },
        ...field("New tenant", tname), el("button", { type: "submit", text: "Create tenant" }))];
    for (const t of tenants) {
      const id = t.name || t.id;
      const keys = (await api(`/v1/admin/tenants/${encodeURIComponent(id)}/keys`, { admin: true })).data;
      const limits = await api(`/v1/admin/limits/${encodeURIComponent(id)}`, { admin: true });
      const overrides = el("textarea", { rows: 3, text: pretty(limits.overrides || {}) });
      const keyName = el("input", { placeholder: "optional" });
      const keyRows = keys.map((k) => el("tr", { class: k.revoked ? "revoked" : "" }, el("td", { text: k.id }), el("td", { text: k.name || "" }),
        el("td", { text: k.prefix }), el("td", { text: k.revoked ? "revoked" : "active" }),
        el("td", {}, k.revoked ? "" : el("button", { type: "button", class: "secondary small", text: "Revoke " + k.id,
          onclick: action(async () => { await api(`/v1/admin/keys/${encodeURIComponent(k.id)}/revoke`, { admin: true, body: {} }); await load(); }) }))));
      parts.push(el("section", { class: "tenant", "aria-label": "Tenant " + id },
        el("h2", { text: "Limits of " + id }),
        el("pre", { class: "limits", text: "effective: " + pretty(limits.effective) }),
        el("form", { onsubmit: action(async () => {
          await api(`/v1/admin/limits/${encodeURIComponent(id)}`, { admin: true, method: "PUT", body: { limits: parseJson(overrides.value, "Limit overrides") } });
          await load();
        }) }, ...field(`Limit overrides of ${id} (JSON; null removes, 0 is unlimited)`, overrides),
          el("button", { type: "submit", text: "Save limits of " + id })),
        el("h2", { text: "Keys of " + id }),
        keys.length ? el("div", { class: "tablewrap" }, el("table", { class: "keys" }, el("thead", {}, el("tr", {},
          ["id", "name", "prefix", "state", ""].map((c) => el("th", { text: c })))), el("tbody", {}, keyRows)))
          : el("p", { class: "muted", text: "No keys." }),
        el("form", { onsubmit: action(async () => {
          const k = await api(`/v1/admin/tenants/${encodeURIComponent(id)}/keys`, { admin: true, body: keyName.value.trim() ? { name: keyName.value.trim() } : {} });
          await load();
          once.textContent = "New key (shown once): " + k.key;
          once.hidden = false;
        }) }, ...field(`Name of a new key for ${id}`, keyName), el("button", { type: "submit", text: "Create key for " + id }))));
    }
    body.replaceChildren(...parts);
    await enginePanel(engine);
  }
  const unlock = action(async () => {
    sessionStorage.setItem(ADMIN_KEY, key.value.trim());
    once.hidden = true;
    try {
      await load();
    } catch (e) {
      sessionStorage.removeItem(ADMIN_KEY);
      throw e;
    }
  });
  main.append(el("h1", { text: "Admin" }), el("div", { class: "grid" },
    el("div", { class: "panel" }, el("form", { onsubmit: unlock }, ...field("Admin key", key), el("button", { type: "submit", text: "Unlock" }))),
    el("section", { class: "panel", "aria-labelledby": "h-engine" }, el("h2", { id: "h-engine", text: "Engine" }), engine,
      el("button", { type: "button", class: "secondary", text: "Refresh engine state", onclick: action(() => enginePanel(engine)) }))),
  el("div", { class: "panel wide" }, once, body));
  await enginePanel(engine);
  if (sessionStorage.getItem(ADMIN_KEY)) await load();
}

// ---- router -----------------------------------------------------------------------------------

const VIEWS = { chat: chatView, documents: documentsView, tasks: tasksView, jobs: jobsView,
  usage: usageView, benchmarks: benchmarksView, admin: adminView };

async function route() {
  const main = document.getElementById("main");
  main.replaceChildren();
  const name = (location.hash || "#chat").slice(1);
  const signedIn = state.mode !== null || await detectMode();
  document.getElementById("signout").hidden = state.mode !== "key";
  document.getElementById("who").textContent = state.mode === "open" ? "open mode (loopback)" : state.mode === "key" ? "signed in" : "";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === "#" + name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!signedIn) return signInView(main);
  await (VIEWS[name] || chatView)(main);
  document.body.dataset.view = name;
}

function start() {
  const go = () => route().catch((e) => showError(e instanceof ApiError ? e.message : "Error: " + e.message));
  window.addEventListener("hashchange", () => { showError(""); go(); });
  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ADMIN_KEY);
    state.mode = null;
    go();
  });
  go();
}

start();
