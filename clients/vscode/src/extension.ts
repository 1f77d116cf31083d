/**
 * deepseek-lsp for VS Code: starts the `deepseek-lsp` language server over stdio and wires
 * inline completions (LSP 3.18 `textDocument/inlineCompletion`, through vscode-languageclient),
 * the Explain / Refactor / Write tests commands, the chat panel (and its agent mode) and the status-bar item.
 * Everything smart lives in the server; the contract is docs/PROTOCOL.md (lsp_ext.ts).
 *
 * The layout follows rust-analyzer's editors/code: ctx.ts owns the language client,
 * commands.ts has the commands, lsp_ext.ts the protocol's types; status_bar.ts and
 * chat_view.ts are the status-bar item and the chat panel.
 */
import * as vscode from 'vscode';

import { ChatView } from './chat_view';
import * as commands from './commands';
import { Ctx } from './ctx';
import { COMMANDS } from './lsp_ext';
import { StatusBar } from './status_bar';

let ctx: Ctx | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  ctx = new Ctx(context);
  ctx.pushCleanup(new StatusBar(ctx));
  const chat = new ChatView(ctx);

  // Code actions chosen from the light bulb run here so their results reach the chat panel and notifications.
  ctx.onCodeAction(COMMANDS.explain, commands.explain(chat));
  ctx.onCodeAction(COMMANDS.refactor, commands.refactor(ctx));
  ctx.onCodeAction(COMMANDS.writeTests, commands.writeTests(ctx));
  // deepseek: Fix (a code action) and the palette's Agent: the run streams into the chat panel in agent mode.
  ctx.onServerCommand(COMMANDS.agent, commands.agent(chat));

  ctx.registerCommand('deepseek.explainSelection', commands.explainSelection(chat));
  ctx.registerCommand('deepseek.refactorSelection', commands.refactorSelection(ctx));
  ctx.registerCommand('deepseek.writeTestsSelection', commands.writeTestsSelection(ctx));
  ctx.registerCommand('deepseek.suggest', commands.suggest());
  ctx.registerCommand('deepseek.openChat', commands.openChat(chat));
  ctx.registerCommand('deepseek.newChat', commands.newChat(chat));
  ctx.registerCommand('deepseek.restartServer', commands.restartServer(ctx));
  ctx.registerCommand('deepseek.showStatus', commands.showStatus(ctx));

  await ctx.start();
}

export async function deactivate(): Promise<void> {
  const old = ctx;
  ctx = undefined;
  await old?.stop();
}
