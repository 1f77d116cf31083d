/**
 * The status-bar item: `deepseek.status` plus the server's resource diagnostics, in the words
 * of status.ts; refreshed when the client's state or those diagnostics change, and polled
 * (often while the model loads or the workspace is indexed, rarely otherwise).
 */
import * as vscode from 'vscode';
import { State } from 'vscode-languageclient/node';

import { Ctx } from './ctx';
import * as lsp from './lsp_ext';
import { Problem, RESOURCE_CODES, statusView } from './status';

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private readonly disposables: vscode.Disposable[] = [];
  private timer: NodeJS.Timeout | undefined;
  // Resource problems per document, updated only for the documents a diagnostics event names: other
  // extensions' diagnostics change on nearly every keystroke, which must cost neither a scan of every
  // diagnostic in the workspace nor a deepseek.status request.
  private readonly problemsByUri = new Map<string, Problem[]>();

  constructor(private readonly ctx: Ctx) {
    this.item = vscode.window.createStatusBarItem('deepseek.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'deepseek-lsp';
    this.item.command = 'deepseek.showStatus';
    this.item.text = '$(loading~spin) deepseek: starting';
    this.item.show();
    this.disposables.push(
      this.item,
      ctx.onDidChangeState(() => { void this.refresh(); }),
      vscode.languages.onDidChangeDiagnostics((e) => {
        if (this.onDiagnostics(e.uris)) {
          void this.refresh();
        }
      }),
    );
  }

  dispose(): void {
    clearTimeout(this.timer);
    for (const d of this.disposables) {
      d.dispose();
    }
  }

  /** Ask the server for its status (when it runs) and show it with the resource problems. */
  async refresh(): Promise<void> {
    clearTimeout(this.timer);
    const client = this.ctx.client;
    if (!client && this.ctx.startError) {
      this.item.text = '$(error) deepseek: server not found';
      this.item.tooltip = this.ctx.startError;
      this.item.backgroundColor = new vscode.ThemeColor('statusBarItem.errorBackground');
      return;
    }
    const status = client?.state === State.Running
      ? await lsp.executeCommand(client, lsp.COMMANDS.status, {}).catch(() => undefined) : undefined;
    const shown = statusView(status, this.problems());
    this.item.text = shown.text;
    this.item.tooltip = new vscode.MarkdownString(shown.tooltip);
    this.item.backgroundColor = shown.warning ? new vscode.ThemeColor('statusBarItem.warningBackground') : undefined;
    this.timer = setTimeout(() => { void this.refresh(); }, shown.busy ? 2000 : 15000);
  }

  private problemsKey(): string {
    return [...this.problemsByUri.values()].flat().map((p) => `${p.code}:${p.message}`).sort().join('\n');
  }

  /** One problem per code. */
  private problems(): Problem[] {
    const seen = new Map<string, Problem>();
    for (const p of [...this.problemsByUri.values()].flat()) {
      seen.set(p.code, p);
    }
    return [...seen.values()];
  }

  /** Update the problems of `uris`; true when the problems changed. */
  private onDiagnostics(uris: readonly vscode.Uri[]): boolean {
    const before = this.problemsKey();
    for (const uri of uris) {
      const found = vscode.languages.getDiagnostics(uri).flatMap((d) => {
        const code = typeof d.code === 'object' ? String(d.code.value) : String(d.code ?? '');
        return d.source === lsp.DIAGNOSTIC_SOURCE && RESOURCE_CODES.has(code) ? [{ code, message: d.message }] : [];
      });
      if (found.length) {
        this.problemsByUri.set(uri.toString(), found);
      } else {
        this.problemsByUri.delete(uri.toString());
      }
    }
    return this.problemsKey() !== before;
  }
}
