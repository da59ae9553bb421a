// Forms whose errors come from the API: a VALIDATION error lands next to the field it names.

import { h, mount, errorBox } from '../dom.js';

/** A labelled input with a slot for its error. */
export function field({ name, label, type = 'text', value = '', hint, required = false, attrs = {} }) {
  const id = `field-${name}`;
  const input = h(type === 'textarea' ? 'textarea' : 'input', {
    id, name, type: type === 'textarea' ? undefined : type, value: value ?? '', required,
    'aria-describedby': `${id}-error${hint ? ` ${id}-hint` : ''}`, ...attrs,
  });
  return h('div', { class: 'field', dataset: { field: name } },
    h('label', { for: id }, label, required ? h('span', { class: 'required', 'aria-hidden': 'true' }, ' *') : null),
    input,
    hint ? h('small', { id: `${id}-hint`, class: 'muted' }, hint) : null,
    h('p', { id: `${id}-error`, class: 'field-error', 'aria-live': 'polite' }));
}

/** Clears every field error and the form's own error. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const general = form.querySelector('.form-error');
  if (general) mount(general);
}

/**
 * Shows an API error: next to its field when it names one of this form's fields (and moves
 * focus there), otherwise at the top of the form.
 */
export function showError(form, error, aliases = {}) {
  const name = aliases[error.field] ?? error.field;
  const box = name ? form.querySelector(`[data-field="${CSS.escape(name)}"]`) : null;
  if (error.code === 'VALIDATION' && box) {
    const input = box.querySelector('input, select, textarea');
    input.setAttribute('aria-invalid', 'true');
    const message = String(error.message).replace(new RegExp(`^${error.field}: `), '');
    box.querySelector('.field-error').textContent = message;
    input.focus();
  } else {
    mount(form.querySelector('.form-error'), errorBox(error));
  }
}

/** The slot for errors that name no field. */
export function formError() {
  return h('div', { class: 'form-error', 'aria-live': 'assertive' });
}

/** Splits "Denim, Shoes" into ["Denim", "Shoes"]. */
export function list(value) {
  return String(value ?? '').split(',').map((s) => s.trim()).filter(Boolean);
}

/** A date input's value (YYYY-MM-DD) as the start of that day in UTC, or null. */
export function dateToIso(value) {
  return value ? `${value}T00:00:00Z` : null;
}

/** An RFC 3339 instant as a date input's value. */
export function isoToDate(value) {
  return value ? String(value).slice(0, 10) : '';
}
