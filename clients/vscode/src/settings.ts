/**
 * Settings and the server executable: pure functions (no `vscode` import), tested by `npm test`.
 *
 * The server's settings are the `deepseek.*` keys of package.json minus the client's own
 * keys; they are sent as flat dotted keys (`{"model.nCtx": 4096}`), which the server accepts
 * beside nested objects (docs/PROTOCOL.md, "Settings").
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/** Keys that configure the extension itself; the server would report them as unknown. */
export const CLIENT_KEYS: ReadonlySet<string> = new Set(['serverPath', 'serverArgs']);

/**
 * The server keys (without the `deepseek.` prefix) declared in package.json's
 * `contributes.configuration.properties`.
 */
export function serverKeys(packageJson: any): string[] {
  const props = packageJson?.contributes?.configuration?.properties ?? {};
  return Object.keys(props)
    .filter((k) => k.startsWith('deepseek.'))
    .map((k) => k.slice('deepseek.'.length))
    .filter((k) => !CLIENT_KEYS.has(k));
}

/**
 * The settings to send to the server: `{key: value}` for every server key whose value is
 * defined. `get` reads one key of the `deepseek` section (VS Code's WorkspaceConfiguration.get).
 */
export function serverSettings(keys: readonly string[], get: (key: string) => unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    const value = get(key);
    if (value !== undefined) {
      out[key] = value;
    }
  }
  return out;
}

/** Where the server executable is, or why it cannot be used. */
export type ServerLookup = { path: string } | { error: string };

/** The command that installs the server, shown when it is missing. */
export const INSTALL_HINT =
  'Install the server with: pip install deepseek-lsp (from a checkout: pip install -e .), ' +
  'then set deepseek.serverPath to its full path (for example ~/.venv/bin/deepseek-lsp) unless it is on PATH.';

function isExecutable(file: string): boolean {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) {
      return false;
    }
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Resolve `deepseek.serverPath`: `~` is expanded; a value with a path separator must be an
 * executable file; a bare name is looked up on `PATH` (with `PATHEXT` on Windows).
 */
export function resolveServer(setting: string, env: NodeJS.ProcessEnv = process.env): ServerLookup {
  const value = (setting || 'deepseek-lsp').trim();
  const expanded = value === '~' || value.startsWith('~/') ? path.join(os.homedir(), value.slice(1)) : value;
  if (expanded.includes('/') || expanded.includes('\\')) {
    const full = path.resolve(expanded);
    return isExecutable(full)
      ? { path: full }
      : { error: `deepseek-lsp was not found at ${full} (deepseek.serverPath). ${INSTALL_HINT}` };
  }
  const exts = process.platform === 'win32' ? (env.PATHEXT ?? '.EXE;.CMD;.BAT').split(';') : [''];
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) {
      continue;
    }
    for (const ext of exts) {
      const candidate = path.join(dir, expanded + ext);
      if (isExecutable(candidate)) {
        return { path: candidate };
      }
    }
  }
  return { error: `${expanded} was not found on PATH (deepseek.serverPath). ${INSTALL_HINT}` };
}

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

/**
 * One line of the server's stderr (`2026-11-21 15:12:27,315 INFO server.engine: loaded …`, server/logs.py)
 * as a level and the text without the timestamp, for VS Code's log output channel. Lines in any
 * other form (a traceback's continuation, llama.cpp's own output) are kept whole at level info.
 */
export function parseServerLog(line: string): { level: LogLevel; text: string } {
  const m = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$/.exec(line);
  if (!m) {
    return { level: 'info', text: line };
  }
  const level: LogLevel = m[1] === 'DEBUG' ? 'debug' : m[1] === 'INFO' ? 'info' : m[1] === 'WARNING' ? 'warn' : 'error';
  return { level, text: m[2] };
}
