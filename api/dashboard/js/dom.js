// Small DOM helpers. Every piece of data reaches the page as text (textContent or an attribute
// value), never as markup: a client's name cannot become a script.

/** An element: h('a', { href: '#/' , class: 'x', onclick: fn }, 'text', child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else if (key === 'value' || key === 'srcdoc' || key === 'checked' || key === 'selected') {
      el[key] = value;
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

/** Replaces a node's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const dateOnly = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });

/** A time for people, or a dash. */
export function when(iso, { time = true } = {}) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : (time ? dateTime : dateOnly).format(d);
}

/** A <time> element with the exact instant in its datetime and title. */
export function timeEl(iso, options) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: iso }, when(iso, options));
}

/** Money as the API gives it (a decimal string), shown with two decimals. */
export function money(value) {
  if (value === null || value === undefined || value === '') return '—';
  const n = Number(value);
  return Number.isFinite(n) ? n.toLocaleString(undefined, { style: 'currency', currency: 'USD' }) : String(value);
}

/** The band a score falls in, as the API's `band` (`at_risk`, `watch`, `healthy`). */
export function bandClass(band) {
  return `band band-${String(band || 'unknown').replace(/[^a-z_]/g, '')}`;
}

export function bandLabel(band) {
  return { at_risk: 'at risk', watch: 'watch', healthy: 'healthy' }[band] ?? band ?? '';
}

/** A score with its band colour. */
export function scoreBadge(score, band) {
  return h('span', { class: bandClass(band), title: `score ${score}, ${bandLabel(band)}` },
    h('span', { class: 'score-number' }, String(score)), ' ', h('span', { class: 'band-name' }, bandLabel(band)));
}

/** The band of a score when only the score is known (the API's `atRisk` decides at-risk). */
export function bandOf(user) {
  return user.scoreBreakdown?.band ?? (user.atRisk ? 'at_risk' : 'healthy');
}

/** A visible loading state. */
export function loading(what = 'Loading') {
  return h('p', { class: 'loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), `${what}…`);
}

/** A visible error, with the code the API gave. */
export function errorBox(error, retry) {
  const code = error?.code ? ` (${error.code})` : '';
  return h('div', { class: 'error', role: 'alert' },
    h('strong', {}, 'Something went wrong'), code, ': ', error?.message ?? String(error),
    retry ? h('button', { type: 'button', class: 'link', onclick: retry }, 'Try again') : null);
}

/** A short-lived confirmation of what an action did. */
export function notice(el, message, kind = 'ok') {
  mount(el, h('p', { class: `notice notice-${kind}`, role: kind === 'ok' ? 'status' : 'alert' }, message));
}

/** An id shortened for tables (the whole id is in the title). */
export function shortId(id) {
  return h('code', { title: id }, String(id).slice(0, 8));
}

/**
 * Runs `fn`, showing its loading and error states in `el`, and `render`s what it gives.
 * With `quiet`, content already shown stays until the new content is ready (live refreshes).
 */
export async function load(el, what, fn, render, { quiet = false } = {}) {
  if (!quiet || !el.childElementCount) mount(el, loading(what));
  el.setAttribute('aria-busy', 'true');
  try {
    const data = await fn();
    mount(el, render(data));
    return data;
  } catch (error) {
    mount(el, errorBox(error, () => load(el, what, fn, render)));
    return undefined;
  } finally {
    el.removeAttribute('aria-busy');
  }
}
