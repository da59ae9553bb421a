// Emails: the list, and one email with its HTML in a sandboxed frame beside its plain text.

import { gql } from '../api.js';
import { h, mount, load, timeEl } from '../dom.js';
import { goTo, pager, FIRST_PAGE } from './paging.js';

const LIST = `query($status: EmailStatus, $first: Int, $after: String) {
  emails(status: $status, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { id subject generatedAt status engagementScoreAtTime generator user { id name } userId }
  }
}`;

const ONE = `query($id: ID!) {
  email(id: $id) {
    id subject preheader html text status generatedAt engagementScoreAtTime generator userId user { id name email }
  }
}`;

const PAGE_SIZE = 25;

export function renderList(view, { params, navigate }) {
  const go = goTo(navigate, '/emails', params);
  const statusSelect = h('select', { id: 'e-status', name: 'status', onchange: (e) => go({ status: e.target.value, ...FIRST_PAGE }) },
    [['', 'Any status'], ['GENERATED', 'Generated'], ['WOULD_SEND', 'Would send'], ['SENT', 'Sent']]
      .map(([v, t]) => h('option', { value: v, selected: v === (params.get('status') ?? '') }, t)));
  const results = h('div');
  mount(view, h('h1', {}, 'Emails'),
    h('div', { class: 'filters' }, h('div', { class: 'field' }, h('label', { for: 'e-status' }, 'Status'), statusSelect)),
    results);
  load(results, 'Loading emails', () => gql(LIST, {
    status: params.get('status') || null, first: PAGE_SIZE, after: params.get('after') || null,
  }), ({ emails }) => [
    h('p', { class: 'muted', role: 'status' }, `${emails.totalCount} ${emails.totalCount === 1 ? 'email' : 'emails'}`),
    emails.nodes.length
      ? h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Subject', 'To', 'Written', 'Score then', 'Status', 'Writer'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, emails.nodes.map((e) => h('tr', { dataset: { emailId: e.id } },
          h('td', {}, h('a', { href: `#/emails/${encodeURIComponent(e.id)}` }, e.subject)),
          h('td', {}, e.user ? h('a', { href: `#/users/${encodeURIComponent(e.user.id)}` }, e.user.name) : h('code', {}, e.userId)),
          h('td', {}, timeEl(e.generatedAt)),
          h('td', {}, String(e.engagementScoreAtTime)),
          h('td', {}, e.status.toLowerCase().replace('_', ' ')),
          h('td', {}, e.generator))))))
      : h('p', { class: 'empty' }, 'No emails yet.'),
    pager(params, emails.pageInfo, go),
  ]);
}

export function renderDetail(view, { id }) {
  load(view, 'Loading the email', () => gql(ONE, { id }), ({ email }) => {
    if (!email) return [h('h1', {}, 'No such email'), h('p', {}, h('a', { href: '#/emails' }, 'Back to the emails.'))];
    // The HTML is shown in a frame with every sandbox permission off: no scripts, no forms,
    // no navigation of this page, and an opaque origin that cannot reach the dashboard.
    const frame = h('iframe', {
      sandbox: '', title: `HTML of “${email.subject}”`, class: 'email-frame', referrerpolicy: 'no-referrer', srcdoc: email.html,
    });
    return [
      h('p', {}, h('a', { href: '#/emails' }, '← Emails')),
      h('h1', {}, email.subject),
      h('dl', { class: 'facts' },
        h('dt', {}, 'To'), h('dd', {}, email.user ? [h('a', { href: `#/users/${encodeURIComponent(email.user.id)}` }, email.user.name), ` <${email.user.email}>`] : email.userId),
        h('dt', {}, 'Preview text'), h('dd', {}, email.preheader || '—'),
        h('dt', {}, 'Written'), h('dd', {}, timeEl(email.generatedAt)),
        h('dt', {}, 'Score then'), h('dd', {}, String(email.engagementScoreAtTime)),
        h('dt', {}, 'Status'), h('dd', {}, email.status.toLowerCase().replace('_', ' ')),
        h('dt', {}, 'Writer'), h('dd', {}, email.generator)),
      h('div', { class: 'email-panes' },
        h('section', { 'aria-labelledby': 'html-title' }, h('h2', { id: 'html-title' }, 'HTML'), frame),
        h('section', { 'aria-labelledby': 'text-title' }, h('h2', { id: 'text-title' }, 'Plain text'), h('pre', { class: 'email-text' }, email.text))),
    ];
  });
}
