// The GraphQL playground in headless Chromium under its Content-Security-Policy: it opens from
// the start-up link (the token leaves the address bar), runs the default query against the API
// and shows the answer, and nothing on the page breaks the policy. Nothing outside the server
// is reachable.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const link = process.env.PLAYGROUND_LINK;
const shots = process.env.SCREENSHOTS;
assert.ok(link && shots, 'PLAYGROUND_LINK and SCREENSHOTS are required');
mkdirSync(shots, { recursive: true });
const origin = new URL(link).origin;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const problems = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(30_000);
  await context.route('**/*', (route) =>
    new URL(route.request().url()).origin === origin ? route.continue() : route.abort('blockedbyclient'));
  // Policy violations are reported to the page as events: record every one.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      (window.__violations ??= []).push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
    });
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });

  const response = await page.goto(link);
  const csp = response.headers()['content-security-policy'] ?? '';
  assert.match(csp, /script-src 'self'(;|$)/, `no inline scripts allowed: ${csp}`);
  assert.match(csp, /frame-ancestors 'none'/);

  await page.locator('.graphiql-execute-button').waitFor();
  assert.equal(new URL(page.url()).searchParams.has('token'), false, 'the token left the address bar');
  await page.locator('.graphiql-execute-button').click();
  await page.locator('.graphiql-response').getByText('"engagementSummary"').waitFor();
  const answer = await page.locator('.graphiql-response').innerText();
  assert.match(answer, /"users"/, answer);
  assert.doesNotMatch(answer, /UNAUTHENTICATED/, answer);
  await page.screenshot({ path: join(shots, 'playground.png'), fullPage: true });

  const violations = await page.evaluate(() => window.__violations ?? []);
  assert.deepEqual(violations, [], 'the page keeps to its policy');
  assert.deepEqual(problems, []);
  console.log('playground: ok');
} finally {
  await browser.close();
}
