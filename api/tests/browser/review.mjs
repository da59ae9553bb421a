// The review queue in a real browser (Debian's headless Chromium through playwright-core),
// against a server that api/tests/review_browser.rs spawned with `review` delivery and two
// written emails. The overview says how emails leave and leads to the queue; an operator
// previews, approves one and rejects the other with a reason.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { openPage } from './harness.mjs';

const base = process.env.BASE_URL;
const token = process.env.ADMIN_TOKEN;
const shots = process.env.SCREENSHOTS;
assert.ok(base && token && shots, 'BASE_URL, ADMIN_TOKEN and SCREENSHOTS are required');
mkdirSync(shots, { recursive: true });
const origin = new URL(base).origin;

const { browser, page, problems } = await openPage(origin, { timeout: 15_000 });
try {
  console.log('- the overview names the delivery mode and links to the review queue');
  await page.goto(`${base}/?token=${token}`);
  const delivery = page.locator('[data-delivery="review"]');
  await delivery.waitFor();
  assert.match(await delivery.textContent(), /review/);
  await delivery.getByRole('link', { name: '2 waiting for review' }).click();

  console.log('- the queue lists both; one is approved');
  const rows = page.locator('tbody tr');
  await page.getByText('2 emails').waitFor();
  assert.equal(await rows.count(), 2);
  await page.screenshot({ path: join(shots, 'review-01-queue.png'), fullPage: true });
  await rows.first().getByRole('link').first().click();
  await page.locator('[data-status="PENDING_REVIEW"]').waitFor();
  await page.locator('iframe.email-frame').waitFor();
  await page.getByRole('button', { name: 'Approve and send' }).click();
  await page.locator('[data-status="GENERATED"]').waitFor();
  await page.getByText(/Reviewed by/).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Approve and send' }).count(), 0);

  console.log('- the other is rejected, with a reason (none is refused)');
  await page.goto(`${base}/#/emails?status=PENDING_REVIEW`);
  await page.getByText('1 email', { exact: true }).waitFor();
  await page.locator('tbody tr').first().getByRole('link').first().click();
  await page.getByRole('button', { name: 'Reject' }).click();
  await page.locator('.form-status [role="alert"]').filter({ hasText: /reason/ }).waitFor();
  await page.getByLabel('Reason').fill('Off-brand tone');
  await page.getByRole('button', { name: 'Reject' }).click();
  await page.locator('[data-status="REJECTED"]').waitFor();
  await page.getByText('“Off-brand tone”').waitFor();
  await page.screenshot({ path: join(shots, 'review-02-rejected.png'), fullPage: true });

  console.log('- the queue is empty');
  await page.goto(`${base}/#/emails?status=PENDING_REVIEW`);
  await page.getByText('0 emails').waitFor();
  // The reject validation error is expected to have been logged as a GraphQL error, not a page error.
  assert.deepEqual(problems.filter((p) => p.startsWith('page error')), []);
} finally {
  await browser.close();
}
