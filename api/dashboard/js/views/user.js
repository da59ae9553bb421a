// A user's page: profile, score and its reasons, the score over time, orders, emails, the
// audit timeline, the user as they stood at any moment, and the actions the role allows.

import { gql, can, newOrderId } from '../api.js';
import { h, mount, load, notice, scoreBadge, bandOf, bandLabel, timeEl, money, errorBox, loading } from '../dom.js';
import { scoreChart } from './chart.js';
import { summary, actor } from './feed.js';
import { field, clearErrors, showError, formError, list, dateToIso } from './form.js';

const USER_FIELDS = `id externalId name email preferredCategories orderCount averageOrderValue totalSpent
  lastOrderDate lastEmailDate engagementScore atRisk status createdAt updatedAt version
  scoreBreakdown { policy score band asOf nextChangeAt factors { name points detail } }`;

const PAGE = `query($id: ID!) {
  user(id: $id) {
    ${USER_FIELDS}
    emails(first: 50) { totalCount nodes { id subject generatedAt status engagementScoreAtTime generator } }
  }
}`;

const HISTORY = `query($id: ID!, $after: String) {
  userHistory(userId: $id, first: 200, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { globalPosition sequence type version recordedAt payload metadata }
  }
}`;

const AS_OF = `query($id: ID!, $at: DateTime, $version: Int) {
  userAsOf(userId: $id, at: $at, version: $version) {
    asOf version name email status engagementScore atRisk orderCount totalSpent lastOrderDate lastEmailDate
    preferredCategories scoreBreakdown { policy band score }
  }
}`;

/** The page reads at most this many events (a long-lived client's whole log stays an API away). */
const HISTORY_LIMIT = 5000;

/** The user's events, oldest first (pages of 200), up to HISTORY_LIMIT; `total` is all of them. */
async function history(id) {
  const events = [];
  let after = null;
  for (;;) {
    const { userHistory } = await gql(HISTORY, { id, after });
    events.push(...userHistory.nodes);
    if (!userHistory.pageInfo.hasNextPage || events.length >= HISTORY_LIMIT) {
      events.total = userHistory.totalCount;
      return events;
    }
    after = userHistory.pageInfo.endCursor;
  }
}

function dl(pairs) {
  return h('dl', { class: 'facts' }, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function scoreSection(user) {
  const b = user.scoreBreakdown;
  return h('section', { class: 'card', 'aria-labelledby': 'score-title' },
    h('h2', { id: 'score-title' }, 'Engagement score'),
    h('p', { class: 'big-score' }, scoreBadge(user.engagementScore, bandOf(user))),
    h('p', { class: 'muted' }, `Policy ${b.policy}, as of `, timeEl(b.asOf),
      b.nextChangeAt ? [', changes with time alone on ', timeEl(b.nextChangeAt)] : null, '.'),
    b.factors.length
      ? h('ul', { class: 'factors' }, b.factors.map((f) => h('li', {},
        h('span', { class: `points ${f.points < 0 ? 'neg' : 'pos'}` }, `${f.points > 0 ? '+' : ''}${Number(f.points.toFixed(1))}`),
        h('strong', {}, f.name), ': ', f.detail)))
      : h('p', { class: 'muted' }, 'No factors (set by hand).'));
}

function profileSection(user) {
  return h('section', { class: 'card', 'aria-labelledby': 'profile-title' },
    h('h2', { id: 'profile-title' }, 'Profile'),
    dl([
      ['Email', user.email],
      ['External id', user.externalId ? h('code', {}, user.externalId) : '—'],
      ['Status', h('span', { class: `status status-${user.status.toLowerCase()}` }, user.status.toLowerCase())],
      ['Preferred categories', user.preferredCategories.join(', ') || '—'],
      ['Orders', String(user.orderCount)],
      ['Average order', money(user.averageOrderValue)],
      ['Total spent', money(user.totalSpent)],
      ['Last order', timeEl(user.lastOrderDate)],
      ['Last email', timeEl(user.lastEmailDate)],
      ['Created', timeEl(user.createdAt)],
      ['Updated', timeEl(user.updatedAt)],
      ['Version', String(user.version)],
    ]));
}

function ordersSection(events) {
  const cancelled = new Map(events.filter((e) => e.type === 'OrderCancelled').map((e) => [e.payload.orderId, e.payload]));
  const orders = events.filter((e) => e.type === 'OrderPlaced').reverse();
  return h('section', { class: 'card', 'aria-labelledby': 'orders-title' },
    h('h2', { id: 'orders-title' }, `Orders (${orders.length})`),
    orders.length
      ? h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Order', 'Amount', 'Placed', 'Categories', 'Cancelled'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, orders.map((e) => {
          const cancel = cancelled.get(e.payload.orderId);
          return h('tr', { class: cancel ? 'cancelled' : null },
            h('td', {}, h('code', {}, e.payload.orderId)),
            h('td', {}, money(e.payload.amountCents / 100)),
            h('td', {}, timeEl(e.payload.placedAt)),
            h('td', {}, (e.payload.categories ?? []).join(', ') || '—'),
            h('td', {}, cancel ? (cancel.reason ? `yes: ${cancel.reason}` : 'yes') : '—'));
        }))))
      : h('p', { class: 'muted' }, 'No orders recorded here (imported history counts only in the summary).'));
}

function emailsSection(user) {
  const emails = user.emails;
  return h('section', { class: 'card', 'aria-labelledby': 'emails-title' },
    h('h2', { id: 'emails-title' }, `Emails (${emails.totalCount})`),
    emails.nodes.length
      ? h('ul', { class: 'email-list' }, emails.nodes.map((e) => h('li', { dataset: { emailId: e.id } },
        h('a', { href: `#/emails/${encodeURIComponent(e.id)}` }, e.subject),
        h('span', { class: 'muted' }, ' · ', timeEl(e.generatedAt), ` · score then ${e.engagementScoreAtTime} · ${e.status.toLowerCase()} · ${e.generator}`))))
      : h('p', { class: 'muted' }, 'No emails written to this client.'));
}

function timelineSection(events, showAsOf) {
  const items = [...events].reverse().map((e) => {
    const m = e.metadata ?? {};
    return h('li', { class: `timeline-item type-${e.type}`, dataset: { sequence: e.sequence } },
      h('div', { class: 'timeline-head' },
        h('span', { class: 'seq', title: `global position ${e.globalPosition}` }, `#${e.sequence}`),
        h('strong', { class: 'event-type' }, e.type),
        h('span', { class: 'event-summary' }, summary(e))),
      h('div', { class: 'timeline-meta' },
        timeEl(e.recordedAt), ' · ',
        h('span', { class: 'event-actor' }, 'by ', actor(e)),
        ` · v${e.version} · position ${e.globalPosition}`,
        h('button', { type: 'button', class: 'link', onclick: () => showAsOf({ version: e.sequence }) }, `See as of #${e.sequence}`)),
      h('details', {},
        h('summary', {}, 'Payload and metadata'),
        dl([
          ['Request', m.requestId ?? '—'],
          ['Correlation', m.correlationId ?? '—'],
          ['Causation', m.causationId ?? '—'],
        ]),
        h('pre', {}, JSON.stringify(e.payload, null, 2))));
  });
  const partial = events.total > events.length;
  return h('section', { class: 'card', 'aria-labelledby': 'timeline-title' },
    h('h2', { id: 'timeline-title' }, `History (${events.total ?? events.length} events, newest first)`),
    partial ? h('p', { class: 'notice notice-info' }, `The first ${events.length} events are shown here; the rest are in userHistory.`) : null,
    h('ol', { class: 'timeline' }, items));
}

function asOfSection(id, latestVersion) {
  const result = h('div', { class: 'as-of-result', 'aria-live': 'polite' });
  const form = h('form', { class: 'as-of', novalidate: true },
    formError(),
    field({ name: 'at', label: 'At time (your local time)', type: 'datetime-local', attrs: { step: 1 } }),
    h('p', { class: 'or' }, 'or'),
    field({ name: 'version', label: 'After version', type: 'number', attrs: { min: 1, max: latestVersion, step: 1 } }),
    h('button', { type: 'submit' }, 'Show'));
  const show = async (args) => {
    clearErrors(form);
    if (args.version !== undefined) {
      form.elements.version.value = args.version;
      form.elements.at.value = '';
    }
    mount(result, loading('Replaying the history'));
    try {
      const { userAsOf: u } = await gql(AS_OF, { id, ...args });
      if (!u) return mount(result, h('p', { class: 'muted' }, 'The user did not exist yet then.'));
      mount(result, h('div', { class: 'as-of-state' },
        h('p', {}, 'As of ', timeEl(u.asOf), ` (version ${u.version}):`),
        dl([
          ['Score', u.scoreBreakdown ? scoreBadge(u.engagementScore, u.scoreBreakdown.band) : String(u.engagementScore)],
          ['Name', u.name],
          ['Email', u.email],
          ['Status', u.status.toLowerCase()],
          ['Orders', String(u.orderCount)],
          ['Total spent', money(u.totalSpent)],
          ['Last order', timeEl(u.lastOrderDate)],
          ['Last email', timeEl(u.lastEmailDate)],
        ])));
    } catch (error) {
      mount(result);
      showError(form, error);
    }
    return undefined;
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const at = form.elements.at.value;
    const version = form.elements.version.value;
    if (at && !Number.isNaN(new Date(at).getTime())) show({ at: new Date(at).toISOString() });
    else if (version) show({ version: Number(version) });
    else mount(form.querySelector('.form-error'), errorBox({ message: 'choose a time or a version' }));
  });
  const section = h('section', { class: 'card', id: 'as-of', 'aria-labelledby': 'as-of-title' },
    h('h2', { id: 'as-of-title' }, 'As of'),
    h('p', { class: 'muted' }, 'The user as they stood at a moment or after an event, replayed from the log.'),
    form, result);
  return { section, show };
}

function actionsSection(user, viewer, { status, done, navigate }) {
  if (!can(viewer, 'mutate') || user.status === 'DELETED' || user.status === 'ERASED') return null;
  const run = async (form, fn) => {
    clearErrors(form);
    const buttons = form.querySelectorAll('button');
    for (const b of buttons) b.disabled = true;
    try {
      const message = await fn();
      notice(status, message);
      form.reset?.();
      done();
    } catch (error) {
      showError(form, error);
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  };
  const order = h('form', { class: 'action', novalidate: true, 'aria-labelledby': 'order-title' },
    h('h3', { id: 'order-title' }, 'Place an order'), formError(),
    field({ name: 'amount', label: 'Amount', required: true, hint: 'e.g. 59.90', attrs: { inputmode: 'decimal' } }),
    field({ name: 'categories', label: 'Categories', hint: 'Separated by commas' }),
    field({ name: 'placedAt', label: 'Placed on', type: 'date', hint: 'Leave empty for now' }),
    h('button', { type: 'submit' }, 'Place order'));
  order.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = new FormData(order);
    const orderId = newOrderId();
    run(order, async () => {
      const input = { orderId, amount: String(data.get('amount')).trim(), categories: list(data.get('categories')) };
      const placedAt = dateToIso(data.get('placedAt'));
      if (placedAt) input.placedAt = placedAt;
      const { placeOrder: u } = await gql(`mutation($id: ID!, $input: PlaceOrderInput!) {
        placeOrder(userId: $id, input: $input) { orderCount engagementScore } }`, { id: user.id, input });
      return `Order ${orderId} recorded: ${u.orderCount} orders, score ${u.engagementScore}.`;
    });
  });

  const score = h('form', { class: 'action', novalidate: true, 'aria-labelledby': 'score-form-title' },
    h('h3', { id: 'score-form-title' }, 'Set the score by hand'), formError(),
    field({ name: 'score', label: 'Score (0 to 100)', type: 'number', required: true, attrs: { min: 0, max: 100, step: 1 } }),
    field({ name: 'reason', label: 'Reason', attrs: { maxlength: 500 } }),
    h('button', { type: 'submit' }, 'Set score'));
  score.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = new FormData(score);
    run(score, async () => {
      const raw = String(data.get('score')).trim();
      if (!/^-?\d+$/.test(raw)) {
        throw Object.assign(new Error('score: a whole number from 0 to 100'), { code: 'VALIDATION', field: 'score' });
      }
      const reason = String(data.get('reason') ?? '').trim() || null;
      const { setEngagementScore: u } = await gql(`mutation($id: ID!, $score: Int!, $reason: String) {
        setEngagementScore(userId: $id, score: $score, reason: $reason) { engagementScore atRisk } }`,
      { id: user.id, score: Number(raw), reason });
      return `Score set to ${u.engagementScore}${reason ? ` (“${reason}”)` : ''}${u.atRisk ? '; the client is now at risk' : ''}.`;
    });
  });

  const quick = h('form', { class: 'action quick', 'aria-labelledby': 'more-title', onsubmit: (e) => e.preventDefault() },
    h('h3', { id: 'more-title' }, 'More'), formError(),
    h('div', { class: 'actions' },
      h('button', {
        type: 'button', class: 'secondary',
        onclick: () => run(quick, async () => {
          const { rescoreUser: u } = await gql('mutation($id: ID!) { rescoreUser(userId: $id) { engagementScore scoreBreakdown { band } } }', { id: user.id });
          return `Rescored: ${u.engagementScore} (${bandLabel(u.scoreBreakdown.band)}).`;
        }),
      }, 'Rescore now'),
      h('a', { class: 'button secondary', href: `#/users/${encodeURIComponent(user.id)}/edit` }, 'Edit'),
      user.status === 'ACTIVE'
        ? h('button', {
          type: 'button', class: 'secondary',
          onclick: () => {
            if (!window.confirm(`Opt ${user.name} out of all emails?`)) return;
            run(quick, async () => {
              await gql('mutation($id: ID!) { unsubscribeUser(userId: $id) { status } }', { id: user.id });
              return `${user.name} is unsubscribed: no more emails.`;
            });
          },
        }, 'Unsubscribe')
        : null,
      can(viewer, 'admin')
        ? h('button', {
          type: 'button', class: 'danger',
          onclick: () => {
            if (!window.confirm(`Delete ${user.name}? Their history stays in the log; nothing more can happen to them.`)) return;
            run(quick, async () => {
              await gql('mutation($id: ID!) { deleteUser(id: $id) }', { id: user.id });
              sessionStorage.setItem('engagement.flash', `Deleted ${user.name}.`);
              navigate('/users');
              return `Deleted ${user.name}.`;
            });
          },
        }, 'Delete')
        : null));
  return h('section', { class: 'card actions-card', 'aria-labelledby': 'actions-title' },
    h('h2', { id: 'actions-title' }, 'Actions'), h('div', { class: 'action-grid' }, order, score, quick));
}

export function render(view, { id, viewer, live, navigate }) {
  const body = h('div');
  mount(view, body);
  let asOf = null;
  let actions = null;
  let actionsFor = null;
  const actionStatus = h('div', { class: 'action-status', 'aria-live': 'polite' });

  const refresh = (quiet) => load(body, 'Loading the user', async () => {
    const [page, events] = await Promise.all([gql(PAGE, { id }), history(id)]);
    return { user: page.user, events };
  }, ({ user, events }) => {
    if (!user) return [h('h1', {}, 'No such user'), h('p', {}, h('a', { href: '#/users' }, 'Back to the users.'))];
    // Keep what the operator typed and the as-of panel across live refreshes.
    asOf ??= asOfSection(id, user.version);
    // and the action forms (what was typed stays) unless the status changes what is allowed.
    if (actionsFor !== user.status) {
      actions = actionsSection(user, viewer, { status: actionStatus, done: () => refresh(true), navigate });
      actionsFor = user.status;
    }
    return [
      h('div', { class: 'title-row' },
        h('h1', {}, user.name),
        h('span', { class: `status status-${user.status.toLowerCase()}` }, user.status.toLowerCase())),
      h('div', { class: 'grid' }, scoreSection(user), profileSection(user)),
      h('section', { class: 'card', 'aria-labelledby': 'chart-title' }, h('h2', { id: 'chart-title' }, 'Score over time'), scoreChart(events)),
      actionStatus,
      actions,
      h('div', { class: 'grid' }, ordersSection(events), emailsSection(user)),
      asOf.section,
      timelineSection(events, (args) => { asOf.show(args); asOf.section.scrollIntoView({ block: 'start' }); }),
    ];
  }, { quiet });
  refresh(false);

  let timer = null;
  const off = live.on((event) => {
    if (event.userId !== id) return;
    clearTimeout(timer);
    timer = setTimeout(() => refresh(true), 250);
  });
  return () => { off(); clearTimeout(timer); };
}
