// The operator dashboard: a client of the public GraphQL API like any other.
// Hash routes (#/users/…) keep it one page served from one address, with working back buttons.

import { gql, session, LiveEvents } from './api.js';
import { h, mount, errorBox, loading } from './dom.js';
import * as overview from './views/overview.js';
import * as users from './views/users.js';
import * as user from './views/user.js';
import * as userForm from './views/user-form.js';
import * as emails from './views/emails.js';
import * as jobs from './views/jobs.js';
import * as uplift from './views/uplift.js';

const ROUTES = [
  [/^\/$/, overview.render, 'overview'],
  [/^\/users$/, users.render, 'users'],
  [/^\/users\/new$/, userForm.render, 'users'],
  [/^\/users\/([^/]+)\/edit$/, userForm.render, 'users'],
  [/^\/users\/([^/]+)$/, user.render, 'users'],
  [/^\/emails$/, emails.renderList, 'emails'],
  [/^\/emails\/([^/]+)$/, emails.renderDetail, 'emails'],
  [/^\/jobs$/, jobs.render, 'jobs'],
  [/^\/uplift$/, uplift.render, 'uplift'],
];

const root = document.getElementById('app');
let live = null;
let viewer = null;
let cleanup = null;

/** The route in the address: path, its captured id, and its query parameters. */
export function currentRoute() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = hash.split('?');
  return { path, params: new URLSearchParams(query) };
}

/** Goes to a route (`/users?search=x`). */
export function navigate(to) {
  location.hash = `#${to}`;
}

function takeTokenFromAddress() {
  const params = new URLSearchParams(location.search);
  if (!params.has('token')) return;
  session.signIn(params.get('token'));
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
}

function signInPage(message) {
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true,
    'aria-describedby': 'token-help',
  });
  const status = h('div', { 'aria-live': 'polite' }, message
    ? h('p', { class: `notice ${message.error ? 'notice-error' : 'notice-info'}`, role: message.error ? 'alert' : 'status' }, message.text)
    : null);
  const form = h('form', {
    class: 'card sign-in', 'aria-labelledby': 'sign-in-title',
    onsubmit: async (event) => {
      event.preventDefault();
      session.signIn(input.value);
      mount(status, loading('Checking the token'));
      await start();
    },
  },
  h('h1', { id: 'sign-in-title' }, 'Sign in'),
  h('label', { for: 'token' }, 'Access token'),
  input,
  h('p', { id: 'token-help', class: 'muted' },
    'The link the service prints at start-up signs you in. ',
    'The token is kept for this browser tab only and forgotten when you sign out.'),
  status,
  h('button', { type: 'submit' }, 'Sign in'));
  mount(root, h('main', { id: 'main', class: 'narrow' }, form));
  input.focus();
}

function signOut(message) {
  session.signOut();
  live?.stop();
  live = null;
  viewer = null;
  cleanup?.();
  cleanup = null;
  signInPage(message);
}

function shell() {
  const link = (href, label, key) => h('a', { href, dataset: { nav: key } }, label);
  const liveStatus = h('span', { class: 'live-status', role: 'status', 'aria-live': 'polite' });
  live.onStatus((status, detail) => {
    liveStatus.className = `live-status live-${status}`;
    liveStatus.textContent = { live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', refused: 'Feed refused' }[status] ?? status;
    liveStatus.title = detail ?? '';
  });
  const header = h('header', { class: 'top' },
    h('a', { href: '#/', class: 'brand' }, 'Engagement'),
    h('nav', { 'aria-label': 'Main' },
      link('#/', 'Overview', 'overview'),
      link('#/users', 'Users', 'users'),
      link('#/emails', 'Emails', 'emails'),
      link('#/jobs', 'Email jobs', 'jobs'),
      link('#/uplift', 'Uplift', 'uplift')),
    h('div', { class: 'who' },
      liveStatus,
      h('span', { class: 'actor', title: `signed in as ${viewer.actor}` }, viewer.actor, ' ', h('span', { class: 'role' }, viewer.role.toLowerCase())),
      h('button', { type: 'button', class: 'secondary', onclick: () => signOut({ text: 'You signed out; the token is forgotten.' }) }, 'Sign out')));
  const main = h('main', { id: 'main', tabindex: '-1' });
  mount(root, h('a', { href: '#main', class: 'skip', onclick: (e) => { e.preventDefault(); main.focus(); } }, 'Skip to content'), header, main);
  return main;
}

let main = null;

function route() {
  if (!viewer) return;
  const { path, params } = currentRoute();
  const found = ROUTES.map(([re, render, key]) => [path.match(re), render, key]).find(([m]) => m);
  cleanup?.();
  cleanup = null;
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (found && a.dataset.nav === found[2]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!found) {
    mount(main, h('h1', {}, 'Not found'), h('p', {}, 'No page lives at this address. ', h('a', { href: '#/' }, 'Go to the overview.')));
    return;
  }
  const [match, render] = found;
  const view = h('div', { class: 'view' });
  // What the previous page did (added, saved, deleted), said once on the page it led to.
  const flash = sessionStorage.getItem('engagement.flash');
  sessionStorage.removeItem('engagement.flash');
  mount(main, flash ? h('p', { class: 'notice notice-ok', role: 'status' }, flash) : null, view);
  const result = render(view, { id: match[1] ? decodeURIComponent(match[1]) : undefined, params, viewer, live, navigate });
  cleanup = typeof result === 'function' ? result : null;
  window.scrollTo(0, 0);
}

async function start() {
  if (!session.token) return signInPage();
  mount(root, h('main', { class: 'narrow' }, loading('Signing in')));
  try {
    viewer = (await gql('{ viewer { actor role } }')).viewer;
  } catch (error) {
    if (error.code === 'UNAUTHENTICATED') return signOut({ text: 'That token was not accepted.', error: true });
    mount(root, h('main', { class: 'narrow' }, errorBox(error, start)));
    return undefined;
  }
  live = new LiveEvents();
  live.start();
  main = shell();
  route();
  return undefined;
}

window.addEventListener('hashchange', route);
window.addEventListener('engagement:signed-out', () => {
  if (viewer) signOut({ text: 'The server no longer accepts your token; sign in again.', error: true });
});

takeTokenFromAddress();
start();
