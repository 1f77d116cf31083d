// The chat panel's webview script. It only renders what the extension posts (src/chat.ts,
// ToPanel) and posts the user's actions back (FromPanel); all state lives in the extension.
// renderMarkdown and renderAgent (an agent run's steps, answer, edits, check and Apply fix) are
// also loaded by the tests under Node (module.exports).
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

  /** A step's tool call as one line: `run_tests {"selector": "tests/test_a.py"}`. */
  function callText(step) {
    return step.tool + (step.arguments ? ' ' + JSON.stringify(step.arguments) : '');
  }

  /**
   * An agent step as a collapsible block: `[step 2] run_tests ok · 1.4 s` (failed ones marked), then
   * the thought, the call and the observation. `open`: shown unfolded.
   */
  function renderStep(step, open) {
    const status = step.ok ? 'ok' : 'failed';
    return '<details class="step ' + status + '" data-index="' + Number(step.index) + '"' + (open ? ' open' : '') + '>' +
      '<summary>[step ' + Number(step.index) + '] ' + escapeHtml(step.tool) + ' <span class="status">' + status + '</span>' +
      ' · ' + Number(step.seconds).toFixed(1) + ' s</summary>' +
      (step.thought ? '<p class="thought">' + escapeHtml(step.thought).replace(/\n/g, '<br>') + '</p>' : '') +
      '<pre class="call"><code>' + escapeHtml(callText(step)) + '</code></pre>' +
      '<pre class="observation">' + escapeHtml(step.observation) + '</pre></details>';
  }

  /** An edit's diff lines ([' ' | '-' | '+', text]) as a small unified diff. */
  function renderDiff(diff) {
    const kinds = { ' ': 'same', '-': 'del', '+': 'add' };
    return '<pre class="diff">' + diff.map(function (d) {
      return '<span class="' + kinds[d[0]] + '">' + escapeHtml(d[0] + ' ' + d[1]) + '</span>';
    }).join('\n') + '</pre>';
  }

  /**
   * An agent entry (src/chat.ts, Entry with `agent`): its steps, then, once it ended, how, the answer,
   * each edit as a diff, the check, and Apply fix (a verified run) or why it cannot be applied, then
   * what Apply did. `openSteps`: the indexes of the steps the user unfolded.
   */
  function renderAgent(entry, openSteps) {
    const run = entry.agent;
    const open = openSteps || [];
    const out = run.steps.map(function (step) { return renderStep(step, open.indexOf(step.index) >= 0); });
    const end = run.end;
    if (entry.role === 'error') {
      out.push('<p class="agent-error">' + escapeHtml(entry.text) + '</p>');
    } else if (!end) {
      out.push('<p class="waiting">step ' + (run.steps.length + 1) + ': working…</p>');
    } else {
      out.push('<p class="outcome">' + escapeHtml(end.outcome) + '</p>');
      out.push('<div class="answer">' + renderMarkdown(end.answer) + '</div>');
      end.edits.forEach(function (e) {
        out.push('<div class="edit"><div class="file" title="' + escapeHtml(e.uri) + '">' + escapeHtml(e.label) + '</div>' +
          renderDiff(e.diff) + '</div>');
      });
      if (end.check) {
        const failed = end.check.failed && end.check.failed.length ? ' (failed: ' + end.check.failed.join(', ') + ')' : '';
        out.push('<p class="check ' + escapeHtml(end.check.verdict) + '">Check: ' + escapeHtml(end.check.verdict) + ', ' +
          escapeHtml(end.check.summary + failed) + '</p>');
      }
      const apply = run.apply;
      if (end.verified) {
        if (!apply || (apply.state === 'done' && !apply.applied)) {
          out.push('<button class="agent-apply" data-id="' + Number(entry.id) + '" title="Apply the verified fix as one workspace edit">' +
            'Apply fix</button>');
        }
      } else if (end.why) {
        out.push('<p class="why">' + escapeHtml(end.why) + '</p>');
      }
      if (apply && apply.state === 'applying') {
        out.push('<p class="waiting">applying…</p>');
      } else if (apply) {
        out.push(apply.applied ? '<p class="applied">Applied.' + (apply.reason ? ' ' + escapeHtml(apply.reason) : '') + '</p>'
          : '<p class="not-applied">Not applied: ' + escapeHtml(apply.reason || 'the editor refused the edit') + '</p>');
      }
    }
    return '<div class="agent">' + out.join('') + '</div>';
  }

  if (typeof module !== 'undefined' && module.exports) {
    module.exports = { renderMarkdown: renderMarkdown, escapeHtml: escapeHtml, renderAgent: renderAgent, renderStep: renderStep };
    return;
  }

  const vscode = acquireVsCodeApi();
  const log = document.getElementById('log');
  const input = document.getElementById('input');
  const sendButton = document.getElementById('send');
  const stopButton = document.getElementById('stop');
  const modeSelect = document.getElementById('mode');
  const nodes = new Map();  // entry id -> {entry, body}
  const placeholders = {
    chat: 'Ask about your code (Enter sends; the selection goes with it)',
    agent: 'Describe the problem to fix (Enter starts the agent; the file and the selection go with it)',
  };

  function setMode(mode) {
    modeSelect.value = mode;
    input.placeholder = placeholders[mode];
    stopButton.textContent = mode === 'agent' ? 'Cancel' : 'Stop';
  }

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
    if (entry.agent) {
      // The steps the user unfolded stay unfolded when the entry is drawn again (a new step came).
      const open = [];
      item.body.querySelectorAll('details.step[open]').forEach(function (d) { open.push(Number(d.dataset.index)); });
      item.body.innerHTML = renderAgent(entry, open);
      item.body.querySelectorAll('.agent-apply').forEach(function (b) {
        b.addEventListener('click', function () {
          b.disabled = true;
          vscode.postMessage({ type: 'agentApply', id: entry.id });
        });
      });
      log.scrollTop = log.scrollHeight;
      return;
    }
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
      setMode(msg.mode || 'chat');
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
    } else if (msg.type === 'mode') {
      setMode(msg.mode);
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
  modeSelect.addEventListener('change', function () {
    setMode(modeSelect.value);
    vscode.postMessage({ type: 'mode', mode: modeSelect.value });
  });
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
