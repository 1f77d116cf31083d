// A real VS Code (code-server, the VS Code workbench served to a browser) in Debian's headless
// Chromium driven by playwright-core: the extension installed from the .vsix starts the real
// deepseek-lsp server, the status bar reports the loaded model, "deepseek: Suggest here" shows
// ghost text at a hole in a real file, and a screenshot of it is saved; then Tab, the context menu,
// Explain, the chat, Refactor, Write tests, a setting applied by the same server, a memory warning
// and a server path that does not exist.
//   node tests/real-vscode.mjs --code-server BIN --vsix FILE --server DEEPSEEK_LSP --workspace DIR
//     --file NAME --line L --col C --expect PREFIX --screenshot OUT.png
// Lines and columns are 1-based, as VS Code's "Go to Line" takes them.
import fs from 'node:fs';
import { QUIET_SETTINGS, codeServerHome, launchBrowser, palette as runCommand, parseArgs, run, setSetting as setSettingIn, startCodeServer, step, stopCodeServer } from './harness.mjs';

const args = parseArgs(['code-server', 'vsix', 'server', 'workspace', 'file', 'line', 'col', 'expect', 'screenshot']);
const h = codeServerHome({
  ...QUIET_SETTINGS,
  'deepseek.serverPath': args.server,
  'deepseek.completion.manualMaxTimeMs': 60000,
  'deepseek.completion.alternatives': 1,  // the greedy suggestion at the hole; alternatives: editing-vscode.mjs
});
const { home } = h;

let codeServer;
let browser;
let failed = false;
let page;
try {
  step('installing the extension from the .vsix, starting code-server');
  const started = await startCodeServer(args['code-server'], args.vsix, h, args.workspace, ['--disable-workspace-trust']);
  codeServer = started.proc;
  const { port } = started;
  step(`code-server on 127.0.0.1:${port}`);

  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  step('opening the workbench');
  await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(args.workspace)}`);
  await page.waitForSelector('.monaco-workbench', { timeout: 120000 });

  step(`opening ${args.file}`);
  const palette = (text) => runCommand(page, text);

  // As a user would: the Settings editor, search, type the new value.
  const setSetting = (key, title, value) => setSettingIn(page, key, title, value);
  await page.keyboard.press('Control+P');
  const quickOpen = page.locator('.quick-input-widget input');
  await quickOpen.waitFor({ state: 'visible', timeout: 20000 });
  await quickOpen.fill(args.file);
  await page.locator('.quick-input-list .monaco-list-row').first().waitFor({ timeout: 30000 });
  await page.keyboard.press('Enter');
  await page.locator(`.tab[data-resource-name="${args.file}"]`).waitFor({ timeout: 30000 });
  await page.locator('.monaco-editor .view-lines').first().click();

  step('waiting for the status bar to report the loaded model');
  const status = page.locator('.statusbar-item', { hasText: /· loaded/ });
  await status.first().waitFor({ timeout: 240000 });
  const statusText = (await status.first().innerText()).trim();
  step(`status bar: ${statusText}`);

  step(`going to ${args.line}:${args.col} and asking for a suggestion (deepseek: Suggest here)`);
  await page.keyboard.press('Control+G');
  await quickOpen.waitFor({ state: 'visible', timeout: 20000 });
  await quickOpen.fill(`:${args.line}:${args.col}`);
  await page.waitForTimeout(300);
  await page.keyboard.press('Enter');
  await page.waitForTimeout(300);
  await palette('deepseek: Suggest here');
  const ghost = page.locator('.monaco-editor .ghost-text-decoration');
  await ghost.first().waitFor({ timeout: 180000 });
  await page.waitForTimeout(500);
  // The suggestion's first line, split into one span per syntax token (later lines sit in a view zone).
  const ghostText = (await ghost.evaluateAll((els) => els.map((e) => e.textContent).join(''))).replace(/\u00a0/g, ' ');
  step(`ghost text: ${JSON.stringify(ghostText)}`);
  await page.screenshot({ path: args.screenshot });
  step(`screenshot: ${args.screenshot}`);
  if (!ghostText.startsWith(args.expect)) {
    throw new Error(`the ghost text does not start with ${JSON.stringify(args.expect)}`);
  }
  if (!/qwen2\.5-coder|deepseek-coder/.test(statusText)) {
    throw new Error(`the status bar does not name the model: ${statusText}`);
  }

  step('accepting it with Tab');
  await page.keyboard.press('Tab');
  await ghost.first().waitFor({ state: 'detached', timeout: 10000 });
  // The status bar's cursor position follows the edit asynchronously: wait for it.
  const expectedCursor = `Ln ${args.line}, Col ${Number(args.col) + ghostText.length}`;
  const cursorItem = page.locator('.statusbar-item', { hasText: /^Ln \d+, Col \d+/ }).first();
  await page.locator('.statusbar-item', { hasText: expectedCursor }).first().waitFor({ timeout: 10000 }).catch(async () => {
    throw new Error(`after Tab the cursor is at ${(await cursorItem.innerText()).trim()}, not after the accepted text (${expectedCursor})`);
  });
  const cursor = (await cursorItem.innerText()).trim();

  step('the editor context menu offers the three actions');
  await page.locator('.monaco-editor .view-line').nth(5).click({ button: 'right' });
  for (const label of ['deepseek: Explain', 'deepseek: Refactor...', 'deepseek: Write tests']) {
    await page.locator('.monaco-menu .action-label', { hasText: new RegExp(`^${label.replace('.', '\\.')}$`) }).first()
      .waitFor({ timeout: 10000 });
  }
  await page.keyboard.press('Escape');
  await page.keyboard.press('Control+G');
  await quickOpen.waitFor({ state: 'visible', timeout: 20000 });
  await quickOpen.fill(`:${args.line}:${args.col}`);
  await page.keyboard.press('Enter');

  step('deepseek: Explain on the function around the cursor; the answer streams into the chat panel');
  await palette('deepseek: Explain');
  const webview = page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
  const answer = webview.locator('.entry.assistant .body');
  await answer.first().waitFor({ timeout: 180000 });
  await webview.locator('.entry.assistant .refs a').first().waitFor({ timeout: 180000 });
  const explanation = (await answer.first().innerText()).trim();
  const reference = (await webview.locator('.entry.assistant .refs a').first().innerText()).trim();
  step(`chat panel: ${JSON.stringify(explanation.slice(0, 160))} [${reference}]`);
  const chatShot = args.screenshot.replace(/\.png$/, '') + '-chat.png';
  await page.screenshot({ path: chatShot });
  step(`screenshot: ${chatShot}`);
  if (!explanation.includes(args.file) || explanation.length < 40) {
    throw new Error(`the chat panel holds no explanation naming ${args.file}: ${explanation}`);
  }
  if (!reference.startsWith(`${args.file}:`)) {
    throw new Error(`the reference link is ${reference}`);
  }

  step('a question typed in the chat panel continues the session; a reference opens the file at its lines');
  const chatInput = webview.locator('#input');
  await chatInput.click();
  await chatInput.fill('In one sentence: what does user_videos_dir return?');
  await chatInput.press('Enter');
  await webview.locator('.entry.user').nth(1).waitFor({ timeout: 10000 });
  await webview.locator('#send:not([hidden])').waitFor({ timeout: 180000 });  // Send comes back when the reply is done
  const entries = await webview.locator('.entry').evaluateAll((els) => els.map((e) => e.className.replace('entry ', '')));
  const reply = (await answer.nth(1).innerText()).trim();
  step(`chat reply: ${JSON.stringify(reply.slice(0, 160))}; entries ${entries.join(',')}`);
  if (entries.join(',') !== 'user,assistant,user,assistant' || reply.length < 10) {
    throw new Error(`the chat panel did not answer the typed question: ${entries.join(',')} ${reply}`);
  }
  await webview.locator('.entry.assistant .refs a').first().click();
  await page.locator('.statusbar-item', { hasText: /^Ln 131, Col 1 \(\d+ selected\)/ }).first().waitFor({ timeout: 10000 });
  step('the reference selected lines 131-133 in the editor');

  step('Refactor... from the context menu: asks what to change, then applies the edit or says why not');
  await page.locator('.monaco-editor .view-line').nth(5).click({ button: 'right' });
  await page.locator('.monaco-menu .action-label', { hasText: /^deepseek: Refactor\.\.\.$/ }).first().hover();
  await page.keyboard.press('Enter');  // the web workbench's menu takes the hovered item on Enter (a click only highlights it)
  await quickOpen.waitFor({ state: 'visible', timeout: 20000 });
  await quickOpen.fill('use an f-string nowhere; keep the behaviour');
  await page.keyboard.press('Enter');
  const outcome = page.locator('.notifications-toasts .notification-list-item-message', { hasText: /deepseek: (refactoring applied|nothing applied)/ }).first();
  await outcome.waitFor({ timeout: 180000 });
  const refactorText = (await outcome.innerText()).trim();
  step(`refactor: ${refactorText}`);
  await page.keyboard.press('Escape');

  step('deepseek: Write tests from the palette: a progress notification, then where the tests went or why not');
  await page.locator('.monaco-editor .view-line').nth(5).click();
  await palette('deepseek: Write tests');
  const written = page.locator('.notifications-toasts .notification-list-item-message', { hasText: /deepseek: (tests written to|no tests written)/ }).first();
  await written.waitFor({ timeout: 900000 });  // up to three rounds with the assistant's model on a slow CPU
  const testsText = (await written.innerText()).trim();
  step(`write tests: ${testsText}`);
  await page.keyboard.press('Escape');

  step('changing a deepseek.* setting: the running server applies it (no restart)');
  const serverPids = async () => {
    const out = await run('pgrep', ['-f', `${args.server} --stdio`]).catch(() => '');
    return out.split(/\s+/).filter(Boolean).sort();
  };
  const before = await serverPids();
  if (before.length !== 1) {
    throw new Error(`expected one deepseek-lsp process, found ${before.length}`);
  }
  await setSetting('deepseek.completion.maxLines', 'Completion: Max Lines', '4');
  await page.waitForTimeout(2000);  // past the 0.75 s debounce
  const after = await serverPids();
  if (after.length !== 1 || after[0] !== before[0]) {
    throw new Error(`the server was restarted for a completion setting: processes ${before} then ${after}`);
  }
  await page.locator('.statusbar-item', { hasText: /· loaded/ }).first().waitFor({ timeout: 120000 });
  step(`same server: pid ${before[0]}, status bar says loaded`);

  step('a memory limit below the model: the status bar warns');
  await setSetting('deepseek.resources.ramLimitMb', 'Resources: Ram Limit Mb', '100');
  const warning = page.locator('.statusbar-item', { hasText: /too-large/ }).first();
  await warning.waitFor({ timeout: 60000 });
  const warningText = (await warning.innerText()).trim();
  const warningIcon = await warning.locator('.codicon-warning').count();
  const warnShot = args.screenshot.replace(/\.png$/, '') + '-warning.png';
  await page.screenshot({ path: warnShot });
  step(`status bar: ${warningText} (warning icon: ${warningIcon}); screenshot: ${warnShot}`);
  if (!warningIcon) {
    throw new Error('the status bar shows no warning icon for a model that does not fit');
  }

  step('a server path that does not exist: a message with the install command');
  await setSetting('deepseek.serverPath', 'Server Path', '/nonexistent/deepseek-lsp');
  const toast = page.locator('.notifications-toasts .notification-list-item-message', { hasText: 'pip install deepseek-lsp' }).first();
  await toast.waitFor({ timeout: 30000 });
  const missingText = (await toast.innerText()).trim();
  await page.locator('.statusbar-item', { hasText: 'server not found' }).first().waitFor({ timeout: 10000 });
  const missingShot = args.screenshot.replace(/\.png$/, '') + '-not-found.png';
  await page.screenshot({ path: missingShot });
  step(`message: ${missingText}; screenshot: ${missingShot}`);

  console.log(`ghost text: ${ghostText}`);
  console.log(`chat: ${reply.replace(/\s+/g, ' ').slice(0, 200)}`);
  console.log(`refactor: ${refactorText}`);
  console.log(`write tests: ${testsText}`);
  console.log(`server missing: ${missingText}`);
  console.log(`resource warning: ${warningText}`);
  console.log(`settings applied live: pid ${before[0]} -> ${after[0]}`);
  console.log(`accepted: cursor at ${cursor}`);
  console.log(`explain: ${explanation.replace(/\s+/g, ' ').slice(0, 200)}`);
  console.log(`status bar: ${statusText}`);
} catch (err) {
  failed = true;
  console.error(`FAIL: ${err.stack ?? err}`);
  const shot = args.screenshot.replace(/\.png$/, '') + '-failed.png';
  await page?.screenshot({ path: shot }).catch(() => undefined);
  console.error(`screenshot of the failure: ${shot}; server logs kept in ${home}`);
} finally {
  await browser?.close().catch(() => undefined);
  await stopCodeServer(codeServer, home, failed);
}
process.exit(failed ? 1 : 0);
