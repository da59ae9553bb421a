// Does emailing bring clients back? Treated against held-out at-risk clients, with honest
// intervals, and beside it the daily trend of clients at risk, scores, emails and reactivations.

import { gql } from '../api.js';
import { h, s, mount, load, money } from '../dom.js';

const QUERY = `query($window: Int!, $days: Int!) {
  engagementUplift(windowDays: $window) {
    windowDays difference differenceLow differenceHigh
    treatment { triggered reactivated rate rateLow rateHigh revenue }
    holdout { triggered reactivated rate rateLow rateHigh revenue }
  }
  engagementTrend(days: $days) { day atRisk averageScore emails reactivations }
}`;

const pct = (x) => `${(x * 100).toFixed(1)}%`;
const points = (x) => `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(1)} points`;

/** What the numbers say, in a sentence. */
export function verdict(u) {
  const t = u.treatment;
  const c = u.holdout;
  if (t.triggered === 0 && c.triggered === 0) return 'No client has been at risk in this period yet.';
  if (c.triggered === 0) return 'No held-out clients yet: with HOLDOUT_PERCENT at 0 there is nothing to compare with.';
  if (t.triggered === 0) return 'No treated clients in this period yet.';
  if (u.differenceLow <= 0 && u.differenceHigh >= 0) {
    const small = Math.min(t.triggered, c.triggered) < 100;
    return `${small ? 'Not yet enough data: ' : 'No clear effect: '}emailed clients came back ${pct(t.rate)} of the time and held-out ones ${pct(c.rate)}; the difference could be anywhere from ${points(u.differenceLow)} to ${points(u.differenceHigh)}.`;
  }
  const direction = u.difference > 0 ? 'raised' : 'lowered';
  return `Emailing ${direction} reactivation within ${u.windowDays} days by ${points(u.difference).replace('+', '').replace('−', '')} (95% interval ${points(u.differenceLow)} to ${points(u.differenceHigh)}): ${pct(t.rate)} of emailed clients came back against ${pct(c.rate)} of held-out ones.`;
}

/** Both rates with their intervals, and the difference with its interval, on one scale. */
function intervals(u) {
  const width = 560;
  const row = 44;
  const left = 150;
  const right = 20;
  const x = (v) => left + ((v + 1) / 2) * (width - left - right);
  const line = (y, label, v, low, high, cls) => s('g', { class: `interval ${cls}` },
    s('text', { x: 0, y: y + 4, class: 'axis' }, label),
    s('line', { x1: x(low), x2: x(high), y1: y, y2: y, class: 'whisker' }),
    s('line', { x1: x(low), x2: x(low), y1: y - 6, y2: y + 6, class: 'whisker' }),
    s('line', { x1: x(high), x2: x(high), y1: y - 6, y2: y + 6, class: 'whisker' }),
    s('circle', { cx: x(v), cy: y, r: 5, class: 'estimate' },
      s('title', {}, `${label}: ${pct(v)} (95% interval ${pct(low)} to ${pct(high)})`)));
  const height = row * 3 + 24;
  return h('figure', { class: 'chart uplift-chart' },
    s('svg', {
      viewBox: `0 0 ${width} ${height}`, role: 'img',
      'aria-label': `Emailed ${pct(u.treatment.rate)} (${pct(u.treatment.rateLow)} to ${pct(u.treatment.rateHigh)}), held out ${pct(u.holdout.rate)} (${pct(u.holdout.rateLow)} to ${pct(u.holdout.rateHigh)}), difference ${points(u.difference)} (${points(u.differenceLow)} to ${points(u.differenceHigh)})`,
    },
    s('line', { x1: x(0), x2: x(0), y1: 8, y2: height - 20, class: 'zero' }),
    ...[-1, -0.5, 0, 0.5, 1].map((v) => s('text', { x: x(v), y: height - 4, 'text-anchor': 'middle', class: 'axis' }, `${Math.round(v * 100)}%`)),
    line(row * 0 + 24, 'Emailed', u.treatment.rate, u.treatment.rateLow, u.treatment.rateHigh, 'treatment'),
    line(row * 1 + 24, 'Held out', u.holdout.rate, u.holdout.rateLow, u.holdout.rateHigh, 'holdout'),
    line(row * 2 + 24, 'Difference', u.difference, u.differenceLow, u.differenceHigh, 'difference')),
    h('figcaption', {}, 'Reactivation rates with 95% intervals (Wilson), and their difference (Newcombe)'));
}

/** A small line chart of one series over the days. */
function spark(days, key, label, format = String) {
  const width = 260;
  const height = 90;
  const values = days.map((d) => d[key]);
  const max = Math.max(1, ...values);
  const x = (i) => 4 + (i / Math.max(1, days.length - 1)) * (width - 8);
  const y = (v) => height - 18 - (v / max) * (height - 30);
  const path = values.map((v, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  const last = values.at(-1) ?? 0;
  return h('figure', { class: 'chart spark', dataset: { series: key } },
    h('figcaption', {}, `${label}: `, h('strong', {}, format(last))),
    s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `${label} per day, ${days[0]?.day} to ${days.at(-1)?.day}; today ${format(last)}` },
      s('path', { d: path, class: 'line' }),
      s('text', { x: 4, y: height - 4, class: 'axis' }, days[0]?.day ?? ''),
      s('text', { x: width - 4, y: height - 4, 'text-anchor': 'end', class: 'axis' }, days.at(-1)?.day ?? '')));
}

export function render(view, { params, navigate }) {
  const window = Math.min(365, Math.max(1, Number(params.get('window')) || 30));
  const body = h('div');
  const input = h('input', { id: 'u-window', name: 'window', type: 'number', min: 1, max: 365, value: String(window) });
  mount(view,
    h('h1', {}, 'Does emailing bring clients back?'),
    h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); navigate(`/uplift?window=${encodeURIComponent(input.value)}`); } },
      h('div', { class: 'field' }, h('label', { for: 'u-window' }, 'Window (days after the trigger)'), input),
      h('button', { type: 'submit' }, 'Show')),
    body);
  load(body, 'Loading the report', () => gql(QUERY, { window, days: 90 }), ({ engagementUplift: u, engagementTrend: days }) => [
    h('p', { class: 'verdict', role: 'status' }, verdict(u)),
    intervals(u),
    h('div', { class: 'table-wrap' }, h('table', { class: 'uplift' },
      h('thead', {}, h('tr', {}, ['Group', 'At-risk triggers', 'Came back', 'Rate (95% interval)', 'Revenue of those orders'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, [['Emailed', u.treatment, 'treatment'], ['Held out', u.holdout, 'holdout']].map(([name, g, key]) => h('tr', { dataset: { group: key } },
        h('th', { scope: 'row' }, name),
        h('td', {}, String(g.triggered)),
        h('td', {}, String(g.reactivated)),
        h('td', {}, `${pct(g.rate)} (${pct(g.rateLow)} to ${pct(g.rateHigh)})`),
        h('td', {}, money(g.revenue))))))),
    h('p', { class: 'muted' }, 'A trigger is the decision that an at-risk client should be emailed; it counts whatever happened after it (intention to treat). Held-out clients are chosen at random when they are created and never emailed.'),
    h('h2', {}, 'The last 90 days'),
    h('div', { class: 'sparks' },
      spark(days, 'atRisk', 'Clients at risk'),
      spark(days, 'averageScore', 'Average score', (v) => v.toFixed(1)),
      spark(days, 'emails', 'Emails written per day'),
      spark(days, 'reactivations', 'Reactivations per day')),
  ]);
}
