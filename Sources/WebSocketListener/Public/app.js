/*
 * Switchboard web chat page (served at `/` together with index.html and style.css).
 *
 * Plain browser JavaScript, no dependencies. It speaks two APIs of the same server:
 *
 *  - REST (`/api/v1`): POST /token to log in (the token is kept in sessionStorage, so a
 *    reload stays logged in), GET/POST /rooms for the room list and room creation.
 *  - WebSocket (`/ws`, protocols/websocket.md): `auth` with the token, then `join`,
 *    `send`, `history`, `typing`, `ping`; the server sends `envelope`, `ack`, `joined`,
 *    `occupants`, `history`, `error`, `pong` frames.
 *
 * State per room (group rooms and `dm.<a>.<b>` conversations): the envelopes seen, keyed by
 * seq (and id, to dedupe), the highest seq seen (to resume), pending own messages keyed by
 * client_id, the occupants and who is typing. Messages are rendered in seq order; own
 * messages appear at once as "pending" and are confirmed by the `ack` with their client_id.
 *
 * Reconnect: when the socket closes, the page retries with backoff (0.5 s doubling to 10 s,
 * ±25 % jitter), authenticates again and re-joins every room with `since` = the highest seq
 * seen, so the server replays exactly what was missed; unsent messages are re-sent with the
 * same client_id (the server deduplicates). Direct conversations are refreshed with `history`.
 *
 * DOM hooks (stable, used by Tests/integration/test_web_page.py):
 *   #login-user #login-password #login-submit #login-error #logout-button
 *   #room-list li[data-room][data-joined] (.unread-badge), #new-room-name #new-room-submit
 *   #dm-list li[data-room][data-user], #dm-user #dm-submit
 *   #messages li.message[data-seq][data-id][data-user][data-via] with .sender .via-badge .time .body
 *     (pending own messages: li.message.pending[data-client-id], no data-seq until acked)
 *   #messages li.event[data-seq][data-id][data-kind] for join/leave and other notices
 *   #load-older, #jump-latest, #composer textarea (#composer-input), #send-button, #typing,
 *   #occupants li[data-user][data-via], #status[data-state] ("connected", "reconnecting", …),
 *   #toasts .toast (server error frames; dismiss with its ✕ button)
 *
 * Debug/test hooks on window.switchboard:
 *   debugDropConnection(hold)  close the WebSocket as if the network dropped; with hold=true
 *                              stay disconnected until debugReconnect()
 *   debugReconnect()           reconnect now
 *   state                      the page state (read-only use)
 */
(() => {
  'use strict';

  // ---------------------------------------------------------------------------------------
  // Constants and small helpers

  const HISTORY_PAGE = 50;
  const TYPING_SEND_INTERVAL = 3000;
  const TYPING_SHOW_FOR = 4000;
  const PING_INTERVAL = 30000;
  const BACKOFF_START = 500;
  const BACKOFF_MAX = 10000;
  const ROOMS_REFRESH = 30000;
  const VIAS = ['ws', 'line', 'xmpp', 'sip', 'mqtt', 'rest', 'system'];
  const ROOM_RE = /^[a-z0-9._-]{1,64}$/;
  const USER_RE = /^[a-z0-9_-]{1,32}$/;

  const $ = (sel, root = document) => root.querySelector(sel);

  /** Creates an element. `props`: attributes (data-*, aria-*, class…) or `text`. Never HTML. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'text') node.textContent = String(v);
        else if (k === 'class') node.className = v;
        else if (k === 'dataset') Object.assign(node.dataset, v);
        else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function randomId(n = 12) {
    const bytes = new Uint8Array(n);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('');
  }

  function hashHue(s) {
    let h = 0;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
    return h % 360;
  }

  function avatar(user, small) {
    const a = el('span', { class: 'avatar' + (small ? ' avatar-small' : ''), 'aria-hidden': 'true',
      text: (user || '?').charAt(0).toUpperCase() });
    a.style.setProperty('--hue', String(hashHue(user || '')));
    return a;
  }

  function viaBadge(via) {
    const v = VIAS.includes(via) ? via : 'other';
    return el('span', { class: `via-badge via-${v}`, title: `sent via ${via}`, text: via || '?' });
  }

  function fmtTime(ts) {
    const d = new Date(ts);
    const now = new Date();
    const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    if (d.toDateString() === now.toDateString()) return time;
    return d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + time;
  }

  function timeEl(ts) {
    const d = new Date(ts);
    return el('time', { class: 'time', datetime: d.toISOString(), title: d.toLocaleString(), text: fmtTime(ts) });
  }

  const isDm = (room) => room.startsWith('dm.');
  const dmRoomName = (a, b) => 'dm.' + [a, b].sort().join('.');
  function dmOther(room) {
    const [, a, b] = room.split('.');
    return a === S.user ? b : a;
  }
  const roomLabel = (room) => (isDm(room) ? '@' + dmOther(room) : '#' + room);

  // ---------------------------------------------------------------------------------------
  // State

  const S = {
    token: null,
    user: null,
    expiresAt: 0,
    ws: null,
    authed: false,
    everConnected: false,
    attempt: 0,
    reconnectTimer: null,
    pingTimer: null,
    roomsTimer: null,
    hold: false,
    rooms: new Map(), // name -> Room (joined group rooms and dm conversations)
    roomList: [], // from GET /api/v1/rooms
    current: null, // room name
    lastTypingSent: new Map(), // room -> ms
  };

  function makeRoom(name) {
    return {
      name,
      dm: isDm(name),
      want: false, // the user wants to be in it (group rooms): re-joined after reconnects
      joined: false, // joined on the current connection
      envs: new Map(), // seq -> envelope
      ids: new Set(),
      seqs: [], // sorted
      maxSeq: 0,
      joinedSeq: 0,
      pending: new Map(), // client_id -> {client_id, body, ts, state, error}
      unread: 0,
      occupants: new Map(), // "user/via" -> {user, via}
      typing: new Map(), // user -> timeout handle
      olderInFlight: false,
      exhausted: false,
      historyLoaded: false, // the newest page was fetched after the first join
    };
  }

  function getRoom(name, create = true) {
    let r = S.rooms.get(name);
    if (!r && create) {
      r = makeRoom(name);
      S.rooms.set(name, r);
    }
    return r;
  }

  const minSeq = (r) => (r.seqs.length ? r.seqs[0] : Infinity);
  const resumeSeq = (r) => Math.max(r.maxSeq, r.joinedSeq);
  const hasOlder = (r) => !r.exhausted && (r.seqs.length ? r.seqs[0] > 1 : r.joinedSeq > 0);

  /** Adds an envelope to a room; false when it is a duplicate (or has no seq). */
  function addEnv(r, env) {
    const seq = Number(env.seq);
    if (!Number.isInteger(seq) || seq <= 0) return false;
    if (r.envs.has(seq) || (env.id && r.ids.has(env.id))) return false;
    r.envs.set(seq, env);
    if (env.id) r.ids.add(env.id);
    // sorted insert (appends are the common case)
    let i = r.seqs.length;
    while (i > 0 && r.seqs[i - 1] > seq) i--;
    r.seqs.splice(i, 0, seq);
    if (seq > r.maxSeq) r.maxSeq = seq;
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // Session storage

  const KEY = 'switchboard.session';

  function saveSession() {
    if (!S.token) {
      sessionStorage.removeItem(KEY);
      return;
    }
    const rooms = [...S.rooms.values()].filter((r) => !r.dm && r.want).map((r) => r.name);
    const dms = [...S.rooms.values()].filter((r) => r.dm).map((r) => r.name);
    sessionStorage.setItem(KEY, JSON.stringify({
      token: S.token, user: S.user, expiresAt: S.expiresAt, rooms, dms, current: S.current,
    }));
  }

  function loadSession() {
    try {
      const s = JSON.parse(sessionStorage.getItem(KEY) || 'null');
      if (!s || !s.token || !s.user) return null;
      if (s.expiresAt && s.expiresAt <= Date.now()) return null;
      return s;
    } catch {
      return null;
    }
  }

  // ---------------------------------------------------------------------------------------
  // REST

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (S.token) headers.Authorization = 'Bearer ' + S.token;
    let res;
    try {
      res = await fetch('/api/v1' + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw Object.assign(new Error('cannot reach the server'), { code: 'network', status: 0 });
    }
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    if (!res.ok) {
      const err = (data && data.error) || {};
      throw Object.assign(new Error(err.message || `HTTP ${res.status}`), {
        code: err.code || 'http_' + res.status, status: res.status,
      });
    }
    return data;
  }

  async function refreshRooms() {
    if (!S.token) return;
    try {
      const data = await api('GET', '/rooms');
      S.roomList = Array.isArray(data && data.rooms) ? data.rooms : [];
      renderRoomList();
    } catch (e) {
      if (e.status === 401) logout('Your session has expired. Please sign in again.');
    }
  }

  // ---------------------------------------------------------------------------------------
  // WebSocket

  function wsUrl() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  }

  function wsSend(frame) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    S.ws.send(JSON.stringify(frame));
    return true;
  }

  function setStatus(state) {
    const s = $('#status');
    s.dataset.state = state;
    s.textContent = state;
    s.title = {
      connected: 'Connected to the server',
      connecting: 'Connecting to the server…',
      reconnecting: 'Connection lost, reconnecting…',
      offline: 'Not connected',
    }[state] || state;
    document.body.dataset.connection = state;
  }

  function connect() {
    clearTimeout(S.reconnectTimer);
    S.reconnectTimer = null;
    if (!S.token) return;
    if (S.expiresAt && S.expiresAt <= Date.now()) {
      logout('Your session has expired. Please sign in again.');
      return;
    }
    if (S.ws) detachSocket();
    setStatus(S.everConnected ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    S.ws = ws;
    ws.onopen = () => {
      if (S.ws !== ws) return;
      ws.send(JSON.stringify({ op: 'auth', token: S.token }));
    };
    ws.onmessage = (ev) => {
      if (S.ws !== ws) return;
      if (typeof ev.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame && typeof frame === 'object') handleFrame(frame);
    };
    ws.onclose = () => {
      if (S.ws !== ws) return;
      S.ws = null;
      onDisconnected();
    };
  }

  /** Forgets the current socket without triggering a reconnect from its close event. */
  function detachSocket() {
    const ws = S.ws;
    S.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(1000);
      } catch { /* ignore */ }
    }
    onSocketGone();
  }

  function onSocketGone() {
    S.authed = false;
    clearInterval(S.pingTimer);
    S.pingTimer = null;
    for (const r of S.rooms.values()) {
      r.joined = false;
      r.olderInFlight = false;
      for (const t of r.typing.values()) clearTimeout(t);
      r.typing.clear();
    }
    renderTyping();
  }

  function onDisconnected() {
    onSocketGone();
    if (!S.token) {
      setStatus('offline');
      return;
    }
    setStatus(S.everConnected ? 'reconnecting' : 'connecting');
    if (!S.hold) scheduleReconnect();
  }

  function scheduleReconnect() {
    clearTimeout(S.reconnectTimer);
    const base = Math.min(BACKOFF_MAX, BACKOFF_START * 2 ** S.attempt);
    const delay = Math.min(BACKOFF_MAX, base * (0.75 + Math.random() * 0.5));
    S.attempt++;
    S.reconnectTimer = setTimeout(connect, delay);
  }

  function onAuthenticated(frame) {
    S.authed = true;
    S.attempt = 0;
    S.everConnected = true;
    if (frame.user) S.user = String(frame.user);
    setStatus('connected');
    clearInterval(S.pingTimer);
    S.pingTimer = setInterval(() => wsSend({ op: 'ping' }), PING_INTERVAL);
    for (const r of S.rooms.values()) {
      if (r.dm) {
        // Direct conversations need no join: fetch what may have arrived meanwhile,
        // then send what is still pending.
        wsSend({ op: 'history', room: r.name, limit: HISTORY_PAGE });
        flushPending(r);
      } else if (r.want) {
        sendJoin(r);
      }
    }
  }

  function sendJoin(r) {
    const since = r.historyLoaded ? resumeSeq(r) : 0;
    wsSend(since > 0 ? { op: 'join', room: r.name, since } : { op: 'join', room: r.name });
  }

  // ---------------------------------------------------------------------------------------
  // Incoming frames

  function handleFrame(f) {
    switch (f.op) {
      case 'authenticated': onAuthenticated(f); break;
      case 'envelope': if (f.envelope) onEnvelope(f.envelope); break;
      case 'ack': onAck(f); break;
      case 'joined': onJoined(f); break;
      case 'left': onLeft(f); break;
      case 'history': onHistory(f); break;
      case 'occupants': onOccupants(f); break;
      case 'error': onError(f); break;
      case 'pong': break;
      default: break;
    }
  }

  function onEnvelope(env) {
    if (!env || typeof env.room !== 'string') return;
    if (env.kind === 'typing') {
      onTyping(env);
      return;
    }
    const known = S.rooms.get(env.room);
    if (!known && !isDm(env.room)) return; // not a room we are in (e.g. a late envelope after leave)
    const r = getRoom(env.room);
    const from = env.from || {};
    if (r.dm && !known) {
      saveSession();
      renderDmList();
    }
    // Our own message coming back (a replay after a reconnect) confirms the pending copy.
    if (env.client_id && from.user === S.user && r.pending.has(env.client_id)) {
      removePendingNode(r, env.client_id);
      r.pending.delete(env.client_id);
    }
    const prevMax = r.maxSeq;
    if (!addEnv(r, env)) return;
    // A hole between what we had and this envelope (should not happen: resume replays it).
    if (prevMax > 0 && env.seq > prevMax + 1) {
      wsSend({ op: 'history', room: r.name, before: env.seq, limit: Math.min(500, env.seq - prevMax - 1) });
    }
    if (env.kind === 'join' || env.kind === 'leave') {
      const key = `${from.user}/${from.via}`;
      if (env.kind === 'join') r.occupants.set(key, { user: from.user, via: from.via });
      else r.occupants.delete(key);
      if (r.name === S.current) renderOccupants();
    }
    if (env.kind === 'chat' && r.typing.has(from.user)) {
      clearTimeout(r.typing.get(from.user));
      r.typing.delete(from.user);
      if (r.name === S.current) renderTyping();
    }
    if (r.name === S.current) {
      insertEnvNodes(r, [env], false);
    } else if (isUnreadKind(env) && from.user !== S.user) {
      r.unread++;
      renderUnread(r);
    }
  }

  const isUnreadKind = (env) => env.kind === 'chat' || env.kind === 'system' || env.kind === 'call';

  function onAck(f) {
    const r = S.rooms.get(f.room) || (isDm(f.room || '') ? getRoom(f.room) : null);
    if (!r) return;
    const p = f.client_id ? r.pending.get(f.client_id) : null;
    if (p) {
      removePendingNode(r, f.client_id);
      r.pending.delete(f.client_id);
    }
    const env = {
      id: f.id, room: r.name, seq: f.seq, ts: f.ts || Date.now(),
      from: { user: S.user, via: 'ws' }, kind: (p && p.kind) || 'chat',
      body: p ? p.body : '', attrs: {}, client_id: f.client_id,
    };
    if (!p && !r.envs.has(Number(f.seq))) {
      // An ack for something we no longer hold locally: fetch it rather than invent a body.
      wsSend({ op: 'history', room: r.name, before: Number(f.seq) + 1, limit: 1 });
      return;
    }
    if (addEnv(r, env) && r.name === S.current) insertEnvNodes(r, [env], false);
  }

  function onJoined(f) {
    const r = S.rooms.get(f.room);
    if (!r) return;
    r.joined = true;
    r.want = true;
    r.joinedSeq = Math.max(r.joinedSeq, Number(f.seq) || 0);
    if (!r.historyLoaded) {
      // First join (not a resume): show the newest page of what came before.
      r.historyLoaded = true;
      if (r.joinedSeq > 0) wsSend({ op: 'history', room: r.name, before: r.joinedSeq + 1, limit: HISTORY_PAGE });
    }
    flushPending(r);
    saveSession();
    renderRoomList();
    if (r.name === S.current) renderHeader();
  }

  function onLeft(f) {
    const r = S.rooms.get(f.room);
    if (r && !r.want) dropRoom(r);
  }

  function onHistory(f) {
    const r = S.rooms.get(f.room);
    if (!r) return;
    const envs = Array.isArray(f.envelopes) ? f.envelopes : [];
    const added = [];
    for (const env of envs) {
      if (env && env.kind !== 'typing' && addEnv(r, env)) added.push(env);
    }
    if (r.olderInFlight) {
      r.olderInFlight = false;
      if (added.length === 0) r.exhausted = true;
    }
    if (r.name === S.current) {
      insertEnvNodes(r, added, true);
      renderOlderBar();
    }
  }

  function onOccupants(f) {
    const r = S.rooms.get(f.room);
    if (!r) return;
    r.occupants.clear();
    for (const o of Array.isArray(f.occupants) ? f.occupants : []) {
      if (o && o.user) r.occupants.set(`${o.user}/${o.via}`, { user: o.user, via: o.via });
    }
    if (r.name === S.current) renderOccupants();
  }

  function onError(f) {
    const code = f.code || 'error';
    if (code !== 'already_authenticated' && (f.request === 'auth' || code === 'auth_failed' || code === 'auth_required')) {
      logout('Your session is no longer valid. Please sign in again.');
      return;
    }
    if (f.client_id) {
      for (const r of S.rooms.values()) {
        const p = r.pending.get(f.client_id);
        if (p) {
          p.state = 'failed';
          p.error = f.message || code;
          updatePendingNode(r, p);
        }
      }
    }
    if (f.request === 'join' && f.room && ['no_such_room', 'invalid_room', 'forbidden', 'too_many_rooms'].includes(code)) {
      const r = S.rooms.get(f.room);
      if (r && !r.joined) {
        r.want = false;
        dropRoom(r);
      }
    }
    if (f.request === 'history' && f.room) {
      const r = S.rooms.get(f.room);
      if (r) r.olderInFlight = false;
    }
    toast(f.message || code, code);
  }

  function onTyping(env) {
    const from = env.from || {};
    if (!from.user || from.user === S.user) return;
    const r = S.rooms.get(env.room);
    if (!r) return;
    clearTimeout(r.typing.get(from.user));
    r.typing.set(from.user, setTimeout(() => {
      r.typing.delete(from.user);
      if (r.name === S.current) renderTyping();
    }, TYPING_SHOW_FOR));
    if (r.name === S.current) renderTyping();
  }

  // ---------------------------------------------------------------------------------------
  // Rooms: join, leave, switch

  function joinRoom(name, show = true) {
    name = name.toLowerCase();
    const r = getRoom(name);
    if (!r.dm) {
      r.want = true;
      if (S.authed && !r.joined) sendJoin(r);
    }
    saveSession();
    if (show) selectRoom(name);
    else renderRoomList();
  }

  function leaveRoom(name) {
    const r = S.rooms.get(name);
    if (!r) return;
    r.want = false;
    if (r.dm) {
      dropRoom(r);
      return;
    }
    if (r.joined && wsSend({ op: 'leave', room: name })) {
      r.joined = false;
    }
    dropRoom(r);
  }

  function dropRoom(r) {
    for (const t of r.typing.values()) clearTimeout(t);
    S.rooms.delete(r.name);
    if (S.current === r.name) {
      const next = [...S.rooms.values()].find((x) => !x.dm && x.want) || [...S.rooms.values()][0];
      S.current = null;
      if (next) selectRoom(next.name);
      else renderCurrent();
    }
    saveSession();
    renderRoomList();
    renderDmList();
  }

  function selectRoom(name) {
    const r = getRoom(name);
    S.current = name;
    r.unread = 0;
    if (r.dm && r.seqs.length === 0 && S.authed) {
      wsSend({ op: 'history', room: r.name, limit: HISTORY_PAGE });
    }
    saveSession();
    renderRoomList();
    renderDmList();
    renderCurrent();
    closeSidebar();
    const input = $('#composer-input');
    if (!input.disabled && window.matchMedia('(min-width: 761px)').matches) input.focus();
  }

  function startDm(user) {
    user = user.trim().toLowerCase().replace(/^@/, '');
    if (!USER_RE.test(user)) {
      toast('User names are 1–32 characters of a-z, 0-9, _ and -.', 'invalid_user');
      return false;
    }
    const name = dmRoomName(S.user, user);
    const known = S.rooms.has(name);
    getRoom(name);
    if (!known) renderDmList();
    selectRoom(name); // fetches the conversation's history when it is new
    return true;
  }

  function loadOlder() {
    const r = S.rooms.get(S.current);
    if (!r || r.olderInFlight || !hasOlder(r) || !S.authed) return;
    const before = r.seqs.length ? r.seqs[0] : r.joinedSeq + 1;
    r.olderInFlight = true;
    wsSend({ op: 'history', room: r.name, before, limit: HISTORY_PAGE });
    renderOlderBar();
  }

  // ---------------------------------------------------------------------------------------
  // Sending

  function sendMessage(text) {
    const r = S.rooms.get(S.current);
    if (!r || text.trim() === '') return;
    const p = { client_id: 'web-' + randomId(), body: text, ts: Date.now(), state: 'pending', kind: 'chat' };
    r.pending.set(p.client_id, p);
    appendPendingNode(r, p);
    transmit(r, p);
  }

  function transmit(r, p) {
    if (!S.authed || (!r.dm && !r.joined)) return; // sent after the (re)join
    const frame = r.dm
      ? { op: 'send', to: dmOther(r.name), body: p.body, client_id: p.client_id }
      : { op: 'send', room: r.name, body: p.body, client_id: p.client_id };
    if (wsSend(frame)) {
      p.state = 'pending';
      updatePendingNode(r, p);
    }
  }

  function flushPending(r) {
    for (const p of r.pending.values()) transmit(r, p);
  }

  function maybeSendTyping() {
    const r = S.rooms.get(S.current);
    if (!r || r.dm || !r.joined || !S.authed) return;
    const now = Date.now();
    if (now - (S.lastTypingSent.get(r.name) || 0) < TYPING_SEND_INTERVAL) return;
    S.lastTypingSent.set(r.name, now);
    wsSend({ op: 'typing', room: r.name });
  }

  // ---------------------------------------------------------------------------------------
  // Rendering: messages

  function envNode(env) {
    const from = env.from || {};
    const mine = from.user === S.user;
    const ds = { seq: String(env.seq), id: env.id || '', user: from.user || '', via: from.via || '', kind: env.kind };
    if (env.kind === 'chat') {
      return el('li', { class: 'message' + (mine ? ' own' : ''), dataset: ds },
        avatar(from.user),
        el('div', { class: 'msg-main' },
          el('div', { class: 'msg-meta' },
            el('span', { class: 'sender', text: from.user || '?' }),
            from.display && from.display !== from.user ? el('span', { class: 'display', text: from.display }) : null,
            viaBadge(from.via),
            timeEl(env.ts)),
          el('div', { class: 'body', text: env.body || '' })));
    }
    if (env.kind === 'receipt') return null;
    let text;
    switch (env.kind) {
      case 'join': text = `${from.user} joined via ${from.via}`; break;
      case 'leave': text = `${from.user} left (${from.via})`; break;
      case 'presence': text = `${from.user} is ${env.body || (env.attrs && env.attrs.status) || 'around'}`; break;
      case 'reaction': text = `${from.user} reacted ${env.body}`; break;
      case 'edit': text = `${from.user} edited a message: ${env.body}`; break;
      case 'retract': text = `${from.user} withdrew a message`; break;
      case 'call': text = `call ${(env.attrs && env.attrs.state) || ''}: ${env.body || ''}`.trim(); break;
      default: text = env.body ? `${from.user}: ${env.body}` : `${from.user} (${env.kind})`;
    }
    return el('li', { class: `event event-${env.kind}`, dataset: ds },
      el('span', { class: 'event-text', text }),
      timeEl(env.ts));
  }

  function pendingNode(p) {
    const node = el('li', { class: 'message own pending', dataset: { clientId: p.client_id, user: S.user, via: 'ws', kind: 'chat' } },
      avatar(S.user),
      el('div', { class: 'msg-main' },
        el('div', { class: 'msg-meta' },
          el('span', { class: 'sender', text: S.user }),
          viaBadge('ws'),
          timeEl(p.ts),
          el('span', { class: 'msg-state' })),
        el('div', { class: 'body', text: p.body })));
    setPendingState(node, p);
    return node;
  }

  function setPendingState(node, p) {
    const failed = p.state === 'failed';
    node.classList.toggle('failed', failed);
    node.title = failed ? 'Not sent — click to retry' : '';
    const st = node.querySelector('.msg-state');
    st.textContent = failed ? `not sent (${p.error || 'error'}) — click to retry` : 'sending…';
  }

  function findPendingNode(clientId) {
    for (const n of $('#messages').querySelectorAll('li.pending')) {
      if (n.dataset.clientId === clientId) return n;
    }
    return null;
  }

  function appendPendingNode(r, p) {
    if (r.name !== S.current) return;
    const pane = $('#message-pane');
    $('#messages').append(pendingNode(p));
    pane.scrollTop = pane.scrollHeight;
    renderEmpty();
  }

  function updatePendingNode(r, p) {
    if (r.name !== S.current) return;
    const n = findPendingNode(p.client_id);
    if (n) setPendingState(n, p);
  }

  function removePendingNode(r, clientId) {
    if (r.name !== S.current) return;
    const n = findPendingNode(clientId);
    if (n) n.remove();
  }

  const nearBottom = (pane) => pane.scrollHeight - pane.scrollTop - pane.clientHeight < 60;

  /** Inserts envelope nodes at their seq position (pending messages stay last). */
  function insertEnvNodes(r, envs, older) {
    if (!envs.length) return;
    const pane = $('#message-pane');
    const list = $('#messages');
    const stick = nearBottom(pane);
    const fromBottom = pane.scrollHeight - pane.scrollTop;
    for (const env of envs) {
      const node = envNode(env);
      if (!node) continue;
      const seq = Number(env.seq);
      let before = null;
      let c = list.lastElementChild;
      while (c && (c.classList.contains('pending') || Number(c.dataset.seq) > seq)) {
        before = c;
        c = c.previousElementSibling;
      }
      list.insertBefore(node, before);
    }
    if (stick) pane.scrollTop = pane.scrollHeight;
    else if (older) pane.scrollTop = pane.scrollHeight - fromBottom;
    else $('#jump-latest').hidden = false; // new messages below what the user is reading
    renderEmpty();
    renderOlderBar();
  }

  function renderMessages() {
    const r = S.rooms.get(S.current);
    const list = $('#messages');
    list.replaceChildren();
    if (r) {
      const frag = document.createDocumentFragment();
      for (const seq of r.seqs) {
        const n = envNode(r.envs.get(seq));
        if (n) frag.append(n);
      }
      for (const p of r.pending.values()) frag.append(pendingNode(p));
      list.append(frag);
    }
    const pane = $('#message-pane');
    pane.scrollTop = pane.scrollHeight;
    $('#jump-latest').hidden = true;
    renderEmpty();
    renderOlderBar();
  }

  function renderEmpty() {
    const r = S.rooms.get(S.current);
    const empty = $('#empty-state');
    if (!r) {
      empty.hidden = false;
      empty.replaceChildren(
        el('p', { class: 'empty-title', text: 'Welcome to Switchboard' }),
        el('p', { text: 'Pick a room on the left, create one, or message someone directly.' }));
    } else if ($('#messages').childElementCount === 0) {
      empty.hidden = false;
      empty.replaceChildren(
        el('p', { class: 'empty-title', text: `This is the start of ${roomLabel(r.name)}` }),
        el('p', { text: r.dm ? 'Say hello!' : 'No messages yet. Say something to get it going.' }));
    } else {
      empty.hidden = true;
    }
  }

  function renderOlderBar() {
    const r = S.rooms.get(S.current);
    const bar = $('#older-bar');
    const start = $('#history-start');
    if (!r) {
      bar.hidden = true;
      start.hidden = true;
      return;
    }
    const more = hasOlder(r);
    bar.hidden = !more;
    const btn = $('#load-older');
    btn.disabled = r.olderInFlight;
    btn.textContent = r.olderInFlight ? 'Loading…' : 'Load older messages';
    start.hidden = more || r.seqs.length === 0;
    start.textContent = `Beginning of ${roomLabel(r.name)}`;
  }

  // ---------------------------------------------------------------------------------------
  // Rendering: chrome

  function renderCurrent() {
    renderHeader();
    renderMessages();
    renderOccupants();
    renderTyping();
    const r = S.rooms.get(S.current);
    const input = $('#composer-input');
    input.disabled = !r;
    $('#send-button').disabled = !r;
    input.placeholder = r ? `Message ${roomLabel(r.name)}` : 'Select a room to start chatting';
    renderTitle();
  }

  function renderTitle() {
    const n = totalUnread();
    document.title = (n ? `(${n}) ` : '') + (S.current ? `${roomLabel(S.current)} · Switchboard` : 'Switchboard');
  }

  function renderHeader() {
    const r = S.rooms.get(S.current);
    $('#room-title').textContent = r ? roomLabel(r.name) : 'No room selected';
    const sub = $('#room-sub');
    const toggle = $('#occupants-toggle');
    if (!r) {
      sub.textContent = '';
      toggle.hidden = true;
    } else if (r.dm) {
      sub.textContent = `Direct conversation with ${dmOther(r.name)}`;
      toggle.hidden = true;
    } else {
      const n = r.occupants.size;
      sub.textContent = r.joined ? `${n} ${n === 1 ? 'person' : 'people'} here` : 'joining…';
      toggle.hidden = false;
      toggle.textContent = `People (${n})`;
    }
    document.body.classList.toggle('no-occupants', !r || r.dm);
  }

  function renderOccupants() {
    const r = S.rooms.get(S.current);
    const list = $('#occupants');
    list.replaceChildren();
    const occ = r && !r.dm ? [...r.occupants.values()] : [];
    occ.sort((a, b) => (a.user + '/' + a.via).localeCompare(b.user + '/' + b.via));
    for (const o of occ) {
      list.append(el('li', { class: 'occupant', dataset: { user: o.user, via: o.via } },
        avatar(o.user, true),
        el('span', { class: 'occupant-name', text: o.user }),
        o.user === S.user ? el('span', { class: 'you', text: '(you)' }) : null,
        viaBadge(o.via)));
    }
    $('#occupant-count').textContent = occ.length ? String(occ.length) : '';
    renderHeader();
  }

  function renderTyping() {
    const r = S.rooms.get(S.current);
    const who = r ? [...r.typing.keys()].sort() : [];
    const t = $('#typing');
    let text = '';
    if (who.length === 1) text = `${who[0]} is typing…`;
    else if (who.length === 2) text = `${who[0]} and ${who[1]} are typing…`;
    else if (who.length > 2) text = 'Several people are typing…';
    t.textContent = text;
    t.dataset.users = who.join(' ');
    t.classList.toggle('active', who.length > 0);
  }

  const totalUnread = () => [...S.rooms.values()].reduce((n, r) => n + r.unread, 0);

  function unreadBadge(r) {
    return r && r.unread > 0 ? el('span', { class: 'unread-badge', 'aria-label': `${r.unread} unread`, text: r.unread > 99 ? '99+' : r.unread }) : null;
  }

  function renderRoomList() {
    const names = new Set(S.roomList.map((x) => x.name).filter((n) => !isDm(n) && !n.startsWith('calls.')));
    for (const r of S.rooms.values()) if (!r.dm) names.add(r.name);
    const list = $('#room-list');
    list.replaceChildren();
    for (const name of [...names].sort()) {
      const r = S.rooms.get(name);
      const joined = !!(r && r.want);
      list.append(el('li', {
        class: 'nav-item' + (name === S.current ? ' active' : '') + (joined ? ' joined' : ' not-joined'),
        dataset: { room: name, joined: String(joined) },
      },
      el('button', { type: 'button', class: 'nav-link', 'data-action': 'open', title: joined ? `Open #${name}` : `Join #${name}` },
        el('span', { class: 'hash', 'aria-hidden': 'true', text: '#' }),
        el('span', { class: 'nav-name', text: name }),
        unreadBadge(r)),
      joined ? el('button', { type: 'button', class: 'leave-room', 'data-action': 'leave', 'aria-label': `Leave #${name}`, title: `Leave #${name}`, text: '×' }) : null));
    }
    if (!names.size) list.append(el('li', { class: 'nav-empty', text: 'No rooms yet' }));
    renderTitle();
  }

  function renderDmList() {
    const list = $('#dm-list');
    list.replaceChildren();
    const dms = [...S.rooms.values()].filter((r) => r.dm).sort((a, b) => dmOther(a.name).localeCompare(dmOther(b.name)));
    for (const r of dms) {
      const other = dmOther(r.name);
      list.append(el('li', {
        class: 'nav-item joined' + (r.name === S.current ? ' active' : ''),
        dataset: { room: r.name, user: other },
      },
      el('button', { type: 'button', class: 'nav-link', 'data-action': 'open', title: `Conversation with ${other}` },
        avatar(other, true),
        el('span', { class: 'nav-name', text: other }),
        unreadBadge(r)),
      el('button', { type: 'button', class: 'leave-room', 'data-action': 'leave', 'aria-label': `Close conversation with ${other}`, title: 'Close', text: '×' })));
    }
    if (!dms.length) list.append(el('li', { class: 'nav-empty', text: 'No conversations yet' }));
    renderTitle();
  }

  function renderUnread(r) {
    if (r.dm) renderDmList();
    else renderRoomList();
  }

  // ---------------------------------------------------------------------------------------
  // Toasts

  function toast(message, code) {
    const box = $('#toasts');
    const t = el('div', { class: 'toast', role: 'alert', dataset: { code: code || '' } },
      el('div', { class: 'toast-text' },
        code ? el('strong', { class: 'toast-code', text: code.replace(/_/g, ' ') }) : null,
        el('span', { class: 'toast-message', text: message })),
      el('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', text: '✕', onclick: () => t.remove() }));
    box.append(t);
    while (box.childElementCount > 4) box.firstElementChild.remove();
    setTimeout(() => t.remove(), 10000);
  }

  // ---------------------------------------------------------------------------------------
  // Sidebar (narrow screens)

  function openSidebar() {
    document.body.classList.add('sidebar-open');
    $('#sidebar-backdrop').hidden = false;
  }

  function closeSidebar() {
    document.body.classList.remove('sidebar-open');
    $('#sidebar-backdrop').hidden = true;
  }

  // ---------------------------------------------------------------------------------------
  // Login / logout

  function showLogin(message) {
    $('#app-view').hidden = true;
    $('#login-view').hidden = false;
    const err = $('#login-error');
    err.hidden = !message;
    err.textContent = message || '';
    $('#login-submit').disabled = false;
    setTimeout(() => ($('#login-user').value ? $('#login-password') : $('#login-user')).focus(), 0);
  }

  function startApp(saved) {
    $('#login-view').hidden = true;
    $('#app-view').hidden = false;
    $('#me-name').textContent = S.user;
    $('#me-avatar').replaceWith(Object.assign(avatar(S.user, true), { id: 'me-avatar' }));
    S.rooms.clear();
    for (const name of (saved && saved.rooms) || []) getRoom(name).want = true;
    for (const name of (saved && saved.dms) || []) getRoom(name);
    S.current = saved && saved.current && S.rooms.has(saved.current) ? saved.current : null;
    renderRoomList();
    renderDmList();
    renderCurrent();
    refreshRooms();
    clearInterval(S.roomsTimer);
    S.roomsTimer = setInterval(refreshRooms, ROOMS_REFRESH);
    S.everConnected = false;
    S.attempt = 0;
    connect();
  }

  async function login(user, password) {
    const data = await api('POST', '/token', { user, password });
    S.token = data.token;
    S.user = data.user || user;
    S.expiresAt = Number(data.expires_at) || 0;
    saveSession();
  }

  function logout(message) {
    S.token = null;
    S.user = null;
    S.hold = false;
    clearTimeout(S.reconnectTimer);
    clearInterval(S.roomsTimer);
    if (S.ws) detachSocket();
    for (const r of S.rooms.values()) for (const t of r.typing.values()) clearTimeout(t);
    S.rooms.clear();
    S.roomList = [];
    S.current = null;
    sessionStorage.removeItem(KEY);
    setStatus('offline');
    $('#messages').replaceChildren();
    $('#login-password').value = '';
    showLogin(message);
  }

  // ---------------------------------------------------------------------------------------
  // Wiring

  function wire() {
    $('#login-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const user = $('#login-user').value.trim().toLowerCase();
      const password = $('#login-password').value;
      const err = $('#login-error');
      if (!user || !password) {
        err.textContent = 'Enter your user name and password.';
        err.hidden = false;
        return;
      }
      $('#login-submit').disabled = true;
      err.hidden = true;
      try {
        await login(user, password);
        $('#login-password').value = '';
        startApp(null);
      } catch (ex) {
        err.textContent = ex.status === 401 || ex.code === 'auth_failed'
          ? 'Wrong user name or password.'
          : `Could not sign in: ${ex.message}`;
        err.hidden = false;
      } finally {
        $('#login-submit').disabled = false;
      }
    });

    $('#logout-button').addEventListener('click', () => logout());

    $('#new-room-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const input = $('#new-room-name');
      const name = input.value.trim().toLowerCase().replace(/^#/, '');
      if (!name) return;
      if (!ROOM_RE.test(name) || isDm(name) || name.startsWith('calls.')) {
        toast('Room names are 1–64 characters of a-z, 0-9, ".", "_" and "-".', 'invalid_room');
        return;
      }
      const btn = $('#new-room-submit');
      btn.disabled = true;
      try {
        await api('POST', '/rooms', { name });
      } catch (ex) {
        if (ex.code !== 'room_exists' && ex.status !== 409) {
          toast(ex.message, ex.code);
          btn.disabled = false;
          return;
        }
        // It exists already: just join it.
      }
      btn.disabled = false;
      input.value = '';
      joinRoom(name);
      refreshRooms();
    });

    $('#dm-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const input = $('#dm-user');
      if (input.value.trim() && startDm(input.value)) input.value = '';
    });

    $('#room-list').addEventListener('click', (e) => {
      const btn = e.target.closest('button[data-action]');
      const item = e.target.closest('li[data-room]');
      if (!btn || !item) return;
      if (btn.dataset.action === 'leave') leaveRoom(item.dataset.room);
      else joinRoom(item.dataset.room);
    });

    $('#dm-list').addEventListener('click', (e) => {
      const btn = e.target.closest('button[data-action]');
      const item = e.target.closest('li[data-room]');
      if (!btn || !item) return;
      if (btn.dataset.action === 'leave') leaveRoom(item.dataset.room);
      else selectRoom(item.dataset.room);
    });

    const input = $('#composer-input');
    const autosize = () => {
      input.style.height = 'auto';
      input.style.height = Math.min(input.scrollHeight, 200) + 'px';
    };
    const submit = () => {
      const text = input.value;
      if (text.trim() === '') return;
      sendMessage(text);
      input.value = '';
      autosize();
    };
    $('#composer').addEventListener('submit', (e) => {
      e.preventDefault();
      submit();
      input.focus();
    });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
        e.preventDefault();
        submit();
      }
    });
    input.addEventListener('input', () => {
      autosize();
      if (input.value.trim() !== '') maybeSendTyping();
    });

    $('#messages').addEventListener('click', (e) => {
      const n = e.target.closest('li.pending.failed');
      if (!n) return;
      const r = S.rooms.get(S.current);
      const p = r && r.pending.get(n.dataset.clientId);
      if (p) {
        p.state = 'pending';
        updatePendingNode(r, p);
        transmit(r, p);
      }
    });

    $('#load-older').addEventListener('click', loadOlder);
    $('#message-pane').addEventListener('scroll', () => {
      const pane = $('#message-pane');
      if (pane.scrollTop < 40) loadOlder();
      if (nearBottom(pane)) $('#jump-latest').hidden = true;
    }, { passive: true });
    $('#jump-latest').addEventListener('click', () => {
      const pane = $('#message-pane');
      pane.scrollTop = pane.scrollHeight;
      $('#jump-latest').hidden = true;
    });

    $('#sidebar-toggle').addEventListener('click', openSidebar);
    $('#sidebar-close').addEventListener('click', closeSidebar);
    $('#sidebar-backdrop').addEventListener('click', closeSidebar);
    $('#occupants-toggle').addEventListener('click', () => {
      const open = document.body.classList.toggle('occupants-open');
      $('#occupants-toggle').setAttribute('aria-expanded', String(open));
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        closeSidebar();
        document.body.classList.remove('occupants-open');
      }
    });

    // Reconnect at once when the browser says the network is back.
    window.addEventListener('online', () => {
      if (S.token && !S.ws && !S.hold) {
        S.attempt = 0;
        connect();
      }
    });
  }

  // ---------------------------------------------------------------------------------------
  // Debug hooks (used by the browser test)

  window.switchboard = {
    get state() { return S; },
    /** Drops the WebSocket like a network failure; hold=true: stay offline until debugReconnect(). */
    debugDropConnection(hold = false) {
      S.hold = !!hold;
      const ws = S.ws;
      if (!ws) return false;
      S.ws = null;
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(4000, 'debug drop');
      } catch { /* ignore */ }
      onDisconnected();
      return true;
    },
    debugReconnect() {
      S.hold = false;
      S.attempt = 0;
      if (!S.ws) connect();
    },
  };

  function init() {
    wire();
    setStatus('offline');
    const saved = loadSession();
    if (saved) {
      S.token = saved.token;
      S.user = saved.user;
      S.expiresAt = saved.expiresAt || 0;
      startApp(saved);
    } else {
      showLogin();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
