// The editing experience of issue #16 in a real VS Code (code-server in headless Chromium, playwright-core),
// with the real deepseek-lsp server and model, as a user's eyes would check it:
//   1. ghost text in a long file, and no squiggle for the cut context: the status bar's tooltip says it;
//   4. Alt+] shows another suggestion, Alt+[ the first again;
//   3. Ctrl+Right accepts a word, Ctrl+Down a line; the rest stays, served from the cache (the server's log);
//   2. a completion setting changed in the Settings editor: the same server process answers with it;
//   5. a chat answer's code block: Apply shows a diff (the refactor preview) and replaces the selection
//      asked about, Insert at cursor inserts it, Copy puts it on the clipboard.
//   node tests/editing-vscode.mjs --code-server BIN --vsix FILE --server DEEPSEEK_LSP --workspace DIR
//     --file NAME --line L --col C --hole-file NAME2 --hole-line L2 --hole-col C2 --shots DIR
// NAME has the body of a method cut out, L:C ends its `def` line; L2:C2 (1-based) is a single-line hole in NAME2.
import fs from 'node:fs';
import path from 'node:path';
import { QUIET_SETTINGS, codeServerHome, launchBrowser, palette as runCommand, parseArgs, run, setSetting as setSettingIn, startCodeServer, step, stopCodeServer } from './harness.mjs';

const args = parseArgs(['code-server', 'vsix', 'server', 'workspace', 'file', 'line', 'col', 'hole-file', 'hole-line', 'hole-col', 'shots']);
const h = codeServerHome({
  ...QUIET_SETTINGS,
  'editor.inlineSuggest.showToolbar': 'always',
  'deepseek.serverPath': args.server,
  'deepseek.completion.manualMaxTimeMs': 120000,
  'deepseek.chat.maxTokens': 200,
});
const serverLog = path.join(h.home, 'state', 'deepseek-lsp', 'log', 'deepseek-lsp.log');
const file = path.join(args.workspace, args.file);
const shot = (name) => path.join(args.shots, name);
fs.mkdirSync(args.shots, { recursive: true });

let codeServer;
let browser;
let page;
let failed = false;
const check = (ok, message) => {
  if (!ok) {
    throw new Error(message);
  }
};
try {
  step('starting code-server with the extension');
  const started = await startCodeServer(args['code-server'], args.vsix, h, args.workspace, ['--disable-workspace-trust']);
  codeServer = started.proc;
  browser = await launchBrowser();
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: `http://127.0.0.1:${started.port}` });
  page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(`http://127.0.0.1:${started.port}/?folder=${encodeURIComponent(args.workspace)}`);
  await page.waitForSelector('.monaco-workbench', { timeout: 120000 });
  const palette = (text) => runCommand(page, text);
  const quick = page.locator('.quick-input-widget input');
  const goTo = async (line, col) => {
    await page.keyboard.press('Control+G');
    await quick.waitFor({ state: 'visible', timeout: 20000 });
    await quick.fill(`:${line}:${col}`);
    await page.waitForTimeout(300);
    await page.keyboard.press('Enter');
    await page.waitForTimeout(300);
  };
  const setSetting = (key, title, value) => setSettingIn(page, key, title, value);
  // The whole ghost text: the rest of the cursor's line and the lines of its view zone.
  const ghost = page.locator('.monaco-editor .ghost-text-decoration, .monaco-editor .view-zones .view-line');
  const ghostText = async () => {
    const inline = (await page.locator('.monaco-editor .ghost-text-decoration').allTextContents()).join('');
    const below = await page.locator('.monaco-editor .view-zones .view-line').allTextContents();  // the ghost text's later lines
    return [inline, ...below].join('\n').replace(/\u00a0/g, ' ');
  };
  const modelAnswers = () => (fs.existsSync(serverLog) ? fs.readFileSync(serverLog, 'utf8') : '')
    .split('\n').filter((l) => /suggestion for .*: (model|continued|joined), /.test(l)).length;

  const open = async (name) => {  // from the Explorer, as a user clicks it
    await page.locator('.explorer-folders-view .monaco-list-row', { hasText: name }).first().dblclick();
    await page.locator(`.tab[data-resource-name="${name}"]`).waitFor({ timeout: 30000 });
    await page.waitForTimeout(300);
    await page.locator('.monaco-editor .view-lines').first().click();
  };
  await open(args.file);
  await page.locator('.statusbar-item', { hasText: /· loaded/ }).first().waitFor({ timeout: 240000 });
  const pids = async () => (await run('pgrep', ['-f', `${args.server} --stdio`]).catch(() => '')).split(/\s+/).filter(Boolean);
  const [pid] = await pids();
  step(`server pid ${pid}`);

  step('1. a suggestion in a long file (deepseek: Suggest here, so the alternatives come too)');
  await goTo(args.line, args.col);
  await palette('deepseek: Suggest here');
  await ghost.first().waitFor({ timeout: 300000 });
  await page.waitForTimeout(800);
  const first = await ghostText();
  step(`ghost text: ${JSON.stringify(first)}`);
  check(first.includes('return'), `no method body in the ghost text: ${JSON.stringify(first)}`);
  await page.mouse.move(5, 5);
  const squiggles = await page.locator('.monaco-editor .squiggly-info, .monaco-editor .squiggly-warning').count();
  await page.screenshot({ path: shot('vscode-ghost-text.png') });
  check(squiggles === 0, `${squiggles} squiggles in the editor`);
  await page.locator('.statusbar-item', { hasText: /· loaded/ }).first().hover();
  const tooltip = page.locator('.monaco-hover, .workbench-hover', { hasText: 'context:' }).first();
  await tooltip.waitFor({ timeout: 20000 });
  const tooltipText = (await tooltip.innerText()).replace(/\s+/g, ' ');
  await page.screenshot({ path: shot('vscode-status-context.png') });
  check(/context: the last suggestion \(\S+\) saw part of the file: \d+ tokens before the cursor/.test(tooltipText),
    `the status tooltip does not tell about the context: ${tooltipText}`);
  step(`no squiggle; status tooltip: ${tooltipText.match(/context:[^)]*\)[^(]*/)?.[0]}`);
  await page.locator('.monaco-editor .view-lines').first().hover();
  await goTo(args.line, args.col);  // the tooltip took the mouse; the cursor is where it was
  await palette('deepseek: Suggest here');
  await ghost.first().waitFor({ timeout: 60000 });

  step('4. Alt+] shows the next suggestion, Alt+[ the previous');
  const answersBefore = modelAnswers();
  await page.keyboard.press('Alt+BracketRight');
  let second = first;
  for (let i = 0; i < 100 && second === first; i++) {
    await page.waitForTimeout(200);
    second = await ghostText();
  }
  step(`after Alt+]: ${JSON.stringify(second)}`);
  check(second !== first && second.trim(), 'Alt+] did not show another suggestion');
  const counter = await page.locator('.inlineSuggestionsHints .monaco-action-bar, .inlineSuggestionsHints').first().innerText()
    .catch(() => '');
  await page.screenshot({ path: shot('vscode-alternatives.png') });
  step(`toolbar: ${JSON.stringify(counter.replace(/\s+/g, ' '))}`);
  await page.keyboard.press('Alt+BracketLeft');
  let back = second;
  for (let i = 0; i < 50 && back !== first; i++) {
    await page.waitForTimeout(200);
    back = await ghostText();
  }
  check(back === first, `Alt+[ did not go back to the first suggestion: ${JSON.stringify(back)}`);

  step('3. Ctrl+Right accepts a word, twice; Ctrl+Down the next line; the rest stays, from the cache');
  const accepted = [];
  for (const key of ['Control+ArrowRight', 'Control+ArrowRight']) {
    const before = await ghostText();
    await page.keyboard.press(key);
    let after = before;
    for (let i = 0; i < 50 && after === before; i++) {
      await page.waitForTimeout(100);
      after = await ghostText();
    }
    accepted.push([before, after]);
    check(after !== before && after.trim(), `after ${key} no rest of the suggestion is shown: ${JSON.stringify(after)}`);
    step(`${key}: the rest ${JSON.stringify(after)}`);
  }
  await page.waitForTimeout(1500);  // VS Code asks the server again after each accepted part
  await page.screenshot({ path: shot('vscode-partial-accept.png') });
  const restShown = await ghostText();
  await page.keyboard.press('Control+ArrowDown');
  await page.waitForTimeout(1500);
  const afterLine = await ghostText().catch(() => '');
  step(`Ctrl+Down: the rest ${JSON.stringify(afterLine)}`);
  check(afterLine !== restShown, 'Ctrl+Down accepted nothing');
  const log = fs.readFileSync(serverLog, 'utf8');
  const cacheHits = log.split('\n').filter((l) => /suggestion for .*: cache, /.test(l)).length;
  check(modelAnswers() === answersBefore, `the model was asked again after the partial accepts (${answersBefore} -> ${modelAnswers()})`);
  check(cacheHits >= 2, `only ${cacheHits} answers from the cache`);
  step(`model answers unchanged (${answersBefore}); ${cacheHits} answers from the cache`);
  await page.keyboard.press('Escape');

  step('2. completion.maxTokens changed to 3 in the Settings editor: the same server answers with it');
  await setSetting('deepseek.completion.maxTokens', 'Completion: Max Tokens', '3');
  await page.waitForTimeout(2000);
  const after = await pids();
  check(after.length === 1 && after[0] === pid, `the server was restarted: ${pid} -> ${after}`);
  await open(args['hole-file']);
  await goTo(args['hole-line'], args['hole-col']);
  await palette('deepseek: Suggest here');
  await ghost.first().waitFor({ timeout: 300000 });
  await page.waitForTimeout(500);
  const short = await ghostText();
  step(`pid ${after[0]} (unchanged); ghost text now ${JSON.stringify(short)}`);
  check(short.length > 0 && short.length < 16 && !short.includes('\n'), `not a 3-token suggestion: ${JSON.stringify(short)}`);
  await page.keyboard.press('Escape');
  await setSetting('deepseek.completion.maxTokens', 'Completion: Max Tokens', '128');
  await open(args.file);

  step('5. a question about a selected method in the chat; its code block gets Insert at cursor, Copy, Apply');
  const save = async () => {
    await page.locator('.monaco-editor .view-lines').first().click({ position: { x: 5, y: 5 } }).catch(() => undefined);
    await page.keyboard.press('Control+S');
    await page.waitForTimeout(800);
  };
  await page.keyboard.press('Escape');
  await save();
  const defLine = Number(args.line) - 1;  // the @property line above the method
  await goTo(defLine, 1);
  await page.keyboard.press('Shift+ArrowDown');
  await page.keyboard.press('Shift+ArrowDown');
  await page.keyboard.press('Shift+ArrowDown');
  const beforeApply = fs.readFileSync(file, 'utf8');
  await palette('deepseek: Open chat');
  const webview = page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
  const input = webview.locator('#input');
  await input.waitFor({ timeout: 60000 });
  await input.fill('Complete this method: it must return the videos directory. Answer with the whole method in one python code block.');
  await input.press('Enter');
  // The question's entry appears, Stop replaces Send while the reply streams, Send comes back when it is done.
  await webview.locator('.entry.user', { hasText: 'Complete this method' }).waitFor({ timeout: 30000 });
  await webview.locator('#stop:not([hidden])').waitFor({ timeout: 10000 }).catch(() => undefined);
  await webview.locator('#send:not([hidden])').waitFor({ timeout: 600000 });
  const block = webview.locator('.entry.assistant').last();
  await block.locator('.code-actions').first().waitFor({ timeout: 30000 });
  const buttons = await block.locator('.code-actions button').allTextContents();
  const code = (await block.locator('pre').first().innerText().catch(() => '')).replace(/\u00a0/g, ' ');
  step(`reply's first code block: ${JSON.stringify(code.slice(0, 200))}; buttons ${JSON.stringify(buttons)}`);
  check(code.trim().length > 10, 'the reply has no code block');
  check(buttons.slice(0, 3).join(',') === 'Insert at cursor,Copy,Apply', `buttons: ${buttons}`);
  await page.screenshot({ path: shot('vscode-chat-code-actions.png') });

  step('Apply: the refactor preview shows the diff; applied, the selection is replaced');
  await block.locator('.code-actions button', { hasText: 'Apply' }).first().click();
  const preview = page.locator('.bulk-edit-panel').first();
  await preview.waitFor({ timeout: 30000 });
  const rows = preview.locator('.monaco-tl-row');
  await rows.nth(1).waitFor({ timeout: 20000 });
  await rows.nth(1).locator('.monaco-icon-label, .label-name, span').last().click();  // the change: its diff opens there
  await page.locator('.monaco-diff-editor').first().waitFor({ timeout: 20000 });
  await page.waitForTimeout(1000);
  // An edit that needs confirmation starts unticked in VS Code's refactor preview: the user ticks it, then Apply.
  await preview.locator('input[type="checkbox"]').first().check();
  await page.waitForTimeout(300);
  await page.screenshot({ path: shot('vscode-chat-apply-diff.png') });
  await preview.locator('.monaco-button', { hasText: /^Apply$/ }).first().click();
  await page.waitForTimeout(1000);
  await page.locator(`.tab[data-resource-name="${args.file}"]`).first().click();
  await save();
  const applied = fs.readFileSync(file, 'utf8');
  // Indented as the selection it replaced (the method's 4 spaces), whatever indentation the answer used.
  const codeLines = code.replace(/\n+$/, '').split('\n');
  const base = Math.min(...codeLines.filter((l) => l.trim()).map((l) => l.length - l.trimStart().length));
  const reindented = codeLines.map((l) => (l.trim() ? '    ' + l.slice(base) : '')).join('\n');
  check(applied !== beforeApply && applied.includes(reindented), 'the file does not hold the applied code, indented');
  step('applied and saved: the method is the chat\'s code');

  step('Insert at cursor and Copy');
  await page.keyboard.press('Control+Home');
  await block.locator('.code-actions button', { hasText: 'Insert at cursor' }).first().click();
  await page.waitForTimeout(800);
  await save();
  const inserted = fs.readFileSync(file, 'utf8');
  check(inserted.startsWith(code.trimEnd()), 'Insert at cursor did not insert the code at the top of the file');
  await block.locator('.code-actions button', { hasText: 'Copy' }).first().click();
  await page.waitForTimeout(500);
  const clip = await page.evaluate(() => navigator.clipboard.readText()).catch((e) => `(clipboard unreadable: ${e})`);
  check(clip.trimEnd() === code.trimEnd(), `the clipboard holds ${JSON.stringify(clip.slice(0, 80))}`);
  step('inserted at the cursor; the clipboard holds the code');
  console.log('issue16 editing: ok');
} catch (err) {
  failed = true;
  console.error(`FAIL: ${err.stack ?? err}`);
  await page?.screenshot({ path: shot('editing-failed.png') }).catch(() => undefined);
  console.error(`screenshot: ${shot('editing-failed.png')}; server log: ${serverLog}`);
} finally {
  await browser?.close().catch(() => undefined);
  await stopCodeServer(codeServer, h.home, failed);
}
process.exit(failed ? 1 : 0);
