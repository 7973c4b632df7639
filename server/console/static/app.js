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
  for (const c of children.flat()) {
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
  const tools = el("textarea", { rows: 4, placeholder: '[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]' });
  const messages = el("div", { class: "messages", "aria-live": "polite" });
  const input = el("textarea", { rows: 3, placeholder: "Ask something (Ctrl+Enter sends)" });
  const structured = el("div", {});
  const snippet = el("pre", { hidden: true });
  const history = [];

  function request(stream) {
    const msgs = [];
    if (system.value.trim()) msgs.push({ role: "system", content: system.value.trim() });
    msgs.push(...history);
    const body = { model: model.value, messages: msgs, temperature: Number(temperature.value),
      max_tokens: Number(maxTokens.value) };
    if (seed.value !== "") body.seed = Number(seed.value);
    if (schemaOn.checked) {
      body.response_format = { type: "json_schema",
        json_schema: { name: "console", schema: JSON.parse(schema.value), strict: true } };
    }
    if (tools.value.trim()) body.tools = JSON.parse(tools.value);
    if (stream) { body.stream = true; body.stream_options = { include_usage: true }; }
    return body;
  }

  const send = action(async () => {
    const text = input.value.trim();
    if (!text) return;
    history.push({ role: "user", content: text });
    messages.append(el("div", { class: "msg user", text }));
    input.value = "";
    const answer = el("div", { class: "msg assistant" });
    const stats = el("div", { class: "stats" });
    messages.append(answer, stats);
    structured.replaceChildren();
    const body = request(true);
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
          const slot = calls[call.index] || (calls[call.index] = { name: "", arguments: "" });
          if (call.function && call.function.name) slot.name += call.function.name;
          if (call.function && call.function.arguments) slot.arguments += call.function.arguments;
        }
        if (choice.schema_report) report = choice.schema_report;
      }
    });
    const end = performance.now();
    history.push({ role: "assistant", content });
    if (calls.length) {
      answer.append(el("div", { class: "muted", text: "Tool calls:" }),
        el("pre", { class: "toolcalls", text: calls.map((c) => c.name + "(" + c.arguments + ")").join("\n") }));
    }
    if (rag) answer.append(ragExtra(rag));
    const parts = [];
    if (usage) parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
    if (first !== null) parts.push(`TTFT ${Math.round(first - t0)} ms`);
    if (usage && first !== null && end > first) {
      parts.push(`${(usage.completion_tokens / ((end - first) / 1000)).toFixed(1)} tok/s`);
    }
    stats.textContent = parts.join(" · ");
    if (schemaOn.checked) {
      let parsed;
      try { parsed = JSON.parse(content); } catch (e) { parsed = null; }
      structured.append(el("h2", { text: "Validated object" }),
        el("pre", { class: "validated", text: parsed === null ? "(not valid JSON)" : pretty(parsed) }));
      if (report) structured.append(el("h2", { text: "schema_report" }), el("pre", { class: "report", text: pretty(report) }));
    }
  });
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) send(ev); });

  function copy(kind) {
    return action(async () => {
      const body = request(false);
      const origin = location.origin;
      const text = kind === "curl"
        ? `curl ${origin}/v1/chat/completions \\\n  -H "Authorization: Bearer $HEARTH_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${JSON.stringify(body)}'`
        : `from openai import OpenAI\n\nclient = OpenAI(base_url="${origin}/v1", api_key=os.environ.get("HEARTH_API_KEY", "none"))\nbody = ${JSON.stringify(body, null, 4)}\nresponse = client.chat.completions.create(**body)\nprint(response.choices[0].message.content)`.replace("from openai", "import os\nfrom openai");
      snippet.textContent = text;
      snippet.hidden = false;
      if (navigator.clipboard) await navigator.clipboard.writeText(text).catch(() => {});
    });
  }

  main.append(el("h1", { text: "Chat playground" }), el("div", { class: "grid" },
    el("div", { class: "panel" },
      ...field("Model", model), ...field("System prompt", system),
      el("div", { class: "row" }, el("div", {}, ...field("Temperature", temperature)),
        el("div", {}, ...field("Max tokens", maxTokens)), el("div", {}, ...field("Seed", seed))),
      el("label", {}, schemaOn, " JSON-schema mode"), ...field("JSON schema", schema),
      ...field("Tools (JSON array, optional)", tools),
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
  let current = null;

  async function refresh() {
    const cols = (await api("/v1/collections")).data;
    list.replaceChildren(...cols.map((c) => el("li", {}, el("a", { href: "#documents", onclick: action(() => open(c.name)),
      text: `${c.name}${c.documents !== undefined ? ` (${c.documents} docs)` : ""}` }))));
    if (!cols.length) list.append(el("li", { class: "muted", text: "No collections yet." }));
  }

  async function open(col) {
    current = col;
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
    drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); upload(ev.dataTransfer.files); });

    const query = el("input", { placeholder: "search this collection" });
    const modeBox = el("fieldset", { class: "row" }, el("legend", { class: "muted", text: "Mode" }),
      ["dense", "lexical", "hybrid"].map((m) => el("label", {}, el("input", { type: "radio", name: "mode", value: m, checked: m === "hybrid" }), " " + m)));
    const hits = el("tbody", {});
    const search = action(async () => {
      const mode = modeBox.querySelector("input:checked").value;
      const res = await api("/v1/retrieve", { body: { collection: col, query: query.value, mode, top_k: 5 } });
      hits.replaceChildren(...res.data.map((h) => el("tr", {}, el("td", { text: h.score.toFixed(3) }),
        el("td", { text: h.document_id }), el("td", { class: "chunk", text: h.text }))));
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
      el("div", { class: "tablewrap" }, el("table", { class: "hits" }, el("thead", {}, el("tr", {}, el("th", { text: "Score" }), el("th", { text: "Document" }), el("th", { text: "Text" }))), hits)),
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
  return refresh();
}

// One file: multipart upload, then its job's progress events until done.
async function uploadOne(col, file, into) {
  const bar = el("progress", { max: 100, value: 0, "aria-label": "Upload of " + file.name });
  const label = el("span", { class: "pct", text: "0%" });
  into.append(el("div", { class: "upload" }, el("span", { text: file.name + " " }), label, bar));
  const form = new FormData();
  form.append("file", file, file.name);
  const job = await api(`/v1/collections/${encodeURIComponent(col)}/documents`, { form });
  let last = job;
  const show = (j) => {
    const pct = j.status === "succeeded" || j.status === "completed" || j.status === "done" ? 100 : Math.round(100 * (j.progress || 0));
    bar.value = pct;
    label.textContent = pct + "% " + j.status;
  };
  show(job);
  await sse(`/v1/jobs/${encodeURIComponent(job.id)}/events`, { headers: headers(false) }, (event, data) => {
    last = JSON.parse(data);
    show(last);
  });
  if (last.error || last.status === "failed") {
    label.className = "pct bad";
    throw new ApiError(`${file.name}: ${last.error || "ingestion failed"}`);
  }
  bar.value = 100;
  label.textContent = "100% " + last.status;
}

// ---- tasks ------------------------------------------------------------------------------------

function tasksView(main) {
  const cname = el("input", { value: "intents" });
  const csv = el("input", { type: "file", accept: ".csv,text/csv" });
  const created = el("div", {});
  const createClassifier = action(async () => {
    if (!csv.files.length) throw new ApiError("choose a CSV file with columns text,label");
    const form = new FormData();
    form.append("name", cname.value.trim());
    form.append("file", csv.files[0], csv.files[0].name);
    const out = await api("/v1/classifiers", { form });
    created.replaceChildren(el("p", { class: "ok created", text: `Classifier ${out.name || cname.value} version ${out.version ?? "?"} ready.` }));
  });
  const tryText = el("input", { placeholder: "Text to classify" });
  const result = el("div", {});
  const classify = action(async () => {
    const res = await api("/v1/classify", { body: { classifier: cname.value.trim(), input: tryText.value } });
    const p = res.data[0];
    const scores = Object.entries(p.scores || {}).sort((a, b) => b[1] - a[1]);
    result.replaceChildren(el("p", { class: "prediction" }, "Label: ", el("strong", { class: "label", text: p.abstained ? "(abstained)" : p.label }),
      ` · confidence ${Number(p.confidence).toFixed(3)} · ${p.source}`),
      el("table", {}, el("tbody", {}, scores.map(([l, s]) => el("tr", {}, el("td", { text: l }), el("td", { text: Number(s).toFixed(3) }))))));
  });

  const exSchema = el("textarea", { rows: 5, text: pretty({ type: "object", properties: { name: { type: "string" }, date: { type: "string" } }, required: ["name", "date"] }) });
  const exText = el("textarea", { rows: 3, text: "Alice Moreau signed the lease on 3 March 2024." });
  const exOut = el("pre", { hidden: true });
  const extract = action(async () => {
    const res = await api("/v1/extract", { body: { schema: JSON.parse(exSchema.value), input: exText.value } });
    exOut.textContent = pretty(res);
    exOut.hidden = false;
  });

  const wfName = el("input", { placeholder: "workflow name" });
  const wfInput = el("textarea", { rows: 2, placeholder: "input text or JSON object" });
  const wfOut = el("pre", { hidden: true });
  const runWorkflow = action(async () => {
    let input = wfInput.value;
    try { input = JSON.parse(input); } catch (e) { /* plain text input */ }
    const res = await api(`/v1/workflows/${encodeURIComponent(wfName.value.trim())}/runs`, { body: { input } });
    wfOut.textContent = pretty(res);
    wfOut.hidden = false;
  });

  const anCol = el("input", { placeholder: "collection" });
  const anDoc = el("input", { placeholder: "document id" });
  const anOut = el("pre", { hidden: true });
  const analyze = action(async () => {
    const res = await api(`/v1/collections/${encodeURIComponent(anCol.value.trim())}/documents/${encodeURIComponent(anDoc.value.trim())}/analyze`, { body: {} });
    anOut.textContent = pretty(res);
    anOut.hidden = false;
  });

  main.append(el("h1", { text: "Tasks" }), el("div", { class: "grid" },
    el("div", { class: "panel" }, el("h2", { text: "Classifier from CSV" }),
      el("form", { onsubmit: createClassifier }, ...field("Name", cname), ...field("CSV (text,label)", csv),
        el("button", { type: "submit", text: "Create classifier" })), created,
      el("form", { onsubmit: classify }, ...field("Try an input", tryText), el("button", { type: "submit", text: "Classify" })), result),
    el("div", { class: "panel" }, el("h2", { text: "Extraction" }),
      el("form", { onsubmit: extract }, ...field("Schema", exSchema), ...field("Text", exText), el("button", { type: "submit", text: "Extract" })), exOut,
      el("h2", { text: "Workflow run" }),
      el("form", { onsubmit: runWorkflow }, ...field("Workflow", wfName), ...field("Input", wfInput), el("button", { type: "submit", text: "Run" })), wfOut,
      el("h2", { text: "Document analysis" }),
      el("form", { onsubmit: analyze }, ...field("Collection", anCol), ...field("Document", anDoc), el("button", { type: "submit", text: "Analyze" })), anOut)));
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
  const columns = ["id", "kind", "status", "stage", "progress", "attempts", "error"];
  async function load() {
    const q = status.value ? "?status=" + encodeURIComponent(status.value) : "";
    const jobs = (await api("/v1/jobs" + q)).data || [];
    list.replaceChildren(jobs.length ? table(jobs, columns) : el("p", { class: "muted", text: "No jobs." }));
    const letters = (await api("/v1/jobs?status=dead")).data || [];
    dead.replaceChildren(letters.length ? el("ul", {}, letters.map((j) => el("li", {},
      `${j.id} (${j.kind}): ${j.error || "no error recorded"} `,
      el("button", { type: "button", class: "secondary", text: "Retry " + j.id,
        onclick: action(async () => { await api(`/v1/jobs/${encodeURIComponent(j.id)}/retry`, { body: {} }); await load(); }) }))))
      : el("p", { class: "muted", text: "No dead letters." }));
  }
  status.addEventListener("change", action(load));
  main.append(el("h1", { text: "Jobs" }), el("div", { class: "panel" }, ...field("Status", status),
    el("button", { type: "button", class: "secondary", onclick: action(load), text: "Refresh" }), list,
    el("h2", { text: "Dead letters" }), dead));
  await load();
}

async function usageView(main) {
  const res = await api("/v1/usage");
  const rows = res.data || res.days || res.by_day || [];
  const panel = el("div", { class: "panel" });
  if (Array.isArray(rows) && rows.length) {
    const tokens = (r) => Number(r.total_tokens ?? ((r.prompt_tokens || 0) + (r.completion_tokens || 0)));
    const max = Math.max(1, ...rows.map(tokens));
    panel.append(el("div", { class: "bars", role: "img", "aria-label": "Tokens per day and model" },
      rows.map((r) => el("div", { title: `${r.date || ""} ${r.model || ""}: ${tokens(r)} tokens`, height: `${Math.round(100 * tokens(r) / max)}%` }))));
    panel.append(table(rows, Object.keys(rows[0])));
  } else {
    panel.append(el("pre", { text: pretty(res) }));
  }
  main.append(el("h1", { text: "Usage" }), panel);
}

async function benchmarksView(main) {
  const res = await api("/v1/benchmarks");
  const rows = (res.data || []).slice().reverse().map((r) => {
    const figures = Object.entries(r).filter(([, v]) => typeof v === "number")
      .map(([k, v]) => `${k}=${Number.isInteger(v) ? v : v.toFixed(3)}`).join(" ");
    return { suite: r.suite, time: r.time, model: r.model, backend: r.backend, figures };
  });
  const panel = el("div", { class: "panel" });
  panel.append(rows.length ? table(rows, ["suite", "time", "model", "backend", "figures"]) : el("p", { class: "muted", text: "No benchmark results yet." }));
  const plots = el("div", {});
  for (const name of res.plots || []) {
    const resp = await fetch("/v1/benchmarks/plots/" + encodeURIComponent(name), { headers: headers(false) });
    if (!resp.ok) throw await failure(resp);
    plots.append(el("h2", { text: name }), el("img", { class: "plot", alt: "Benchmark plot " + name, src: URL.createObjectURL(await resp.blob()) }));
  }
  main.append(el("h1", { text: "Benchmarks" }), el("div", { class: "panel" }, el("h2", { text: "Plots" }),
    (res.plots || []).length ? plots : el("p", { class: "muted", text: "No plots: run python -m benchmarks to draw them." })), panel);
}

async function adminView(main) {
  const key = el("input", { type: "password", autocomplete: "off" });
  const body = el("div", {});
  const health = await fetch("/ready").then((r) => r.json()).catch(() => ({}));
  async function load() {
    const tenants = (await api("/v1/admin/tenants", { admin: true })).data;
    const tname = el("input", { placeholder: "acme" });
    const once = el("pre", { class: "once", hidden: true });
    body.replaceChildren(el("h2", { text: "Tenants" }), table(tenants, Object.keys(tenants[0] || { id: 1 })),
      el("form", { onsubmit: action(async () => { await api("/v1/admin/tenants", { admin: true, body: { name: tname.value.trim() } }); await load(); }) },
        ...field("New tenant", tname), el("button", { type: "submit", text: "Create tenant" })));
    for (const t of tenants) {
      const id = t.name || t.id;
      const keys = (await api(`/v1/admin/tenants/${encodeURIComponent(id)}/keys`, { admin: true })).data;
      const limits = await api(`/v1/admin/limits/${encodeURIComponent(id)}`, { admin: true });
      const overrides = el("textarea", { rows: 3, text: pretty(limits.overrides || {}) });
      body.append(el("h2", { text: "Limits of " + id }),
        el("pre", { class: "limits", text: "effective: " + pretty(limits.effective) }),
        el("form", { onsubmit: action(async () => {
          await api(`/v1/admin/limits/${encodeURIComponent(id)}`, { admin: true, method: "PUT", body: { limits: JSON.parse(overrides.value) } });
          await load();
        }) }, ...field(`Limit overrides of ${id} (JSON; null removes, 0 is unlimited)`, overrides),
          el("button", { type: "submit", text: "Save limits of " + id })));
      body.append(el("h2", { text: "Keys of " + id }), table(keys, Object.keys(keys[0] || { id: 1 })),
        el("button", { type: "button", onclick: action(async () => {
          const k = await api(`/v1/admin/tenants/${encodeURIComponent(id)}/keys`, { admin: true, body: {} });
          await load();
          const shown = body.querySelector("pre.once");
          shown.textContent = "New key (shown once): " + k.key;
          shown.hidden = false;
        }), text: "Create key for " + id }),
        keys.filter((k) => !k.revoked && !k.revoked_at).map((k) => el("button", { type: "button", class: "secondary",
          onclick: action(async () => { await api(`/v1/admin/keys/${encodeURIComponent(k.id)}/revoke`, { admin: true, body: {} }); await load(); }),
          text: "Revoke " + k.id })));
    }
    body.prepend(once);
  }
  main.append(el("h1", { text: "Admin" }), el("div", { class: "grid" },
    el("div", { class: "panel" }, el("form", { onsubmit: action(async () => { sessionStorage.setItem(ADMIN_KEY, key.value.trim()); await load(); }) },
      ...field("Admin key", key), el("button", { type: "submit", text: "Unlock" })),
      el("h2", { text: "Engine" }), el("pre", { class: "health", text: pretty(health) })),
    el("div", { class: "panel" }, body)));
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
