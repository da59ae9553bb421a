// The score over time, from the UserScored events of a client's history.

import { h, s, when } from '../dom.js';

/** Points (time, score) from history events, oldest first. */
export function scorePoints(events) {
  return events
    .filter((e) => e.type === 'UserScored')
    .map((e) => ({ at: new Date(e.payload.asOf ?? e.recordedAt), score: e.payload.score, sequence: e.sequence, threshold: e.payload.threshold }))
    .filter((p) => !Number.isNaN(p.at.getTime()))
    .sort((a, b) => a.at - b.at || a.sequence - b.sequence);
}

/** A line chart of the score, with the at-risk threshold drawn across it. */
export function scoreChart(events) {
  const points = scorePoints(events);
  if (!points.length) return h('p', { class: 'muted' }, 'No scores recorded yet.');
  const width = 560;
  const height = 180;
  const pad = { left: 32, right: 12, top: 10, bottom: 24 };
  const t0 = points[0].at.getTime();
  const t1 = points.at(-1).at.getTime();
  const span = Math.max(1, t1 - t0);
  const x = (p, i) => (t1 === t0
    ? pad.left + (i / Math.max(1, points.length - 1)) * (width - pad.left - pad.right)
    : pad.left + ((p.at.getTime() - t0) / span) * (width - pad.left - pad.right));
  const y = (score) => pad.top + (1 - score / 100) * (height - pad.top - pad.bottom);
  const threshold = points.at(-1).threshold ?? 50;
  const path = points.map((p, i) => `${i ? 'L' : 'M'}${x(p, i).toFixed(1)},${y(p.score).toFixed(1)}`).join(' ');
  const label = `Score over time: ${points.map((p) => `${p.score} on ${when(p.at.toISOString())}`).join('; ')}`;
  return h('figure', { class: 'chart' },
    s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label },
      ...[0, 50, 100].map((v) => s('text', { x: 4, y: y(v) + 4, class: 'axis' }, String(v))),
      s('line', { x1: pad.left, x2: width - pad.right, y1: y(threshold), y2: y(threshold), class: 'threshold' },
        s('title', {}, `at-risk threshold: ${threshold}`)),
      s('path', { d: path, class: 'line' }),
      ...points.map((p, i) => s('circle', { cx: x(p, i), cy: y(p.score), r: 4, class: p.score < threshold ? 'dot dot-risk' : 'dot' },
        s('title', {}, `${p.score} on ${when(p.at.toISOString())} (version ${p.sequence})`))),
      s('text', { x: pad.left, y: height - 6, class: 'axis' }, when(points[0].at.toISOString(), { time: false })),
      s('text', { x: width - pad.right, y: height - 6, 'text-anchor': 'end', class: 'axis' }, when(points.at(-1).at.toISOString(), { time: false }))),
    h('figcaption', {}, `Score over time; the dashed line is the at-risk threshold (${threshold}).`));
}
