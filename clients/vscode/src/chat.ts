/**
 * The chat panel's controller: the messages between the webview (media/chat.js) and the
 * server (`deepseek.chat`, `deepseek.explain`, `deepseek/chatDelta`). Pure: no `vscode`
 * import; chat_view.ts gives it a server connection, a panel port and an editor host.
 *
 * Panel -> controller (`FromPanel`): `ready` (the webview (re)loaded: it gets the whole
 * transcript), `send` {text}, `new` (forget the session: the next message starts one),
 * `stop` (cancel the running request), `open` {uri, range} (a reference was clicked),
 * `focus` (the webview got the focus), `draft` {text} (typing paused: the question so far).
 * When the panel loads, gets the focus, starts a new conversation or typing in it pauses, and
 * after each answer, the controller says what the next question will be about
 * (`deepseek/assistAhead`, task `chat`: the document, the selection, the session, the draft) so
 * the server reads its prompt meanwhile.
 * Controller -> panel (`ToPanel`): `entries` {entries, busy}, `entry` {entry}, `delta`
 * {id, text} (appended to the reply being written), `done` {entry} (the final form of the
 * entry with that id), `busy` {busy}.
 */
import { chatAhead } from './ahead';
import type * as lsp from './lsp_ext';
import type { Range } from './lsp_ext';

export type { Position, Range } from './lsp_ext';

/** A reference as the panel shows it: the code a reply is about, with a short label. */
export interface Reference { uri: string; range: Range; label: string }
/** The selection a question was about, at the document version it was asked at: what Apply replaces. */
export interface Target { uri: string; range: Range; version: number }
export interface Entry {
  id: number; role: 'user' | 'assistant' | 'error'; text: string; references?: Reference[];
  /** On a reply to a question about a selection: its code blocks can replace that selection. */
  target?: Target;
  /** Shown in place of a reply that has no text yet: how far reading a long prompt got. */
  note?: string;
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
  | { type: 'apply'; id: number; code: string };

export type ToPanel =
  | { type: 'entries'; entries: Entry[]; busy: boolean }
  | { type: 'entry'; entry: Entry }
  | { type: 'delta'; id: number; text: string }
  | { type: 'done'; entry: Entry }
  | { type: 'busy'; busy: boolean };

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
  /** A short label for a reference, e.g. `src/config.py:7-13`. */
  label(uri: string, range: Range): string;
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
    default:
      return undefined;
  }
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
        this.host.post({ type: 'entries', entries: this.entries, busy: this.busy });
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
        await this.send(msg.text);
        return;
      case 'new':
        this.running?.abort();
        this.sessionId = undefined;
        this.entries.length = 0;
        this.host.post({ type: 'entries', entries: [], busy: this.busy });
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
   * the conversation yet) or without a document.
   */
  aheadParams(): lsp.AssistAheadParams | undefined {
    return this.busy ? undefined : chatAhead(this.host.context(), this.sessionId, this.draft);
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
    return this.run(title, 'deepseek.explain', arg,
      (r) => [r.markdown, r.references ?? [{ uri: arg.uri, range: arg.range }]], true);
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
