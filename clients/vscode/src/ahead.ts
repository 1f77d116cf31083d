/**
 * Reading ahead (docs/PROTOCOL.md, "Reading ahead"): which `deepseek/assistAhead` signal a moment
 * in the editor calls for, and its params. Pure: no `vscode` import (read_ahead.ts sends the
 * signals, chat.ts builds the panel's), so `npm test` runs it in plain Node.
 *
 * One signal at a time, as the server keeps only the latest: a selection change schedules either
 * the chat panel's signal (the panel is visible and what its next question would carry changed)
 * or a hover signal (nothing selected, the cursor on a name in a language the extension serves).
 */
import type { AssistAheadParams, Position, Range } from './lsp_ext';

/** How long the selection stays put, while the chat panel is visible, before `chat` is sent. Unit: ms. */
export const CHAT_REST_MS = 300;
/** How long the cursor rests on a name before `hover` is sent. Unit: ms. */
export const HOVER_REST_MS = 500;

/** A name: a letter, `_` or `$`, then letters, digits, `_` or `$` (a number is not one). */
const NAME = /[\p{L}_$][\p{L}\p{N}_$]*/gu;

export function isEmptyRange(r: Range): boolean {
  return r.start.line === r.end.line && r.start.character === r.end.character;
}

function copyRange(r: Range): Range {
  return { start: { line: r.start.line, character: r.start.character }, end: { line: r.end.line, character: r.end.character } };
}

/**
 * The chat panel's signal: the document the next question goes with, its selection (left out when
 * empty), the conversation it continues (left out for a new one) and the question as typed so far
 * (left out when blank). Undefined without a document.
 */
export function chatAhead(context: { uri: string; range?: Range } | undefined, sessionId?: string,
  draft?: string): AssistAheadParams | undefined {
  if (!context || typeof context.uri !== 'string' || !context.uri) {
    return undefined;
  }
  const params: AssistAheadParams = { task: 'chat', uri: context.uri };
  if (context.range && !isEmptyRange(context.range)) {
    params.range = copyRange(context.range);
  }
  if (sessionId) {
    params.sessionId = sessionId;
  }
  if (draft?.trim()) {
    params.draft = draft.trim();
  }
  return params;
}

/** Whether `character` (UTF-16, as LSP and VS Code count) is on a name of `lineText` or just after one. */
export function onName(lineText: string, character: number): boolean {
  for (const m of lineText.matchAll(NAME)) {
    const start = m.index ?? 0;
    if (character >= start && character <= start + m[0].length) {
      return true;
    }
    if (start > character) {
      return false;
    }
  }
  return false;
}

/** The hover signal for a cursor at `position` in `uri`, or undefined when it is not on a name. */
export function hoverAhead(uri: string, lineText: string, position: Position): AssistAheadParams | undefined {
  if (!onName(lineText, position.character)) {
    return undefined;
  }
  return { task: 'hover', uri, position: { line: position.line, character: position.character } };
}

/** Whether two signals ask for the same prompt. */
export function sameAhead(a: AssistAheadParams | undefined, b: AssistAheadParams | undefined): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/** The editor at a selection change: its document and the selection (`active` is the cursor). */
export interface EditorMoment {
  uri: string;
  languageId: string;
  selection: Range & { active: Position };
  /** The text of the cursor's line. */
  lineText: string;
}

export interface AheadSignal {
  params: AssistAheadParams;
  /** Send it when nothing moved for this long. Unit: ms. */
  delayMs: number;
}

/**
 * The signal a selection change calls for, or undefined for none.
 *
 * @param at the editor now.
 * @param chat the chat panel's signal now (`chatAhead`), undefined while the panel is hidden or busy.
 * @param lastChat the last `chat` signal sent: an unchanged one is not sent again.
 * @param languages the languages the extension serves (languages.ts).
 */
export function nextSignal(at: EditorMoment, chat: AssistAheadParams | undefined, lastChat: AssistAheadParams | undefined,
  languages: readonly string[]): AheadSignal | undefined {
  if (chat && !sameAhead(chat, lastChat)) {
    return { params: chat, delayMs: CHAT_REST_MS };
  }
  if (!isEmptyRange(at.selection) || !languages.includes(at.languageId)) {
    return undefined;
  }
  const hover = hoverAhead(at.uri, at.lineText, at.selection.active);
  return hover && { params: hover, delayMs: HOVER_REST_MS };
}
