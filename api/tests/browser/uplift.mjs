// The uplift page in a real browser (headless Chromium through playwright-core), against a
// server that api/tests/uplift_browser.rs spawned with half the clients held out and some at
// risk. The page must say what the numbers mean, draw both rates and the difference with their
// intervals, list the counts the API gives, and draw the 90-day trend.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { openPage } from './harness.mjs';

const base = process.env.BASE_URL;
const token = process.env.ADMIN_TOKEN;
const shots = process.env.SCREENSHOTS;
const expected = JSON.parse(process.env.EXPECTED ?? 'null');
assert.ok(base && token && shots && expected, 'BASE_URL, ADMIN_TOKEN, SCREENSHOTS and EXPECTED are required');
mkdirSync(shots, { recursive: true });
const origin = new URL(base).origin;

const { browser, page, problems } = await openPage(origin, { timeout: 15_000 });
try {
  console.log('- the nav leads to the uplift page');
  await page.goto(`${base}/?token=${token}`);
  await page.getByRole('link', { name: 'Uplift' }).click();
  const verdict = page.locator('.verdict');
  await verdict.waitFor();
  assert.match(await verdict.textContent(), /Not yet enough data/);

  console.log('- the table lists the counts the API gives');
  for (const group of ['treatment', 'holdout']) {
    const cells = await page.locator(`tr[data-group="${group}"] td`).allTextContents();
    assert.equal(cells[0], String(expected[group].triggered), `${group} triggers`);
    assert.equal(cells[1], String(expected[group].reactivated), `${group} reactivations`);
  }

  console.log('- both rates and the difference are drawn with their intervals');
  assert.equal(await page.locator('.uplift-chart circle.estimate').count(), 3);
  assert.equal(await page.locator('.uplift-chart line.whisker').count(), 9);

  console.log('- the trend draws four series over 90 days');
  assert.equal(await page.locator('.spark').count(), 4);
  const atRisk = await page.locator('[data-series="atRisk"] figcaption strong').textContent();
  assert.equal(atRisk, String(expected.atRiskToday));

  console.log('- another window re-asks');
  await page.getByLabel('Window (days after the trigger)').fill('1');
  await page.getByRole('button', { name: 'Show' }).click();
  await page.waitForURL(/window=1/);
  await verdict.waitFor();
  await page.screenshot({ path: join(shots, 'uplift.png'), fullPage: true });
  assert.deepEqual(problems, []);
} finally {
  await browser.close();
}
