// The token: taken from the URL fragment (#token=JWT, so it never reaches a server log) or a
// form, kept for this tab (sessionStorage) and sent on every request: `Authorization: Bearer`
// for the HTTP API, `?token=` on the y-websocket connections.
import { h } from './dom.js'

const KEY = 'collab.token'

/** Move a token from the fragment into storage and out of the address bar. */
export function takeTokenFromFragment () {
  const params = new URLSearchParams(location.hash.slice(1))
  const token = params.get('token')
  if (!token) return
  sessionStorage.setItem(KEY, token)
  params.delete('token')
  const rest = params.toString()
  history.replaceState(history.state, '', location.pathname + location.search + (rest ? `#${rest}` : ''))
}

export const token = () => sessionStorage.getItem(KEY)

/**
 * The token form, over whatever is on the page. It reloads the page with the new token, so
 * every connection starts again with it.
 * @param {string} why what was wrong with the last one (the server's reason), if anything
 */
export function askForToken (why) {
  document.getElementById('token-dialog')?.remove()
  const input = h('input', { name: 'token', type: 'password', autocomplete: 'off', placeholder: 'eyJ…', required: true, 'aria-label': 'Token' })
  const form = h('form', {
    class: 'dialog',
    onsubmit: (event) => {
      event.preventDefault()
      sessionStorage.setItem(KEY, input.value.trim())
      location.reload()
    }
  },
  h('h2', {}, 'A token is needed'),
  h('p', {}, 'This server requires a token (a JWT from whoever runs it). It is kept for this tab only.'),
  why ? h('p', { class: 'problem' }, why) : null,
  input,
  h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Use this token')))
  document.body.append(h('div', { id: 'token-dialog', class: 'backdrop' }, form))
  input.focus()
}

/** The user named in a token, for display only (the server verifies it). */
export function tokenUser () {
  try {
    const payload = token()?.split('.')[1]
    if (!payload) return null
    const json = JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/')))
    return typeof json.sub === 'string' ? json.sub : null
  } catch {
    return null
  }
}
