// The browser workspace the router serves: / (sessions), /s/{session}[/{path}] (a workspace).
import './app.css'
import { h, fill } from './dom.js'
import { askForToken, takeTokenFromFragment, token } from './auth.js'
import { whoami } from './api.js'
import { identity } from './presence.js'
import { home } from './home.js'
import { parseLocation, workspace } from './workspace.js'

async function start () {
  const root = document.getElementById('app')
  takeTokenFromFragment()
  let who
  try {
    who = await whoami()
  } catch (e) {
    if (e.status === 401) {
      fill(root, h('div', { class: 'home' }, h('h1', {}, 'collab'), h('p', {}, 'This server needs a token.')))
      return askForToken(token() ? e.reason || e.message : '')
    }
    return fill(root, h('div', { class: 'home' }, h('h1', {}, 'collab'), h('p', { class: 'problem' }, `The server cannot be used right now: ${e.message}`),
      h('button', { onclick: () => location.reload() }, 'Try again')))
  }
  if (who.authRequired && !token()) return askForToken('')
  const me = identity(who)
  const where = parseLocation(location.pathname)
  if (where) workspace(root, { ...where, who, identity: me })
  else home(root, { who, identity: me })
}

start()
