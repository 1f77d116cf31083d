/**
 * deepseek-lsp's extensions to LSP, as docs/PROTOCOL.md documents them: the `deepseek.*`
 * commands of `workspace/executeCommand` with the type of their one argument and of their
 * result, the `deepseek/chatDelta`, `deepseek/agentStep` and `deepseek/assistAhead` notifications and the diagnostic
 * codes, and one typed `executeCommand` for them all. Change them only together with
 * docs/PROTOCOL.md.
 *
 * chat.ts, ahead.ts and status.ts import only the types (`import type`): they stay free of
 * `vscode` and vscode-languageclient, which this module loads, so `npm test` runs them in plain
 * Node.
 */
import type { CancellationToken } from 'vscode';
import * as lc from 'vscode-languageclient';

export type Position = lc.Position;
export type Range = lc.Range;

/** Code in a document: whole lines (end exclusive) when the server sends it. */
export interface Reference {
  uri: string;
  range: Range;
}

// -- deepseek.status --------------------------------------------------------------------------

/** No arguments (the extension sends `{}`, which the server ignores). */
export type StatusParams = Record<string, never>;

/** `model.state`: `crashed` is llama.cpp crashing or hanging in every configuration the probe tried. */
export type ModelState = 'not-loaded' | 'preparing' | 'loading' | 'loaded' | 'too-large' | 'crashed' | 'error';

/** The FIM format of a model, when it has FIM tokens. */
export type ModelFamily = 'qwen2.5-coder' | 'deepseek-coder';

/** A llama.cpp load configuration. */
export type LoadConfig = 'default' | 'no-repack' | 'minimal';

/** One configuration the probe tried, in order. */
export interface ProbeAttempt {
  config: LoadConfig;
  ok: boolean;
  /** `ok`, `crashed (SIGSEGV)` and the like, `timed out after N s` or `failed: …`. */
  outcome: string;
  seconds: number;
  /** The prompt-processing rate the probe saw. */
  promptTokensPerS: number | null;
}

/** How `model.loadConfig` was chosen. */
export interface Probe {
  config: LoadConfig | null;
  /** `probe`: probed at this start; `cache`: an earlier start's probe; `setting`: forced by `model.loadConfig`. */
  source: 'probe' | 'cache' | 'setting';
  tried: ProbeAttempt[];
  /** Configurations no longer trusted, with why (a server process died while loading it or in its first decodes). */
  died: Record<string, string>;
}

export interface ModelStatus {
  /** Null until a model is chosen (the fields below likewise until they are known). */
  name: string | null;
  path: string | null;
  /** Null: no FIM tokens (or not known yet). */
  family: ModelFamily | null;
  sizeMb: number | null;
  loaded: boolean;
  state: ModelState;
  nCtx: number | null;
  threads: number | null;
  /** What went wrong and the fix, for `too-large`, `crashed` and `error`. */
  error: string | null;
  /** The load configuration in use; null until loaded. */
  loadConfig: LoadConfig | null;
  probe: Probe | null;
}

/** `backend.kind` `local`: the model runs in the server. */
export interface LocalBackend {
  kind: 'local';
}

/** `backend.kind` `openai`: an OpenAI-compatible server does the work; no local model is loaded. */
export interface OpenAIBackend {
  kind: 'openai';
  url: string | null;
  model: string | null;
  family: ModelFamily;
  reachable: boolean;
}

export type Backend = LocalBackend | OpenAIBackend;

export interface RamStatus {
  /** Measured now, or `resources.ramLimitMb` when set. */
  availableMb: number;
  /** The estimate for the configured model and `n_ctx`; null until the model was checked. */
  neededMb: number | null;
  limitSource: 'available memory' | 'resources.ramLimitMb' | null;
}

/** `indexing` until every file is searchable by full text, then `ready`; `unavailable` without a workspace
 * folder; `error` when indexing failed (`error` says why). */
export type IndexState = 'indexing' | 'ready' | 'unavailable' | 'error';

export interface IndexStatus {
  state: IndexState;
  files: number;
  chunks: number;
  /** Why indexing failed (only in the `error` state). */
  error?: string;
  /** Chunks with an embedding (semantic search covers those); absent while `unavailable`. */
  embedded?: number;
  /** Why semantic search is off, with the fix. */
  embeddingError?: string;
}

/** Suggestion figures, summed since the server started. */
export interface CompletionStats {
  modelAnswers: number;
  cacheAnswers: number;
  /** Moving average of the answers that needed the model; null before the first. */
  avgLatencyMs: number | null;
  promptTokens: number;
  /** How much of the prompts the KV cache already held. */
  reusedTokens: number;
  /** How much of its file the last suggestion's prompt left out; null before the first suggestion. */
  context?: ContextCut | null;
  /** The assistant's larger model writing the suggestions you ask for (completion.manualModel); null while none is. */
  largeModel?: string | null;
  /** Suggestions you asked for that the larger model wrote. */
  largeAnswers?: number;
  /** Who wrote the last suggestion the model made: the completion model (small) or the larger one. */
  lastModel?: 'small' | 'large' | null;
  /** How sure the model was of its last suggestion: probabilities (0-1) of the tokens it wrote for it. */
  lastConfidence?: { mean: number; least: number; first: number; tokens: number } | null;
  /** Suggestions made as you type that were not shown: the model was unsure (completion.minConfidence). */
  quietAnswers?: number;
}

/** The context budget's cut of the last suggestion's file (tokens; 0 when nothing was left out). */
export interface ContextCut {
  uri: string;
  prefixDroppedTokens: number;
  suffixDroppedTokens: number;
}

export interface StatusResult {
  model: ModelStatus;
  backend: Backend;
  ram: RamStatus;
  index: IndexStatus;
  /** Null until a FIM model or a backend is ready. */
  completion: CompletionStats | null;
}

// -- deepseek.search --------------------------------------------------------------------------

export interface SearchParams {
  query: string;
  /** 1-200, default 10. */
  k?: number;
}

/** One chunk of the workspace; `range` covers whole lines (end exclusive). */
export interface SearchHit extends Reference {
  score: number;
  /** The definition's name; empty for a window of lines between definitions. */
  symbol: string;
  kind: string;
  text: string;
}

/** Best first; empty without a workspace folder or with `index.enabled` false. */
export type SearchResult = SearchHit[];

// -- the assistant: deepseek.explain, deepseek.refactor, deepseek.writeTests --------------------

/**
 * The code a command works on: the selection (whole lines; one ending at character 0 of a
 * line leaves that line out), or with an empty range the definition around it. A code
 * action's command carries this as its one argument.
 */
export interface CodeParams {
  uri: string;
  range: Range;
}

export type ExplainParams = CodeParams;

export interface ExplainResult {
  /** Starts by naming the code (`**\`name\`** in \`file\`, lines a-b`); streamed first as `deepseek/chatDelta`. */
  markdown: string;
  sessionId: string;
  cacheHit: boolean;
  promptVersion: string;
  /** The lines explained, e.g. the whole definition around an empty range. */
  references: Reference[];
}

export interface RefactorParams extends CodeParams {
  /** How the code should change; empty: make it clearer. */
  instruction?: string;
}

/** The model rewrote the code and the rewrite was sent with `workspace/applyEdit`. */
export interface RefactorSent {
  /** Whether the editor applied the edit. */
  applied: boolean;
  /** Why the editor did not apply it; empty otherwise. */
  reason: string;
  edit: lc.WorkspaceEdit;
  cacheHit: boolean;
}

/** No edit was sent: the rewrite added a syntax error, lost the definition's name, etc. */
export interface RefactorRefused {
  applied: false;
  reason: string;
  edit: null;
}

export type RefactorResult = RefactorSent | RefactorRefused;

export type WriteTestsParams = CodeParams;

/** The tests were written and sent with `workspace/applyEdit` (`CreateFile` + insert, or appended). */
export interface TestsWritten {
  /** Whether the editor applied the edit. */
  applied: boolean;
  /** The test module, e.g. `tests/test_<module>.py`. */
  uri: string;
  rounds: number;
  /** Whether the tests were run (Python only: pytest in the sandbox). */
  ran: boolean;
  /** Why they were not run (no sandbox, no pytest, tests.sandbox off) and how to fix it; empty otherwise. */
  notRun: string;
  ok: boolean;
  /** Test names. */
  passed: string[];
  failed: string[];
  /** The last 3,000 characters of pytest's output. */
  output: string;
  /** Deliberately broken copies of the function the tests were run on; null when they were not run. */
  mutants: MutationScore | null;
  /** Why the editor did not apply the edit; empty otherwise. */
  reason: string;
}

export interface MutationScore {
  tried: number;
  caught: number;
  /** What each mutant the tests did not catch changed, e.g. "line 7: `<` → `<=`". */
  survivors: string[];
  /** Why no mutant was tried; empty otherwise. */
  notTried: string;
  /** caught / tried, 0-1; null when none was tried. */
  score: number | null;
  /** Fewer than half of the mutants caught. */
  weak: boolean;
  /** "4 passed, 0 failed, caught 6 of 8 mutants (75%)". */
  summary: string;
}

/** No tests were written. */
export interface TestsRefused {
  applied: false;
  reason: string;
  rounds: number;
}

export type WriteTestsResult = TestsWritten | TestsRefused;

// -- the chat: deepseek.chat, deepseek.chatHistory, deepseek.chatReset ----------------------

export interface ChatParams {
  message: string;
  /** The session to continue; absent or unknown: a new session. */
  sessionId?: string;
  /** The current document, and the selection in it. */
  uri?: string;
  range?: Range;
}

export interface ChatResult {
  sessionId: string;
  /** Streamed first as `deepseek/chatDelta`. */
  reply: string;
  references: Reference[];
  cacheHit: boolean;
  promptVersion: string;
}

export interface ChatHistoryParams {
  /** Absent: the latest session. */
  sessionId?: string;
}

export interface ChatMessage {
  role: 'user' | 'assistant';
  text: string;
  /** Seconds since the epoch. */
  timestamp: number;
  /** The model that answered (assistant messages). */
  model: string | null;
  /** The prompt pack that produced it, e.g. `chat@v1`. */
  promptVersion: string | null;
  references: Reference[];
}

export interface ChatHistoryResult {
  /** Null when there is no session yet. */
  sessionId: string | null;
  messages: ChatMessage[];
}

export interface ChatResetParams {
  sessionId: string;
}

export interface ChatResetResult {
  sessionId: string;
  reset: true;
}

// -- the agent: deepseek.agent, deepseek.agentApply, deepseek/agentStep -------------------------

/** The task in words; the file and lines it is about (their code is added to the task). */
export interface AgentParams {
  message: string;
  uri?: string;
  range?: Range;
  /** pytest node ids the task is about (relative to the workspace folder); run in the verification too. */
  tests?: string[];
  /** 1-30, default 8. */
  maxSteps?: number;
}

/** One Thought -> Action -> Observation turn, sent as `deepseek/agentStep` when its tool has answered. */
export interface AgentStep {
  /** 1-based. */
  index: number;
  thought: string;
  /** The tool called; `malformed` for a turn without a valid call. */
  tool: string;
  /** Null for a malformed turn. */
  arguments: Record<string, unknown> | null;
  /** What the tool answered (at most 2,400 characters). */
  observation: string;
  /** False for a malformed call, a refusal, a tool's error or a failing run. */
  ok: boolean;
  seconds: number;
  tokens: number;
  /** The step was a draft: the model's plain answer with the corrected function, run as `replace_function`. */
  draft?: boolean;
}

export interface AgentStepParams {
  runId: string;
  step: AgentStep;
}

export const AGENT_STEP = new lc.NotificationType<AgentStepParams>('deepseek/agentStep');

/** A proposed edit: in `uri`, `old` (found exactly once) replaced by `new`; nothing is written by the run. */
export interface AgentEdit {
  uri: string;
  old: string;
  new: string;
}

/** How the proposed edits fared against the workspace's tests that cover them, in the sandbox. */
export interface AgentCheck {
  /** `unverified`: nothing could be run (`summary` says why). */
  verdict: 'passed' | 'failed' | 'unverified';
  summary: string;
  /** The tests run. */
  tests: string[];
  /** The tests that failed. */
  failed: string[];
}

export type AgentOutcome = 'finished' | 'budget' | 'cancelled' | 'error';

export interface AgentResult {
  runId: string;
  /** `error`: `answer` says why. */
  outcome: AgentOutcome;
  answer: string;
  model: string;
  promptVersion: string;
  steps: AgentStep[];
  edits: AgentEdit[];
  /** Null without edits. */
  check: AgentCheck | null;
  /** Finished with edits whose check passed: only then can `deepseek.agentApply` apply them. */
  verified: boolean;
  seconds: number;
  /** Steps without a valid tool call. */
  malformed: number;
}

/** One of the server's 16 latest runs. */
export interface AgentApplyParams {
  runId: string;
}

/** The run's edits as one versioned `workspace/applyEdit`, only when verified and the files are as the agent read them. */
export interface AgentApplyResult {
  applied: boolean;
  reason: string;
}

// -- the commands, by id ----------------------------------------------------------------------

/** Every command of `executeCommandProvider.commands`: its one argument and its result. */
export interface CommandTypes {
  'deepseek.status': { arg: StatusParams; result: StatusResult };
  'deepseek.search': { arg: SearchParams; result: SearchResult };
  'deepseek.explain': { arg: ExplainParams; result: ExplainResult };
  'deepseek.refactor': { arg: RefactorParams; result: RefactorResult };
  'deepseek.writeTests': { arg: WriteTestsParams; result: WriteTestsResult };
  'deepseek.chat': { arg: ChatParams; result: ChatResult };
  'deepseek.chatHistory': { arg: ChatHistoryParams; result: ChatHistoryResult };
  'deepseek.chatReset': { arg: ChatResetParams; result: ChatResetResult };
  'deepseek.agent': { arg: AgentParams; result: AgentResult };
  'deepseek.agentApply': { arg: AgentApplyParams; result: AgentApplyResult };
}

export type CommandId = keyof CommandTypes;
export type CommandArg<C extends CommandId> = CommandTypes[C]['arg'];
export type CommandResult<C extends CommandId> = CommandTypes[C]['result'];

/** The command ids. */
export const COMMANDS = {
  status: 'deepseek.status',
  search: 'deepseek.search',
  explain: 'deepseek.explain',
  refactor: 'deepseek.refactor',
  writeTests: 'deepseek.writeTests',
  chat: 'deepseek.chat',
  chatHistory: 'deepseek.chatHistory',
  chatReset: 'deepseek.chatReset',
  agent: 'deepseek.agent',
  agentApply: 'deepseek.agentApply',
} as const satisfies Record<string, CommandId>;

/** The commands a code action runs (`textDocument/codeAction`), each with `{uri, range}`. */
export type CodeActionCommandId = typeof COMMANDS.explain | typeof COMMANDS.refactor | typeof COMMANDS.writeTests;

// -- notifications and diagnostics ------------------------------------------------------------

/** The next piece of a reply being written (chat and explain), in order; the final text is in the command's result. */
export interface ChatDelta {
  sessionId: string;
  delta: string;
  /** A chat's first notification, before the model reads its prompt: the code the answer is given. */
  references?: Reference[];
  /** While a long prompt is read (1,024 or more new tokens): how far, in tokens. */
  prompt?: { read: number; total: number };
}

export const CHAT_DELTA = new lc.NotificationType<ChatDelta>('deepseek/chatDelta');

/** What the user is about to ask the assistant for. */
export type AssistAheadTask = 'chat' | 'explain' | 'hover';

/**
 * Client -> server: the user is about to ask the assistant (docs/PROTOCOL.md, "Reading ahead"), so
 * the server reads that request's prompt, as far as it is known, into the chat model's KV cache
 * and the answer starts sooner. Each one replaces the previous one; the server acts on it after
 * 0.4 s without a newer one and ignores malformed ones. Only `chat` may load the chat model.
 *
 * The extension sends `chat` when the chat panel is shown or gets focus, when the selection
 * changes while it is visible (after 300 ms still), when typing in it pauses (500 ms) and after
 * each answer; `hover` when the cursor rests 500 ms on a name; none with
 * `deepseek.chat.readAhead` off. `explain` it need not send: the server reads Explain's prompt
 * on the code-action requests VS Code makes at each cursor move.
 */
export interface AssistAheadParams {
  task: AssistAheadTask;
  /** The document the request will be about. */
  uri: string;
  /** `chat`: the selection (absent when nothing is selected); `explain`: the code to explain. */
  range?: Range;
  /** `hover`: the cursor, on a name; `explain` without `range`: the definition around it. */
  position?: Position;
  /** `chat`: the panel's conversation, which the next question continues (absent: a new one). */
  sessionId?: string;
  /** `chat`: the question as typed so far (absent when none): the server also reads the workspace chunks it finds. */
  draft?: string;
}

export const ASSIST_AHEAD = new lc.NotificationType<AssistAheadParams>('deepseek/assistAhead');

/** `source` of every diagnostic of the server. */
export const DIAGNOSTIC_SOURCE = 'deepseek';

/** The `code` of the server's diagnostics. */
export type DiagnosticCode =
  | 'model-too-large' | 'model-unavailable' | 'model-crashed' | 'model-no-fim' | 'slow-response'
  | 'backend-unreachable';

// -- typed requests ---------------------------------------------------------------------------

/** `workspace/executeCommand` of `command` with its one argument. Rejects on an error answer. */
export function executeCommand<C extends CommandId>(
  client: lc.BaseLanguageClient, command: C, arg: CommandArg<C>, token?: CancellationToken,
): Promise<CommandResult<C>> {
  return client.sendRequest(lc.ExecuteCommandRequest.type, { command, arguments: [arg] }, token);
}

// -- deepseek/workspaceTrust -------------------------------------------------------------------

/** Client -> server notification: the user now trusts the workspace (VS Code's Workspace Trust). */
export const WORKSPACE_TRUST = 'deepseek/workspaceTrust';

export interface WorkspaceTrustParams {
  trusted: boolean;
}
