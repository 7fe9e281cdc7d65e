// Opens a Herald HTML report in headless Chromium (the system one, driven by playwright-core) and
// prints what a person would see, as JSON, for the Python test to assert on:
//   node check_report.mjs REPORT.html [--click EVENT_ID] [--zoom FROM_PCT,TO_PCT] [--screenshot OUT.png]
// Exits non-zero when Chromium cannot start or the page throws.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const args = process.argv.slice(2);
const report = path.resolve(args[0]);
const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const executablePath = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-chromium-'));

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--disable-quic'],
});
const out = { pageErrors: [], requests: [] };
try {
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => out.pageErrors.push(String(e)));
  page.on('request', (r) => { if (!r.url().startsWith('file:')) out.requests.push(r.url()); });
  await page.goto('file://' + report);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 15000 });
  const lanes = () => page.$$eval('.lane', (ls) => ls.map((l) => ({
    entity: l.dataset.entity,
    label: l.querySelector('.label').firstChild.textContent,
    events: l.querySelectorAll('.ev').length,
    visible: Array.from(l.querySelectorAll('.ev')).filter((e) => e.style.display !== 'none').length,
    count: l.querySelector('.count').textContent,
  })));
  out.title = await page.title();
  out.lanes = await lanes();
  const click = opt('--click');
  const target = click ? `.ev[data-id="${click}"]` : '.lane .ev';
  await page.locator(target).first().click();  // a real click: fails if the dot is hidden or covered
  await page.waitForSelector('#details:not([hidden])', { timeout: 5000 });
  const text = (sel) => page.$eval(sel, (n) => n.textContent);
  out.details = {
    title: await text('#detail-title'),
    meta: await page.$$eval('#detail-meta dt', (dts) => Object.fromEntries(dts.map((dt) => [dt.textContent, dt.nextElementSibling.textContent]))),
    herald: await text('#detail-herald'),
    tables: await page.$$eval('#detail-herald h4', (hs) => Object.fromEntries(hs.map((h) => {
      const t = h.nextElementSibling;
      const rows = t && t.tagName === 'TABLE' ? Array.from(t.querySelectorAll('tr')).slice(1).map((tr) => Array.from(tr.children).map((td) => td.textContent)) : [];
      return [h.textContent, rows];
    }))),
    json: await text('#detail-json'),  // text: JSON.parse in JS would round nanosecond integers
  };
  const zoom = opt('--zoom');
  if (zoom) {
    const [a, b] = zoom.split(',').map(Number);
    const box = await page.locator('#axis').boundingBox();
    await page.mouse.move(box.x + box.width * a / 100, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * b / 100, box.y + box.height / 2, { steps: 5 });
    await page.mouse.up();
    out.zoomed = await lanes();
  }
  const shot = opt('--screenshot');
  if (shot) await page.screenshot({ path: shot, fullPage: true });
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(out.pageErrors.length ? 2 : 0);
