// Users' names for feeds, fetched once per user and remembered for the session.

import { gql } from '../api.js';

const names = new Map();
const pending = new Map();

/** Remembers a name the page already knows (from a UserCreated payload, say). */
export function remember(id, name) {
  if (id && name) names.set(id, name);
}

/** The user's name, if known now. */
export function known(id) {
  return names.get(id);
}

/** The user's name, fetched if needed; undefined when they cannot be read. */
export async function nameOf(id) {
  if (names.has(id)) return names.get(id);
  if (!pending.has(id)) {
    pending.set(id, gql('query($id: ID!) { user(id: $id) { name } }', { id })
      .then((d) => { if (d.user) names.set(id, d.user.name); return d.user?.name; })
      .catch(() => undefined)
      .finally(() => pending.delete(id)));
  }
  return pending.get(id);
}
