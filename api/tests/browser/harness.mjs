// What every browser test starts with: Debian's headless Chromium through playwright-core, a
// page whose requests may reach only the server under test, and a list of the page's errors
// and console errors (a test ends by asserting it is empty).

import { chromium } from 'playwright-core';

/**
 * Opens a page that may talk only to `origin`.
 * @param {string} origin the server under test
 * @param {{ timeout?: number, initScript?: Function }} options `initScript` runs in every
 *   document before the page's own scripts
 */
export async function openPage(origin, { timeout = 15_000, initScript } = {}) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  const problems = [];
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(timeout);
  await context.route('**/*', (route) =>
    new URL(route.request().url()).origin === origin ? route.continue() : route.abort('blockedbyclient'));
  if (initScript) await context.addInitScript(initScript);
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  return { browser, page, problems };
}
