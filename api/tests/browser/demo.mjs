// The README's first command as a newcomer meets it: `engagement serve --demo` (spawned by
// api/tests/demo.rs), its printed link opened in headless Chromium. Within a minute the
// overview must count at-risk clients and written emails, the at-risk list must show clients
// and the emails page must show emails. Nothing outside the server is reachable.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { openPage } from './harness.mjs';

const link = process.env.DASHBOARD_LINK;
const shots = process.env.SCREENSHOTS;
assert.ok(link && shots, 'DASHBOARD_LINK and SCREENSHOTS are required');
mkdirSync(shots, { recursive: true });
const origin = new URL(link).origin;

const { browser, page, problems } = await openPage(origin, { timeout: 60_000 });
try {
  await page.goto(link);
  const count = async (stat) =>
    Number((await page.locator(`[data-stat="${stat}"] .stat-value`).textContent()).replace(/\D/g, ''));
  // The overview refreshes itself while the demo fills and as events arrive.
  const deadline = Date.now() + 60_000;
  let users = 0, atRisk = 0, emails = 0;
  while (Date.now() < deadline) {
    await page.locator('[data-stat="emails"] .stat-value').waitFor();
    [users, atRisk, emails] = [await count('users'), await count('atRisk'), await count('emails')];
    if (users >= 1000 && atRisk > 0 && emails > 0) break;
    await page.waitForTimeout(1_000);
  }
  await page.screenshot({ path: join(shots, 'demo-overview.png'), fullPage: true });
  console.log(`overview: ${users} users, ${atRisk} at risk, ${emails} emails`);
  assert.ok(users >= 1000, `a populated dashboard (${users} users)`);
  assert.ok(atRisk > 0, 'at-risk clients');
  assert.ok(emails > 0, 'written emails');

  await page.click('[data-stat="atRisk"]');
  await page.locator('tbody tr').first().waitFor();
  const rows = await page.locator('tbody tr').count();
  assert.ok(rows > 0, 'the at-risk list shows clients');
  await page.screenshot({ path: join(shots, 'demo-at-risk.png'), fullPage: true });

  await page.click('[data-stat="emails"]').catch(async () => { await page.goto(`${origin}/#/emails`); });
  await page.goto(new URL('#/emails', page.url()).toString());
  await page.locator('main').getByText('template:', { exact: false }).first().waitFor();
  await page.screenshot({ path: join(shots, 'demo-emails.png'), fullPage: true });
  assert.deepEqual(problems, []);
  console.log('demo: ok');
} finally {
  await browser.close();
}
