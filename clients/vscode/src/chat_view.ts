/**
 * The chat panel in VS Code: the webview view `deepseek.chatView` (media/chat.js, chat.css)
 * and the editor side of its controller (chat.ts): requests through the Ctx's client,
 * `deepseek/chatDelta` streamed in, references opened in the editor, a code block's
 * Insert at cursor / Copy / Apply (a workspace edit previewed as a diff by VS Code's
 * refactor preview before it is applied), and reading ahead (read_ahead.ts): the panel's
 * `deepseek/assistAhead` when it is shown or focused, after each answer and when the
 * selection changes while it is visible. In agent mode (the panel's Chat / Agent selector, the
 * `deepseek.agent` command) the agent's steps (`deepseek/agentStep`) stream into the panel.
 */
import * as vscode from 'vscode';

import { applyText, ChatController, ChatServer, Range, Target } from './chat';
import { Ctx, errorMessage } from './ctx';
import * as lsp from './lsp_ext';
import { ReadAhead } from './read_ahead';

/** `a-b`, 1-based, as editors number lines; a range ending at character 0 of a line stops before it. */
export function lineSpan(r: Range): string {
  const last = r.end.character === 0 && r.end.line > r.start.line ? r.end.line : r.end.line + 1;
  return `${r.start.line + 1}-${last}`;
}

function toRange(r: Range): vscode.Range {
  return new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);
}

/**
 * Replace the selection a question was about with `code`: refused when the document changed
 * since the question (its version), otherwise a workspace edit that needs confirmation, which
 * VS Code shows in its refactor preview (a diff, Apply or Discard) before applying it.
 */
async function applyCode(target: Target, code: string): Promise<void> {
  const uri = vscode.Uri.parse(target.uri);
  const name = vscode.workspace.asRelativePath(uri);
  const doc = await vscode.workspace.openTextDocument(uri);
  if (doc.version !== target.version) {
    void vscode.window.showWarningMessage(`deepseek: ${name} changed after the question; nothing was applied. ` +
      'Select the code and ask again.');
    return;
  }
  const range = toRange(target.range);
  const edit = new vscode.WorkspaceEdit();
  edit.replace(uri, range, applyText(doc.getText(range), code),
    { needsConfirmation: true, label: 'deepseek: code from the chat', description: `lines ${lineSpan(target.range)}` });
  const applied = await vscode.workspace.applyEdit(edit);
  vscode.window.setStatusBarMessage(applied ? `deepseek: applied to ${name}` : 'deepseek: nothing applied', 4000);
}

export class ChatView {
  readonly controller: ChatController;
  /** Sends `deepseek/assistAhead`: the panel's signal, and hover where the cursor rests. */
  readonly ahead: ReadAhead;
  private view: vscode.WebviewView | undefined;
  /** The text editor the user was last in (a webview panel takes the focus, not the editor). */
  private lastEditor: vscode.TextEditor | undefined = vscode.window.activeTextEditor;

  constructor(ctx: Ctx) {
    ctx.pushCleanup(vscode.window.onDidChangeActiveTextEditor((editor) => {
      if (editor) {
        this.lastEditor = editor;
      }
    }));
    const server: ChatServer = {
      async execute(command, arg, signal) {
        const client = ctx.runningClient();
        const cts = new vscode.CancellationTokenSource();
        signal?.addEventListener('abort', () => cts.cancel());
        try {
          return await lsp.executeCommand(client, command, arg, cts.token);
        } finally {
          cts.dispose();
        }
      },
    };
    this.controller = new ChatController(server, {
      post: (message) => { void this.view?.webview.postMessage(message); },
      open: (uri, range) => {
        // The lines selected with the cursor at their start, so the view shows where the code begins.
        const r = toRange(range);
        vscode.window.showTextDocument(vscode.Uri.parse(uri), { preview: true }).then((editor) => {
          editor.selection = new vscode.Selection(r.end, r.start);
          editor.revealRange(r, vscode.TextEditorRevealType.InCenterIfOutsideViewport);
        }, (err) => vscode.window.showWarningMessage(`deepseek: cannot open ${uri}: ${errorMessage(err)}`));
      },
      context: () => {
        const editor = vscode.window.activeTextEditor;
        if (!editor || !['file', 'untitled'].includes(editor.document.uri.scheme)) {
          return undefined;
        }
        const s = editor.selection;
        return {
          uri: editor.document.uri.toString(),
          version: editor.document.version,
          range: s.isEmpty ? undefined : {
            start: { line: s.start.line, character: s.start.character }, end: { line: s.end.line, character: s.end.character },
          },
        };
      },
      label: (uri, range) => {
        const file = vscode.workspace.asRelativePath(vscode.Uri.parse(uri));
        return range ? `${file}:${lineSpan(range)}` : file;
      },
      insert: (code) => {
        const editor = this.lastEditor;
        if (!editor || editor.document.isClosed) {
          void vscode.window.showWarningMessage('deepseek: open a file to insert the code into');
          return;
        }
        void vscode.window.showTextDocument(editor.document, editor.viewColumn).then((shown) =>
          shown.edit((b) => shown.selections.forEach((sel) => b.replace(sel, code))));
      },
      copy: (code) => {
        void vscode.env.clipboard.writeText(code).then(() => vscode.window.setStatusBarMessage('deepseek: code copied', 3000));
      },
      apply: (target, code) => {
        applyCode(target, code).catch((err) => vscode.window.showWarningMessage(`deepseek: nothing applied: ${errorMessage(err)}`));
      },
      readAhead: (params) => this.ahead.send(params),
    });
    this.ahead = new ReadAhead(ctx, () => (this.view?.visible ? this.controller.aheadParams() : undefined));
    ctx.pushCleanup(this.ahead);
    ctx.onNotification(lsp.CHAT_DELTA, (params) => this.controller.onDelta(params));
    ctx.onNotification(lsp.AGENT_STEP, (params) => this.controller.onAgentStep(params));
    ctx.pushCleanup(vscode.window.registerWebviewViewProvider('deepseek.chatView', {
      resolveWebviewView: (webviewView) => {
        this.view = webviewView;
        const media = vscode.Uri.joinPath(ctx.extCtx.extensionUri, 'media');
        webviewView.webview.options = { enableScripts: true, localResourceRoots: [media] };
        webviewView.webview.html = chatHtml(webviewView.webview, media);
        webviewView.webview.onDidReceiveMessage((m) => this.controller.handle(m));
        // Shown again (its webview kept): the next question's prompt is read while it is typed.
        webviewView.onDidChangeVisibility(() => {
          if (webviewView.visible) {
            this.controller.readAhead();
          }
        });
        webviewView.onDidDispose(() => {
          if (this.view === webviewView) {
            this.view = undefined;
          }
        });
      },
    }, { webviewOptions: { retainContextWhenHidden: true } }));
  }

  /** Show the panel. */
  focus(): Thenable<unknown> {
    return vscode.commands.executeCommand('deepseek.chatView.focus');
  }
}

function chatHtml(webview: vscode.Webview, media: vscode.Uri): string {
  const nonce = [...Array(32)].map(() => Math.floor(Math.random() * 36).toString(36)).join('');
  const script = webview.asWebviewUri(vscode.Uri.joinPath(media, 'chat.js'));
  const style = webview.asWebviewUri(vscode.Uri.joinPath(media, 'chat.css'));
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src ${webview.cspSource}; script-src 'nonce-${nonce}';">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${style}"><title>deepseek chat</title></head>
<body><div id="log"></div>
<div id="composer"><select id="mode" title="Chat: ask about your code. Agent: give it a problem to fix; it works in steps, runs the tests in the sandbox and proposes a verified fix.">
<option value="chat">Chat</option><option value="agent">Agent</option></select>
<textarea id="input" rows="2" placeholder="Ask about your code (Enter sends; the selection goes with it)"></textarea>
<button id="send">Send</button><button id="stop" hidden>Stop</button></div>
<script nonce="${nonce}" src="${script}"></script></body></html>`;
}
