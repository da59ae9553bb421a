// Email jobs: the ones that failed or were skipped, with their errors, and retry (admin).

import { gql, can } from '../api.js';
import { h, mount, load, notice, timeEl, shortId } from '../dom.js';

const JOBS = `query($status: EmailJobStatus, $first: Int, $after: String) {
  emailJobs(status: $status, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { id userId status attempts lastError nextAttemptAt createdAt emailId triggerPosition }
  }
}`;

const STATUSES = [['DEAD', 'Dead'], ['SKIPPED', 'Skipped'], ['PENDING', 'Pending'], ['RUNNING', 'Running'], ['DONE', 'Done'], ['', 'Any']];

export function render(view, { params, viewer, navigate }) {
  const current = params.has('status') ? params.get('status') : 'DEAD';
  const status = h('div', { 'aria-live': 'polite' });
  const results = h('div');
  const select = h('select', { id: 'j-status', onchange: (e) => navigate(`/jobs?status=${encodeURIComponent(e.target.value)}`) },
    STATUSES.map(([v, t]) => h('option', { value: v, selected: v === current }, t)));
  mount(view, h('h1', {}, 'Email jobs'),
    h('p', { class: 'muted' }, 'Each at-risk score that calls for an email makes one job. Jobs that failed on every attempt are dead; jobs whose client was no longer eligible are skipped.'),
    h('div', { class: 'filters' }, h('div', { class: 'field' }, h('label', { for: 'j-status' }, 'Status'), select)),
    status, results);
  const admin = can(viewer, 'admin');
  const refresh = () => load(results, 'Loading jobs', () => gql(JOBS, { status: current || null, first: 100 }), ({ emailJobs }) => [
    h('p', { class: 'muted', role: 'status' }, `${emailJobs.totalCount} ${emailJobs.totalCount === 1 ? 'job' : 'jobs'}${emailJobs.pageInfo.hasNextPage ? ' (newest 100 shown)' : ''}`),
    emailJobs.nodes.length
      ? h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Job', 'User', 'Status', 'Attempts', 'Last error', 'Created', 'Next attempt', admin ? 'Action' : null].filter(Boolean).map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, emailJobs.nodes.map((j) => h('tr', { dataset: { jobId: j.id } },
          h('td', {}, shortId(j.id)),
          h('td', {}, h('a', { href: `#/users/${encodeURIComponent(j.userId)}` }, String(j.userId).slice(0, 8))),
          h('td', {}, j.status.toLowerCase()),
          h('td', {}, String(j.attempts)),
          h('td', { class: 'job-error' }, j.lastError ?? '—'),
          h('td', {}, timeEl(j.createdAt)),
          h('td', {}, timeEl(j.nextAttemptAt)),
          admin ? h('td', {}, (j.status === 'DEAD' || j.status === 'SKIPPED')
            ? h('button', {
              type: 'button', class: 'secondary', 'aria-label': `Retry job ${j.id}`,
              onclick: async (event) => {
                const button = event.currentTarget;
                button.disabled = true;
                try {
                  const { retryEmailJob: r } = await gql('mutation($id: ID!) { retryEmailJob(id: $id) { id status } }', { id: j.id });
                  notice(status, `Job ${r.id.slice(0, 8)} is ${r.status.toLowerCase()} again; a worker will pick it up.`);
                  refresh();
                } catch (error) {
                  notice(status, `Retry failed: ${error.message}`, 'error');
                  button.disabled = false;
                }
              },
            }, 'Retry')
            : null) : null)))))
      : h('p', { class: 'empty' }, 'No jobs in this state.'),
  ]);
  refresh();
}
