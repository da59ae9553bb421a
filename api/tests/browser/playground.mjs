// The GraphQL playground in headless Chromium under its Content-Security-Policy: it opens from
// the start-up link (the token leaves the address bar), runs the default query against the API
// and shows the answer, and nothing on the page breaks the policy. Nothing outside the server
// is reachable.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { openPage } from './harness.mjs';

const link = process.env.PLAYGROUND_LINK;
const shots = process.env.SCREENSHOTS;
assert.ok(link && shots, 'PLAYGROUND_LINK and SCREENSHOTS are required');
mkdirSync(shots, { recursive: true });
const origin = new URL(link).origin;

// Policy violations are reported to the page as events: record every one.
const recordViolations = () => {
  document.addEventListener('securitypolicyviolation', (e) => {
    (window.__violations ??= []).push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
  });
};
const { browser, page, problems } = await openPage(origin, { timeout: 30_000, initScript: recordViolations });
try {
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
