// Drives the Herald console in headless Chromium (the system one, via playwright-core) and prints
// what a person would see, as JSON, for tests/test_console_e2e.py to assert on:
//   node console.mjs BASE_URL TOKEN SCENARIO [ARGS...]
// Scenarios: live N SHOT (prints {"ready":true} once the SSE stream is open, then waits for N
// finished rows), story EVENT_ID, redrive ACTION, viewer, try EVENT_JSON_FILE, timeline QUERY.
// Every scenario logs in through the form with TOKEN and records dialogs and page errors.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [base, token, scenario, ...rest] = process.argv.slice(2);
const executablePath = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-console-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath, headless: true, viewport: { width: 1400, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--disable-quic'],
});
const out = { pageErrors: [], dialogs: [], console: [], cspViolations: 0 };
const text = (page, sel) => page.$eval(sel, (n) => n.textContent);
const table = (page, sel) => page.$$eval(`${sel} tbody tr`, (trs) => trs.map((tr) => Array.from(tr.children).map((td) => td.textContent)));
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => out.pageErrors.push(String(e)));
  page.on('dialog', async (d) => { out.dialogs.push(d.message()); await d.dismiss(); });
  page.on('console', (m) => { if (/Content Security Policy/.test(m.text())) out.cspViolations += 1; out.console.push(m.text()); });
  await page.goto(base + '/login');
  await page.fill('input[name=token]', token);
  await Promise.all([page.waitForURL(base + '/'), page.click('#login button[type=submit]')]);
  await page.waitForSelector('body[data-ready="1"]');
  out.role = await text(page, '.role');
  if (scenario === 'live') {
    const [n, shot] = rest;
    await page.waitForSelector('body[data-live="1"]', { timeout: 15000 });
    process.stdout.write(JSON.stringify({ ready: true }) + '\n');
    await page.waitForFunction((want) => Array.from(document.querySelectorAll('#events tr'))
      .filter((tr) => ['delivered', 'dead-lettered'].includes(tr.querySelector('.outcome').textContent)).length >= want,
    Number(n), { timeout: 90000 });
    out.reloaded = await page.evaluate(() => performance.getEntriesByType('navigation').length);
    out.rows = await page.$$eval('#events tr', (trs) => trs.map((tr) => ({
      id: tr.dataset.id, source: tr.querySelector('.source').textContent, entity: tr.querySelector('.entity').textContent,
      severity: tr.querySelector('.sev').textContent, title: tr.querySelector('.title').textContent,
      titleHtml: tr.querySelector('.title a').innerHTML,
      routes: Array.from(tr.querySelectorAll('.r')).map((s) => s.textContent),
      outcomes: Object.fromEntries(Array.from(tr.querySelectorAll('.o')).map((s) => [s.dataset.action, s.textContent.split(': ')[1]])),
      outcome: tr.querySelector('.outcome').textContent,
    })));
    out.scripts = await page.$$eval('script', (ss) => ss.map((s) => s.src || 'INLINE'));
    if (shot) await page.screenshot({ path: shot });
  } else if (scenario === 'story') {
    await page.goto(base + '/events/' + encodeURIComponent(rest[0]));
    await page.waitForSelector('body[data-ready="1"]');
    out.title = await text(page, 'h1');
    out.meta = await page.$$eval('#story-meta dt', (dts) => Object.fromEntries(dts.map((dt) => [dt.textContent, dt.nextElementSibling.textContent])));
    out.raw = await text(page, '#raw pre');
    await page.click('#raw summary');  // collapsible: closes
    out.rawOpenAfterClick = await page.$eval('#raw', (d) => d.open);
    out.routes = await table(page, 'table.routes');
    out.contents = await page.$$eval('details.content', (ds) => ds.map((d) => [d.dataset.action, d.querySelector('pre').textContent]));
    out.deliveries = await table(page, 'table.deliveries');
    out.dead = (await page.$('table.dead')) ? await table(page, 'table.dead') : [];
    out.timelineLink = await page.$eval('#entity-timeline', (a) => a.getAttribute('href')).catch(() => null);
  } else if (scenario === 'redrive') {
    const action = rest[0];
    await page.goto(base + '/dlq');
    await page.waitForSelector('body[data-ready="1"]');
    out.summary = await table(page, '#dlq-summary');
    const section = `section.dlq-action[data-action="${action}"]`;
    out.listed = await page.$$eval(`${section} tbody tr`, (trs) => trs.map((tr) => tr.dataset.id));
    await page.check(`${section} input.all`);
    await Promise.all([page.waitForNavigation(), page.click(`${section} button.redrive-selected`)]);
    out.preview = await text(page, '#preview');
    out.previewCount = Number(await text(page, '#preview-count'));
    await Promise.all([page.waitForNavigation(), page.click('#confirm')]);
    out.result = await text(page, '#result');
  } else if (scenario === 'viewer') {
    await page.goto(base + '/dlq');
    await page.waitForSelector('body[data-ready="1"]');
    out.summary = await table(page, '#dlq-summary');
    out.forms = await page.$$eval('form.redrive', (fs) => fs.length);
    out.buttons = await page.$$eval('button', (bs) => bs.map((b) => b.textContent));
    out.note = await text(page, '#viewer-note');
    out.listed = await page.$$eval('section.dlq-action tbody tr', (trs) => trs.length);
  } else if (scenario === 'try') {
    await page.goto(base + '/try');
    await page.waitForSelector('body[data-ready="1"]');
    await page.fill('#event', fs.readFileSync(rest[0], 'utf8'));
    await Promise.all([page.waitForNavigation(), page.click('#try')]);
    out.routes = await page.$$eval('#try-routes tbody tr', (trs) => trs.map((tr) => Array.from(tr.children).map((td) => td.textContent)));
    out.contents = await page.$$eval('details.content', (ds) => ds.map((d) => [d.dataset.action, d.querySelector('pre').textContent]));
  } else if (scenario === 'timeline') {
    await page.goto(base + '/timeline?' + rest[0]);
    await page.waitForSelector('body[data-ready="1"]');
    const frame = page.frameLocator('#report');
    await frame.locator('body[data-ready="1"]').waitFor({ timeout: 30000 });  // the report's own script ran
    out.lanes = await frame.locator('.lane').evaluateAll((ls) => ls.map((l) => [l.dataset.entity, l.querySelectorAll('.ev').length]));
    await frame.locator('.lane .ev').first().click();
    await frame.locator('#details:not([hidden])').waitFor({ timeout: 5000 });
    out.detailTitle = await frame.locator('#detail-title').textContent();
  } else {
    throw new Error('unknown scenario ' + scenario);
  }
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(out.pageErrors.length ? 2 : 0);
