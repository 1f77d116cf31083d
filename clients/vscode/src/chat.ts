/**
 * The chat panel's controller: the messages between the webview (media/chat.js) and the
 * server (`deepseek.chat`, `deepseek.explain`, `deepseek/chatDelta`; in agent mode
 * `deepseek.agent`, `deepseek/agentStep`, `deepseek.agentApply`). Pure: no `vscode`
 * import; chat_view.ts gives it a server connection, a panel port and an editor host.
 *
 * Panel -> controller (`FromPanel`): `ready` (the webview (re)loaded: it gets the whole
 * transcript), `send` {text}, `new` (forget the session: the next message starts one),
 * `stop` (cancel the running request), `open` {uri, range} (a reference was clicked),
 * `focus` (the webview got the focus), `draft` {text} (typing paused: the question so far),
 * `mode` {mode} (Chat or Agent: what `send` does), `agentApply` {id} (the Apply fix button of
 * an agent run's entry).
 * When the panel loads, gets the focus, starts a new conversation or typing in it pauses, and
 * after each answer, the controller says what the next question will be about
 * (`deepseek/assistAhead`, task `chat`: the document, the selection, the session, the draft) so
 * the server reads its prompt meanwhile.
 * Controller -> panel (`ToPanel`): `entries` {entries, busy, mode}, `entry` {entry}, `delta`
 * {id, text} (appended to the reply being written), `done` {entry} (the final form of the
 * entry with that id), `busy` {busy}, `mode` {mode}.
 *
 * Agent mode: a message is the agent's task (`deepseek.agent`, with the active editor's file and
 * selection, as a chat message). Its entry (role `agent`) gets each step as it arrives
 * (`deepseek/agentStep`), then the answer, the proposed edits as small diffs and the check of
 * the workspace's tests; the panel offers Apply fix (`deepseek.agentApply`) only for a verified
 * run, and says why not otherwise. Stop cancels the request.
 */
import { chatAhead } from './ahead';
import type * as lsp from './lsp_ext';
import type { Range } from './lsp_ext';

export type { Position, Range } from './lsp_ext';

/** A reference as the panel shows it: the code a reply is about, with a short label. */
export interface Reference { uri: string; range: Range; label: string }
/** The selection a question was about, at the document version it was asked at: what Apply replaces. */
export interface Target { uri: string; range: Range; version: number }
/** What a message of the panel does: ask the chat, or give the agent a task. */
export type Mode = 'chat' | 'agent';

/** A line of an edit's diff: ` ` unchanged, `-` removed, `+` added, then the line's text. */
export type DiffLine = [' ' | '-' | '+', string];

/** How an agent run ended, as the panel shows it. */
export interface AgentEnd {
  /** A sentence: how it ended, after how many steps and seconds. */
  outcome: string;
  /** The agent's answer (Markdown), or why it stopped. */
  answer: string;
  /** Each proposed edit: its file (a short label) and the change as a diff. */
  edits: { uri: string; label: string; diff: DiffLine[] }[];
  /** The check of the edits against the workspace's tests; null without edits. */
  check: lsp.AgentCheck | null;
  /** Only then is Apply fix offered. */
  verified: boolean;
  /** Why the fix cannot be applied (shown instead of the button); undefined when verified. */
  why?: string;
}

/** An agent run in the panel: its steps as they arrive, then its end, then what Apply fix did. */
export interface AgentView {
  /** Known from the first step (or the result). */
  runId?: string;
  steps: lsp.AgentStep[];
  end?: AgentEnd;
  /** `applying` while the server applies the edits, then its answer. */
  apply?: { state: 'applying' } | { state: 'done'; applied: boolean; reason: string };
}

export interface Entry {
  id: number; role: 'user' | 'assistant' | 'agent' | 'error'; text: string; references?: Reference[];
  /** On a reply to a question about a selection: its code blocks can replace that selection. */
  target?: Target;
  /** Shown in place of a reply that has no text yet: how far reading a long prompt got. */
  note?: string;
  /** An agent run (role `agent`, or `error` when the request failed or was stopped: the steps seen stay). */
  agent?: AgentView;
}

export type FromPanel =
  | { type: 'ready' }
  | { type: 'focus' }
  | { type: 'draft'; text: string }
  | { type: 'send'; text: string }
  | { type: 'new' }
  | { type: 'stop' }
  | { type: 'open'; uri: string; range: Range }
  | { type: 'insert'; code: string }
  | { type: 'copy'; code: string }
  | { type: 'apply'; id: number; code: string }
  | { type: 'mode'; mode: Mode }
  | { type: 'agentApply'; id: number };

export type ToPanel =
  | { type: 'entries'; entries: Entry[]; busy: boolean; mode: Mode }
  | { type: 'entry'; entry: Entry }
  | { type: 'delta'; id: number; text: string }
  | { type: 'done'; entry: Entry }
  | { type: 'busy'; busy: boolean }
  | { type: 'mode'; mode: Mode };

/** Runs `workspace/executeCommand`; rejects on an error answer or when `signal` aborts. */
export interface ChatServer {
  execute<C extends lsp.CommandId>(command: C, arg: lsp.CommandArg<C>, signal?: AbortSignal): Promise<lsp.CommandResult<C>>;
}

/** What the controller needs from the editor. */
export interface ChatHost {
  /** Show the panel's messages (`postMessage` of the webview; dropped while no webview exists). */
  post(message: ToPanel): void;
  /** Open `uri` with `range` selected. */
  open(uri: string, range: Range): void;
  /** The active editor's document (and its version), and its selection when one is made, sent with a chat message. */
  context(): { uri: string; range?: Range; version?: number } | undefined;
  /** Insert `code` at the cursor of the editor the user was last in. */
  insert(code: string): void;
  /** Put `code` on the clipboard. */
  copy(code: string): void;
  /** Replace `target`'s selection with `code` after showing the change as a diff; refused when the document changed since. */
  apply(target: Target, code: string): void;
  /** A short label for a reference, e.g. `src/config.py:7-13`; for a whole file (no range), `src/config.py`. */
  label(uri: string, range?: Range): string;
  /** Send `deepseek/assistAhead` (dropped when `deepseek.chat.readAhead` is off or the server is not running). */
  readAhead(params: lsp.AssistAheadParams): void;
}

/** The indentation of the least indented non-blank line. */
function baseIndent(lines: string[]): string {
  const indents = lines.filter((l) => l.trim()).map((l) => /^[ \t]*/.exec(l)![0]);
  return indents.reduce((a, b) => (b.length < a.length ? b : a), indents[0] ?? '');
}

/**
 * The edit Apply makes: `code` for the question's selection, indented as the selection was (a chat
 * answer usually starts its code at column 0), ending with a line break exactly when the selection did.
 */
export function applyText(selected: string, code: string): string {
  const lines = code.replace(/\n$/, '').split('\n');
  const from = baseIndent(lines);
  const to = baseIndent(selected.split('\n'));
  const text = lines.map((l) => (l.trim() ? to + l.slice(from.length) : '')).join('\n');
  return selected.endsWith('\n') ? text + '\n' : text;
}

/** Fields of a message that is not trusted blindly (from the webview, or a reference from the server). */
type Untrusted = { [key: string]: unknown } | null | undefined;

function isRange(r: unknown): r is Range {
  const pos = (p: unknown) => {
    const q = p as Untrusted;
    return !!q && Number.isInteger(q.line) && Number.isInteger(q.character) && (q.line as number) >= 0 && (q.character as number) >= 0;
  };
  const range = r as Untrusted;
  return !!range && pos(range.start) && pos(range.end);
}

function isReference(r: unknown): r is lsp.Reference {
  const ref = r as Untrusted;
  return !!ref && typeof ref.uri === 'string' && isRange(ref.range);
}

/** Parse a panel message; undefined for anything malformed (the webview is not trusted blindly). */
export function parseFromPanel(raw: unknown): FromPanel | undefined {
  const m = raw as Untrusted;
  if (!m || typeof m !== 'object' || typeof m.type !== 'string') {
    return undefined;
  }
  switch (m.type) {
    case 'ready': case 'focus': case 'new': case 'stop':
      return { type: m.type };
    case 'send':
      return typeof m.text === 'string' && m.text.trim() ? { type: 'send', text: m.text.trim() } : undefined;
    case 'draft':
      return typeof m.text === 'string' ? { type: 'draft', text: m.text } : undefined;
    case 'open':
      return typeof m.uri === 'string' && isRange(m.range) ? { type: 'open', uri: m.uri, range: m.range } : undefined;
    case 'insert': case 'copy':
      return typeof m.code === 'string' && m.code ? { type: m.type, code: m.code } : undefined;
    case 'apply':
      return typeof m.code === 'string' && m.code && Number.isInteger(m.id) ? { type: 'apply', id: m.id as number, code: m.code }
        : undefined;
    case 'mode':
      return m.mode === 'chat' || m.mode === 'agent' ? { type: 'mode', mode: m.mode } : undefined;
    case 'agentApply':
      return Number.isInteger(m.id) ? { type: 'agentApply', id: m.id as number } : undefined;
    default:
      return undefined;
  }
}

/**
 * The argument of `deepseek.agent` as a code action or another extension sends it (`{message, uri?,
 * range?, tests?, maxSteps?}`: `deepseek: Fix` sends the diagnostic as the message, with its file and
 * lines); undefined when it has no message (the palette sends none: the user is asked).
 */
export function parseAgentArg(raw: unknown): lsp.AgentParams | undefined {
  const a = raw as Untrusted;
  if (!a || typeof a !== 'object' || typeof a.message !== 'string' || !a.message.trim()) {
    return undefined;
  }
  const arg: lsp.AgentParams = { message: a.message.trim() };
  if (typeof a.uri === 'string') {
    arg.uri = a.uri;
    if (isRange(a.range)) {
      arg.range = a.range;
    }
  }
  if (Array.isArray(a.tests) && a.tests.every((t) => typeof t === 'string')) {
    arg.tests = a.tests as string[];
  }
  if (Number.isInteger(a.maxSteps)) {
    arg.maxSteps = a.maxSteps as number;
  }
  return arg;
}

/** A step of `deepseek/agentStep` or of a result, as far as the panel relies on it; undefined when malformed. */
function parseStep(raw: unknown): lsp.AgentStep | undefined {
  const s = raw as Untrusted;
  if (!s || !Number.isInteger(s.index) || typeof s.tool !== 'string') {
    return undefined;
  }
  const args = s.arguments;
  return {
    index: s.index as number,
    thought: typeof s.thought === 'string' ? s.thought : '',
    tool: s.tool,
    arguments: args && typeof args === 'object' && !Array.isArray(args) ? args as Record<string, unknown> : null,
    observation: typeof s.observation === 'string' ? s.observation : '',
    ok: s.ok === true,
    seconds: typeof s.seconds === 'number' ? s.seconds : 0,
    tokens: typeof s.tokens === 'number' ? s.tokens : 0,
  };
}

/**
 * A proposed edit as a small diff: the lines `old` and `new` share at the start and at the end as
 * context (at most 2 each), the rest of `old` removed and of `new` added.
 */
export function editDiff(old: string, now: string, context = 2): DiffLine[] {
  const a = old.replace(/\n$/, '').split('\n');
  const b = now.replace(/\n$/, '').split('\n');
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) {
    head++;
  }
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head && a[a.length - 1 - tail] === b[b.length - 1 - tail]) {
    tail++;
  }
  const same = (lines: string[]): DiffLine[] => lines.map((l) => [' ', l]);
  return [
    ...same(a.slice(Math.max(0, head - context), head)),
    ...a.slice(head, a.length - tail).map((l): DiffLine => ['-', l]),
    ...b.slice(head, b.length - tail).map((l): DiffLine => ['+', l]),
    ...same(a.slice(a.length - tail, a.length - tail + context)),
  ];
}

/** How a run ended, in a sentence, e.g. `Finished after 3 steps (41 s).` */
function outcomeText(r: lsp.AgentResult, steps: number): string {
  const n = `${steps} step${steps === 1 ? '' : 's'}`;
  const secs = typeof r.seconds === 'number' ? ` (${Math.round(r.seconds)} s)` : '';
  const bad = r.malformed > 0 ? `; ${r.malformed} without a valid tool call` : '';
  switch (r.outcome) {
    case 'finished': return `Finished after ${n}${secs}${bad}.`;
    case 'budget': return `Stopped at the step or time budget after ${n}${secs}${bad}.`;
    case 'cancelled': return `Cancelled after ${n}${secs}.`;
    default: return `Stopped by an error after ${n}${secs}.`;
  }
}

/** Why a run's fix cannot be applied, or undefined when it can (the server's `verified`). */
function whyNotApplicable(r: lsp.AgentResult): string | undefined {
  if (r.verified) {
    return undefined;
  }
  if (!Array.isArray(r.edits) || r.edits.length === 0) {
    return 'No edit was proposed: nothing to apply.';
  }
  if (r.outcome !== 'finished') {
    return `Not applicable: the run did not finish (${r.outcome}).`;
  }
  return r.check ? `Not verified, so not applicable: ${r.check.summary}` : 'Not verified, so not applicable.';
}

export class ChatController {
  /** The session the next message continues (kept across panel reloads; undefined: a new one). */
  sessionId: string | undefined;
  readonly entries: Entry[] = [];
  private stream: { session: string | undefined; reply: Entry } | undefined;
  private nextId = 1;
  private running: AbortController | undefined;
  private restored = false;
  /** The question being typed in the panel, as of its last pause (sent with the read-ahead signal). */
  private draft = '';
  /** What the panel's Send does (kept across panel reloads). */
  mode: Mode = 'chat';
  /** The agent run being shown: its steps (`deepseek/agentStep`) are added to it. */
  private agentRun: AgentView | undefined;
  /** Earlier runs' ids: a late step of a stopped run is not taken for the next run's first. */
  private readonly pastRuns = new Set<string>();

  constructor(private readonly server: ChatServer, private readonly host: ChatHost) {}

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** Handle one message from the webview. Never throws: failures become error entries. */
  async handle(raw: unknown): Promise<void> {
    const msg = parseFromPanel(raw);
    if (!msg) {
      return;
    }
    switch (msg.type) {
      case 'ready':
        await this.restore();
        this.host.post({ type: 'entries', entries: this.entries, busy: this.busy, mode: this.mode });
        this.readAhead();
        return;
      case 'focus':
        this.readAhead();
        return;
      case 'draft':
        this.draft = msg.text;
        this.readAhead();
        return;
      case 'send':
        if (this.mode === 'agent') {
          await this.agent(this.agentArg(msg.text));
        } else {
          await this.send(msg.text);
        }
        return;
      case 'mode':
        this.setMode(msg.mode);
        this.readAhead();
        return;
      case 'agentApply':
        await this.agentApply(msg.id);
        return;
      case 'new':
        this.running?.abort();
        this.sessionId = undefined;
        this.entries.length = 0;
        this.host.post({ type: 'entries', entries: [], busy: this.busy, mode: this.mode });
        this.readAhead();
        return;
      case 'stop':
        this.running?.abort();
        return;
      case 'open':
        this.host.open(msg.uri, msg.range);
        return;
      case 'insert':
        this.host.insert(msg.code);
        return;
      case 'copy':
        this.host.copy(msg.code);
        return;
      case 'apply': {
        const target = this.entries.find((e) => e.id === msg.id)?.target;
        if (target) {
          this.host.apply(target, msg.code);
        }
        return;
      }
    }
  }

  /**
   * The `deepseek/assistAhead` signal for the next question: the active document, its selection,
   * the session and the question typed so far; undefined while a request runs (its answer is not in
   * the conversation yet), without a document, and in agent mode (the agent's prompt is another).
   */
  aheadParams(): lsp.AssistAheadParams | undefined {
    return this.busy || this.mode !== 'chat' ? undefined : chatAhead(this.host.context(), this.sessionId, this.draft);
  }

  /** Tell the server what the next question will be about (the panel was shown, got focus, an answer came). */
  readAhead(): void {
    const params = this.aheadParams();
    if (params) {
      this.host.readAhead(params);
    }
  }

  /** A `deepseek/chatDelta` notification: appended to the reply being written, if it is ours. */
  onDelta(params: lsp.ChatDelta): void {
    const p: Partial<lsp.ChatDelta> | undefined = params;
    if (!this.stream || !p || typeof p.sessionId !== 'string' || typeof p.delta !== 'string') {
      return;
    }
    if (this.stream.session === undefined) {
      this.stream.session = p.sessionId;  // a new session's id is known from its first piece
    }
    if (p.sessionId !== this.stream.session) {
      return;
    }
    const reply = this.stream.reply;
    if (Array.isArray(p.references)) {  // before the model reads its prompt: the code the answer is given
      reply.references = p.references.filter(isReference)
        .map((r) => ({ uri: r.uri, range: r.range, label: this.host.label(r.uri, r.range) }));
      this.host.post({ type: 'entry', entry: reply });
    }
    const read = p.prompt;
    if (read && Number.isInteger(read.read) && Number.isInteger(read.total) && read.total > 0 && !reply.text) {
      reply.note = `reading the question and its context: ${Math.round((100 * read.read) / read.total)}% of ${read.total} tokens…`;
      this.host.post({ type: 'entry', entry: reply });
    }
    if (p.delta) {
      if (reply.note !== undefined) {
        reply.note = undefined;
        this.host.post({ type: 'entry', entry: reply });
      }
      reply.text += p.delta;
      this.host.post({ type: 'delta', id: reply.id, text: p.delta });
    }
  }

  /** Ask in the current session; the reply streams into the panel. */
  async send(text: string): Promise<void> {
    this.draft = '';  // the panel cleared its input
    const ctx = this.host.context();
    const arg: lsp.ChatParams = { message: text };
    if (this.sessionId) {
      arg.sessionId = this.sessionId;
    }
    if (ctx) {
      arg.uri = ctx.uri;
      if (ctx.range) {
        arg.range = ctx.range;
      }
    }
    const target = ctx?.range && ctx.version !== undefined ? { uri: ctx.uri, range: ctx.range, version: ctx.version } : undefined;
    await this.run(text, 'deepseek.chat', arg, (r) => [r.reply, r.references], false, target);
  }

  /** Explain `{uri, range}`; the explanation streams into the panel and its session becomes the current one. */
  async explain(arg: lsp.ExplainParams, title: string): Promise<lsp.ExplainResult | undefined> {
    this.setMode('chat');  // a follow-up question continues the explanation
    return this.run(title, 'deepseek.explain', arg,
      (r) => [r.markdown, r.references ?? [{ uri: arg.uri, range: arg.range }]], true);
  }

  /** Switch what Send does; the panel's selector follows. */
  setMode(mode: Mode): void {
    if (mode !== this.mode) {
      this.mode = mode;
      this.host.post({ type: 'mode', mode });
    }
  }

  /** The agent's task `message` with the active editor's file and its selection (as a chat message has). */
  agentArg(message: string): lsp.AgentParams {
    const ctx = this.host.context();
    const arg: lsp.AgentParams = { message };
    if (ctx) {
      arg.uri = ctx.uri;
      if (ctx.range) {
        arg.range = ctx.range;
      }
    }
    return arg;
  }

  /** A `deepseek/agentStep` notification: added to the run being shown, if it is ours. */
  onAgentStep(params: lsp.AgentStepParams): void {
    const p: Partial<lsp.AgentStepParams> | undefined = params;
    const run = this.agentRun;
    const step = parseStep(p?.step);
    if (!run || !p || typeof p.runId !== 'string' || !step) {
      return;
    }
    if (run.runId === undefined && this.pastRuns.has(p.runId)) {
      return;
    }
    run.runId ??= p.runId;  // the run's id is known from its first step
    if (p.runId !== run.runId || run.steps.some((s) => s.index === step.index)) {
      return;
    }
    run.steps.push(step);
    const entry = this.entries.find((e) => e.agent === run);
    if (entry) {
      this.host.post({ type: 'entry', entry });
    }
  }

  /**
   * Run the agent on `arg` in the panel (agent mode): the task, then an entry whose steps arrive as
   * they are taken and which ends with the answer, the edits and their check. Stop cancels it.
   */
  async agent(arg: lsp.AgentParams): Promise<lsp.AgentResult | undefined> {
    this.setMode('agent');
    this.running?.abort();  // one request at a time: the newer one wins
    const abort = new AbortController();
    this.running = abort;
    this.stream = undefined;
    if (this.agentRun?.runId) {
      this.pastRuns.add(this.agentRun.runId);
    }
    const run: AgentView = { steps: [] };
    this.agentRun = run;
    this.push({ id: this.nextId++, role: 'user', text: arg.message });
    const entry = this.push({ id: this.nextId++, role: 'agent', text: '', agent: run });
    this.host.post({ type: 'busy', busy: true });
    try {
      const result = await this.server.execute('deepseek.agent', arg, abort.signal);
      const steps = (Array.isArray(result?.steps) ? result.steps : []).map(parseStep)
        .filter((s): s is lsp.AgentStep => s !== undefined);
      if (steps.length >= run.steps.length) {
        run.steps = steps;  // the result has them all, also any sent while the panel was not listening
      }
      run.runId = typeof result.runId === 'string' ? result.runId : run.runId;
      run.end = {
        outcome: outcomeText(result, run.steps.length),
        answer: typeof result.answer === 'string' ? result.answer : '',
        edits: (Array.isArray(result.edits) ? result.edits : []).filter((e) => typeof e?.uri === 'string')
          .map((e) => ({ uri: e.uri, label: this.host.label(e.uri), diff: editDiff(String(e.old ?? ''), String(e.new ?? '')) })),
        check: result.check ?? null,
        verified: result.verified === true,
        why: whyNotApplicable(result),
      };
      entry.text = run.end.answer;
      return result;
    } catch (err) {
      entry.role = 'error';
      entry.text = abort.signal.aborted ? 'Stopped.' : `deepseek: ${(err as Error | null | undefined)?.message ?? String(err)}`;
      return undefined;
    } finally {
      this.host.post({ type: 'done', entry });
      if (this.running === abort) {
        this.running = undefined;
        this.host.post({ type: 'busy', busy: false });
      }
    }
  }

  /** Apply fix of the agent entry `id`: `deepseek.agentApply` for a verified run; its answer is shown in the entry. */
  private async agentApply(id: number): Promise<void> {
    const entry = this.entries.find((e) => e.id === id);
    const run = entry?.agent;
    if (!entry || !run?.runId || !run.end?.verified || run.apply?.state === 'applying'
      || (run.apply?.state === 'done' && run.apply.applied)) {
      return;
    }
    run.apply = { state: 'applying' };
    this.host.post({ type: 'entry', entry });
    try {
      const r = await this.server.execute('deepseek.agentApply', { runId: run.runId });
      run.apply = { state: 'done', applied: r?.applied === true, reason: typeof r?.reason === 'string' ? r.reason : '' };
    } catch (err) {
      run.apply = { state: 'done', applied: false, reason: (err as Error | null | undefined)?.message ?? String(err) };
    }
    this.host.post({ type: 'entry', entry });
  }

  private async run<C extends 'deepseek.chat' | 'deepseek.explain'>(question: string, command: C, arg: lsp.CommandArg<C>,
    answer: (result: lsp.CommandResult<C>) => [string, lsp.Reference[] | undefined], newSession = false,
    target?: Target,
  ): Promise<lsp.CommandResult<C> | undefined> {
    if (this.running) {
      this.running.abort();  // one request at a time: the newer question wins
    }
    const abort = new AbortController();
    this.running = abort;
    this.push({ id: this.nextId++, role: 'user', text: question });
    const reply = this.push({ id: this.nextId++, role: 'assistant', text: '' });
    this.stream = { session: newSession ? undefined : this.sessionId, reply };
    this.host.post({ type: 'busy', busy: true });
    let result: lsp.CommandResult<C>;
    try {
      result = await this.server.execute(command, arg, abort.signal);
      const [text, refs] = answer(result);
      reply.text = typeof text === 'string' ? text : reply.text;
      reply.references = (refs ?? []).filter((r) => isRange(r.range))
        .map((r) => ({ uri: r.uri, range: r.range, label: this.host.label(r.uri, r.range) }));
      if (typeof result?.sessionId === 'string') {
        this.sessionId = result.sessionId;
      }
      if (target) {
        reply.target = target;
      }
    } catch (err) {
      reply.role = 'error';
      reply.text = abort.signal.aborted ? 'Stopped.' : `deepseek: ${(err as Error | null | undefined)?.message ?? String(err)}`;
      return undefined;
    } finally {
      this.host.post({ type: 'done', entry: reply });
      if (this.running === abort) {
        this.running = undefined;
        this.stream = undefined;
        this.host.post({ type: 'busy', busy: false });
      }
    }
    this.readAhead();  // the answer is in the conversation now: a follow-up's prompt is known up to the question
    return result;
  }

  private push(entry: Entry): Entry {
    this.entries.push(entry);
    this.host.post({ type: 'entry', entry });
    return entry;
  }

  /** The first time the panel opens: continue the latest session the server kept (deepseek.chatHistory). */
  private async restore(): Promise<void> {
    if (this.restored || this.sessionId || this.entries.length) {
      this.restored = true;
      return;
    }
    this.restored = true;
    try {
      const history = await this.server.execute('deepseek.chatHistory', {});
      if (typeof history?.sessionId !== 'string' || this.sessionId || this.entries.length) {
        return;
      }
      this.sessionId = history.sessionId;
      for (const m of history.messages ?? []) {
        const refs: unknown[] = Array.isArray(m.references) ? m.references : [];
        this.entries.push({
          id: this.nextId++,
          role: m.role === 'user' ? 'user' : 'assistant',
          text: String(m.text ?? ''),
          references: refs.filter(isReference)
            .map((r) => ({ uri: r.uri, range: r.range, label: this.host.label(r.uri, r.range) })),
        });
      }
    } catch {
      // No history (or the server is still starting): a new session starts with the first message.
    }
  }
}
