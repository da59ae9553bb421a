// Users: filter, search, sort and page through the clients.

import { gql, can } from '../api.js';
import { h, mount, load, scoreBadge, bandOf, timeEl } from '../dom.js';
import { goTo, pager, FIRST_PAGE } from './paging.js';

const USERS = `query($filter: UserFilter, $orderBy: UserOrder, $first: Int, $after: String) {
  users(filter: $filter, orderBy: $orderBy, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { id name email engagementScore atRisk scoreBreakdown { band } lastOrderDate lastEmailDate status }
  }
}`;

const SORTS = [
  ['ENGAGEMENT_SCORE:ASC', 'Score, lowest first'],
  ['ENGAGEMENT_SCORE:DESC', 'Score, highest first'],
  ['NAME:ASC', 'Name, A to Z'],
  ['NAME:DESC', 'Name, Z to A'],
  ['CREATED_AT:DESC', 'Newest first'],
  ['CREATED_AT:ASC', 'Oldest first'],
  ['LAST_ORDER_DATE:DESC', 'Last order, latest first'],
  ['LAST_ORDER_DATE:ASC', 'Last order, earliest first'],
];

export const PAGE_SIZE = 25;

function select(id, label, name, options, value) {
  return [
    h('label', { for: id }, label),
    h('select', { id, name }, options.map(([v, text]) => h('option', { value: v, selected: v === value }, text))),
  ];
}

/** The filter and ordering in the address, as the API's arguments. */
export function queryFrom(params) {
  const filter = {};
  const search = params.get('search')?.trim();
  if (search) filter.search = search;
  const category = params.get('category')?.trim();
  if (category) filter.category = category;
  if (params.get('risk') === 'at') filter.atRisk = true;
  if (params.get('risk') === 'not') filter.atRisk = false;
  if (params.get('status')) filter.status = params.get('status');
  const [field, direction] = (params.get('sort') || SORTS[0][0]).split(':');
  return { filter, orderBy: { field, direction }, first: PAGE_SIZE, after: params.get('after') || null };
}

/** "3 users at risk matching “ada” in Denim". */
function describe(count, params) {
  const parts = [`${count} ${count === 1 ? 'user' : 'users'}`];
  if (params.get('risk') === 'at') parts.push('at risk');
  if (params.get('risk') === 'not') parts.push('not at risk');
  if (params.get('status')) parts.push(params.get('status').toLowerCase());
  if (params.get('search')?.trim()) parts.push(`matching “${params.get('search').trim()}”`);
  if (params.get('category')?.trim()) parts.push(`in ${params.get('category').trim()}`);
  return parts.join(' ');
}

export function render(view, { params, viewer, navigate }) {
  const go = goTo(navigate, '/users', params);
  const form = h('form', {
    class: 'filters', role: 'search', 'aria-label': 'Filter users',
    onsubmit: (event) => {
      event.preventDefault();
      const data = new FormData(form);
      go({
        search: data.get('search'), category: data.get('category'), risk: data.get('risk'),
        status: data.get('status'), sort: data.get('sort'), ...FIRST_PAGE,
      });
    },
  },
  h('div', { class: 'field' }, h('label', { for: 'f-search' }, 'Search name or email'),
    h('input', { id: 'f-search', name: 'search', type: 'search', value: params.get('search') ?? '' })),
  h('div', { class: 'field' }, h('label', { for: 'f-category' }, 'Category'),
    h('input', { id: 'f-category', name: 'category', value: params.get('category') ?? '' })),
  h('div', { class: 'field' }, ...select('f-risk', 'Risk', 'risk',
    [['', 'Everyone'], ['at', 'At risk'], ['not', 'Not at risk']], params.get('risk') ?? '')),
  h('div', { class: 'field' }, ...select('f-status', 'Status', 'status',
    [['', 'Active and unsubscribed'], ['ACTIVE', 'Active'], ['UNSUBSCRIBED', 'Unsubscribed'], ['DELETED', 'Deleted'], ['ERASED', 'Erased']],
    params.get('status') ?? '')),
  h('div', { class: 'field' }, ...select('f-sort', 'Sort by', 'sort', SORTS, params.get('sort') ?? SORTS[0][0])),
  h('button', { type: 'submit' }, 'Apply'));
  for (const el of form.querySelectorAll('select')) el.addEventListener('change', () => form.requestSubmit());

  const results = h('div', { class: 'results' });
  mount(view,
    h('div', { class: 'title-row' },
      h('h1', {}, 'Users'),
      can(viewer, 'mutate') ? h('a', { class: 'button', href: '#/users/new' }, 'Add user') : null),
    form, results);

  load(results, 'Loading users', () => gql(USERS, queryFrom(params)), ({ users }) => {
    const rows = users.nodes.map((u) => h('tr', { dataset: { userId: u.id } },
      h('td', {}, h('a', { href: `#/users/${encodeURIComponent(u.id)}` }, u.name)),
      h('td', { class: 'email-cell' }, u.email),
      h('td', {}, scoreBadge(u.engagementScore, bandOf(u))),
      h('td', {}, timeEl(u.lastOrderDate, { time: false })),
      h('td', {}, timeEl(u.lastEmailDate, { time: false })),
      h('td', {}, h('span', { class: `status status-${u.status.toLowerCase()}` }, u.status.toLowerCase()))));
    return [
      h('p', { class: 'muted count', role: 'status' }, describe(users.totalCount, params)),
      users.nodes.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'users' },
          h('caption', { class: 'visually-hidden' }, 'Users'),
          h('thead', {}, h('tr', {}, ['Name', 'Email', 'Score', 'Last order', 'Last email', 'Status'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, rows)))
        : h('p', { class: 'empty' }, 'No users match.'),
      pager(params, users.pageInfo, go),
    ];
  });
}
