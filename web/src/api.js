// The HTTP API (/api/*): JSON in and out, the token on every request, errors as ApiError with
// the server's `error` and `reason`.
import { token } from './auth.js'

export class ApiError extends Error {
  constructor (status, error, reason) {
    super(reason ? `${error}: ${reason}` : error)
    this.status = status
    this.error = error
    this.reason = reason
  }
}

/** `a/b c.py` → `a/b%20c.py`: each segment encoded, the slashes kept. */
export const encodePath = (path) => path.split('/').map(encodeURIComponent).join('/')

export const sessionUrl = (session, rest = '') =>
  `/api/sessions/${encodeURIComponent(session)}${rest}`

export async function api (method, url, body) {
  const headers = { accept: 'application/json' }
  const t = token()
  if (t) headers.authorization = `Bearer ${t}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  let response
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store'
    })
  } catch (e) {
    throw new ApiError(0, 'The server cannot be reached', e.message)
  }
  let data = null
  try {
    data = await response.json()
  } catch {}
  if (!response.ok) {
    throw new ApiError(response.status, data?.error ?? `${response.status} ${response.statusText}`, data?.reason ?? '')
  }
  return data
}

/**
 * Who the token says we are. A router without the HTTP API (404) is treated as an open
 * server: the editor works over y-websocket alone, without file operations or history.
 */
export async function whoami () {
  try {
    return { ...(await api('GET', '/api/whoami')), api: true }
  } catch (e) {
    if (e.status !== 404) throw e
    return { user: null, sessions: '*', readonly: false, authRequired: Boolean(token()), api: false }
  }
}

/** whoami's `readonly`: true or "*" (every session), or the list of read-only sessions. */
export function isReadOnly (who, session) {
  const r = who.readonly
  return r === true || r === '*' || (Array.isArray(r) && (r.includes(session) || r.includes('*')))
}

export const files = {
  put: (session, path, content) => api('PUT', sessionUrl(session, `/files/${encodePath(path)}`), { content }),
  remove: (session, path) => api('DELETE', sessionUrl(session, `/files/${encodePath(path)}`)),
  rename: (session, from, to) => api('POST', sessionUrl(session, '/rename'), { from, to })
}

export const history = {
  list: (session) => api('GET', sessionUrl(session, '/history')),
  diff: (session, sha, path) => api('GET', sessionUrl(session, `/history/${encodeURIComponent(sha)}/diff/${encodePath(path)}`)),
  restore: (session, commit, path) => api('POST', sessionUrl(session, '/restore'), path ? { commit, path } : { commit }),
  commit: (session) => api('POST', sessionUrl(session, '/commit')),
  /** Whether the session keeps a git history (true / false; undefined when it cannot tell). */
  async isGit (session) {
    try {
      const { sessions } = await api('GET', '/api/sessions')
      return sessions.find((s) => s.id === session)?.isGitRepo
    } catch {
      return undefined
    }
  }
}
