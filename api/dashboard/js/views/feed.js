// How an event reads in a feed or a timeline.

import { h, timeEl, money } from '../dom.js';

/** One line saying what the event did. */
export function summary(event) {
  const p = event.payload ?? {};
  switch (event.type) {
    case 'UserCreated': return `created ${p.name ?? ''} <${p.email ?? ''}>`;
    case 'UserUpdated': return `changed ${(p.changed ?? []).join(', ') || 'nothing'}`;
    case 'OrderPlaced': return `order ${p.orderId ?? ''} for ${money((p.amountCents ?? 0) / 100)}`;
    case 'OrderCancelled': return `order ${p.orderId ?? ''} cancelled${p.reason ? ` (“${p.reason}”)` : ''}`;
    case 'UserScored': {
      const from = p.previousScore === null || p.previousScore === undefined ? '' : `${p.previousScore} → `;
      const why = p.reason ? ` (“${p.reason}”)` : '';
      return `score ${from}${p.score}, ${String(p.band ?? '').replace('_', ' ')}, ${p.cause ?? ''}${why}`;
    }
    case 'EmailGenerated': return `email “${p.subject ?? ''}” written`;
    case 'UserUnsubscribed': return 'opted out of emails';
    case 'UserDeleted': return 'deleted';
    default: return '';
  }
}

/** Who caused it. */
export function actor(event) {
  return event.metadata?.actor ?? 'system';
}

/** A feed item: time, type, the user (a link), the summary and the actor. */
export function feedItem(event, userName) {
  return h('li', { class: `feed-item type-${event.type}`, dataset: { position: event.globalPosition } },
    timeEl(event.recordedAt),
    h('span', { class: 'event-type' }, event.type),
    h('a', { href: `#/users/${encodeURIComponent(event.userId)}` }, userName ?? String(event.userId).slice(0, 8)),
    h('span', { class: 'event-summary' }, summary(event)),
    h('span', { class: 'event-actor' }, 'by ', actor(event)));
}
