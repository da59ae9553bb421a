// Overview: the counts, the spread of scores, and every event as it happens.

import { gql } from '../api.js';
import { h, s, mount, load } from '../dom.js';
import { feedItem } from './feed.js';
import { known, nameOf, remember } from './names.js';

const SUMMARY = `{ engagementSummary { users atRisk averageScore emails scoreHistogram }
  demo { clients clientsTotal orders ordersTotal done error }
  health { emailDelivery mailServer }
  review: emails(status: PENDING_REVIEW, first: 1) { totalCount } }`;

/** How written emails leave (EMAIL_DELIVERY), and the review queue when there is one. */
function deliveryLine(health, review) {
  const mode = health.emailDelivery;
  const text = {
    off: 'Delivery is off: emails are written and kept as “would send”; nothing is sent.',
    review: `Delivery needs review: an operator approves each email before it is sent${health.mailServer ? ` through ${health.mailServer}` : ''}.`,
    auto: `Delivery is automatic: emails are sent as soon as they are written${health.mailServer ? `, through ${health.mailServer}` : ''}.`,
  }[mode] ?? `Delivery: ${mode}`;
  return h('p', { class: 'delivery', dataset: { delivery: mode } }, text,
    review.totalCount > 0
      ? [' ', h('a', { href: '#/emails?status=PENDING_REVIEW' }, `${review.totalCount} waiting for review`), '.']
      : null);
}

/** While `serve --demo` fills in its data: how far it is. */
function demoNotice(demo) {
  if (!demo) return null;
  if (demo.error) return h('p', { class: 'notice notice-error', role: 'alert' }, `The demo data could not be filled in: ${demo.error}`);
  if (demo.done) return null;
  const n = (x) => x.toLocaleString('en');
  return h('p', { class: 'notice notice-info', role: 'status', dataset: { demo: 'loading' } },
    `Demo: filling in sample data, ${n(demo.clients)} of ${n(demo.clientsTotal)} clients and ${n(demo.orders)} of ${n(demo.ordersTotal)} orders so far. Scores and emails appear as it goes.`);
}

/** A count; with `href`, a link to the list it counts. */
function stat(label, value, key, href) {
  return h(href ? 'a' : 'div', { class: 'stat', href, dataset: { stat: key } },
    h('span', { class: 'stat-value' }, String(value)), h('span', { class: 'stat-label' }, label));
}

/** A bar per bucket of ten points (0-9 … 90-100), bars coloured by band. */
export function histogram(buckets) {
  const max = Math.max(1, ...buckets);
  const width = 400;
  const height = 160;
  const bar = width / buckets.length;
  const bars = buckets.map((count, i) => {
    const barHeight = Math.round((count / max) * (height - 20));
    const label = i === 9 ? '90–100' : `${i * 10}–${i * 10 + 9}`;
    const band = i < 5 ? 'at_risk' : i < 7 ? 'watch' : 'healthy';
    return s('g', {},
      s('rect', {
        x: i * bar + 2, y: height - 20 - barHeight, width: bar - 4, height: barHeight,
        class: `bar bar-${band}`,
      }, s('title', {}, `${label}: ${count} clients`)),
      s('text', { x: i * bar + bar / 2, y: height - 5, 'text-anchor': 'middle', class: 'axis' }, String(i * 10)),
      count ? s('text', { x: i * bar + bar / 2, y: height - 24 - barHeight, 'text-anchor': 'middle', class: 'count' }, String(count)) : null);
  });
  return h('figure', { class: 'histogram' },
    s('svg', {
      viewBox: `0 0 ${width} ${height}`, role: 'img',
      'aria-label': `Clients by score: ${buckets.map((c, i) => `${i * 10}s: ${c}`).join(', ')}`,
    }, ...bars),
    h('figcaption', {}, 'Clients by engagement score (lower is more at risk)'));
}

export function render(view, { live }) {
  const stats = h('section', { 'aria-labelledby': 'stats-title' });
  const feed = h('ol', { class: 'feed', 'aria-live': 'polite', 'aria-relevant': 'additions' });
  const empty = h('p', { class: 'muted feed-empty' }, 'Events appear here as they happen.');
  mount(view,
    h('h1', {}, 'Overview'),
    h('h2', { id: 'stats-title', class: 'visually-hidden' }, 'Counts'),
    stats,
    h('section', { class: 'card', 'aria-labelledby': 'feed-title' },
      h('h2', { id: 'feed-title' }, 'Live events'), empty, feed));

  let demoTimer = null;
  const refresh = (quiet = false) => load(stats, 'Loading the counts', () => gql(SUMMARY), ({ engagementSummary: e, demo, health, review }) => [
    (() => {
      clearTimeout(demoTimer);
      if (demo && !demo.done) demoTimer = setTimeout(() => refresh(true), 1500);
      return demoNotice(demo);
    })(),
    h('div', { class: 'stats' },
      stat('Users', e.users, 'users', '#/users'),
      stat('At risk', e.atRisk, 'atRisk', '#/users?risk=at'),
      stat('Average score', e.averageScore.toFixed(1), 'averageScore'),
      stat('Emails written', e.emails, 'emails', '#/emails')),
    deliveryLine(health, review),
    h('div', { class: 'card' }, h('h2', {}, 'Scores'), histogram(e.scoreHistogram)),
  ], { quiet });
  refresh();

  const show = (event, { prepend }) => {
    if (event.type === 'UserCreated') remember(event.userId, event.payload?.name);
    const item = feedItem(event, known(event.userId));
    if (!known(event.userId)) {
      nameOf(event.userId).then((name) => {
        if (name) item.querySelector('a').textContent = name;
      });
    }
    empty.hidden = true;
    if (prepend) feed.prepend(item); else feed.append(item);
    while (feed.children.length > 50) feed.lastElementChild.remove();
  };
  for (const event of live.recent) show(event, { prepend: false });

  let timer = null;
  const off = live.on((event) => {
    show(event, { prepend: true });
    clearTimeout(timer);
    timer = setTimeout(() => refresh(true), 400);
  });
  return () => { off(); clearTimeout(timer); clearTimeout(demoTimer); };
}
