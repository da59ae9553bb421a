// The dashboard's only way to the service: the public GraphQL API over HTTP, and its
// `events` subscription over WebSocket (graphql-transport-ws).

const TOKEN_KEY = 'engagement.token';

/** The token, kept for this browser session only (sessionStorage). */
export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  signIn(token) { sessionStorage.setItem(TOKEN_KEY, token.trim()); },
  signOut() { sessionStorage.removeItem(TOKEN_KEY); },
};

/** An error as the API reports it: `code` is `extensions.code`, `field` the input it names. */
export class ApiError extends Error {
  constructor(message, { code, field, status } = {}) {
    super(message);
    this.code = code;
    this.field = field;
    this.status = status;
  }
}

/** Runs a query or mutation; resolves to `data`, rejects with an ApiError. */
export async function gql(query, variables = {}) {
  let response;
  try {
    response = await fetch('/graphql', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${session.token ?? ''}` },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    throw new ApiError('the server cannot be reached; is it running?', { code: 'NETWORK' });
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`the server answered ${response.status} without a GraphQL response`, {
      code: 'INTERNAL', status: response.status,
    });
  }
  const first = body.errors?.[0];
  if (first) {
    const error = new ApiError(first.message, {
      code: first.extensions?.code, field: first.extensions?.field, status: response.status,
    });
    if (error.code === 'UNAUTHENTICATED') {
      window.dispatchEvent(new CustomEvent('engagement:signed-out', { detail: error.message }));
    }
    throw error;
  }
  return body.data;
}

const EVENTS = `subscription {
  events { globalPosition userId sequence type version recordedAt payload metadata }
}`;

/**
 * One subscription to every event for the whole browser session, shared by every view.
 * Reconnects with backoff; listeners hear `event`s, and `status` changes
 * (`connecting`, `live`, `reconnecting`, `refused`).
 */
export class LiveEvents {
  constructor() {
    this.listeners = new Set();
    this.statusListeners = new Set();
    this.status = 'connecting';
    this.recent = [];
    this.attempt = 0;
    this.stopped = false;
  }

  /** Keeps the newest events for views that open later (the overview's feed). */
  static KEEP = 50;

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.close(1000, 'signed out');
    this.socket = null;
  }

  on(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onStatus(listener) {
    this.statusListeners.add(listener);
    listener(this.status);
    return () => this.statusListeners.delete(listener);
  }

  setStatus(status, detail) {
    this.status = status;
    this.detail = detail;
    for (const listener of this.statusListeners) listener(status, detail);
  }

  connect() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/graphql/ws`, 'graphql-transport-ws');
    this.socket = socket;
    this.setStatus(this.attempt ? 'reconnecting' : 'connecting');
    socket.addEventListener('open', () => {
      socket.send(JSON.stringify({
        type: 'connection_init', payload: { Authorization: `Bearer ${session.token ?? ''}` },
      }));
    });
    socket.addEventListener('message', (message) => {
      let msg;
      try { msg = JSON.parse(message.data); } catch { return; }
      if (msg.type === 'connection_ack') {
        this.attempt = 0;
        socket.send(JSON.stringify({ id: 'events', type: 'subscribe', payload: { query: EVENTS } }));
        this.setStatus('live');
      } else if (msg.type === 'ping') {
        socket.send(JSON.stringify({ type: 'pong' }));
      } else if (msg.type === 'next' && msg.payload?.data?.events) {
        const event = msg.payload.data.events;
        this.recent.unshift(event);
        this.recent.length = Math.min(this.recent.length, LiveEvents.KEEP);
        for (const listener of this.listeners) listener(event);
      } else if (msg.type === 'next' || msg.type === 'error') {
        const errors = msg.type === 'error' ? msg.payload : msg.payload?.errors;
        this.setStatus('reconnecting', errors?.[0]?.message ?? 'the feed reported an error');
        socket.close(1000);
      } else if (msg.type === 'complete') {
        socket.close(1000);
      }
    });
    socket.addEventListener('close', (event) => {
      if (this.stopped || this.socket !== socket) return;
      if (event.code === 4401 || event.code === 4403 || event.code === 1002) {
        // Refused at connection_init: the token is not (or no longer) valid.
        this.setStatus('refused', event.reason || 'the server refused the token');
      }
      const delay = Math.min(30_000, 500 * 2 ** this.attempt);
      this.attempt += 1;
      this.timer = setTimeout(() => this.connect(), delay);
      if (this.status !== 'refused') this.setStatus('reconnecting');
    });
  }
}

/** A new idempotency key for an order placed from the page. */
export function newOrderId() {
  return `ord-${crypto.randomUUID()}`;
}

/** Whether the signed-in role may `mutate` (operator) or do `admin` things. */
export function can(viewer, action) {
  const rank = { VIEWER: 0, OPERATOR: 1, ADMIN: 2 }[viewer?.role] ?? -1;
  return rank >= { mutate: 1, admin: 2 }[action];
}
