// The live answer view (an anywidget ES module, loaded as is: no build step).
// Text arrives as deltas in custom messages, {append: "..."} (or {reset: ""} when a tool round starts
// over), and is appended as text nodes: each update costs what is new, never the whole answer.
// header, note, status and footer are small synced traits; `text` is set once, when the kernel keeps
// this widget as the final display, so a re-render after a reload still has the whole answer.
// Everything is shown with textContent: no string from the server is ever parsed as HTML.

const LIVE = new Map(); // widget key -> {text, views}: deltas may arrive before any view exists

function initialize({ model }) {
  const key = model.get("key");
  const live = { text: model.get("text"), views: new Set() };
  LIVE.set(key, live);
  model.on("msg:custom", (msg) => {
    if (typeof msg?.append === "string") {
      live.text += msg.append;
      for (const view of live.views) view.append(msg.append);
    } else if (typeof msg?.reset === "string") {
      live.text = msg.reset;
      for (const view of live.views) view.reset(live.text);
    }
  });
  model.on("change:text", () => {
    live.text = model.get("text");
    for (const view of live.views) view.reset(live.text);
  });
  return () => LIVE.delete(key);
}

function part(el, name) {
  const div = document.createElement("div");
  div.className = `nbopenai-answer-${name}`;
  el.appendChild(div);
  return div;
}

function render({ model, el }) {
  const live = LIVE.get(model.get("key")) ?? { text: model.get("text"), views: new Set() };
  el.classList.add("nbopenai-answer");
  const [header, body, note, status, footer] = ["header", "body", "note", "status", "footer"].map((n) => part(el, n));
  const view = { append: (delta) => body.append(delta), reset: (text) => { body.textContent = text; } };
  const show = () => {
    header.textContent = model.get("header");
    note.textContent = model.get("note");
    status.textContent = model.get("status");
    footer.textContent = model.get("footer");
    el.classList.toggle("nbopenai-answer-streaming", model.get("streaming"));
  };
  view.reset(live.text);
  show();
  live.views.add(view);
  model.on("change", show);
  return () => live.views.delete(view);
}

export default { initialize, render };
