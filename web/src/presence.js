// Who I am to the others (awareness `user`: name and colour, as y-codemirror.next draws remote
// cursors), and who else is in the session (the index document's awareness: everyone who has
// the session open, with the file they are in).
import { h, fill } from './dom.js'
import { tokenUser } from './auth.js'

const COLORS = ['#d93f0b', '#1f883d', '#8250df', '#bf3989', '#0969da', '#9a6700', '#1b7c83', '#cf222e']
const NAME_KEY = 'collab.name'

function colorOf (name) {
  let hash = 0
  for (const c of name) hash = (hash * 31 + c.codePointAt(0)) >>> 0
  return COLORS[hash % COLORS.length]
}

/**
 * The token's user when there is one (the server records edits under it); otherwise a name
 * this browser keeps, which the person can change.
 */
export function identity (who) {
  const fromToken = who.authRequired ? (who.user ?? tokenUser()) : null
  let name = fromToken ?? localStorage.getItem(NAME_KEY)
  if (!name) {
    name = `guest-${Math.floor(1000 + Math.random() * 9000)}`
    localStorage.setItem(NAME_KEY, name)
  }
  const color = colorOf(name)
  return { name, color, colorLight: `${color}33`, fixed: Boolean(fromToken) }
}

export function rename (me, name) {
  localStorage.setItem(NAME_KEY, name)
  return { ...me, name, color: colorOf(name), colorLight: `${colorOf(name)}33` }
}

/** Everyone in the session but me: [{clientId, user, file}] from the index's awareness. */
export function others (awareness) {
  const out = []
  awareness.getStates().forEach((state, clientId) => {
    if (clientId !== awareness.clientID && state.user?.name) out.push({ clientId, user: state.user, file: state.file ?? null })
  })
  return out.sort((a, b) => a.user.name.localeCompare(b.user.name))
}

export function avatar (user, title) {
  const initials = user.name.replace(/[^\p{L}\p{N}]+/gu, ' ').trim().split(' ').map((w) => w[0]).join('').slice(0, 2).toUpperCase() || '?'
  return h('span', { class: 'avatar', style: `background:${user.color}`, title: title ?? user.name }, initials)
}

/** The people list in the top bar: me first, then the others with the file each has open. */
export function renderPeople (el, me, people, onRename) {
  const mine = h('button', {
    class: 'person me',
    title: me.fixed ? `You are ${me.name} (from your token)` : 'Change your name',
    disabled: me.fixed,
    onclick: () => {
      const name = prompt('Your name, as the others see it:', me.name)?.trim()
      if (name) onRename(name.slice(0, 40))
    }
  }, avatar(me, me.name), h('span', { class: 'name' }, `${me.name} (you)`))
  fill(el, mine, people.map(({ user, file }) =>
    h('span', { class: 'person', title: file ? `${user.name} — ${file}` : user.name },
      avatar(user), h('span', { class: 'name' }, user.name))))
}
