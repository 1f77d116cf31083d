/**
 * The extension's commands, after rust-analyzer's editors/code/src/commands.ts: one function
 * per command, taking what it works with (the Ctx, the chat panel) and returning what runs
 * when the command is invoked. The server is asked through the typed functions of lsp_ext.ts.
 */
import * as path from 'path';
import * as vscode from 'vscode';

import { parseAgentArg } from './chat';
import { ChatView, lineSpan } from './chat_view';
import { Ctx, errorMessage } from './ctx';
import * as lsp from './lsp_ext';

/** What `vscode.commands.registerCommand` runs. */
export type Cmd = () => unknown;

// -- the assistant on code: what a code action runs (Ctx.onCodeAction), and the editor's commands on the selection

/** Explain `{uri, range}` in the chat panel: the explanation streams in and its session becomes the panel's. */
export function explain(chat: ChatView): (arg: lsp.ExplainParams) => Promise<lsp.ExplainResult | undefined> {
  return async (arg) => {
    await chat.focus();
    return chat.controller.explain(arg, describe(arg));
  };
}

/** Refactor `{uri, range}` as the user says (asked when `instruction` is absent); the server applies the edit. */
export function refactor(ctx: Ctx): (arg: lsp.RefactorParams) => Promise<lsp.RefactorResult | undefined> {
  return async (arg) => {
    if (arg.instruction === undefined) {
      const instruction = await vscode.window.showInputBox({
        title: 'deepseek: Refactor', prompt: 'How should the code change? (empty: make it clearer)', placeHolder: 'e.g. use pathlib',
      });
      if (instruction === undefined) {
        return undefined;
      }
      arg = { ...arg, instruction };
    }
    const result = await withProgress('deepseek: refactoring…', async (token) => lsp.executeCommand(ctx.runningClient(), lsp.COMMANDS.refactor, arg, token));
    if (result?.applied) {
      vscode.window.showInformationMessage('deepseek: refactoring applied (undo with Ctrl+Z).');
    } else if (result) {
      vscode.window.showWarningMessage(`deepseek: nothing applied: ${result.reason}`);
    }
    return result;
  };
}

/** Write tests for `{uri, range}`; the server writes the test file (and runs Python tests). */
export function writeTests(ctx: Ctx): (arg: lsp.WriteTestsParams) => Promise<lsp.WriteTestsResult | undefined> {
  return async (arg) => {
    const result = await withProgress('deepseek: writing tests…', async (token) => lsp.executeCommand(ctx.runningClient(), lsp.COMMANDS.writeTests, arg, token));
    if (result?.applied) {
      const passed = Array.isArray(result.passed) ? result.passed.length : 0;  // lists of test names
      const failed = Array.isArray(result.failed) ? result.failed.length : 0;
      const outcome = !result.ran ? `not run (${result.notRun || 'tests are run for Python only'})`
        : passed + failed === 0 ? 'no test ran (see the output)'
          : result.mutants?.summary ?? `${passed} passed, ${failed} failed`;
      if (result.ran && !result.ok) {
        ctx.output.warn(`deepseek: the written tests did not pass (${outcome}):\n${result.output}`);
      }
      const where = vscode.workspace.asRelativePath(vscode.Uri.parse(result.uri));
      const buttons = result.ran && !result.ok ? ['Open', 'Show output'] : ['Open'];
      const pick = await (result.ok && !result.mutants?.weak ? vscode.window.showInformationMessage : vscode.window.showWarningMessage)(
        `deepseek: tests written to ${where}: ${outcome}.`, ...buttons);
      if (pick === 'Open') {
        await vscode.window.showTextDocument(vscode.Uri.parse(result.uri));
      } else if (pick === 'Show output') {
        ctx.output.show(true);
      }
    } else if (result) {
      vscode.window.showWarningMessage(`deepseek: no tests written: ${result.reason}`);
    }
    return result;
  };
}

/**
 * `deepseek.agent`: the code action `deepseek: Fix` (its `{message, uri, range}`), another caller's
 * argument, or the palette's "Agent (fix a problem)" (no argument: the task is asked for and the
 * active editor's file and selection go with it). The run is shown in the chat panel, in agent mode.
 */
export function agent(chat: ChatView): (arg: unknown) => Promise<lsp.AgentResult | undefined> {
  return async (raw) => {
    let arg = parseAgentArg(raw);
    if (!arg) {
      const message = await vscode.window.showInputBox({
        title: 'deepseek: Agent', ignoreFocusOut: true,
        prompt: 'What should the agent fix? It works in steps, runs the tests in the sandbox and proposes a fix you apply (the file and the selection go with it).',
        placeHolder: 'e.g. test_parse_date fails with KeyError: \'tz\'',
      });
      if (!message?.trim()) {
        return undefined;
      }
      arg = chat.controller.agentArg(message.trim());
    }
    await chat.focus();
    return chat.controller.agent(arg);
  };
}

export function explainSelection(chat: ChatView): Cmd {
  return onSelection(explain(chat));
}

export function refactorSelection(ctx: Ctx): Cmd {
  return onSelection(refactor(ctx));
}

export function writeTestsSelection(ctx: Ctx): Cmd {
  return onSelection(writeTests(ctx));
}

// -- the rest ---------------------------------------------------------------------------------

/** Ask for an inline suggestion at the cursor. */
export function suggest(): Cmd {
  return () => vscode.commands.executeCommand('editor.action.inlineSuggest.trigger');
}

export function openChat(chat: ChatView): Cmd {
  return () => chat.focus();
}

/** Forget the panel's session: the next message starts a new one. */
export function newChat(chat: ChatView): Cmd {
  return () => chat.controller.handle({ type: 'new' });
}

export function restartServer(ctx: Ctx): Cmd {
  return () => ctx.restart();
}

/** Write `deepseek.status` (or why it cannot be had) to the output channel and show it. */
export function showStatus(ctx: Ctx): Cmd {
  return async () => {
    let status: lsp.StatusResult | { error: string };
    try {
      status = await lsp.executeCommand(ctx.runningClient(), lsp.COMMANDS.status, {});
    } catch (err) {
      status = { error: errorMessage(err) };
    }
    ctx.output.info(`deepseek.status ${new Date().toISOString()}\n${JSON.stringify(status, null, 2)}`);
    ctx.output.show(true);
  };
}

// -- helpers ----------------------------------------------------------------------------------

function selectionArg(editor: vscode.TextEditor | undefined): lsp.CodeParams | undefined {
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

/** Run `run` on the active editor's selection (or the definition around the cursor). */
function onSelection(run: (arg: lsp.CodeParams) => Thenable<unknown>): Cmd {
  return () => {
    const arg = selectionArg(vscode.window.activeTextEditor);
    return arg ? run(arg) : undefined;
  };
}

/** The panel's question for an Explain: the file and lines, or the line the definition is found around. */
function describe(arg: lsp.CodeParams): string {
  const uri = vscode.Uri.parse(arg.uri);
  const r = arg.range;
  return r.start.line === r.end.line && r.start.character === r.end.character
    ? `Explain the code around line ${r.start.line + 1} of ${path.basename(uri.fsPath)}`
    : `Explain ${vscode.workspace.asRelativePath(uri)}, lines ${lineSpan(r)}`;
}

/** Run `task` under a cancellable notification; an error is shown (unless cancelled) and gives undefined. */
function withProgress<T>(title: string, task: (token: vscode.CancellationToken) => Promise<T>): Promise<T | undefined> {
  return Promise.resolve(vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title, cancellable: true },
    (_progress, token) => task(token).catch((err: unknown) => {
      if (!token.isCancellationRequested) {
        vscode.window.showErrorMessage(`deepseek: ${errorMessage(err)}`);
      }
      return undefined;
    }),
  ));
}
