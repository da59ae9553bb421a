// The dashboard in a real browser (Debian's headless Chromium through playwright-core),
// against a server that api/tests/dashboard.rs spawned with its own database.
//
// Everything but that server is blocked: the page must work with no internet.
// Screenshots of each view go to $SCREENSHOTS for a person to look at after a run.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.BASE_URL;
const adminToken = process.env.ADMIN_TOKEN;
const viewerToken = process.env.VIEWER_TOKEN;
const shots = process.env.SCREENSHOTS;
const deadJob = process.env.DEAD_JOB;
assert.ok(base && adminToken && viewerToken && shots && deadJob, 'BASE_URL, ADMIN_TOKEN, VIEWER_TOKEN, SCREENSHOTS and DEAD_JOB are required');
mkdirSync(shots, { recursive: true });

const TIMEOUT = 15_000;
const origin = new URL(base).origin;
const blocked = [];
const problems = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});

const pages = [];

async function newPage(viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(TIMEOUT);
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    blocked.push(url);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  pages.push(page);
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

/** The control labelled exactly `label` (a required field's label ends in a hidden " *"). */
function input(page, label) {
  return page.getByLabel(label, { exact: true }).or(page.getByLabel(`${label} *`, { exact: true }));
}

/** Runs a GraphQL request from inside `page` (same origin), with `token`; gives `data`. */
async function gqlIn(page, token, query, variables = {}) {
  return page.evaluate(async ([t, q, v]) => {
    const response = await fetch('/graphql', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${t}` },
      body: JSON.stringify({ query: q, variables: v }),
    });
    // Read as text first, so that an answer that is not JSON fails with what it was.
    const text = await response.text();
    try {
      return JSON.parse(text).data;
    } catch {
      throw new Error(`${response.status} ${response.headers.get('content-type')}: ${JSON.stringify(text.slice(0, 200))}`);
    }
  }, [token, query, variables]);
}

const CREATE_USER = 'mutation($n: String!, $e: String!) { createUser(input: { name: $n, email: $e }) { id } }';

function step(name) {
  console.log(`- ${name}`);
}

try {
  // --- Sign-in from the start-up link ------------------------------------------------------
  step('the start-up link signs in and leaves the token out of the address');
  const page = await newPage();
  await page.goto(`${base}/?token=${adminToken}`);
  await page.getByText('admin:root').waitFor();
  assert.ok(!page.url().includes('token='), `the token stays in the address: ${page.url()}`);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('engagement.token')), adminToken);
  await page.locator('.live-status.live-live').waitFor();
  await page.locator('[data-stat="users"] .stat-value').waitFor();
  assert.equal(await page.locator('[data-stat="users"] .stat-value').textContent(), '0');
  await shot(page, '01-overview-empty');

  // A second tab, signed in as a viewer, keeps the overview open: its feed must fill live.
  const watcher = await newPage();
  await watcher.goto(`${base}/?token=${viewerToken}`);
  await watcher.getByText('viewer:watcher').waitFor();
  await watcher.locator('.live-status.live-live').waitFor();

  // --- Add a user: the API's field error first, then success --------------------------------
  step('adding a user shows the API error next to the email field, then adds them');
  await page.getByRole('link', { name: 'Users', exact: true }).click();
  await page.getByRole('link', { name: 'Add user' }).click();
  await input(page, 'Name').fill('Ada Lovelace');
  await input(page, 'Email').fill('not-an-email');
  await input(page, 'Preferred categories').fill('Denim, Shoes');
  await page.getByRole('button', { name: 'Add user' }).click();
  const emailError = page.locator('[data-field="email"] .field-error');
  await emailError.filter({ hasText: /\S/ }).waitFor();
  assert.equal(await input(page, 'Email').getAttribute('aria-invalid'), 'true');
  assert.ok(await input(page, 'Email').evaluate((el) => el === document.activeElement), 'focus moves to the field in error');
  await shot(page, '02-add-user-field-error');
  await input(page, 'Email').fill('ada@example.com');
  await page.getByRole('button', { name: 'Add user' }).click();
  await page.getByRole('heading', { name: 'Ada Lovelace', level: 1 }).waitFor();
  await page.getByText('Added Ada Lovelace.').waitFor();
  const userUrl = page.url();
  const userId = decodeURIComponent(userUrl.split('#/users/')[1]);

  // --- Find them in the table ---------------------------------------------------------------
  step('the users table finds them by search');
  await page.getByRole('link', { name: 'Users', exact: true }).click();
  await input(page, 'Search name or email').fill('lovelace');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.locator('.count', { hasText: '1 user matching “lovelace”' }).waitFor();
  const row = page.locator(`tr[data-user-id="${userId}"]`);
  await row.waitFor();
  assert.equal(await page.locator('table.users tbody tr').count(), 1);
  assert.match(await row.textContent(), /ada@example\.com/);
  await input(page, 'Search name or email').fill('nobody-by-this-name');
  await page.getByRole('button', { name: 'Apply' }).click();
  await page.getByText('No users match.').waitFor();
  await input(page, 'Search name or email').fill('');
  await input(page, 'Risk').selectOption('not');
  await page.locator('.count', { hasText: '1 user not at risk' }).waitFor();
  await row.waitFor();
  await shot(page, '03-users');
  await row.getByRole('link', { name: 'Ada Lovelace' }).click();

  // --- Place an order -----------------------------------------------------------------------
  step('placing an order confirms it and shows it in the orders and the timeline');
  await input(page, 'Amount').fill('59.90');
  await input(page, 'Categories').fill('Denim');
  await page.getByRole('button', { name: 'Place order' }).click();
  await page.locator('.action-status .notice-ok').filter({ hasText: /Order ord-.* recorded: 1 orders/ }).waitFor();
  await page.locator('#orders-title', { hasText: 'Orders (1)' }).waitFor();
  const scoreBefore = await page.locator('.big-score .score-number').textContent();

  // --- Set a low score: the email appears live on this page and in the other tab's feed -----
  step('a low score writes an email that appears live on the user page and in the feed');
  await input(page, 'Score (0 to 100)').fill('12');
  await input(page, 'Reason').fill('demo: a low score');
  await page.getByRole('button', { name: 'Set score' }).click();
  await page.locator('.action-status .notice-ok').filter({ hasText: 'Score set to 12' }).waitFor();
  const emailLink = page.locator('.email-list li a').first();
  await emailLink.waitFor();
  await page.locator('.big-score .score-number', { hasText: '12' }).waitFor();
  await watcher.locator('.feed-item.type-EmailGenerated').first().waitFor();
  assert.match(await watcher.locator('.feed-item.type-EmailGenerated').first().textContent(), /Ada Lovelace/);
  await watcher.locator('[data-stat="emails"] .stat-value', { hasText: '1' }).waitFor();
  await watcher.locator('[data-stat="atRisk"] .stat-value', { hasText: '1' }).waitFor();
  await shot(watcher, '04-overview-live-feed');
  // The at-risk count leads to the at-risk users.
  await watcher.getByRole('link', { name: /At risk/ }).click();
  await watcher.locator('.count', { hasText: '1 user at risk' }).waitFor();
  await watcher.locator(`tr[data-user-id="${userId}"]`).waitFor();
  await shot(page, '05-user-page');

  // --- The history timeline lists those events with their actor -----------------------------
  step('the timeline lists every event with its actor');
  const item = (type) => page.locator(`.timeline-item.type-${type}`);
  await item('EmailGenerated').first().waitFor();
  assert.match(await item('UserCreated').locator('.event-actor').textContent(), /admin:root/);
  assert.match(await item('OrderPlaced').locator('.event-actor').textContent(), /admin:root/);
  const manual = item('UserScored').filter({ hasText: 'manual' });
  assert.match(await manual.locator('.event-actor').textContent(), /admin:root/);
  assert.match(await manual.textContent(), /demo: a low score/);
  assert.match(await item('EmailGenerated').first().locator('.event-actor').textContent(), /process-manager/);
  await manual.locator('summary').click();
  assert.match(await manual.locator('dl').textContent(), /Request/);

  // --- "As of": the score before the manual override ---------------------------------------
  step('"as of" shows the score before the override');
  const manualSeq = Number(await manual.getAttribute('data-sequence'));
  await page.locator(`.timeline-item[data-sequence="${manualSeq - 1}"]`).getByRole('button', { name: /See as of/ }).click();
  const asOf = page.locator('.as-of-state');
  await asOf.filter({ hasText: `version ${manualSeq - 1}` }).waitFor();
  assert.equal(await asOf.locator('.score-number').textContent(), scoreBefore);
  await input(page, 'After version').fill(String(manualSeq));
  await page.getByRole('button', { name: 'Show' }).click();
  await asOf.filter({ hasText: `version ${manualSeq})` }).waitFor();
  assert.equal(await asOf.locator('.score-number').textContent(), '12');
  await input(page, 'After version').fill('');
  await input(page, 'At time (your local time)').fill('2000-01-01T00:00:00');
  await page.getByRole('button', { name: 'Show' }).click();
  await page.getByText('The user did not exist yet then.').waitFor();
  await input(page, 'At time (your local time)').fill('');
  await input(page, 'After version').fill('0');
  await page.getByRole('button', { name: 'Show' }).click();
  await page.locator('[data-field="version"] .field-error').filter({ hasText: /at least 1/ }).waitFor();
  await page.locator('#as-of').screenshot({ path: join(shots, '06-as-of.png') });

  // --- Open the email --------------------------------------------------------------------------
  step('the email opens with its HTML in a sandboxed frame beside the text');
  await emailLink.click();
  const frame = page.locator('iframe.email-frame');
  await frame.waitFor();
  assert.equal(await frame.getAttribute('sandbox'), '', 'every sandbox permission is off');
  assert.match(await page.locator('pre.email-text').textContent(), /Ada/);
  assert.match(await frame.contentFrame().locator('body').textContent(), /Ada/);
  await shot(page, '07-email');
  await page.getByRole('link', { name: 'Emails', exact: true }).click();
  await page.locator('tr[data-email-id]').first().waitFor();
  await shot(page, '08-emails');

  step('a dead job is listed with its error, and retry puts it back');
  await page.getByRole('link', { name: 'Email jobs' }).click();
  const dead = page.locator(`tr[data-job-id="${deadJob}"]`);
  await dead.waitFor();
  assert.match(await dead.textContent(), /the LLM answered 500 five times/);
  await shot(page, '09-email-jobs-dead');
  await dead.getByRole('button', { name: /Retry/ }).click();
  await page.getByText(/is pending again/).waitFor();
  await input(page, 'Status').selectOption('DONE');
  await page.locator('tr[data-job-id]').first().waitFor();

  step('errors are shown, never a blank page');
  await page.goto(`${base}/#/users/not-an-id`);
  await page.getByRole('alert').filter({ hasText: 'VALIDATION' }).waitFor();
  await page.getByRole('button', { name: 'Try again' }).waitFor();
  await page.goto(`${base}/#/users/00000000-0000-4000-8000-000000000000`);
  await page.getByRole('heading', { name: 'No such user' }).waitFor();
  await page.goto(`${base}/#/nowhere`);
  await page.getByRole('heading', { name: 'Not found' }).waitFor();

  // --- Edit, with the API's errors by the field --------------------------------------------
  step('editing shows field errors and saves');
  await page.goto(`${base}/#/users/${userId}/edit`);
  await input(page, 'Average order value').fill('12.345');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.locator('[data-field="averageOrderValue"] .field-error').filter({ hasText: /\S/ }).waitFor();
  await input(page, 'Average order value').fill('59.90');
  await input(page, 'Name').fill('Ada King');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.getByRole('heading', { name: 'Ada King', level: 1 }).waitFor();
  await page.getByText('Saved Ada King.').waitFor();

  // --- A viewer sees no buttons it cannot use ---------------------------------------------
  step('a viewer sees no actions');
  await watcher.goto(`${base}/#/users/${userId}`);
  await watcher.getByRole('heading', { name: 'Ada King', level: 1 }).waitFor();
  assert.equal(await watcher.getByRole('button', { name: 'Place order' }).count(), 0);
  assert.equal(await watcher.getByRole('button', { name: 'Delete' }).count(), 0);
  assert.equal(await watcher.locator('#actions-title').count(), 0);
  await watcher.goto(`${base}/#/users`);
  await watcher.locator(`tr[data-user-id="${userId}"]`).waitFor();
  assert.equal(await watcher.getByRole('link', { name: 'Add user' }).count(), 0);
  await watcher.goto(`${base}/#/jobs?status=DONE`);
  await watcher.locator('tr[data-job-id]').first().waitFor();
  assert.equal(await watcher.getByRole('button', { name: /Retry/ }).count(), 0);
  await shot(watcher, '10-viewer-user-list');

  // --- 390 px wide ------------------------------------------------------------------------
  step('the pages fit 390 px');
  const phone = await newPage({ width: 390, height: 844 });
  await phone.goto(`${base}/?token=${adminToken}`);
  // A name with no place to break, and markup in it: shown as text, and still fits.
  const longName = `<b>${'Wolfeschlegelsteinhausenbergerdorff'.repeat(4)}</b>`;
  const longId = (await gqlIn(phone, adminToken, CREATE_USER, { n: longName, e: 'long@example.com' })).createUser.id;
  for (const [route, ready, name] of [
    ['#/', '[data-stat="users"]', '11-phone-overview'],
    ['#/users', `tr[data-user-id="${userId}"]`, '12-phone-users'],
    [`#/users/${userId}`, '.timeline-item', '13-phone-user'],
    [`#/users/${longId}`, '.timeline-item', '13-phone-user-long-name'],
  ]) {
    await phone.goto(`${base}/${route}`);
    await phone.locator(ready).first().waitFor();
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    const culprits = await phone.evaluate(() => [...document.querySelectorAll('body *')]
      .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5 && !el.closest('.table-wrap'))
      .slice(0, 5).map((el) => `${el.tagName.toLowerCase()}.${el.className}`));
    assert.ok(overflow <= 0, `${route} is ${overflow}px wider than the screen: ${culprits.join(', ')}`);
    await shot(phone, name);
  }
  assert.equal(await phone.locator('h1 b').count(), 0, 'markup in a name stays text');
  assert.equal(await phone.getByRole('heading', { level: 1 }).textContent(), longName);

  // --- Paging through the users table -------------------------------------------------------
  step('the users table pages forward and back');
  for (let i = 0; i < 30; i += 1) {
    await gqlIn(page, adminToken, CREATE_USER, { n: `Pager ${String(i).padStart(2, '0')}`, e: `pager${i}@example.com` });
  }
  await page.goto(`${base}/#/users?search=pager&sort=NAME:ASC`);
  const names = () => page.locator('table.users tbody tr td:first-child').allTextContents();
  await page.locator('.count', { hasText: '30 users matching “pager”' }).waitFor();
  const first = await names();
  assert.equal(first.length, 25);
  assert.equal(first[0], 'Pager 00');
  await page.getByRole('button', { name: 'Next page' }).click();
  await page.locator('table.users tbody tr td:first-child', { hasText: 'Pager 25' }).waitFor();
  assert.deepEqual(await names(), ['Pager 25', 'Pager 26', 'Pager 27', 'Pager 28', 'Pager 29']);
  assert.equal(await page.getByRole('button', { name: 'Next page' }).count(), 0);
  await page.getByRole('button', { name: 'Previous page' }).click();
  await page.locator('table.users tbody tr td:first-child', { hasText: 'Pager 00' }).waitFor();
  assert.deepEqual(await names(), first);
  assert.equal(await page.getByRole('button', { name: 'Previous page' }).count(), 0);

  // --- The GraphQL playground: offline, signed in by its link, subscriptions included -----
  step('the playground loads offline and runs a subscription from its editor');
  const playground = await newPage();
  // GraphiQL keeps the editor's query in localStorage: start with a subscription in it.
  await playground.addInitScript(() => {
    localStorage.setItem('graphiql:query', 'subscription { events { type payload } }');
  });
  await playground.goto(`${base}/graphql?token=${adminToken}`);
  await playground.locator('.graphiql-container').waitFor();
  assert.ok(!playground.url().includes('token='), 'the playground drops the token from the address');
  await playground.locator('.graphiql-execute-button').click();
  const response = playground.locator('.graphiql-response');
  // Events committed after the subscription started: write until one shows in the results.
  let seen = false;
  for (let i = 0; i < 30 && !seen; i += 1) {
    await gqlIn(playground, adminToken, CREATE_USER, { n: `Playground ${i}`, e: `playground${i}@example.com` });
    // The pane shows the newest event; a UserCreated of ours shows its payload's name.
    seen = await response.filter({ hasText: /UserCreated[\s\S]*"name": "Playground \d+"/ })
      .waitFor({ timeout: 500 }).then(() => true, () => false);
  }
  assert.ok(seen, `the subscription showed none of our users: ${await response.textContent()}`);
  await shot(playground, '15-playground');

  // --- Delete (admin), sign out, sign in from the keyboard ---------------------------------
  step('delete asks first; sign out forgets the token; sign in works from the keyboard');
  await page.goto(`${base}/#/users/${userId}`);
  page.once('dialog', (dialog) => dialog.accept());
  await page.getByRole('button', { name: 'Delete' }).click();
  await page.getByText('Deleted Ada King.').waitFor();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('engagement.token')), null);
  await shot(page, '14-sign-in');
  await page.keyboard.type('not-a-token');
  await page.keyboard.press('Enter');
  await page.getByText('That token was not accepted.').waitFor();
  await input(page, 'Access token').fill('');
  await page.keyboard.type(adminToken);
  await page.keyboard.press('Enter');
  await page.getByText('admin:root').waitFor();

  // Tab order starts with the skip link, then the brand.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');

  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((el) => !el.labels?.length && !el.getAttribute('aria-label')).map((el) => el.outerHTML));
  assert.deepEqual(unlabelled, [], 'every control has a label');

  assert.deepEqual(blocked, [], 'the page asked for nothing outside our server');
  // The one expected error: the browser logs the 401 that answered the bad token above.
  const unauthorized = problems.filter((p) => p.includes('status of 401'));
  assert.equal(unauthorized.length, 1, `one 401, from the bad token: ${problems.join('; ')}`);
  assert.deepEqual(problems.filter((p) => !unauthorized.includes(p)), [], 'no page errors or console errors');
  console.log(`dashboard: all steps passed; screenshots in ${shots}`);
} catch (error) {
  // What each page showed when it failed, for the person reading the failure.
  for (const [i, p] of pages.entries()) {
    await p.screenshot({ path: join(shots, `failure-page-${i}.png`), fullPage: true }).catch(() => {});
  }
  console.error(`problems seen: ${problems.join('; ') || 'none'}; screenshots in ${shots}`);
  throw error;
} finally {
  await browser.close();
}
