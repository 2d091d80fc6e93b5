// A tiny element builder: text is always added as text nodes, never parsed as HTML, so names,
// paths and commit messages from other people cannot inject markup.

/**
 * @param {string} tag
 * @param {Record<string, any>} [props] `class`, `onclick`-style listeners, `dataset`, attributes
 * @param {...any} children nodes, strings, arrays of them; null/false are skipped
 * @returns {HTMLElement}
 */
export function h (tag, props = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value)
    else if (key === 'class') el.className = value
    else if (key === 'dataset') Object.assign(el.dataset, value)
    else if (key === 'value') el.value = value
    else el.setAttribute(key, value === true ? '' : String(value))
  }
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false))
  return el
}

/** Replace every child of `el`. */
export function fill (el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false))
  return el
}

/** "3 minutes ago" for an ISO time or epoch milliseconds. */
export function ago (time) {
  const ms = typeof time === 'number' ? time : Date.parse(time)
  if (!Number.isFinite(ms)) return ''
  const s = Math.round((Date.now() - ms) / 1000)
  if (s < 45) return 'just now'
  const units = [[60, 'minute'], [24, 'hour'], [30, 'day'], [12, 'month'], [Infinity, 'year']]
  let n = s / 60
  for (const [size, unit] of units) {
    if (n < size) {
      const r = Math.max(1, Math.round(n))
      return `${r} ${unit}${r === 1 ? '' : 's'} ago`
    }
    n /= size
  }
  return ''
}

/** A short-lived message at the bottom of the page. */
export function toast (text, kind = 'info') {
  let box = document.getElementById('toasts')
  if (!box) document.body.append(box = h('div', { id: 'toasts', role: 'status', 'aria-live': 'polite' }))
  const item = h('div', { class: `toast ${kind}` }, text)
  box.append(item)
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 4000)
}
