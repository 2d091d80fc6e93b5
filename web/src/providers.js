// The standard y-websocket provider on the endpoint every other editor uses:
// ws://HOST/yjs/{session}[/{path}], the token (if any) as `?token=`.
import { WebsocketProvider } from 'y-websocket'
import { token } from './auth.js'

const endpoint = () => `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/yjs`

/** The room of a session's index (no path) or of one of its files. */
export const roomOf = (session, path) =>
  [session, ...(path ? path.split('/') : [])].map(encodeURIComponent).join('/')

export function connect (doc, session, path) {
  const t = token()
  return new WebsocketProvider(endpoint(), roomOf(session, path), doc, {
    params: t ? { token: t } : {},
    // Every update goes through the server, as another machine's would: tabs of one browser
    // would otherwise sync directly (BroadcastChannel), around the server's checks.
    disableBc: true
  })
}
