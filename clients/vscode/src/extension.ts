/**
 * deepseek-lsp for VS Code: starts the `deepseek-lsp` language server over stdio and wires
 * inline completions (LSP 3.18 `textDocument/inlineCompletion`, through vscode-languageclient),
 * the Explain / Refactor / Write tests commands, the chat panel and the status-bar item.
 * Everything smart lives in the server; the contract is docs/PROTOCOL.md.
 */
import * as path from 'path';
import * as readline from 'readline';
import * as vscode from 'vscode';
import {
  ExecuteCommandRequest, LanguageClient, LanguageClientOptions, ServerOptions, State,
} from 'vscode-languageclient/node';

import { ChatController, ChatServer, Range } from './chat';
import { parseServerLog, resolveServer, serverKeys, serverSettings } from './settings';
import { Problem, RESOURCE_CODES, statusView } from './status';

/** The languages the server offers completions, actions and hover for (the Neovim plugin's list). */
export const LANGUAGES = ['python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'rust',
  'java', 'c', 'cpp', 'lua'];

let client: LanguageClient | undefined;

function settingsNow(keys: readonly string[]): Record<string, unknown> {
  const config = vscode.workspace.getConfiguration('deepseek');
  return serverSettings(keys, (key) => config.get(key));
}

function toRange(r: Range): vscode.Range {
  return new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);
}

function selectionArg(editor: vscode.TextEditor | undefined): { uri: string; range: Range } | undefined {
  if (!editor) {
    vscode.window.showWarningMessage('deepseek: open a file and select code (or put the cursor in a function) first.');
    return undefined;
  }
  const s = editor.selection;
  return {
    uri: editor.document.uri.toString(),
    range: { start: { line: s.start.line, character: s.start.character }, end: { line: s.end.line, character: s.end.character } },
  };
}

/** `a-b`, 1-based, as editors number lines; a range ending at character 0 of a line stops before it. */
function lineSpan(r: Range): string {
  const last = r.end.character === 0 && r.end.line > r.start.line ? r.end.line : r.end.line + 1;
  return `${r.start.line + 1}-${last}`;
}

function describe(arg: { uri: string; range: Range }): string {
  const uri = vscode.Uri.parse(arg.uri);
  const r = arg.range;
  return r.start.line === r.end.line && r.start.character === r.end.character
    ? `Explain the code around line ${r.start.line + 1} of ${path.basename(uri.fsPath)}`
    : `Explain ${vscode.workspace.asRelativePath(uri)}, lines ${lineSpan(r)}`;
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel('deepseek-lsp', { log: true });
  const keys = serverKeys(context.extension.packageJSON);
  const statusItem = vscode.window.createStatusBarItem('deepseek.status', vscode.StatusBarAlignment.Right, 100);
  statusItem.name = 'deepseek-lsp';
  statusItem.command = 'deepseek.showStatus';
  statusItem.text = '$(loading~spin) deepseek: starting';
  statusItem.show();
  context.subscriptions.push(output, statusItem);

  const execute = (command: string, arg: object, token?: vscode.CancellationToken): Promise<any> => {
    if (!client || client.state !== State.Running) {
      return Promise.reject(new Error('the deepseek-lsp server is not running (see the deepseek-lsp output)'));
    }
    return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: [arg] }, token);
  };
  const chatServer: ChatServer = {
    execute(command, arg, signal) {
      const cts = new vscode.CancellationTokenSource();
      signal?.addEventListener('abort', () => cts.cancel());
      return execute(command, arg, cts.token).finally(() => cts.dispose());
    },
  };

  // The chat panel.
  let view: vscode.WebviewView | undefined;
  const chat = new ChatController(chatServer, {
    post: (message) => { void view?.webview.postMessage(message); },
    open: (uri, range) => {
      // The lines selected with the cursor at their start, so the view shows where the code begins.
      const r = toRange(range);
      vscode.window.showTextDocument(vscode.Uri.parse(uri), { preview: true }).then((editor) => {
        editor.selection = new vscode.Selection(r.end, r.start);
        editor.revealRange(r, vscode.TextEditorRevealType.InCenterIfOutsideViewport);
      }, (err) => vscode.window.showWarningMessage(`deepseek: cannot open ${uri}: ${err?.message ?? err}`));
    },
    context: () => {
      const editor = vscode.window.activeTextEditor;
      if (!editor || !['file', 'untitled'].includes(editor.document.uri.scheme)) {
        return undefined;
      }
      const s = editor.selection;
      return {
        uri: editor.document.uri.toString(),
        range: s.isEmpty ? undefined : {
          start: { line: s.start.line, character: s.start.character }, end: { line: s.end.line, character: s.end.character },
        },
      };
    },
    label: (uri, range) => `${vscode.workspace.asRelativePath(vscode.Uri.parse(uri))}:${lineSpan(range)}`,
  });
  context.subscriptions.push(vscode.window.registerWebviewViewProvider('deepseek.chatView', {
    resolveWebviewView(webviewView) {
      view = webviewView;
      const media = vscode.Uri.joinPath(context.extensionUri, 'media');
      webviewView.webview.options = { enableScripts: true, localResourceRoots: [media] };
      webviewView.webview.html = chatHtml(webviewView.webview, media);
      webviewView.webview.onDidReceiveMessage((m) => chat.handle(m));
      webviewView.onDidDispose(() => { if (view === webviewView) { view = undefined; } });
    },
  }, { webviewOptions: { retainContextWhenHidden: true } }));

  const focusChat = () => vscode.commands.executeCommand('deepseek.chatView.focus');
  const explain = async (arg: { uri: string; range: Range }) => {
    await focusChat();
    return chat.explain(arg, describe(arg));
  };
  const refactor = async (arg: { uri: string; range: Range; instruction?: string }) => {
    if (arg.instruction === undefined) {
      const instruction = await vscode.window.showInputBox({
        title: 'deepseek: Refactor', prompt: 'How should the code change? (empty: make it clearer)', placeHolder: 'e.g. use pathlib',
      });
      if (instruction === undefined) {
        return undefined;
      }
      arg = { ...arg, instruction };
    }
    const result = await withProgress('deepseek: refactoring…', (token) => execute('deepseek.refactor', arg, token));
    if (result?.applied) {
      vscode.window.showInformationMessage('deepseek: refactoring applied (undo with Ctrl+Z).');
    } else if (result) {
      vscode.window.showWarningMessage(`deepseek: nothing applied: ${result.reason}`);
    }
    return result;
  };
  const writeTests = async (arg: { uri: string; range: Range }) => {
    const result = await withProgress('deepseek: writing tests…', (token) => execute('deepseek.writeTests', arg, token));
    if (result?.applied) {
      const passed = Array.isArray(result.passed) ? result.passed.length : 0;  // lists of test names
      const failed = Array.isArray(result.failed) ? result.failed.length : 0;
      const outcome = !result.ran ? 'not run (tests are run for Python only)'
        : passed + failed === 0 ? 'no test ran (see the output)'
          : `${passed} passed, ${failed} failed`;
      if (result.ran && !result.ok) {
        output.warn(`deepseek: the written tests did not pass (${outcome}):\n${result.output}`);
      }
      const where = vscode.workspace.asRelativePath(vscode.Uri.parse(result.uri));
      const buttons = result.ran && !result.ok ? ['Open', 'Show output'] : ['Open'];
      const pick = await (result.ok ? vscode.window.showInformationMessage : vscode.window.showWarningMessage)(
        `deepseek: tests written to ${where}: ${outcome}.`, ...buttons);
      if (pick === 'Open') {
        await vscode.window.showTextDocument(vscode.Uri.parse(result.uri));
      } else if (pick === 'Show output') {
        output.show(true);
      }
    } else if (result) {
      vscode.window.showWarningMessage(`deepseek: no tests written: ${result.reason}`);
    }
    return result;
  };

  const onEditor = (run: (arg: { uri: string; range: Range }) => Thenable<unknown>) => () => {
    const arg = selectionArg(vscode.window.activeTextEditor);
    return arg ? run(arg) : undefined;
  };
  context.subscriptions.push(
    vscode.commands.registerCommand('deepseek.explainSelection', onEditor(explain)),
    vscode.commands.registerCommand('deepseek.refactorSelection', onEditor(refactor)),
    vscode.commands.registerCommand('deepseek.writeTestsSelection', onEditor(writeTests)),
    vscode.commands.registerCommand('deepseek.suggest', () => vscode.commands.executeCommand('editor.action.inlineSuggest.trigger')),
    vscode.commands.registerCommand('deepseek.openChat', focusChat),
    vscode.commands.registerCommand('deepseek.newChat', () => chat.handle({ type: 'new' })),
    vscode.commands.registerCommand('deepseek.restartServer', () => restart()),
    vscode.commands.registerCommand('deepseek.showStatus', async () => {
      const status = await execute('deepseek.status', {}).catch((e) => ({ error: String(e?.message ?? e) }));
      output.info(`deepseek.status ${new Date().toISOString()}\n${JSON.stringify(status, null, 2)}`);
      output.show(true);
    }),
  );

  // The status-bar item: deepseek.status plus the resource diagnostics.
  let statusTimer: NodeJS.Timeout | undefined;
  // Resource problems per document, updated only for the documents a diagnostics event names: the server
  // moves its context-truncated notice on nearly every keystroke, which must cost neither a scan of every
  // diagnostic in the workspace nor a deepseek.status request.
  const problemsByUri = new Map<string, Problem[]>();
  const problemsKey = () => [...problemsByUri.values()].flat().map((p) => `${p.code}:${p.message}`).sort().join('\n');
  const problems = (): Problem[] => {
    const seen = new Map<string, Problem>();
    for (const p of [...problemsByUri.values()].flat()) {
      seen.set(p.code, p);
    }
    return [...seen.values()];
  };
  const onDiagnostics = (uris: readonly vscode.Uri[]): boolean => {
    const before = problemsKey();
    for (const uri of uris) {
      const found = vscode.languages.getDiagnostics(uri).flatMap((d) => {
        const code = typeof d.code === 'object' ? String(d.code.value) : String(d.code ?? '');
        return d.source === 'deepseek' && RESOURCE_CODES.has(code) ? [{ code, message: d.message }] : [];
      });
      if (found.length) {
        problemsByUri.set(uri.toString(), found);
      } else {
        problemsByUri.delete(uri.toString());
      }
    }
    return problemsKey() !== before;
  };
  let startError: string | undefined;  // why the server could not be started (shown until a restart)
  const refreshStatus = async () => {
    clearTimeout(statusTimer);
    if (!client && startError) {
      statusItem.text = '$(error) deepseek: server not found';
      statusItem.tooltip = startError;
      statusItem.backgroundColor = new vscode.ThemeColor('statusBarItem.errorBackground');
      return;
    }
    const status = client?.state === State.Running
      ? await execute('deepseek.status', {}).catch(() => undefined) : undefined;
    const shown = statusView(status, problems());
    statusItem.text = shown.text;
    statusItem.tooltip = new vscode.MarkdownString(shown.tooltip);
    statusItem.backgroundColor = shown.warning ? new vscode.ThemeColor('statusBarItem.warningBackground') : undefined;
    statusTimer = setTimeout(refreshStatus, shown.busy ? 2000 : 15000);
  };
  context.subscriptions.push(
    vscode.languages.onDidChangeDiagnostics((e) => {
      if (onDiagnostics(e.uris)) {
        void refreshStatus();
      }
    }),
    { dispose: () => clearTimeout(statusTimer) },
  );

  // The language client; restarted when a deepseek.* setting changes.
  const start = async () => {
    const config = vscode.workspace.getConfiguration('deepseek');
    const found = resolveServer(config.get<string>('serverPath', 'deepseek-lsp'));
    startError = 'error' in found ? found.error : undefined;
    if ('error' in found) {
      void refreshStatus();
      output.error(found.error);
      const pick = await vscode.window.showErrorMessage(found.error, 'Open settings', 'Copy install command');
      if (pick === 'Open settings') {
        await vscode.commands.executeCommand('workbench.action.openSettings', 'deepseek.serverPath');
      } else if (pick === 'Copy install command') {
        await vscode.env.clipboard.writeText('pip install deepseek-lsp');
      }
      return;
    }
    const serverOptions: ServerOptions = {
      command: found.path,
      args: ['--stdio', ...config.get<string[]>('serverArgs', [])],
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: LANGUAGES.flatMap((language) => [{ scheme: 'file', language }, { scheme: 'untitled', language }]),
      initializationOptions: settingsNow(keys),
      outputChannel: output,
      // The server logs to stderr with its own levels: keep them (the default marks every stderr line an error).
      stdioOptions: {
        stdout: (input, channel) => lines(input, (line) => channel.info(line)),  // only used without stdio transport
        stderr: (input, channel) => lines(input, (line) => {
          const { level, text } = parseServerLog(line);
          channel[level](text);
        }),
      },
      middleware: {
        // Suggestions are shown as ghost text only; the same suggestion in the suggest list would be a duplicate.
        provideCompletionItem: () => undefined,
        // Code actions chosen from the light bulb run here so their results reach the chat panel and notifications.
        executeCommand: (command, args, next) => {
          const arg = args?.[0];
          if (!arg || typeof arg.uri !== 'string') {
            return next(command, args);
          }
          switch (command) {
            case 'deepseek.explain': return explain(arg);
            case 'deepseek.refactor': return refactor(arg);
            case 'deepseek.writeTests': return writeTests(arg);
            default: return next(command, args);
          }
        },
        workspace: {
          // The server reads section "deepseek"; the client's own keys are not its settings.
          configuration: async (params, token, next) => {
            const answers = await next(params, token);
            if (!Array.isArray(answers)) {
              return answers;
            }
            return params.items.map((item, i) => (item.section === 'deepseek' ? settingsNow(keys) : answers[i]));
          },
        },
      },
    };
    client = new LanguageClient('deepseek', 'deepseek-lsp', serverOptions, clientOptions);
    client.onDidChangeState(() => { void refreshStatus(); });
    try {
      await client.start();
      client.onNotification('deepseek/chatDelta', (params) => chat.onDelta(params));
    } catch (err: any) {
      output.error(`deepseek-lsp did not start: ${err?.message ?? err}`);
      vscode.window.showErrorMessage(`deepseek: the server did not start: ${err?.message ?? err}. See the deepseek-lsp output.`);
    }
    void refreshStatus();
  };
  const restart = async () => {
    const old = client;
    client = undefined;
    if (old) {
      await old.stop().catch(() => undefined);
    }
    await start();
  };
  let settingsTimer: NodeJS.Timeout | undefined;
  context.subscriptions.push(vscode.workspace.onDidChangeConfiguration((e) => {
    if (e.affectsConfiguration('deepseek')) {
      clearTimeout(settingsTimer);  // typing in a settings field fires a change per keystroke
      settingsTimer = setTimeout(() => {
        output.info('deepseek.* settings changed: restarting the server with the new values');
        void restart();
      }, 750);
    }
  }));
  await start();
}

export async function deactivate(): Promise<void> {
  const old = client;
  client = undefined;
  await old?.stop();
}

function lines(input: NodeJS.ReadableStream, each: (line: string) => void): void {
  readline.createInterface({ input, crlfDelay: Infinity, terminal: false, historySize: 0 }).on('line', each);
}

function withProgress<T>(title: string, task: (token: vscode.CancellationToken) => Promise<T>): Promise<T | undefined> {
  return Promise.resolve(vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title, cancellable: true },
    (_progress, token) => task(token).catch((err: any) => {
      if (!token.isCancellationRequested) {
        vscode.window.showErrorMessage(`deepseek: ${err?.message ?? err}`);
      }
      return undefined;
    }),
  ));
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
<div id="composer"><textarea id="input" rows="2" placeholder="Ask about your code (Enter sends; the selection goes with it)"></textarea>
<button id="send">Send</button><button id="stop" hidden>Stop</button></div>
<script nonce="${nonce}" src="${script}"></script></body></html>`;
}
