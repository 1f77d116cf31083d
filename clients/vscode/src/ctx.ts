/**
 * The extension's context, after rust-analyzer's editors/code/src/ctx.ts: the output channel
 * and the language client's life cycle (start, stop; settings sent to the running server when a
 * deepseek.* setting changes, a restart only for the server's path and arguments; a server
 * executable that cannot be found). The commands (commands.ts), the status bar
 * (status_bar.ts) and the chat panel (chat_view.ts) reach the server through it.
 */
import * as readline from 'readline';
import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification, LanguageClient, LanguageClientOptions, NotificationType, ServerOptions, State,
} from 'vscode-languageclient/node';

import { LANGUAGES } from './languages';
import * as lsp from './lsp_ext';
import { CLIENT_KEYS, parseServerLog, resolveServer, serverKeys, serverSettings } from './settings';

/** What a code action's command runs in the extension instead of the server (see `Ctx.onCodeAction`). */
export type CodeActionHandler = (arg: lsp.CodeParams) => Thenable<unknown>;

/** The message of an error (or whatever was thrown), for a sentence shown to the user. */
export function errorMessage(err: unknown): string {
  return String((err as { message?: unknown } | null | undefined)?.message ?? err);
}

export class Ctx {
  readonly output: vscode.LogOutputChannel;
  private _client: LanguageClient | undefined;
  private _startError: string | undefined;
  private readonly keys: string[];
  private readonly stateChanged = new vscode.EventEmitter<void>();
  /** Run on every client that started: the notification handlers. */
  private readonly onStart: ((client: LanguageClient) => void)[] = [];
  private readonly codeActions = new Map<string, CodeActionHandler>();
  private readonly serverCommands = new Map<string, (arg: unknown) => Thenable<unknown>>();
  private settingsTimer: NodeJS.Timeout | undefined;

  /** Fires when the client's state changes, when the server cannot be found, and after every start. */
  readonly onDidChangeState: vscode.Event<void> = this.stateChanged.event;

  constructor(readonly extCtx: vscode.ExtensionContext) {
    this.output = vscode.window.createOutputChannel('deepseek-lsp', { log: true });
    this.keys = serverKeys(extCtx.extension.packageJSON);
    extCtx.subscriptions.push(this.output, this.stateChanged);
    // A deepseek.* setting changed: the running server reads it again (workspace/didChangeConfiguration);
    // only the server's path and arguments need a new process.
    let restartNeeded = false;
    extCtx.subscriptions.push(vscode.workspace.onDidChangeConfiguration((e) => {
      if (!e.affectsConfiguration('deepseek')) {
        return;
      }
      restartNeeded ||= [...CLIENT_KEYS].some((key) => e.affectsConfiguration(`deepseek.${key}`));
      clearTimeout(this.settingsTimer);  // typing in a settings field fires a change per keystroke
      this.settingsTimer = setTimeout(() => {
        const restart = restartNeeded || !this._client || this._client.state !== State.Running;
        restartNeeded = false;
        if (restart) {
          this.output.info('deepseek.serverPath or serverArgs changed: restarting the server');
          void this.restart();
        } else {
          this.output.info('deepseek.* settings changed: the server applies them now');
          void this._client?.sendNotification(DidChangeConfigurationNotification.type, { settings: this.settingsNow() });
        }
      }, 750);
    }));
    // Write tests is refused in an untrusted workspace; the server hears when the user grants trust.
    extCtx.subscriptions.push(vscode.workspace.onDidGrantWorkspaceTrust(() => {
      void this._client?.sendNotification(lsp.WORKSPACE_TRUST, { trusted: true } satisfies lsp.WorkspaceTrustParams);
    }));
  }

  /** The language client (undefined before the first start, while restarting, and when the server was not found). */
  get client(): LanguageClient | undefined {
    return this._client;
  }

  /** Why the server could not be started (shown until a restart). */
  get startError(): string | undefined {
    return this._startError;
  }

  /** The client of the running server; throws, with a sentence for the user, when the server is not running. */
  runningClient(): LanguageClient {
    if (!this._client || this._client.state !== State.Running) {
      throw new Error('the deepseek-lsp server is not running (see the deepseek-lsp output)');
    }
    return this._client;
  }

  /** Dispose `disposable` with the extension. */
  pushCleanup(disposable: vscode.Disposable): void {
    this.extCtx.subscriptions.push(disposable);
  }

  registerCommand(command: string, callback: (...args: never[]) => unknown): void {
    this.pushCleanup(vscode.commands.registerCommand(command, callback));
  }

  /** Handle the server's notification `type` from the next start on (and on the running client). */
  onNotification<P>(type: NotificationType<P>, handler: (params: P) => void): void {
    const register = (client: LanguageClient) => { client.onNotification(type, handler); };
    this.onStart.push(register);
    if (this._client?.state === State.Running) {
      register(this._client);
    }
  }

  /**
   * Code actions chosen from the light bulb run `command` with `handler` here, so their results
   * reach the chat panel and notifications; the server runs them otherwise.
   */
  onCodeAction(command: lsp.CodeActionCommandId, handler: CodeActionHandler): void {
    this.codeActions.set(command, handler);
  }

  /**
   * The server's command `command` runs `handler` here with its argument, whatever it is (a code
   * action's, or none from the command palette, where package.json lists it); vscode-languageclient
   * registers the server's commands as VS Code commands, so the extension cannot register them itself.
   */
  onServerCommand(command: lsp.CommandId, handler: (arg: unknown) => Thenable<unknown>): void {
    this.serverCommands.set(command, handler);
  }

  /** Start the server, or say why it cannot be started. */
  async start(): Promise<void> {
    const config = vscode.workspace.getConfiguration('deepseek');
    const found = resolveServer(config.get<string>('serverPath', 'deepseek-lsp'));
    this._startError = 'error' in found ? found.error : undefined;
    if ('error' in found) {
      this.stateChanged.fire();
      this.output.error(found.error);
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
    const client = new LanguageClient('deepseek', 'deepseek-lsp', serverOptions, this.clientOptions());
    this._client = client;
    client.onDidChangeState(() => this.stateChanged.fire());
    try {
      await client.start();
      for (const register of this.onStart) {
        register(client);
      }
    } catch (err) {
      this.output.error(`deepseek-lsp did not start: ${errorMessage(err)}`);
      vscode.window.showErrorMessage(`deepseek: the server did not start: ${errorMessage(err)}. See the deepseek-lsp output.`);
    }
    this.stateChanged.fire();
  }

  /** Stop the server (rejects when it does not stop cleanly). */
  async stop(): Promise<void> {
    const old = this._client;
    this._client = undefined;
    await old?.stop();
  }

  async restart(): Promise<void> {
    const old = this._client;
    this._client = undefined;
    if (old) {
      await old.stop().catch(() => undefined);
    }
    await this.start();
  }

  /** The server's settings now: the `deepseek` section minus the client's own keys. */
  private settingsNow(): Record<string, unknown> {
    const config = vscode.workspace.getConfiguration('deepseek');
    return serverSettings(this.keys, (key) => config.get(key));
  }

  private clientOptions(): LanguageClientOptions {
    return {
      documentSelector: LANGUAGES.flatMap((language) => [{ scheme: 'file', language }, { scheme: 'untitled', language }]),
      // The settings, and whether the user trusts this workspace (see docs/PROTOCOL.md).
      initializationOptions: { ...this.settingsNow(), workspaceTrusted: vscode.workspace.isTrusted },
      outputChannel: this.output,
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
          const arg: unknown = args?.[0];
          const own = this.serverCommands.get(command);
          if (own) {
            return own(arg);
          }
          const handler = this.codeActions.get(command);
          if (!handler || !isCodeParams(arg)) {
            return next(command, args);
          }
          return handler(arg);
        },
        workspace: {
          // The server reads section "deepseek"; the client's own keys are not its settings.
          configuration: async (params, token, next) => {
            const answers = await next(params, token);
            if (!Array.isArray(answers)) {
              return answers;
            }
            return params.items.map((item, i) => (item.section === 'deepseek' ? this.settingsNow() : answers[i]));
          },
        },
      },
    };
  }
}

/** A code action's argument, `{uri, range}`, as far as the extension relies on it (the server checks the rest). */
function isCodeParams(arg: unknown): arg is lsp.CodeParams {
  return !!arg && typeof (arg as { uri?: unknown }).uri === 'string';
}

function lines(input: NodeJS.ReadableStream, each: (line: string) => void): void {
  readline.createInterface({ input, crlfDelay: Infinity, terminal: false, historySize: 0 }).on('line', each);
}
