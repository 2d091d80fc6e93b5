// What the page's y-websocket connections amount to, for the person: connected, connecting,
// reconnecting (with why, from the close code) or refused (a 44xx close: y-websocket stops).
//
//   1012  the worker is draining or stopping: the router sends us to the next owner
//   1013  the session cannot be loaded now (storage down): retried with backoff
//   4401  the token was refused (missing, expired, bad signature): a new one is needed
//   4403  the token does not allow this session
//   4409  another connection edits this file with the same Yjs client ID: reload for a new one
//   4413  an edit passed MAX_UPDATE_BYTES or MAX_DOC_BYTES: it was not saved; reload to continue

const CODES = {
  1012: () => 'The server is moving this session (a worker is draining); reconnecting…',
  1013: (reason) => `The session is unavailable right now${reason ? ` (${reason})` : ''}; retrying…`,
  4401: (reason) => `Your token was refused${reason ? `: ${reason}` : ''}.`,
  4403: (reason) => `Access denied${reason ? `: ${reason}` : ''}.`,
  4409: () => 'Another connection edits this file with the same document identity; reload the page to start afresh.',
  4413: (reason) => `Your last change was too large and was not saved${reason ? ` (${reason})` : ''}. Reload the page to continue from the saved file.`
}

export class Connection {
  /** @param {(c: Connection) => void} onChange */
  constructor (onChange) {
    this.onChange = onChange
    /** @type {Map<string, {provider: any, status: string, synced: boolean, ever: boolean, close: {code: number, reason: string} | null, refused: {code: number, reason: string} | null, off: () => void}>} */
    this.watched = new Map()
  }

  /** Follow one provider under `name` (replacing the one watched under that name). */
  watch (name, provider) {
    this.unwatch(name)
    const entry = { provider, status: 'connecting', synced: false, ever: false, close: null, refused: null }
    const changed = () => this.onChange(this)
    const onStatus = ({ status }) => {
      entry.status = status
      if (status === 'connected') {
        entry.ever = true
      }
      changed()
    }
    const onSync = (synced) => {
      entry.synced = synced
      if (synced) entry.close = null
      changed()
    }
    const onClose = (event) => {
      if (event) entry.close = { code: event.code, reason: event.reason }
      entry.synced = false
      changed()
    }
    const onClosed = ({ code, reason }) => {
      entry.refused = { code, reason }
      changed()
    }
    provider.on('status', onStatus)
    provider.on('sync', onSync)
    provider.on('connection-close', onClose)
    provider.on('closed', onClosed)
    entry.off = () => {
      provider.off('status', onStatus)
      provider.off('sync', onSync)
      provider.off('connection-close', onClose)
      provider.off('closed', onClosed)
    }
    this.watched.set(name, entry)
    changed()
  }

  unwatch (name) {
    this.watched.get(name)?.off()
    if (this.watched.delete(name)) this.onChange(this)
  }

  /** {state, message, code}: the worst of the watched connections. */
  get summary () {
    const entries = [...this.watched.values()]
    const refused = entries.find((e) => e.refused)
    if (refused) {
      const { code, reason } = refused.refused
      return { state: 'refused', code, message: (CODES[code] ?? ((r) => `Refused by the server (${code}${r ? `: ${r}` : ''}).`))(reason) }
    }
    if (entries.length && entries.every((e) => e.status === 'connected' && e.synced)) return { state: 'connected', code: null, message: '' }
    const closed = entries.find((e) => e.close)
    if (closed) {
      const { code, reason } = closed.close
      const explain = CODES[code] ?? ((r) => `Connection lost${code ? ` (${code}${r ? `: ${r}` : ''})` : ''}; reconnecting…`)
      return { state: 'reconnecting', code, message: explain(reason) }
    }
    if (entries.some((e) => e.ever)) return { state: 'reconnecting', code: null, message: 'Connection lost; reconnecting…' }
    return { state: 'connecting', code: null, message: '' }
  }
}
