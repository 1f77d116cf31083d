// What the real-VS Code scripts share: code-server with a user-data folder of its own, headless
// Chromium (Debian's) driven by playwright-core, and the command palette as a user types it.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const step = (msg) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

export function freePort() {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

export function run(cmd, argv, opts = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${argv.join(' ')} exited ${code}:\n${out}`))));
  });
}

/** A code-server home (user data, extensions, XDG folders) with these user settings. */
export function codeServerHome(userSettings) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'deepseek-code-server-'));
  const userData = path.join(home, 'user-data');
  fs.mkdirSync(path.join(userData, 'User'), { recursive: true });
  fs.writeFileSync(path.join(userData, 'User', 'settings.json'), JSON.stringify(userSettings, null, 2));
  const env = {
    ...process.env,
    XDG_DATA_HOME: path.join(home, 'data'), XDG_STATE_HOME: path.join(home, 'state'), XDG_CONFIG_HOME: path.join(home, 'config'),
  };
  return { home, userData, extensions: path.join(home, 'extensions'), env };
}

/** Install the .vsix, start code-server on a free port for `folder`, resolve when it listens. */
export async function startCodeServer(bin, vsix, h, folder, extraArgs = []) {
  await run(bin, ['--user-data-dir', h.userData, '--extensions-dir', h.extensions, '--install-extension', vsix], { env: h.env });
  const port = await freePort();
  const proc = spawn(bin, ['--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry',
    '--disable-update-check', ...extraArgs, '--user-data-dir', h.userData, '--extensions-dir', h.extensions, folder],
  { env: h.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  for (let i = 0; ; i++) {
    if (log.includes('HTTP server listening')) break;
    if (i > 300 || proc.exitCode !== null) throw new Error(`code-server did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, port };
}

/** The pids of `pid`'s descendants (Linux: read from /proc), deepest last. */
function descendants(pid) {
  const children = new Map();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(entry));
    } catch { /* gone meanwhile */ }
  }
  const out = [];
  const walk = (p) => { for (const c of children.get(p) ?? []) { out.push(c); walk(c); } };
  walk(pid);
  return out;
}

/** Whether `pid` still runs (a zombie, exited but not yet reaped, does not). */
function alive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch { return false; }
}

/**
 * Stop code-server and everything it started (extension host, the language server: not all in its
 * process group), wait until they are gone, then remove `home` unless `keep` (a failed run keeps its
 * logs). The children write into `home` until they exit: removing it sooner fails with ENOTEMPTY.
 */
export async function stopCodeServer(proc, home, keep) {
  const family = proc?.pid ? [proc.pid, ...descendants(proc.pid)] : [];
  for (const pid of family) { try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ } }
  for (let i = 0; i < 100 && family.some(alive); i++) await new Promise((r) => setTimeout(r, 100));
  for (const pid of family.filter(alive)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  for (let i = 0; i < 50 && family.some(alive); i++) await new Promise((r) => setTimeout(r, 100));
  if (!keep) fs.rmSync(home, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

/** Run a command from the palette by its title, as a user types it. */
export async function palette(page, text) {
  await page.keyboard.press('Control+Shift+P');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor({ state: 'visible', timeout: 20000 });
  await input.fill(`>${text}`);  // '>' keeps the palette in command mode
  await page.waitForTimeout(400);
  await page.keyboard.press('Enter');
}

/** The `--name value` pairs of the command line; exits with status 2 when one of `required` is missing. */
export function parseArgs(required) {
  const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
  for (const key of required) {
    if (!args[key]) {
      console.error(`missing --${key}`);
      process.exit(2);
    }
  }
  return args;
}

/** User settings every test's code-server starts with: no trust prompt, no start page, no telemetry or updates. */
export const QUIET_SETTINGS = {
  'security.workspace.trust.enabled': false,
  'workbench.startupEditor': 'none',
  'telemetry.telemetryLevel': 'off',
  'extensions.autoCheckUpdates': false,
};

/** Set a setting as a user would: the Settings editor, search for `key`, type `value` into the item titled `title`. */
export async function setSetting(page, key, title, value) {
  await palette(page, 'Preferences: Open Settings (UI)');
  await page.locator('.settings-editor .settings-header').waitFor({ timeout: 20000 });
  await page.waitForTimeout(500);
  await page.keyboard.type(key);  // a freshly opened Settings editor has the focus in its search box
  const field = page.locator('.settings-editor .setting-item', { hasText: title }).locator('input').first();
  await field.waitFor({ timeout: 20000 });
  await field.fill(value);
  await page.keyboard.press('Tab');
  await page.waitForTimeout(300);
  await palette(page, 'View: Close Editor');
}
