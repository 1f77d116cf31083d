// The real deepseek-lsp server with its real default model, spoken to over stdio the way
// vscode-languageclient does: package.json's settings are accepted as they are, a suggestion
// arrives through textDocument/inlineCompletion, and the chat panel's controller streams
// deepseek/chatDelta, keeps its session, has the server read ahead after an answer
// (deepseek/assistAhead), shows Explain results and restores the session; the agent mode runs the
// server's deepseek: Fix argument and shows the server's refusal in an untrusted workspace.
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { after, before, test } from 'node:test';
import { InlineCompletionRequest, InlineCompletionTriggerKind } from 'vscode-languageserver-protocol/node';

import { ChatController, ChatServer, parseAgentArg, Range, ToPanel } from '../chat';
import type { AssistAheadParams, StatusResult } from '../lsp_ext';
import { statusView } from '../status';
import { defaultSettings, Hole, holeWorkspace, Server, startServer, waitForModel } from './server';

let hole: Hole;
let server: Server;
let status: StatusResult;

before(async () => {
  hole = holeWorkspace();
  // What a fresh VS Code sends (package.json's defaults), with short replies so the test is quick.
  server = await startServer(hole.dir, defaultSettings({ 'chat.maxTokens': 48, 'chat.contextTokens': 1024, 'completion.manualMaxTimeMs': 60000, 'completion.alternatives': 1 }));
  await server.connection.sendNotification('textDocument/didOpen', {
    textDocument: { uri: hole.uri, languageId: 'python', version: 1, text: hole.text },
  });
  status = await waitForModel(server);
});

after(async () => {
  await server?.stop();
  if (hole) {
    fs.rmSync(hole.dir, { recursive: true, force: true });
  }
});

test('the server accepts package.json settings without a complaint and reports a loaded model', () => {
  assert.equal(status.model.state, 'loaded', JSON.stringify(status));
  assert.ok(server.configurationRequests.length >= 1, 'the server asked for section deepseek');
  const complaints = server.messages.filter((m) => /setting/i.test(m.message));
  assert.deepEqual(complaints, []);
  const shown = statusView(status);
  assert.ok(shown.text.includes(' · loaded'), shown.text);
  assert.equal(shown.warning, false);
});

test('an inline completion (ghost text) arrives at the hole', async () => {
  const result: any = await server.connection.sendRequest(InlineCompletionRequest.type, {
    textDocument: { uri: hole.uri },
    position: { line: hole.line, character: hole.character },
    context: { triggerKind: InlineCompletionTriggerKind.Invoked },
  });
  const items = Array.isArray(result) ? result : result.items;
  assert.equal(items.length, 1);
  const text = typeof items[0].insertText === 'string' ? items[0].insertText : items[0].insertText.value;
  assert.ok(text.startsWith('self._user_media_dir('), text);
});

function panelRange(): Range {
  return { start: { line: hole.line - 3, character: 0 }, end: { line: hole.line + 1, character: 0 } };
}

function panel(): { chat: ChatController; posts: ToPanel[]; ahead: AssistAheadParams[]; server: ChatServer } {
  const posts: ToPanel[] = [];
  const ahead: AssistAheadParams[] = [];
  const chatServer: ChatServer = { execute: (command, arg) => server.execute(command, arg) };
  const range = panelRange();
  const chat = new ChatController(chatServer, {
    post: (m) => posts.push(JSON.parse(JSON.stringify(m)) as ToPanel),  // a copy, as a webview receives it
    open: () => undefined,
    context: () => ({ uri: hole.uri, range, version: 1 }),
    label: (uri, r) => (r ? `${path.basename(uri)}:${r.start.line + 1}-${r.end.line}` : path.basename(uri)),
    insert: () => undefined,
    copy: () => undefined,
    apply: () => undefined,
    readAhead: (p) => {  // as chat_view.ts does (read_ahead.ts), recorded
      ahead.push(p);
      void server.connection.sendNotification('deepseek/assistAhead', p);
    },
  });
  server.connection.onNotification('deepseek/chatDelta', (p) => chat.onDelta(p));
  return { chat, posts, ahead, server: chatServer };
}

/** How many prompts the server read ahead for the assistant (deepseek.status's chat.readAhead). */
async function assistReads(): Promise<number> {
  const status: any = await server.execute('deepseek.status');
  return status?.chat?.readAhead?.reads ?? 0;
}

test('the chat panel: a reply streams in, keeps its session, and Explain lands in the panel', async () => {
  const { chat, posts, ahead } = panel();
  await chat.handle({ type: 'send', text: 'In one sentence: what does user_music_dir return?' });
  const deltas = posts.filter((p): p is Extract<ToPanel, { type: 'delta' }> => p.type === 'delta');
  assert.ok(deltas.length >= 2, `streamed in ${deltas.length} pieces`);
  const done = posts.find((p): p is Extract<ToPanel, { type: 'done' }> => p.type === 'done');
  assert.ok(done && done.entry.role === 'assistant' && done.entry.text.trim().length > 10, JSON.stringify(done));
  assert.equal(deltas.map((d) => d.text).join(''), done.entry.text, 'the streamed pieces add up to the reply');
  assert.ok(deltas.every((d) => d.id === done.entry.id));
  // The code the answer is given is shown before the model writes: the reply's entry with its references first.
  const firstText = posts.findIndex((p) => p.type === 'delta');
  const early = posts.slice(0, firstText).find((p): p is Extract<ToPanel, { type: 'entry' }> =>
    p.type === 'entry' && p.entry.id === done.entry.id && (p.entry.references?.length ?? 0) > 0);
  assert.ok(early, `no references before the first piece of text: ${JSON.stringify(posts.slice(0, firstText))}`);
  const first = chat.sessionId;
  assert.ok(first);
  // A question about a selection: its reply's code blocks may replace that selection (Apply).
  assert.deepEqual(done.entry.target, { uri: hole.uri, range: panelRange(), version: 1 });
  // The answer is in: the follow-up's prompt up to the question is read while it is typed.
  assert.deepEqual(ahead, [{ task: 'chat', uri: hole.uri, range: panelRange(), sessionId: first }]);
  const reads = await assistReads();
  const until = Date.now() + 120000;
  while (await assistReads() === reads && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 300));
  }
  assert.ok(await assistReads() > reads, 'the server read the follow-up\'s prompt ahead');

  await chat.handle({ type: 'send', text: 'And user_videos_dir?' });
  assert.equal(chat.sessionId, first, 'the second message continues the session');
  assert.deepEqual(chat.entries.map((e) => e.role), ['user', 'assistant', 'user', 'assistant']);

  const explainRange: Range = { start: { line: hole.line - 2, character: 0 }, end: { line: hole.line + 1, character: 0 } };
  const result = await chat.explain({ uri: hole.uri, range: explainRange }, 'Explain unix_hole.py');
  assert.ok(result && typeof result.markdown === 'string');
  const explained = chat.entries[chat.entries.length - 1];
  assert.equal(explained.text, result.markdown);
  assert.match(explained.text, /unix_hole\.py/);
  assert.deepEqual(explained.references?.map((r) => r.label), [`unix_hole.py:${hole.line - 1}-${hole.line + 1}`]);
  assert.equal(chat.sessionId, result.sessionId);
  assert.notEqual(chat.sessionId, first, 'Explain starts its own session, which the panel continues');
});

test('a reopened panel restores the latest session from the server', async () => {
  const { chat, posts } = panel();
  await chat.handle({ type: 'ready' });
  const shown = posts.find((p): p is Extract<ToPanel, { type: 'entries' }> => p.type === 'entries');
  assert.ok(shown && shown.entries.length >= 2, JSON.stringify(posts));
  assert.equal(shown.entries[0].role, 'user');
  assert.ok(chat.sessionId);
});

test('agent mode against the server: deepseek: Fix carries the run\'s argument; an untrusted workspace is refused in the panel', async () => {
  // The code action the server offers for a problem the editor shows: the panel runs its argument as it is.
  const line = hole.line - 1;
  const diagnostic = { range: { start: { line, character: 8 }, end: { line, character: 12 } }, message: 'F821 undefined name',
    source: 'ruff', severity: 1 };
  const actions: any[] = await server.connection.sendRequest('textDocument/codeAction', {
    textDocument: { uri: hole.uri }, range: diagnostic.range, context: { diagnostics: [diagnostic], triggerKind: 1 },
  }) as any[];
  const fix = actions.find((a) => a.title === 'deepseek: Fix');
  assert.ok(fix, JSON.stringify(actions.map((a) => a.title)));
  assert.equal(fix.command.command, 'deepseek.agent');
  const arg = parseAgentArg(fix.command.arguments[0]);
  assert.deepEqual(arg, { message: `Fix this problem reported by ruff at line ${line + 1}: F821 undefined name`, uri: hole.uri,
    range: { start: { line, character: 0 }, end: { line: line + 1, character: 0 } } });
  // This workspace was not trusted (no workspaceTrusted at initialize): the agent would run its code.
  const { chat, posts } = panel();
  const steps: unknown[] = [];
  server.connection.onNotification('deepseek/agentStep', (p: any) => { steps.push(p); chat.onAgentStep(p); });
  assert.equal(await chat.agent(arg!), undefined);
  const entry = chat.entries[1];
  assert.equal(entry.role, 'error');
  assert.match(entry.text, /^deepseek: this workspace is not trusted.*trust the workspace/);
  assert.deepEqual(steps, []);
  assert.deepEqual(posts.filter((p) => p.type === 'busy'), [{ type: 'busy', busy: true }, { type: 'busy', busy: false }]);
  // Apply fix of a run the server does not have: its sentence, not a crash.
  await assert.rejects(server.execute('deepseek.agentApply', { runId: 'no-such-run' }), /latest agent runs/);
});
