// The chat form: posts the question, reads the answer as server-sent events and shows it as it comes.
// (htmx does the rest of the page; streaming a POST needs fetch.)
"use strict";
(function () {
  const form = document.getElementById("chat-form");
  if (!form) return;
  const conversation = document.getElementById("conversation");
  const status = document.getElementById("status");
  const stop = document.getElementById("stop");
  let controller = null;

  function bubble(role, text) {
    const div = document.createElement("div");
    div.className = "msg " + role;
    const body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    div.appendChild(body);
    conversation.appendChild(div);
    return div;
  }

  function references(div, refs) {
    if (!refs.length) return;
    const ul = document.createElement("ul");
    ul.className = "refs";
    for (const r of refs) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = r.vscode; a.textContent = r.label; a.title = r.path;
      const f = document.createElement("a");
      f.href = r.file; f.textContent = "file"; f.className = "file";
      li.append(a, " ", f);
      ul.appendChild(li);
    }
    div.appendChild(ul);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new URLSearchParams(new FormData(form));
    const message = data.get("message").trim();
    if (!message) return;
    bubble("user", message);
    const answer = bubble("assistant", "");
    answer.classList.add("streaming");
    const text = answer.querySelector(".text");
    form.message.value = "";
    status.textContent = "thinking…";
    stop.hidden = false;
    controller = new AbortController();
    try {
      const response = await fetch("/ui/chat", {method: "POST", body: data, signal: controller.signal});
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let kind = "message", payload = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) kind = line.slice(6).trim();
            else if (line.startsWith("data:")) payload += line.slice(5).trim();
          }
          if (!payload) continue;
          const value = JSON.parse(payload);
          if (kind === "progress") {
            status.textContent = `reading the question and its context: ${Math.round(100 * value.read / value.total)}% of ${value.total} tokens…`;
          } else if (kind === "delta") { text.textContent += value; status.textContent = "writing…"; }
          else if (kind === "done") {
            text.textContent = value.text;
            references(answer, value.references);
            form.session.value = value.session;
            conversation.dataset.session = value.session;
            status.textContent = `${value.model}, prompt ${value.promptVersion}`;
            answer.classList.remove("streaming");
            answer.classList.add("done");
          } else if (kind === "error") { text.textContent = value; answer.classList.add("error"); status.textContent = ""; }
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") text.textContent += "\n[" + e + "]";
      else status.textContent = "stopped";
    } finally {
      stop.hidden = true;
      controller = null;
    }
  });
  stop.addEventListener("click", () => controller && controller.abort());
  form.message.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
})();
