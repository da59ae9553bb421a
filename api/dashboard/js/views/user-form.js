// Add a user, or edit one: every error the API reports appears next to its field.

import { gql, can } from '../api.js';
import { h, mount, load, notice } from '../dom.js';
import { field, clearErrors, showError, formError, list, dateToIso, isoToDate } from './form.js';

const FIELDS = 'id name email preferredCategories orderCount averageOrderValue lastOrderDate version';

const CREATE = `mutation($input: CreateUserInput!) { createUser(input: $input) { ${FIELDS} } }`;
const UPDATE = `mutation($id: ID!, $input: UpdateUserInput!) { updateUser(id: $id, input: $input) { ${FIELDS} } }`;
const READ = `query($id: ID!) { user(id: $id) { ${FIELDS} status } }`;

function formFor(user, onSubmit) {
  const form = h('form', { class: 'card user-form', novalidate: true, onsubmit: onSubmit },
    formError(),
    field({ name: 'name', label: 'Name', value: user?.name, required: true, attrs: { autocomplete: 'off', maxlength: 200 } }),
    field({ name: 'email', label: 'Email', type: 'email', value: user?.email, required: true, attrs: { autocomplete: 'off' } }),
    field({ name: 'preferredCategories', label: 'Preferred categories', value: user?.preferredCategories?.join(', '), hint: 'Separated by commas, e.g. Denim, Shoes' }),
    h('fieldset', {},
      h('legend', {}, user ? 'Order summary (corrections)' : 'Order history from an older system (optional)'),
      field({ name: 'orderCount', label: 'Orders', type: 'number', value: user ? user.orderCount : '', attrs: { min: 0, step: 1, inputmode: 'numeric' } }),
      field({ name: 'averageOrderValue', label: 'Average order value', value: user ? user.averageOrderValue : '', hint: 'A decimal amount, e.g. 42.50', attrs: { inputmode: 'decimal' } }),
      field({ name: 'lastOrderDate', label: 'Last order date', type: 'date', value: isoToDate(user?.lastOrderDate) })),
    h('div', { class: 'actions' },
      h('button', { type: 'submit' }, user ? 'Save changes' : 'Add user'),
      h('a', { href: user ? `#/users/${encodeURIComponent(user.id)}` : '#/users', class: 'button secondary' }, 'Cancel')));
  return form;
}

/** The form's values as API input; for an edit, only what changed. */
function inputFrom(form, before) {
  const data = new FormData(form);
  const values = {
    name: data.get('name'),
    email: data.get('email'),
    preferredCategories: list(data.get('preferredCategories')),
    orderCount: data.get('orderCount') === '' ? null : Number(data.get('orderCount')),
    averageOrderValue: data.get('averageOrderValue') === '' ? null : String(data.get('averageOrderValue')).trim(),
    lastOrderDate: dateToIso(data.get('lastOrderDate')),
  };
  if (!before) {
    return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== null));
  }
  const changed = {};
  if (values.name !== before.name) changed.name = values.name;
  if (values.email !== before.email) changed.email = values.email;
  if (values.preferredCategories.join('\u0000') !== before.preferredCategories.join('\u0000')) changed.preferredCategories = values.preferredCategories;
  if (values.orderCount !== null && values.orderCount !== before.orderCount) changed.orderCount = values.orderCount;
  if (values.averageOrderValue !== null && Number(values.averageOrderValue) !== Number(before.averageOrderValue)) changed.averageOrderValue = values.averageOrderValue;
  if (values.lastOrderDate && isoToDate(values.lastOrderDate) !== isoToDate(before.lastOrderDate)) changed.lastOrderDate = values.lastOrderDate;
  return changed;
}

export function render(view, { id, viewer, navigate }) {
  if (!can(viewer, 'mutate')) {
    mount(view, h('h1', {}, id ? 'Edit user' : 'Add user'),
      h('p', { class: 'notice notice-error', role: 'alert' }, `Your role (${viewer.role.toLowerCase()}) may not change users.`));
    return;
  }
  const status = h('div', { 'aria-live': 'polite' });
  const body = h('div');
  mount(view, h('h1', {}, id ? 'Edit user' : 'Add user'), status, body);

  const submit = (before) => async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    clearErrors(form);
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const input = inputFrom(form, before);
      if (before && !Object.keys(input).length) {
        notice(status, 'Nothing changed.', 'info');
        return;
      }
      const data = before ? await gql(UPDATE, { id: before.id, input }) : await gql(CREATE, { input });
      const user = before ? data.updateUser : data.createUser;
      sessionStorage.setItem('engagement.flash', before ? `Saved ${user.name}.` : `Added ${user.name}.`);
      navigate(`/users/${encodeURIComponent(user.id)}`);
    } catch (error) {
      showError(form, error);
    } finally {
      button.disabled = false;
    }
  };

  if (!id) {
    const form = formFor(null, submit(null));
    mount(body, form);
    form.querySelector('input').focus();
    return;
  }
  load(body, 'Loading the user', () => gql(READ, { id }), ({ user }) => {
    if (!user) return h('p', { class: 'empty' }, 'No such user.');
    return formFor(user, submit(user));
  });
}
