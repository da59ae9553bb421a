// Lists whose filters and page live in the address (#/users?search=ada&after=…): the back
// button and a shared link both work. `trail` keeps the cursors of the pages before this one.

import { h } from '../dom.js';

/** Goes to `path` with `params` changed (null or '' removes a parameter). */
export function goTo(navigate, path, params) {
  return (changes) => {
    const next = new URLSearchParams(params);
    for (const [key, value] of Object.entries(changes)) {
      if (value === null || value === undefined || value === '') next.delete(key);
      else next.set(key, value);
    }
    navigate(`${path}?${next}`);
  };
}

/** Changes that start the list over (a new filter). */
export const FIRST_PAGE = { after: null, trail: null };

/** Previous and next buttons for a Relay `pageInfo`. */
export function pager(params, pageInfo, go) {
  const trail = (params.get('trail') ?? '').split(',').filter(Boolean);
  const after = params.get('after');
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    after
      ? h('button', {
        type: 'button', class: 'secondary',
        onclick: () => go({ after: trail.at(-1) === '-' ? null : trail.at(-1), trail: trail.slice(0, -1).join(',') }),
      }, 'Previous page')
      : null,
    pageInfo.hasNextPage
      ? h('button', {
        type: 'button', class: 'secondary',
        onclick: () => go({ after: pageInfo.endCursor, trail: [...trail, after || '-'].join(',') }),
      }, 'Next page')
      : null);
}
