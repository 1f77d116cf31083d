// The page of `deepseek-lsp serve` in headless Chromium (Debian's, driven by playwright-core), as a person uses it:
// the first-run check, a question in the chat (the answer streams in, with a reference to the code), the history
// and its search, the index's search box, the models and the metrics. Screenshots go to --out.
//
//   node serve-page.mjs --url http://127.0.0.1:PORT/?token=T --out docs/images --question "..." \
//        --history-word WORD --index-query QUERY --index-file FILE --ref-file FILE
//
// Prints one line per check; the last is "serve page: ok". Exits non-zero on the first failure.
import path from 'node:path';
import { launchBrowser, parseArgs, step } from './harness.mjs';

const args = parseArgs(['url', 'out', 'question', 'history-word', 'index-query', 'index-file', 'ref-file']);
const shot = (page, name) => page.screenshot({ path: path.join(args.out, `serve-${name}.png`), fullPage: true });
const base = new URL(args.url).origin;

const browser = await launchBrowser();
try {
  const page = await (await browser.newContext({ viewport: { width: 1100, height: 760 } })).newPage();
  page.on('pageerror', (e) => console.log(`page error: ${e}`));

  // The URL with the token: a cookie, then the first-run page (nothing has been checked on this machine yet).
  await page.goto(args.url);
  if (!page.url().startsWith(`${base}/machine`)) throw new Error(`the first visit went to ${page.url()}, not /machine`);
  await page.locator('#verdict').waitFor({ timeout: 240000 });
  console.log(`first-run: ${(await page.locator('#verdict').textContent()).trim()}`);
  await shot(page, 'first-run');

  // Chat: the question, the answer streaming in, then its references.
  await page.locator('#start').click();
  await page.waitForURL(`${base}/`);
  await page.locator('#message').fill(args.question);
  await page.locator('#message').press('Enter');
  await page.waitForFunction(() => {
    const a = document.querySelector('.msg.assistant.streaming .text');
    return a && a.textContent.length > 0;
  }, null, { timeout: 240000, polling: 50 });
  const partial = await page.locator('.msg.assistant .text').last().textContent();
  await page.locator('.msg.assistant.done').waitFor({ timeout: 240000 });
  const answer = (await page.locator('.msg.assistant.done .text').textContent()).trim();
  if (answer.length <= partial.length) throw new Error(`no streaming seen: partial ${partial.length}, final ${answer.length}`);
  console.log(`chat streamed: ${partial.length} characters shown before the answer was complete (${answer.length})`);
  const refs = await page.locator('.msg.assistant.done .refs a:not(.file)').evaluateAll((as) => as.map((a) => [a.textContent, a.href]));
  const ref = refs.find(([label, href]) => label.startsWith(args['ref-file']) && href.startsWith('vscode://file/'));
  if (!ref) throw new Error(`no reference to ${args['ref-file']}: ${JSON.stringify(refs)}`);
  console.log(`chat reference: ${ref[0]} -> ${ref[1]}`);
  console.log(`chat status: ${await page.locator('#status').textContent()}`);
  await shot(page, 'chat');

  // History: the conversation is there, and the search finds it (or says nothing matches).
  await page.locator('nav a', { hasText: 'History' }).click();
  await page.waitForURL(`${base}/history`);
  await page.locator('#history-search').fill(args['history-word']);
  await page.waitForFunction((q) => [...document.querySelectorAll('#sessions li a')].some((a) => a.textContent.includes(q)),
    args.question.slice(0, 20), { timeout: 20000 });
  console.log(`history search "${args['history-word']}": ${await page.locator('#sessions li').count()} conversation(s)`);
  await shot(page, 'history');
  await page.locator('#history-search').fill('zqxj-nothing-matches');
  await page.locator('#sessions .empty').waitFor({ timeout: 20000 });
  console.log(`history search with no match: ${(await page.locator('#sessions .empty').textContent()).trim()}`);
  // Open the conversation from the history: the question and the answer come back from the store.
  await page.locator('#history-search').fill(args['history-word']);
  await page.locator('#sessions li a').first().waitFor({ timeout: 20000 });
  await page.locator('#sessions li a').first().click();
  await page.locator('.msg.assistant .refs a').first().waitFor({ timeout: 20000 });
  console.log(`history opened: ${await page.locator('.msg').count()} messages`);

  // The index: its state and the search box.
  await page.locator('nav a', { hasText: 'Index' }).click();
  await page.locator('#index-status .state').waitFor();
  console.log(`index: ${(await page.locator('#index-status').textContent()).replace(/\s+/g, ' ').trim()}`);
  await page.locator('#index-search').fill(args['index-query']);
  await page.locator('#results .hit a', { hasText: args['index-file'] }).first().waitFor({ timeout: 20000 });
  console.log(`index search "${args['index-query']}": ${await page.locator('#results .hit').count()} hit(s)`);
  await shot(page, 'index');

  // Models and metrics.
  await page.locator('nav a', { hasText: 'Models' }).click();
  await page.locator('table.models tr.default').waitFor();
  console.log(`models: default ${(await page.locator('table.models tr.default code').first().textContent()).trim()}`);
  await shot(page, 'models');
  await page.locator('nav a', { hasText: 'Metrics' }).click();
  await page.locator('svg.chart').first().waitFor();
  console.log(`metrics: ${await page.locator('svg.chart').count()} charts`);
  await shot(page, 'metrics');
  step('done');
  console.log('serve page: ok');
} finally {
  await browser.close();
}
