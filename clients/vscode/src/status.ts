/**
 * The status-bar item's text, from `deepseek.status` (docs/PROTOCOL.md) and the server's
 * resource diagnostics. Pure: no `vscode` import.
 */
import type { Backend, DiagnosticCode, ModelStatus, StatusResult } from './lsp_ext';

/** Diagnostic codes that mean the model or the backend cannot serve well (a warning in the status bar). */
export const RESOURCE_CODES: ReadonlySet<string> = new Set<string>([
  'model-too-large', 'model-unavailable', 'model-no-fim', 'model-crashed', 'slow-response', 'backend-unreachable',
] satisfies DiagnosticCode[]);

export interface StatusView {
  /** Status-bar text with codicons, e.g. `$(sparkle) qwen2.5-coder-0.5b… · index ready`. */
  text: string;
  /** Markdown for the tooltip: every figure of the status. */
  tooltip: string;
  /** True when a resource diagnostic is active or the model failed: shown with the warning colour. */
  warning: boolean;
  /** True while something is still changing (model loading, indexing): poll again soon. */
  busy: boolean;
}

export interface Problem {
  code: string;
  message: string;
}

/**
 * A `deepseek.status` result with any part left out: what the status bar copes with (a server
 * of another version, a test's sketch of a status).
 */
export type PartialStatus = { [K in keyof StatusResult]?: Partial<StatusResult[K]> };

const SHORT_NAME = 28;

function shortName(name: string): string {
  return name.length > SHORT_NAME ? name.slice(0, SHORT_NAME - 1) + '…' : name;
}

/** `status` is the result of `deepseek.status` (or undefined while the server starts). */
export function statusView(status: PartialStatus | undefined, problems: readonly Problem[] = []): StatusView {
  const warnings = problems.filter((p) => RESOURCE_CODES.has(p.code));
  if (!status) {
    return { text: '$(loading~spin) deepseek: starting', tooltip: 'deepseek-lsp is starting', warning: warnings.length > 0, busy: true };
  }
  const model: Partial<ModelStatus> = status.model ?? {};
  const backend: Partial<Backend> = status.backend ?? { kind: 'local' };
  const index = status.index ?? {};
  const remote = backend.kind === 'openai';
  const name = remote ? `${backend.model ?? 'remote'} @ ${backend.url}` : (model.name ?? 'no model');
  const state: string = remote ? (backend.reachable === false ? 'unreachable' : 'remote') : (model.state ?? 'not-loaded');
  const busy = ['not-loaded', 'preparing', 'loading'].includes(state) || index.state === 'indexing';
  const failed = ['too-large', 'error', 'crashed', 'unreachable'].includes(state);
  const parts = [shortName(name), state === 'loaded' ? 'loaded' : state];
  if (index.state && index.state !== 'unavailable') {
    parts.push(index.state === 'indexing' ? `indexing ${index.files ?? 0} files` : 'index ready');
  }
  const icon = warnings.length || failed ? '$(warning)' : busy ? '$(loading~spin)' : '$(sparkle)';
  const lines = [
    `**deepseek-lsp**: ${name} (${model.family ?? (remote ? backend.family : undefined) ?? 'no FIM'})`,
    '',
    `- model: ${state}${model.nCtx ? `, n_ctx ${model.nCtx}` : ''}${model.threads ? `, ${model.threads} threads` : ''}`,
  ];
  if (status.ram) {
    lines.push(`- memory: needs ${status.ram.neededMb} MB, ${status.ram.availableMb} MB available (${status.ram.limitSource})`);
  }
  if (index.state) {
    lines.push(`- index: ${index.state}, ${index.files ?? 0} files, ${index.chunks ?? 0} chunks, ${index.embedded ?? 0} embedded`);
  }
  const c = status.completion;
  if (c) {
    lines.push(`- suggestions: ${c.modelAnswers} from the model, ${c.cacheAnswers} from the cache, ` +
      `average ${Math.round(c.avgLatencyMs ?? 0)} ms` +
      (c.quietAnswers ? `; ${c.quietAnswers} not shown, the model was unsure (completion.minConfidence)` : ''));
  }
  if (c?.largeModel) {
    lines.push(`- suggestions you ask for: ${c.largeModel} (${c.largeAnswers ?? 0} so far); the last suggestion came ` +
      `from the ${c.lastModel === 'large' ? 'larger' : 'completion'} model`);
  }
  const cut = c?.context;
  if (cut && (cut.prefixDroppedTokens || cut.suffixDroppedTokens)) {
    const file = cut.uri.slice(cut.uri.lastIndexOf('/') + 1);
    lines.push(`- context: the last suggestion (${file}) saw part of the file: ${cut.prefixDroppedTokens} tokens before ` +
      `the cursor and ${cut.suffixDroppedTokens} after it were left out (raise completion.prefixTokens / ` +
      'completion.suffixTokens for more, slower on a CPU)');
  } else if (cut) {
    lines.push('- context: the last suggestion saw the whole file');
  }
  if (model.error) {
    lines.push('', `**Error**: ${model.error}`);
  }
  for (const w of warnings) {
    lines.push('', `**${w.code}**: ${w.message}`);
  }
  return { text: `${icon} ${parts.join(' · ')}`, tooltip: lines.join('\n'), warning: warnings.length > 0 || failed, busy };
}
