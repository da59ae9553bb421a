// Emails: the list, and one email with its HTML in a sandboxed frame beside its plain text.

import { gql } from '../api.js';
import { h, mount, load, timeEl, errorBox, notice } from '../dom.js';
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
    deliveryMode sentAt messageId deliveryError reviewedBy reviewReason
  }
}`;

const PAGE_SIZE = 25;

export function renderList(view, { params, navigate }) {
  const go = goTo(navigate, '/emails', params);
  const statusSelect = h('select', { id: 'e-status', name: 'status', onchange: (e) => go({ status: e.target.value, ...FIRST_PAGE }) },
    [['', 'Any status'], ['PENDING_REVIEW', 'Waiting for review'], ['GENERATED', 'Generated (queued)'],
      ['WOULD_SEND', 'Would send'], ['SENT', 'Sent'], ['REJECTED', 'Rejected'], ['CANCELLED', 'Cancelled'],
      ['FAILED', 'Failed'], ['BOUNCED', 'Bounced'], ['COMPLAINED', 'Complained']]
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
          h('td', {}, e.status.toLowerCase().replaceAll('_', ' ')),
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
        h('dt', {}, 'Status'), h('dd', { dataset: { status: email.status } }, email.status.toLowerCase().replaceAll('_', ' ')),
        h('dt', {}, 'Delivery'), h('dd', {}, email.deliveryMode ?? 'none (written before delivery)'),
        email.sentAt ? [h('dt', {}, 'Sent'), h('dd', {}, timeEl(email.sentAt))] : null,
        email.messageId ? [h('dt', {}, 'Message-ID'), h('dd', {}, h('code', {}, email.messageId))] : null,
        email.deliveryError ? [h('dt', {}, 'Delivery note'), h('dd', {}, email.deliveryError)] : null,
        email.reviewedBy ? [h('dt', {}, 'Reviewed by'), h('dd', {}, email.reviewedBy + (email.reviewReason ? ` (“${email.reviewReason}”)` : ''))] : null,
        h('dt', {}, 'Writer'), h('dd', {}, email.generator)),
      email.status === 'PENDING_REVIEW' ? reviewForm(email, () => renderDetail(view, { id })) : null,
      h('div', { class: 'email-panes' },
        h('section', { 'aria-labelledby': 'html-title' }, h('h2', { id: 'html-title' }, 'HTML'), frame),
        h('section', { 'aria-labelledby': 'text-title' }, h('h2', { id: 'text-title' }, 'Plain text'), h('pre', { class: 'email-text' }, email.text))),
    ];
  });
}

/** Approve, or reject with a reason, an email waiting for review. */
function reviewForm(email, refresh) {
  const status = h('div', { class: 'form-status' });
  const reason = h('input', { id: 'review-reason', name: 'reason', maxlength: 500, placeholder: 'Why not (required to reject)' });
  const act = async (query, variables) => {
    try {
      await gql(query, variables);
      notice(status, 'Done.');
      refresh();
    } catch (error) {
      mount(status, errorBox(error));
    }
  };
  return h('form', { class: 'action review', 'aria-labelledby': 'review-title', onsubmit: (e) => e.preventDefault() },
    h('h2', { id: 'review-title' }, 'Review'), status,
    h('div', { class: 'actions' },
      h('button', { type: 'button', onclick: () => act('mutation($id: ID!) { approveEmail(id: $id) { status } }', { id: email.id }) }, 'Approve and send'),
      h('div', { class: 'field' }, h('label', { for: 'review-reason' }, 'Reason'), reason),
      h('button', { type: 'button', class: 'danger', onclick: () => act('mutation($id: ID!, $r: String!) { rejectEmail(id: $id, reason: $r) { status } }', { id: email.id, r: reason.value }) }, 'Reject')));
}
