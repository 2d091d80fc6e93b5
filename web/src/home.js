// The start page (/): recent sessions, open one by name, or create a new one (a git session:
// history, auto-commit and restore).
import { h, fill, ago } from './dom.js'
import { api } from './api.js'

const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

export const workspaceUrl = (session, path) =>
  `/s/${encodeURIComponent(session)}${path ? `/${path.split('/').map(encodeURIComponent).join('/')}` : ''}`

export async function home (root, { who, identity }) {
  document.title = 'collab'
  const problem = h('p', { class: 'problem', hidden: true })
  const say = (text) => { problem.textContent = text; problem.hidden = !text }
  const input = h('input', { name: 'session', placeholder: 'session name, e.g. demo', 'aria-label': 'Session name', spellcheck: 'false', autocomplete: 'off' })
  const valid = () => {
    const id = input.value.trim()
    if (SESSION_ID.test(id) && !id.includes('..')) return id
    say('A session name is 1–128 letters, digits, ".", "_" or "-", starting with a letter or digit.')
    return null
  }
  const create = async (id) => {
    try {
      const made = await api('POST', '/api/sessions', id ? { id } : {})
      location.assign(workspaceUrl(made.id))
    } catch (e) {
      if (e.status === 409 && id) location.assign(workspaceUrl(id)) // it exists: open it
      else say(`Cannot create the session: ${e.message}`)
    }
  }
  const form = h('form', {
    class: 'open-form',
    onsubmit: (e) => {
      e.preventDefault()
      const id = valid()
      if (id) location.assign(workspaceUrl(id))
    }
  },
  input,
  h('button', { type: 'submit', class: 'primary' }, 'Open'),
  who.api ? h('button', { type: 'button', onclick: () => { const id = valid(); if (id) create(id) } }, 'Create') : null,
  who.api ? h('button', { type: 'button', onclick: () => create(null) }, 'New session') : null)

  const list = h('div', { class: 'sessions' }, h('p', { class: 'empty' }, 'Loading…'))
  fill(root, h('div', { class: 'home' },
    h('header', { class: 'home-head' }, h('h1', {}, 'collab'), h('span', { class: 'who' }, identity.fixed ? `Signed in as ${identity.name}` : `You appear as ${identity.name}`)),
    h('section', {},
      h('h2', {}, 'Open a session'),
      h('p', { class: 'hint' }, 'Everyone who opens the same session edits the same files, live. "Create" starts a session with history (every change is committed, and can be restored).'),
      form, problem),
    h('section', {}, h('h2', {}, 'Recent sessions'), list)))
  input.focus()

  if (!who.api) return fill(list, h('p', { class: 'empty' }, 'This server has no HTTP API, so sessions cannot be listed here; open one by name.'))
  try {
    const { sessions } = await api('GET', '/api/sessions')
    if (!sessions.length) return fill(list, h('p', { class: 'empty' }, 'No sessions yet. Create one above.'))
    fill(list, h('table', {},
      h('thead', {}, h('tr', {}, h('th', {}, 'Session'), h('th', {}, 'Last active'), h('th', {}, 'People'), h('th', {}, 'History'))),
      h('tbody', {}, sessions.map((s) => h('tr', {},
        h('td', {}, h('a', { href: workspaceUrl(s.id) }, s.id)),
        h('td', {}, s.lastActive ? h('time', { datetime: s.lastActive, title: s.lastActive }, ago(s.lastActive)) : '—'),
        h('td', {}, Array.isArray(s.users) ? s.users.join(', ') || '—' : String(s.users ?? 0)),
        h('td', {}, s.isGitRepo ? 'yes' : '—'))))))
  } catch (e) {
    fill(list, h('p', { class: 'problem' }, `Cannot list sessions: ${e.message}`))
  }
}
