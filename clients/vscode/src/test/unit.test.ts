// Fast tests with no server: settings, the executable lookup, the panel's message parsing and
// handling, reading ahead's signals, the status text, the webview's Markdown rendering.
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { test } from 'node:test';

import { chatAhead, CHAT_REST_MS, EditorMoment, HOVER_REST_MS, hoverAhead, nextSignal, onName } from '../ahead';
import { applyText, ChatController, editDiff, Entry, parseAgentArg, parseFromPanel, Range, ToPanel } from '../chat';
import { LANGUAGES } from '../languages';
import type { AgentResult, AgentStep, AssistAheadParams } from '../lsp_ext';
import { CLIENT_KEYS, INSTALL_HINT, parseServerLog, resolveServer, serverKeys, serverSettings } from '../settings';
import { PartialStatus, statusView } from '../status';
import { PACKAGE_JSON } from './server';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const { renderMarkdown, renderAgent } = require('../../media/chat.js');

test('package.json declares every server setting under deepseek.* beside the client keys', () => {
  const keys = serverKeys(PACKAGE_JSON);
  assert.ok(keys.includes('model.nCtx') && keys.includes('completion.autoMaxTimeMs') && keys.includes('index.exclude'));
  for (const k of CLIENT_KEYS) {
    assert.ok(!keys.includes(k), `${k} is a client key`);
    assert.ok(PACKAGE_JSON.contributes.configuration.properties[`deepseek.${k}`], `deepseek.${k} is declared`);
  }
  for (const k of keys) {
    assert.match(PACKAGE_JSON.contributes.configuration.properties[`deepseek.${k}`].markdownDescription, /Unit: /);
  }
});

test('serverSettings sends defined values as flat dotted keys and nothing else', () => {
  const values: Record<string, unknown> = { 'model.nCtx': 2048, 'model.path': null, serverPath: '/x' };
  assert.deepEqual(serverSettings(['model.nCtx', 'model.path', 'threads'], (k) => values[k]), { 'model.nCtx': 2048, 'model.path': null });
});

test('resolveServer finds an executable on PATH, expands paths, and says how to install when missing', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'deepseek-path-'));
  const exe = path.join(dir, 'deepseek-lsp');
  fs.writeFileSync(exe, '#!/bin/sh\n', { mode: 0o755 });
  fs.writeFileSync(path.join(dir, 'not-executable'), '', { mode: 0o644 });
  assert.deepEqual(resolveServer('deepseek-lsp', { PATH: ['/nonexistent', dir].join(path.delimiter) }), { path: exe });
  assert.deepEqual(resolveServer(exe, { PATH: '' }), { path: exe });
  const missing = resolveServer('deepseek-lsp', { PATH: '/nonexistent' });
  assert.ok('error' in missing && missing.error.includes('not found on PATH') && missing.error.includes(INSTALL_HINT));
  const notExe = resolveServer(path.join(dir, 'not-executable'), { PATH: '' });
  assert.ok('error' in notExe && notExe.error.includes('pip install deepseek-lsp'));
  fs.rmSync(dir, { recursive: true });
});

test('parseFromPanel accepts the twelve panel messages and rejects malformed ones', () => {
  const range: Range = { start: { line: 1, character: 0 }, end: { line: 3, character: 0 } };
  assert.deepEqual(parseFromPanel({ type: 'send', text: '  why?  ' }), { type: 'send', text: 'why?' });
  assert.deepEqual(parseFromPanel({ type: 'copy', id: 4, code: 'x = 1\n' }), { type: 'copy', code: 'x = 1\n' });
  assert.deepEqual(parseFromPanel({ type: 'apply', id: 4, code: 'x' }), { type: 'apply', id: 4, code: 'x' });
  assert.deepEqual(parseFromPanel({ type: 'open', uri: 'file:///a.py', range }), { type: 'open', uri: 'file:///a.py', range });
  assert.deepEqual(parseFromPanel({ type: 'ready', extra: 1 }), { type: 'ready' });
  assert.deepEqual(parseFromPanel({ type: 'focus' }), { type: 'focus' });
  assert.deepEqual(parseFromPanel({ type: 'draft', text: 'what does ' }), { type: 'draft', text: 'what does ' });
  assert.deepEqual(parseFromPanel({ type: 'mode', mode: 'agent' }), { type: 'mode', mode: 'agent' });
  assert.deepEqual(parseFromPanel({ type: 'agentApply', id: 7 }), { type: 'agentApply', id: 7 });
  for (const bad of [null, 'send', {}, { type: 'mode', mode: 'auto' }, { type: 'mode' }, { type: 'agentApply', id: '7' },
    { type: 'agentApply' }, { type: 'send', text: '   ' }, { type: 'send', text: 3 }, { type: 'open', uri: 'x' },
    { type: 'open', uri: 'x', range: { start: { line: -1, character: 0 }, end: { line: 0, character: 0 } } }, { type: 'eval' },
    { type: 'insert', code: '' }, { type: 'copy' }, { type: 'draft' }, { type: 'draft', text: 7 }, { type: 'apply', id: 1.5, code: 'x' }, { type: 'apply', code: 'x' }]) {
    assert.equal(parseFromPanel(bad), undefined, JSON.stringify(bad));
  }
});

/** A panel host that records what the controller does; the server is never reached in these tests. */
function recordingHost(context: { uri: string; range?: Range; version?: number } | undefined = undefined) {
  const posts: ToPanel[] = [];
  const opened: [string, Range][] = [];
  const code: [string, string][] = [];
  const ahead: AssistAheadParams[] = [];
  return {
    posts, opened, code, ahead,
    host: {
      post: (m: ToPanel) => posts.push(m),
      open: (uri: string, range: Range) => opened.push([uri, range]),
      context: () => context,
      readAhead: (p: AssistAheadParams) => { ahead.push(p); },
      label: (uri: string, range?: Range) => (range ? `${path.basename(uri)}:${range.start.line + 1}` : path.basename(uri)),
      insert: (c: string) => { code.push(['insert', c]); },
      copy: (c: string) => { code.push(['copy', c]); },
      apply: (t: { uri: string }, c: string) => { code.push(['apply ' + t.uri, c]); },
    },
  };
}

const unreachable = { execute: () => Promise.reject(new Error('no server in this test')) };

test('the panel: a clicked reference opens the file at its range; malformed messages do nothing', async () => {
  const { host, posts, opened } = recordingHost();
  const chat = new ChatController(unreachable, host);
  const range: Range = { start: { line: 6, character: 0 }, end: { line: 14, character: 0 } };
  await chat.handle({ type: 'open', uri: 'file:///w/config.py', range });
  await chat.handle({ type: 'open', uri: 'file:///w/config.py' });
  await chat.handle({ type: 'nonsense' });
  assert.deepEqual(opened, [['file:///w/config.py', range]]);
  assert.deepEqual(posts, []);
});

test('the panel: a code block\'s Insert and Copy reach the editor; Apply only for a reply about a selection', async () => {
  const { host, code } = recordingHost();
  const chat = new ChatController(unreachable, host);
  await chat.handle({ type: 'insert', code: 'x = 1\n' });
  await chat.handle({ type: 'copy', code: 'y = 2\n' });
  await chat.handle({ type: 'apply', id: 1, code: 'z = 3\n' });  // no such reply: nothing to replace
  await chat.handle({ type: 'insert', code: '' });
  await chat.handle({ type: 'apply', id: 'one', code: 'z' });
  assert.deepEqual(code, [['insert', 'x = 1\n'], ['copy', 'y = 2\n']]);
});

test('Apply: a code block at column 0 takes the indentation of the selection it replaces, whole lines kept', () => {
  const selected = '    @property\n    def f(self):\n        return 1\n';
  assert.equal(applyText(selected, 'def f(self):\n    """One."""\n\n    return 1'),
    '    def f(self):\n        """One."""\n\n        return 1\n');
  assert.equal(applyText('x = 1', 'x = 2\n'), 'x = 2');
  assert.equal(applyText('  a\n', '  b\n    c\n'), '  b\n    c\n');
});

test('the panel: a failed request becomes an error entry and the panel is not left busy', async () => {
  const { host, posts } = recordingHost();
  const chat = new ChatController(unreachable, host);
  await chat.handle({ type: 'send', text: 'hello' });
  assert.deepEqual(chat.entries.map((e) => [e.role, e.text]), [['user', 'hello'], ['error', 'deepseek: no server in this test']]);
  assert.deepEqual(posts.map((p) => p.type), ['entry', 'entry', 'busy', 'done', 'busy']);
  assert.deepEqual(posts[posts.length - 1], { type: 'busy', busy: false });
  assert.equal(chat.busy, false);
  await chat.handle({ type: 'new' });
  assert.deepEqual(posts[posts.length - 1], { type: 'entries', entries: [], busy: false, mode: 'chat' });
  assert.equal(chat.sessionId, undefined);
});

test('the panel: stop cancels the running request', async () => {
  const { host } = recordingHost();
  let seen: AbortSignal | undefined;
  const slow = {
    execute: (_c: string, _a: object, signal?: AbortSignal) => new Promise<never>((_resolve, reject) => {
      seen = signal;
      signal?.addEventListener('abort', () => reject(new Error('cancelled')));
    }),
  };
  const chat = new ChatController(slow, host);
  const pending = chat.handle({ type: 'send', text: 'a long question' });
  assert.equal(chat.busy, true);
  await chat.handle({ type: 'stop' });
  await pending;
  assert.equal(seen?.aborted, true);
  assert.deepEqual(chat.entries.map((e) => [e.role, e.text]), [['user', 'a long question'], ['error', 'Stopped.']]);
});

test('reading ahead: the chat signal carries the document, the selection when there is one, and the session', () => {
  const range: Range = { start: { line: 4, character: 2 }, end: { line: 9, character: 0 } };
  const empty: Range = { start: { line: 4, character: 2 }, end: { line: 4, character: 2 } };
  assert.deepEqual(chatAhead({ uri: 'file:///w/a.py', range }, 's1'), { task: 'chat', uri: 'file:///w/a.py', range, sessionId: 's1' });
  assert.deepEqual(chatAhead({ uri: 'file:///w/a.py', range: empty }, 's1'), { task: 'chat', uri: 'file:///w/a.py', sessionId: 's1' });
  assert.deepEqual(chatAhead({ uri: 'file:///w/a.py' }, undefined), { task: 'chat', uri: 'file:///w/a.py' });
  assert.deepEqual(chatAhead({ uri: 'file:///w/a.py' }, 's1', '  where is the config read '),
    { task: 'chat', uri: 'file:///w/a.py', sessionId: 's1', draft: 'where is the config read' });
  assert.deepEqual(chatAhead({ uri: 'file:///w/a.py' }, undefined, '   '), { task: 'chat', uri: 'file:///w/a.py' });
  assert.equal(chatAhead(undefined, 's1'), undefined);
});

test('reading ahead: a name is under the cursor or just before it; blanks, numbers and punctuation are not names', () => {
  const line = '    total = _sum(items, 42) + ü';
  assert.ok(onName(line, 4) && onName(line, 9) && onName(line, 12) && onName(line, 13));  // start, end of `total`, `_sum`
  assert.ok(onName(line, line.length));  // `ü` before the cursor
  assert.ok(!onName(line, 0) && !onName(line, 11) && !onName(line, 25) && !onName(line, 27) && !onName('', 0));
  assert.deepEqual(hoverAhead('file:///w/a.py', line, { line: 3, character: 13 }),
    { task: 'hover', uri: 'file:///w/a.py', position: { line: 3, character: 13 } });
  assert.equal(hoverAhead('file:///w/a.py', line, { line: 3, character: 25 }), undefined);
});

test('reading ahead: one signal per selection change: the visible panel\'s when it changed, else a hover on a name', () => {
  const at = (selection: Range & { active: { line: number; character: number } }, languageId = 'python'): EditorMoment =>
    ({ uri: 'file:///w/a.py', languageId, selection, lineText: 'def total(items):' });
  const cursor = (character: number) => ({ start: { line: 0, character }, end: { line: 0, character }, active: { line: 0, character } });
  const selected = { start: { line: 0, character: 0 }, end: { line: 2, character: 0 }, active: { line: 2, character: 0 } };
  const chatSel: AssistAheadParams = { task: 'chat', uri: 'file:///w/a.py', range: { start: selected.start, end: selected.end }, sessionId: 's' };
  const chatNone: AssistAheadParams = { task: 'chat', uri: 'file:///w/a.py', sessionId: 's' };
  // The panel is visible and the selection changed what the next question carries: the panel's signal.
  assert.deepEqual(nextSignal(at(selected), chatSel, chatNone, LANGUAGES), { params: chatSel, delayMs: CHAT_REST_MS });
  assert.deepEqual(nextSignal(at(cursor(6)), chatNone, chatSel, LANGUAGES), { params: chatNone, delayMs: CHAT_REST_MS });
  // Unchanged for the panel: the cursor on a name gets a hover signal; a selection gets nothing.
  const hover = { params: { task: 'hover', uri: 'file:///w/a.py', position: { line: 0, character: 6 } }, delayMs: HOVER_REST_MS };
  assert.deepEqual(nextSignal(at(cursor(6)), { ...chatNone }, chatNone, LANGUAGES), hover);
  assert.equal(nextSignal(at(selected), chatSel, chatSel, LANGUAGES), undefined);
  // The panel hidden (or busy): hover only, on a name, in a language the extension serves.
  assert.deepEqual(nextSignal(at(cursor(6)), undefined, undefined, LANGUAGES), hover);
  assert.equal(nextSignal(at(cursor(16)), undefined, undefined, LANGUAGES), undefined);  // between `)` and `:`
  assert.equal(nextSignal(at(selected), undefined, undefined, LANGUAGES), undefined);
  assert.equal(nextSignal(at(cursor(6), 'markdown'), undefined, undefined, LANGUAGES), undefined);
  assert.equal(nextSignal(at(cursor(6), 'plaintext'), undefined, chatNone, LANGUAGES), undefined);
});

test('the panel reads ahead when it loads, gets the focus, starts over or typing pauses, with the selection, session and draft', async () => {
  const range: Range = { start: { line: 6, character: 0 }, end: { line: 14, character: 0 } };
  const { host, ahead } = recordingHost({ uri: 'file:///w/config.py', range, version: 3 });
  const chat = new ChatController(unreachable, host);
  await chat.handle({ type: 'ready' });  // no history (the server is unreachable): a new conversation
  chat.sessionId = 'abc';
  await chat.handle({ type: 'focus' });
  await chat.handle({ type: 'new' });
  await chat.handle({ type: 'draft', text: 'where is the ' });
  await chat.handle({ type: 'focus' });  // the draft stays until it is sent
  assert.deepEqual(ahead, [
    { task: 'chat', uri: 'file:///w/config.py', range },
    { task: 'chat', uri: 'file:///w/config.py', range, sessionId: 'abc' },
    { task: 'chat', uri: 'file:///w/config.py', range },
    { task: 'chat', uri: 'file:///w/config.py', range, draft: 'where is the' },
    { task: 'chat', uri: 'file:///w/config.py', range, draft: 'where is the' },
  ]);
  // No document, nothing to read; a failed question is no answer: nothing is sent after it.
  const none = recordingHost();
  const bare = new ChatController(unreachable, none.host);
  await bare.handle({ type: 'focus' });
  await bare.handle({ type: 'send', text: 'hello' });
  assert.deepEqual(none.ahead, []);
});

test('the panel reads ahead after an answer, with the answer\'s session, and not while a question runs', async () => {
  const { host, ahead } = recordingHost({ uri: 'file:///w/config.py', version: 1 });
  let release: (() => void) | undefined;
  const answering = {
    execute: (command: string) => new Promise<never>((resolve) => {
      release = () => resolve({ sessionId: 'new-session', reply: 'It returns 1.', references: [] } as never);
    }).then((r) => { assert.equal(command, 'deepseek.chat'); return r; }),
  };
  const chat = new ChatController(answering, host);
  await chat.handle({ type: 'draft', text: 'what does it' });
  ahead.length = 0;
  const pending = chat.handle({ type: 'send', text: 'what does it return?' });
  await chat.handle({ type: 'focus' });  // the question is running: its answer is not in the conversation yet
  assert.deepEqual(ahead, []);
  release!();
  await pending;
  assert.deepEqual(ahead, [{ task: 'chat', uri: 'file:///w/config.py', sessionId: 'new-session' }]);  // the draft was sent
});

// -- the agent mode ---------------------------------------------------------------------------

test('package.json lists deepseek.agent for the palette ("deepseek: Agent (fix a problem)"), the server command the extension handles', () => {
  // (lsp_ext.ts's COMMANDS cannot be loaded here: it needs vscode; its ids are checked against the server in protocol.test.ts.)
  const cmd = PACKAGE_JSON.contributes.commands.find((c: { command: string }) => c.command === 'deepseek.agent');
  assert.ok(cmd, 'deepseek.agent is contributed');
  assert.equal(`${cmd.category}: ${cmd.title}`, 'deepseek: Agent (fix a problem)');
  // Not contributed: it needs a run's id, which only the panel's Apply fix has.
  assert.ok(!PACKAGE_JSON.contributes.commands.some((c: { command: string }) => c.command === 'deepseek.agentApply'));
});

test('parseAgentArg: the Fix code action\'s {message, uri, range} is run as it is; no message (the palette) asks for one', () => {
  const range: Range = { start: { line: 4, character: 0 }, end: { line: 5, character: 0 } };
  const fix = { message: 'Fix this problem reported by ruff at line 5: F821 undefined name', uri: 'file:///w/a.py', range };
  assert.deepEqual(parseAgentArg(fix), fix);
  assert.deepEqual(parseAgentArg({ ...fix, tests: ['tests/test_a.py::test_x'], maxSteps: 4, extra: 1 }),
    { ...fix, tests: ['tests/test_a.py::test_x'], maxSteps: 4 });
  assert.deepEqual(parseAgentArg({ message: '  fix it ', uri: 'file:///w/a.py', range: { start: { line: -1 } } }),
    { message: 'fix it', uri: 'file:///w/a.py' });
  for (const none of [undefined, null, {}, { message: '   ' }, { uri: 'file:///w/a.py', range }, 'fix it']) {
    assert.equal(parseAgentArg(none), undefined, JSON.stringify(none));
  }
});

test('editDiff: an edit as a small diff, the lines old and new share kept as context (2 at most)', () => {
  const old = 'def f(x):\n    a = 1\n    b = 2\n    return x + 1\n';
  const now = 'def f(x):\n    a = 1\n    b = 2\n    return x - 1\n';
  assert.deepEqual(editDiff(old, now), [[' ', '    a = 1'], [' ', '    b = 2'], ['-', '    return x + 1'], ['+', '    return x - 1']]);
  assert.deepEqual(editDiff('x = 1', 'x = 1\ny = 2'), [[' ', 'x = 1'], ['+', 'y = 2']]);
  assert.deepEqual(editDiff('a\nb\nc', 'a\nc'), [[' ', 'a'], ['-', 'b'], [' ', 'c']]);
});

function step(index: number, tool: string, ok = true, observation = 'fine'): AgentStep {
  return { index, thought: `thinking ${index}`, tool, arguments: tool === 'malformed' ? null : { path: 'a.py' }, observation, ok,
    seconds: 1.25, tokens: 30 };
}

function agentResult(over: Partial<AgentResult> = {}): AgentResult {
  return {
    runId: 'run1', outcome: 'finished', answer: 'Fixed the **off-by-one**.', model: 'm', promptVersion: 'agent@v1',
    steps: [step(1, 'read_file'), step(2, 'propose_edit'), step(3, 'finish')],
    edits: [{ uri: 'file:///w/a.py', old: 'return x + 1\n', new: 'return x - 1\n' }],
    check: { verdict: 'passed', summary: '2 tests pass with the edit', tests: ['t1', 't2'], failed: [] },
    verified: true, seconds: 41.4, malformed: 0, ...over,
  };
}

/** A server that answers deepseek.agent when `finish` is called, and records every request. */
function agentServer(result: AgentResult, applyAnswer = { applied: true, reason: '' }) {
  const calls: [string, unknown][] = [];
  let finish: (() => void) | undefined;
  const server = {
    execute: (command: string, arg: unknown, signal?: AbortSignal) => {
      calls.push([command, arg]);
      if (command === 'deepseek.agentApply') {
        return Promise.resolve(applyAnswer as never);
      }
      return new Promise<never>((resolve, reject) => {
        finish = () => resolve(result as never);
        signal?.addEventListener('abort', () => reject(new Error('cancelled')));
      });
    },
  };
  return { server, calls, finish: () => finish!() };
}

test('agent mode: a message runs deepseek.agent with the file and selection; steps stream in; a verified fix can be applied', async () => {
  const range: Range = { start: { line: 2, character: 0 }, end: { line: 4, character: 0 } };
  const { host, posts, ahead } = recordingHost({ uri: 'file:///w/a.py', range, version: 3 });
  const { server, calls, finish } = agentServer(agentResult());
  const chat = new ChatController(server, host);
  await chat.handle({ type: 'mode', mode: 'agent' });
  assert.deepEqual(posts, [{ type: 'mode', mode: 'agent' }]);
  assert.deepEqual(ahead, [], 'no chat prompt is read ahead in agent mode');
  const pending = chat.handle({ type: 'send', text: 'test_f fails: f(2) is 3' });
  assert.deepEqual(calls, [['deepseek.agent', { message: 'test_f fails: f(2) is 3', uri: 'file:///w/a.py', range }]]);
  const entry = chat.entries[1];
  assert.equal(entry.role, 'agent');
  chat.onAgentStep({ runId: 'run1', step: step(1, 'read_file') });
  chat.onAgentStep({ runId: 'run1', step: step(1, 'read_file') });  // the same step again: once
  chat.onAgentStep({ runId: 'other', step: step(2, 'run_tests') });  // another run's: not ours
  chat.onAgentStep({ runId: 'run1', step: { index: 'x' } } as never);
  chat.onAgentStep(null as never);
  const streamed = posts.filter((p): p is Extract<ToPanel, { type: 'entry' }> => p.type === 'entry' && p.entry.id === entry.id);
  assert.equal(streamed.length, 2, 'the entry, then once with its first step');
  assert.deepEqual(entry.agent?.steps.map((s) => s.index), [1]);
  assert.equal(chat.busy, true);
  finish();
  await pending;
  assert.equal(chat.busy, false);
  assert.deepEqual(entry.agent?.steps.map((s) => s.tool), ['read_file', 'propose_edit', 'finish']);
  assert.deepEqual(entry.agent?.end, {
    outcome: 'Finished after 3 steps (41 s).', answer: 'Fixed the **off-by-one**.',
    edits: [{ uri: 'file:///w/a.py', label: 'a.py', diff: [['-', 'return x + 1'], ['+', 'return x - 1']] }],
    check: { verdict: 'passed', summary: '2 tests pass with the edit', tests: ['t1', 't2'], failed: [] }, verified: true, why: undefined,
  });
  await chat.handle({ type: 'agentApply', id: entry.id });
  assert.deepEqual(calls[1], ['deepseek.agentApply', { runId: 'run1' }]);
  assert.deepEqual(entry.agent?.apply, { state: 'done', applied: true, reason: '' });
  await chat.handle({ type: 'agentApply', id: entry.id });  // applied: not again
  assert.equal(calls.length, 2);
  // Back to chat: the next message is a chat question again.
  await chat.handle({ type: 'mode', mode: 'chat' });
  assert.equal(chat.mode, 'chat');
});

test('agent mode: an unverified fix offers no Apply and says why; Cancel stops the request and keeps the steps seen', async () => {
  const failed = agentResult({ verified: false, check: { verdict: 'failed', summary: '1 of 2 tests fails with the edit: t2', tests: ['t1', 't2'], failed: ['t2'] } });
  const { host } = recordingHost({ uri: 'file:///w/a.py', version: 1 });
  const first = agentServer(failed);
  const chat = new ChatController(first.server, host);
  const pending = chat.agent({ message: 'fix f', uri: 'file:///w/a.py' });
  first.finish();
  assert.equal((await pending)?.runId, 'run1');
  const entry = chat.entries[1];
  assert.equal(entry.agent?.end?.why, 'Not verified, so not applicable: 1 of 2 tests fails with the edit: t2');
  await chat.handle({ type: 'agentApply', id: entry.id });
  assert.deepEqual(first.calls.map((c) => c[0]), ['deepseek.agent'], 'no apply for an unverified run');
  assert.equal(chat.mode, 'agent', 'a run from the command (deepseek: Fix) puts the panel in agent mode');
  assert.equal(chat.aheadParams(), undefined);
  // A run without edits, and one that ran out of steps.
  assert.equal((await agentEnd(agentResult({ verified: false, edits: [], check: null })))?.why, 'No edit was proposed: nothing to apply.');
  const budget = await agentEnd(agentResult({ verified: false, outcome: 'budget', malformed: 2 }));
  assert.equal(budget?.why, 'Not applicable: the run did not finish (budget).');
  assert.equal(budget?.outcome, 'Stopped at the step or time budget after 3 steps (41 s); 2 without a valid tool call.');

  const slow = agentServer(failed);
  const stopped = new ChatController(slow.server, host);
  const running = stopped.agent({ message: 'fix f' });
  stopped.onAgentStep({ runId: 'run9', step: step(1, 'run_tests', false, 'FAILED t2') });
  await stopped.handle({ type: 'stop' });
  assert.equal(await running, undefined);
  const cancelled = stopped.entries[1];
  assert.equal(cancelled.role, 'error');
  assert.equal(cancelled.text, 'Stopped.');
  assert.deepEqual(cancelled.agent?.steps.map((s) => [s.tool, s.ok]), [['run_tests', false]]);
  // A late step of the stopped run is not taken for the next run's first.
  const next = stopped.agent({ message: 'again' });
  stopped.onAgentStep({ runId: 'run9', step: step(2, 'finish') });
  assert.deepEqual(stopped.entries[3].agent?.steps, []);
  await stopped.handle({ type: 'stop' });
  await next;
});

/** The panel's end of a run that answers `result` at once. */
async function agentEnd(result: AgentResult) {
  const { server, finish } = agentServer(result);
  const chat = new ChatController(server, recordingHost().host);
  const pending = chat.agent({ message: 'x' });
  finish();
  await pending;
  return chat.entries[1].agent?.end;
}

test('the webview renders an agent run: steps as collapsible blocks (failed ones marked), then the diff, the check and Apply fix', () => {
  const entry: Entry = { id: 5, role: 'agent', text: '', agent: { runId: 'r', steps: [step(1, 'read_file'), step(2, 'malformed', false, 'no <tool_call>')] } };
  const running = renderAgent(entry, [2]);
  assert.match(running, /<details class="step ok" data-index="1"><summary>\[step 1\] read_file <span class="status">ok<\/span> · 1\.3 s<\/summary>/);
  assert.match(running, /<details class="step failed" data-index="2" open><summary>\[step 2\] malformed <span class="status">failed<\/span>/);
  assert.match(running, /<pre class="call"><code>read_file \{&quot;path&quot;:&quot;a\.py&quot;\}<\/code><\/pre>/);
  assert.match(running, /<pre class="observation">no &lt;tool_call&gt;<\/pre>/);
  assert.match(running, /step 3: working…/);
  const end = {
    outcome: 'Finished after 2 steps (9 s).', answer: 'Use `-`.', verified: true, why: undefined,
    edits: [{ uri: 'file:///w/a.py', label: 'a.py', diff: [[' ', 'def f(x):'], ['-', '  return x + 1'], ['+', '  return x - 1']] }],
    check: { verdict: 'passed', summary: '2 tests pass', tests: ['t1', 't2'], failed: [] },
  } as const;
  const done = renderAgent({ ...entry, agent: { ...entry.agent, end } });
  assert.ok(done.includes('<pre class="diff"><span class="same">  def f(x):</span>\n<span class="del">-   return x + 1</span>\n' +
    '<span class="add">+   return x - 1</span></pre>'), done);
  assert.ok(done.includes('<p class="check passed">Check: passed, 2 tests pass</p>'));
  assert.ok(done.includes('<button class="agent-apply" data-id="5"'));
  assert.ok(done.includes('<div class="answer"><p>Use <code>-</code>.</p></div>') && !done.includes('working'));
  const applied = renderAgent({ ...entry, agent: { ...entry.agent, end, apply: { state: 'done', applied: true, reason: '' } } });
  assert.ok(applied.includes('<p class="applied">Applied.</p>') && !applied.includes('agent-apply'));
  const refused = renderAgent({ ...entry, agent: { ...entry.agent, end, apply: { state: 'done', applied: false, reason: 'a.py changed since' } } });
  assert.ok(refused.includes('Not applied: a.py changed since') && refused.includes('agent-apply'));
  const unverified = renderAgent({ ...entry, agent: { ...entry.agent, end: { ...end, verified: false, why: 'Not verified, so not applicable: <t2> fails',
    check: { verdict: 'failed', summary: '1 fails', tests: ['t2'], failed: ['t2'] } } } });
  assert.ok(!unverified.includes('agent-apply'));
  assert.ok(unverified.includes('<p class="why">Not verified, so not applicable: &lt;t2&gt; fails</p>'));
  assert.ok(unverified.includes('<p class="check failed">Check: failed, 1 fails (failed: t2)</p>'));
  const stopped = renderAgent({ ...entry, role: 'error', text: 'Stopped.' });
  assert.ok(stopped.includes('data-index="2"') && stopped.includes('<p class="agent-error">Stopped.</p>') && !stopped.includes('working'));
});

test('the status text: loading, loaded with index, a resource warning, a remote backend', () => {
  assert.equal(statusView(undefined).busy, true);
  const loading = statusView({ model: { name: 'm', state: 'loading' }, index: { state: 'indexing', files: 3 } });
  assert.equal(loading.text, '$(loading~spin) m · loading · indexing 3 files');
  assert.equal(loading.busy, true);
  const status: PartialStatus = {
    model: { name: 'qwen2.5-coder-0.5b-instruct-q4_k_m', family: 'qwen2.5-coder', state: 'loaded', nCtx: 4096, threads: 2 },
    ram: { availableMb: 20000, neededMb: 773, limitSource: 'available memory' },
    index: { state: 'ready', files: 19, chunks: 361, embedded: 361 },
    completion: { modelAnswers: 2, cacheAnswers: 1, avgLatencyMs: 240.4 },
  };
  const ok = statusView(status);
  assert.equal(ok.text, '$(sparkle) qwen2.5-coder-0.5b-instruct… · loaded · index ready');
  assert.equal(ok.warning, false);
  assert.match(ok.tooltip, /needs 773 MB, 20000 MB available/);
  // A long file's cut context is a line of the tooltip, not a warning.
  const cut = statusView({ ...status, completion: { ...status.completion, context: {
    uri: 'file:///w/unix.py', prefixDroppedTokens: 213, suffixDroppedTokens: 3787 } } });
  assert.match(cut.tooltip, /context: the last suggestion \(unix\.py\) saw part of the file: 213 tokens before the cursor and 3787 after it/);
  assert.equal(cut.warning, false);
  // Who writes the suggestions you ask for (completion.manualModel), and who wrote the last one.
  const large = statusView({ ...status, completion: { ...status.completion, largeModel: 'qwen2.5-coder-1.5b',
    largeAnswers: 4, lastModel: 'large' } });
  assert.match(large.tooltip, /suggestions you ask for: qwen2\.5-coder-1\.5b \(4 so far\); the last suggestion came from the larger model/);
  assert.doesNotMatch(ok.tooltip, /suggestions you ask for/);
  // Suggestions left unshown because the model was unsure (completion.minConfidence).
  const quiet = statusView({ ...status, completion: { ...status.completion, quietAnswers: 5 } });
  assert.match(quiet.tooltip, /2 from the model, 1 from the cache, average 240 ms; 5 not shown, the model was unsure/);
  assert.doesNotMatch(ok.tooltip, /not shown/);
  const warned = statusView({ ...status, model: { ...status.model, state: 'too-large' } },
    [{ code: 'model-too-large', message: 'needs 9000 MB' }, { code: 'other-code', message: 'not a resource problem' }]);
  assert.ok(warned.warning && warned.text.startsWith('$(warning)'));
  assert.match(warned.tooltip, /model-too-large\*\*: needs 9000 MB/);
  assert.doesNotMatch(warned.tooltip, /other-code/);
  const remote = statusView({ model: { state: 'not-loaded' }, backend: { kind: 'openai', url: 'http://gpu:8000', model: 'coder', reachable: false } });
  assert.ok(remote.warning && remote.text.includes('coder @ http://gpu:8000 · unreachable'));
});

test('the webview renders replies as escaped Markdown', () => {
  const html = renderMarkdown('**`f`** in `a.py`\n\nIt returns <x>.\n\n```python\nif a < b:\n    pass\n```\n');
  assert.equal(html, '<p><strong><code>f</code></strong> in <code>a.py</code></p><p>It returns &lt;x&gt;.</p>' +
    '<pre><code data-lang="python">if a &lt; b:\n    pass</code></pre>');
  assert.equal(renderMarkdown('<script>alert(1)</script>'), '<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>');
});

test('server log lines keep their level in the output channel', () => {
  assert.deepEqual(parseServerLog('2026-11-21 15:12:27,315 INFO server.engine: loaded m.gguf in 0.61 s'),
    { level: 'info', text: 'server.engine: loaded m.gguf in 0.61 s' });
  assert.deepEqual(parseServerLog('2026-11-21 15:12:27,315 WARNING server.lsp_server: slow'), { level: 'warn', text: 'server.lsp_server: slow' });
  assert.equal(parseServerLog('2026-11-21 15:12:27,315 CRITICAL x: y').level, 'error');
  assert.deepEqual(parseServerLog('  File "server/engine.py", line 3'), { level: 'info', text: '  File "server/engine.py", line 3' });
});
