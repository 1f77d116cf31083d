/**
 * Sends `deepseek/assistAhead` (docs/PROTOCOL.md, "Reading ahead") so the server reads the
 * assistant's next prompt while the user selects, types or rests: the chat panel's signal at
 * once when the panel asks (chat_view.ts: shown, focused, an answer came), and after a selection
 * change the one ahead.ts's `nextSignal` picks (the panel's, after 300 ms still, or a hover on
 * the name under the cursor, after 500 ms). Nothing is sent with `deepseek.chat.readAhead` off
 * or while the server is not running. Explain needs no signal: the server reads its prompt on
 * the code-action requests VS Code makes at each cursor move.
 */
import * as vscode from 'vscode';
import { State } from 'vscode-languageclient/node';

import { nextSignal } from './ahead';
import type { Ctx } from './ctx';
import { LANGUAGES } from './languages';
import * as lsp from './lsp_ext';

/** Whether the user lets the extension read ahead (`deepseek.chat.readAhead`, default true). */
export function readAheadOn(): boolean {
  return vscode.workspace.getConfiguration('deepseek').get<boolean>('chat.readAhead', true) !== false;
}

function toLsp(r: vscode.Range): lsp.Range {
  return { start: { line: r.start.line, character: r.start.character }, end: { line: r.end.line, character: r.end.character } };
}

export class ReadAhead implements vscode.Disposable {
  private timer: NodeJS.Timeout | undefined;
  /** The last `chat` signal sent: an unchanged one is not sent again on a selection change. */
  private lastChat: lsp.AssistAheadParams | undefined;
  private readonly listener: vscode.Disposable;

  /**
   * @param ctx the extension's context (the language client).
   * @param chat the chat panel's signal now, or undefined while the panel is hidden or busy.
   */
  constructor(private readonly ctx: Ctx, private readonly chat: () => lsp.AssistAheadParams | undefined) {
    this.listener = vscode.window.onDidChangeTextEditorSelection((e) => this.selectionChanged(e));
  }

  /** Send `params` now (a pending signal is dropped: the newer one replaces it, as on the server). */
  send(params: lsp.AssistAheadParams): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const client = this.ctx.client;
    if (!readAheadOn() || !client || client.state !== State.Running) {
      return;
    }
    if (params.task === 'chat') {
      this.lastChat = params;
    }
    client.sendNotification(lsp.ASSIST_AHEAD, params).catch((err) => this.ctx.output.debug(`assistAhead not sent: ${err}`));
  }

  private selectionChanged(e: vscode.TextEditorSelectionChangeEvent): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const editor = e.textEditor;
    if (!readAheadOn() || editor !== vscode.window.activeTextEditor || !['file', 'untitled'].includes(editor.document.uri.scheme)) {
      return;
    }
    const s = editor.selection;
    const signal = nextSignal({
      uri: editor.document.uri.toString(),
      languageId: editor.document.languageId,
      selection: { ...toLsp(s), active: { line: s.active.line, character: s.active.character } },
      lineText: editor.document.lineAt(s.active.line).text,
    }, this.chat(), this.lastChat, LANGUAGES);
    if (signal) {
      this.timer = setTimeout(() => this.send(signal.params), signal.delayMs);
    }
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.listener.dispose();
  }
}
