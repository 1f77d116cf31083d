/**
 * Test helper: the real deepseek-lsp server over stdio, spoken to with
 * vscode-languageserver-protocol (the library under vscode-languageclient), and the
 * document with a hole that the Neovim test uses too (platformdirs' unix.py, a file this
 * project did not write, with a method's return value cut out: clients/hole.py).
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  createProtocolConnection, ExecuteCommandRequest, InitializeRequest, ProtocolConnection,
} from 'vscode-languageserver-protocol/node';

import type { StatusResult } from '../lsp_ext';
import { resolveServer, serverKeys, serverSettings } from '../settings';

export const PACKAGE_JSON = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));

/** package.json's defaults for every server key, plus `overrides`: what a fresh VS Code sends. */
export function defaultSettings(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const props = PACKAGE_JSON.contributes.configuration.properties;
  return { ...serverSettings(serverKeys(PACKAGE_JSON), (k) => props[`deepseek.${k}`].default), ...overrides };
}

/** `deepseek-lsp` from $DEEPSEEK_LSP or PATH (the project's venv), or a thrown error saying how to get it. */
export function serverPath(): string {
  const found = resolveServer(process.env.DEEPSEEK_LSP ?? 'deepseek-lsp');
  if ('error' in found) {
    throw new Error(`${found.error} (tests: activate the project's venv or set DEEPSEEK_LSP)`);
  }
  return found.path;
}

export interface Hole { dir: string; file: string; uri: string; text: string; line: number; character: number }

/** A workspace folder holding unix_hole.py, made by clients/hole.py (the Neovim test's document too). */
export function holeWorkspace(): Hole {
  const python = path.join(path.dirname(serverPath()), process.platform === 'win32' ? 'python.exe' : 'python');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'deepseek-vscode-'));
  const file = path.join(dir, 'unix_hole.py');
  const script = path.join(__dirname, '..', '..', '..', 'hole.py');
  const [line, column] = execFileSync(fs.existsSync(python) ? python : 'python3', [script, file], { encoding: 'utf8' })
    .trim().split(/\s+/).map(Number);
  return { dir, file, uri: `file://${file}`, text: fs.readFileSync(file, 'utf8'), line: line - 1, character: column };
}

export interface Server {
  connection: ProtocolConnection;
  process: ChildProcess;
  /** Every window/showMessage the server sent. */
  messages: { type: number; message: string }[];
  /** Every workspace/configuration request's items. */
  configurationRequests: unknown[];
  execute(command: string, arg?: object): Promise<any>;
  stop(): Promise<void>;
}

/**
 * Start the server with `settings` (as initializationOptions and as the answer to
 * workspace/configuration section "deepseek"), initialize it on `folder`, and return once
 * `initialized` was sent. Data, state and config go to a temporary home; the model cache is the user's.
 */
export async function startServer(folder: string, settings: Record<string, unknown>): Promise<Server> {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'deepseek-home-'));
  const env = {
    ...process.env,
    XDG_DATA_HOME: path.join(home, 'data'), XDG_STATE_HOME: path.join(home, 'state'), XDG_CONFIG_HOME: path.join(home, 'config'),
  };
  const proc = spawn(serverPath(), ['--stdio'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => { stderr = (stderr + d.toString()).slice(-20000); });
  const connection = createProtocolConnection(proc.stdout!, proc.stdin!);
  const messages: { type: number; message: string }[] = [];
  const configurationRequests: unknown[] = [];
  connection.onNotification('window/showMessage', (p: any) => { messages.push(p); });
  connection.onNotification('window/logMessage', () => undefined);
  connection.onNotification('textDocument/publishDiagnostics', () => undefined);
  connection.onRequest('workspace/configuration', (p: any) => {
    configurationRequests.push(p.items);
    return p.items.map((item: any) => (item.section === 'deepseek' ? settings : null));
  });
  connection.onRequest('client/registerCapability', () => null);
  connection.onRequest('window/workDoneProgress/create', () => null);
  connection.onNotification('$/progress', () => undefined);
  connection.listen();
  proc.on('exit', (code) => {
    if (code) {
      process.stderr.write(`deepseek-lsp exited with ${code}:\n${stderr}\n`);
    }
  });
  await connection.sendRequest(InitializeRequest.type, {
    processId: process.pid,
    rootUri: `file://${folder}`,
    workspaceFolders: [{ uri: `file://${folder}`, name: path.basename(folder) }],
    initializationOptions: settings,
    capabilities: {
      workspace: { configuration: true, workspaceFolders: true, didChangeWatchedFiles: { dynamicRegistration: true } },
      textDocument: { inlineCompletion: { dynamicRegistration: false }, synchronization: { didSave: true } },
      window: { workDoneProgress: true, showMessage: {} },
    },
  });
  await connection.sendNotification('initialized', {});
  const execute = (command: string, arg?: object) =>
    connection.sendRequest(ExecuteCommandRequest.type, { command, arguments: arg === undefined ? [] : [arg] });
  return {
    connection, process: proc, messages, configurationRequests, execute,
    async stop() {
      try {
        await connection.sendRequest('shutdown');
        await connection.sendNotification('exit');
      } catch {
        // already gone
      }
      connection.dispose();
      if (proc.exitCode === null) {
        await new Promise((resolve) => { proc.once('exit', resolve); setTimeout(() => { proc.kill(); resolve(null); }, 5000); });
      }
      fs.rmSync(home, { recursive: true, force: true });
    },
  };
}

/** Poll deepseek.status until the model has left the starting states; returns the last status. */
export async function waitForModel(server: Server, timeoutMs = 180000): Promise<StatusResult> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const status: StatusResult = await server.execute('deepseek.status');
    if (!['not-loaded', 'preparing', 'loading'].includes(status?.model?.state)) {
      return status;
    }
    if (Date.now() > until) {
      throw new Error(`the model did not load in ${timeoutMs} ms: ${JSON.stringify(status)}`);
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}
