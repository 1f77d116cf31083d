// The chat panel's webview script. It only renders what the extension posts (src/chat.ts,
// ToPanel) and posts the user's actions back (FromPanel); all state lives in the extension.
// renderMarkdown is also loaded by the tests under Node (module.exports at the end).
(function () {
  'use strict';

  function escapeHtml(s) {
    return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  }

  function inline(s) {
    // `code`, **bold**, on already escaped text.
    return s.replace(/`([^`\n]+)`/g, '<code>$1</code>').replace(/\*\*([^*\n]+)\*\*/g, '<strong>$1</strong>');
  }

  /** The small Markdown the server's replies use: fenced code blocks, inline code, bold, paragraphs. */
  function renderMarkdown(text) {
    const out = [];
    const parts = String(text).split(/^```/m);
    parts.forEach(function (part, i) {
      if (i % 2 === 1) {
        const nl = part.indexOf('\n');
        const lang = nl < 0 ? '' : part.slice(0, nl).trim();
        const code = nl < 0 ? part : part.slice(nl + 1);
        out.push('<pre><code' + (lang ? ' data-lang="' + escapeHtml(lang) + '"' : '') + '>' +
          escapeHtml(code.replace(/\n$/, '')) + '</code></pre>');
      } else {
        part.split(/\n{2,}/).forEach(function (para) {
          if (para.trim()) {
            out.push('<p>' + inline(escapeHtml(para.trim())).replace(/\n/g, '<br>') + '</p>');
          }
        });
      }
    });
    return out.join('');
  }

  if (typeof module !== 'undefined' && module.exports) {
    module.exports = { renderMarkdown: renderMarkdown, escapeHtml: escapeHtml };
    return;
  }

  const vscode = acquireVsCodeApi();
  const log = document.getElementById('log');
  const input = document.getElementById('input');
  const sendButton = document.getElementById('send');
  const stopButton = document.getElementById('stop');
  const nodes = new Map();  // entry id -> {entry, body}

  function renderEntry(entry) {
    let item = nodes.get(entry.id);
    if (!item) {
      const div = document.createElement('div');
      const body = document.createElement('div');
      body.className = 'body';
      div.appendChild(body);
      log.appendChild(div);
      item = { div: div, body: body, entry: entry };
      nodes.set(entry.id, item);
    }
    item.entry = entry;
    item.div.className = 'entry ' + entry.role;
    item.body.innerHTML = entry.role === 'user' ? '<p>' + escapeHtml(entry.text) + '</p>' :
      (entry.text ? renderMarkdown(entry.text) : '<p class="waiting">' + escapeHtml(entry.note || '…') + '</p>');
    // A code block of a reply: Insert at cursor, Copy, and Apply when the question was about a selection.
    if (entry.role === 'assistant') {
      item.body.querySelectorAll('pre').forEach(function (pre) {
        const code = pre.textContent;
        const bar = document.createElement('div');
        bar.className = 'code-actions';
        const actions = [['insert', 'Insert at cursor'], ['copy', 'Copy']];
        if (entry.target) {
          actions.push(['apply', 'Apply']);
        }
        actions.forEach(function (a) {
          const b = document.createElement('button');
          b.className = 'code-action';
          b.dataset.action = a[0];
          b.textContent = a[1];
          b.title = a[0] === 'apply' ? 'Replace the selection you asked about (shown as a diff first)' : a[1];
          b.addEventListener('click', function () {
            vscode.postMessage({ type: a[0], id: entry.id, code: code });
            if (a[0] === 'copy') {
              b.textContent = 'Copied';
              setTimeout(function () { b.textContent = 'Copy'; }, 1500);
            }
          });
          bar.appendChild(b);
        });
        pre.parentNode.insertBefore(bar, pre.nextSibling);  // under the block it acts on
      });
    }
    const old = item.div.querySelector('.refs');
    if (old) { old.remove(); }
    if (entry.references && entry.references.length) {
      const refs = document.createElement('div');
      refs.className = 'refs';
      entry.references.forEach(function (ref) {
        const a = document.createElement('a');
        a.href = '#';
        a.textContent = ref.label;
        a.title = ref.uri;
        a.addEventListener('click', function (ev) {
          ev.preventDefault();
          vscode.postMessage({ type: 'open', uri: ref.uri, range: ref.range });
        });
        refs.appendChild(a);
      });
      item.div.appendChild(refs);
    }
    log.scrollTop = log.scrollHeight;
  }

  function setBusy(busy) {
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
  }

  window.addEventListener('message', function (event) {
    const msg = event.data;
    if (msg.type === 'entries') {
      log.innerHTML = '';
      nodes.clear();
      msg.entries.forEach(renderEntry);
      setBusy(msg.busy);
    } else if (msg.type === 'entry' || msg.type === 'done') {
      renderEntry(msg.entry);
    } else if (msg.type === 'delta') {
      const item = nodes.get(msg.id);
      if (item) {
        item.entry.text += msg.text;
        renderEntry(item.entry);
      }
    } else if (msg.type === 'busy') {
      setBusy(msg.busy);
    }
  });

  let draftTimer;  // typing paused: see the input listener below

  function send() {
    const text = input.value.trim();
    if (text) {
      clearTimeout(draftTimer);
      vscode.postMessage({ type: 'send', text: text });
      input.value = '';
    }
  }
  sendButton.addEventListener('click', send);
  stopButton.addEventListener('click', function () { vscode.postMessage({ type: 'stop' }); });
  // Typing paused for 500 ms: the question so far goes to the extension, which has the server read
  // the workspace code it will likely find (deepseek/assistAhead's draft).
  input.addEventListener('input', function () {
    clearTimeout(draftTimer);
    draftTimer = setTimeout(function () { vscode.postMessage({ type: 'draft', text: input.value }); }, 500);
  });
  input.addEventListener('keydown', function (ev) {
    if (ev.key === 'Enter' && !ev.shiftKey) {
      ev.preventDefault();
      send();
    }
  });
  // The panel got the focus: the user is about to ask, so the extension has the server read ahead.
  window.addEventListener('focus', function () { vscode.postMessage({ type: 'focus' }); });
  vscode.postMessage({ type: 'ready' });
})();
