/* Kefu chat widget. Embed:
 *   <script src="https://HOST/widget.js" data-site="SITE_KEY" async></script>
 * Plain JS, no dependencies. Everything lives in a shadow root, so the host page's CSS does not
 * style it and its ids and classes cannot clash. (The root is open: the host page's own scripts
 * are trusted by the site owner anyway, as they share the page's localStorage; open roots let the
 * browser tests reach the widget.) Every text from the network is set with textContent.
 * Wire contract: docs/protocol.md (JSON subprotocol kefu.json.v1, "Resume, exactly").
 */
(() => {
  'use strict';
  const script = document.currentScript || document.querySelector('script[data-site][src*="widget.js"]');
  if (!script || window.__kefuWidget) return;
  window.__kefuWidget = true;
  const SITE = script.dataset.site || '';
  const BASE = new URL(script.src, location.href).origin;
  const KEY = 'kefu:' + SITE;
  const MAX_KEPT = 300;           // messages kept in localStorage for an instant redraw
  const MAX_TEXT_BYTES = 8192;    // protocol limit of `send.text`
  const ACK_TIMEOUT_MS = 15000;   // a send without ack by then shows "failed, retry"
  const PING_MS = 25000;          // a ping without pong within PONG_MS means a dead link
  const PONG_MS = 10000;

  const pageLang = document.documentElement.lang || navigator.language || '';
  const zh = /^zh/i.test(pageLang);
  // Routing treats a visitor's language as a hard requirement, so it is sent only when the site
  // owner asks for it: data-lang="auto" (the page's language) or data-lang="zh-CN" etc.
  const routeLang = script.dataset.lang === 'auto' ? pageLang : (script.dataset.lang || '');
  const T = zh ? {
    title: '在线客服', open: '打开在线客服', close: '关闭', start: '开始对话', name: '您的称呼',
    topic: '咨询主题', anyTopic: '不限', geo: '分享我的位置，以便就近接待', placeholder: '输入消息…',
    send: '发送', queued: (p, eta) => `排队中：您前面还有 ${p - 1} 位` + (eta ? `，预计等待约 ${mins(eta)} 分钟` : ''),
    assigned: '客服已接入', joined: (n) => `${n} 为您服务`, typing: (n) => `${n || '客服'}正在输入…`,
    closed: '对话已结束', again: '开始新对话', pending: '发送中', sent: '已发送', read: '已读',
    failed: '发送失败，点击重试', offline: '连接中断，正在重连…', connecting: '正在连接…',
    noAgents: '当前无客服在线，您可以留言', newMsg: '新消息', error: '出错了，请稍后再试',
    tooLong: '消息太长', you: '我', agent: '客服',
  } : {
    title: 'Chat with us', open: 'Open chat', close: 'Close', start: 'Start chat', name: 'Your name',
    topic: 'Topic', anyTopic: 'Anything', geo: 'Share my location to reach a nearby agent',
    placeholder: 'Type a message…', send: 'Send',
    queued: (p, eta) => `You are number ${p} in line` + (eta ? `, about ${mins(eta)} min` : ''),
    assigned: 'An agent has joined', joined: (n) => `${n} is helping you`, typing: (n) => `${n || 'The agent'} is typing…`,
    closed: 'This conversation has ended', again: 'Start a new chat', pending: 'Sending', sent: 'Sent',
    read: 'Read', failed: 'Not sent, tap to retry', offline: 'Connection lost, reconnecting…',
    connecting: 'Connecting…', noAgents: 'No agent is online right now; leave a message',
    newMsg: 'New message', error: 'Something went wrong, try again later', tooLong: 'Message too long',
    you: 'You', agent: 'Agent',
  };
  function mins(s) { return Math.max(1, Math.round(s / 60)); }

  // --- persisted state (the page's localStorage, per site) --------------------------------------
  // `started`: the visitor asked for a chat (pre-chat sent), so the socket is kept alive.
  const blank = () => ({ conv: 0, lastSeq: 0, epoch: null, state: '', agentId: '', agentName: '', peerRead: 0,
                         readSent: 0, messages: [], outbox: [], queue: null, started: false });
  let S = Object.assign({ visitorId: '', visitorSecret: '', name: '', token: '', tokenExp: 0, wsUrl: '',
                          panelOpen: false }, blank());
  try { Object.assign(S, JSON.parse(localStorage.getItem(KEY) || '{}')); } catch (e) { /* fresh start */ }
  if (!Array.isArray(S.messages) || !Array.isArray(S.outbox)) Object.assign(S, blank());  // damaged record
  function save() {
    S.messages = S.messages.slice(-MAX_KEPT);
    try { localStorage.setItem(KEY, JSON.stringify(S)); } catch (e) { /* full or blocked: live only */ }
  }

  // --- DOM in a closed shadow root -------------------------------------------------------------
  const host = document.createElement('div');
  host.setAttribute('data-kefu-widget', '');
  host.style.cssText = 'all:initial;position:fixed;z-index:2147483000;right:0;bottom:0;';
  const root = host.attachShadow({ mode: 'open' });
  const el = (tag, cls, text) => {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text != null) n.textContent = text;
    return n;
  };
  const style = el('style');
  style.textContent = `
:host{all:initial}*{box-sizing:border-box;font:14px/1.45 system-ui,-apple-system,"Segoe UI","PingFang SC","Microsoft YaHei","WenQuanYi Zen Hei",sans-serif}
.bubble{position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;background:#2563eb;color:#fff;cursor:pointer;box-shadow:0 4px 14px #0004;display:flex;align-items:center;justify-content:center}
.badge{position:absolute;top:-4px;right:-4px;min-width:20px;height:20px;border-radius:10px;background:#dc2626;color:#fff;font-size:12px;line-height:20px;text-align:center;padding:0 5px}
.panel{position:fixed;right:20px;bottom:88px;width:360px;height:540px;max-height:calc(100vh - 108px);background:#fff;color:#111;border-radius:12px;box-shadow:0 8px 30px #0005;display:flex;flex-direction:column;overflow:hidden}
.head{background:#2563eb;color:#fff;padding:12px 14px;display:flex;align-items:center;gap:8px}
.head b{flex:1;font-weight:600;font-size:15px}.head button{background:none;border:0;color:#fff;font-size:20px;cursor:pointer}
.status{font-size:12px;padding:6px 14px;background:#eff6ff;color:#1e3a8a;min-height:0}.status:empty{display:none}
.status.warn{background:#fef3c7;color:#78350f}
.log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:6px;background:#f8fafc}
.m{max-width:80%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;overflow-wrap:anywhere}
.m.me{align-self:flex-end;background:#2563eb;color:#fff;border-bottom-right-radius:3px}
.m.them{align-self:flex-start;background:#fff;border:1px solid #e2e8f0;border-bottom-left-radius:3px}
.m .who{display:block;font-size:11px;color:#64748b;margin-bottom:2px}
.m .st{display:block;font-size:11px;opacity:.8;text-align:right;margin-top:2px}
.m.failed{background:#fee2e2;color:#7f1d1d;cursor:pointer}
.note{align-self:center;font-size:12px;color:#64748b}
.typing{font-size:12px;color:#64748b;padding:0 14px 4px;min-height:18px}
form.compose{display:flex;gap:6px;padding:10px;border-top:1px solid #e2e8f0}
textarea{flex:1;resize:none;height:40px;border:1px solid #cbd5e1;border-radius:8px;padding:8px}
button.primary{background:#2563eb;color:#fff;border:0;border-radius:8px;padding:0 14px;cursor:pointer}
button.primary:disabled{opacity:.5}
form.pre{padding:16px;display:flex;flex-direction:column;gap:10px;overflow-y:auto}
form.pre label{display:flex;flex-direction:column;gap:4px;color:#334155}
form.pre label.row{flex-direction:row;align-items:center;gap:8px}
input[type=text],select{border:1px solid #cbd5e1;border-radius:8px;padding:8px;background:#fff}
form.pre button{height:40px}
@media (max-width:480px){.panel{right:0;bottom:0;width:100vw;height:100%;max-height:100%;border-radius:0}}
[hidden]{display:none!important}`;
  const bubble = el('button', 'bubble');
  const SVG = 'http://www.w3.org/2000/svg';
  const icon = document.createElementNS(SVG, 'svg');
  icon.setAttribute('viewBox', '0 0 24 24');
  icon.setAttribute('width', '28');
  icon.setAttribute('height', '28');
  // A speech balloon with two lines of text.
  for (const [fill, d] of [['currentColor', 'M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z'],
                           ['#2563eb', 'M6 8h12v2H6zm0 4h8v2H6z']]) {
    const path = document.createElementNS(SVG, 'path');
    path.setAttribute('fill', fill);
    path.setAttribute('d', d);
    icon.append(path);
  }
  bubble.append(icon);
  bubble.setAttribute('aria-label', T.open);
  const badge = el('span', 'badge');
  badge.hidden = true;
  bubble.append(badge);
  const panel = el('div', 'panel');
  panel.setAttribute('role', 'dialog');
  panel.setAttribute('aria-label', T.title);
  const head = el('div', 'head');
  const title = el('b', '', T.title);
  const closeBtn = el('button', '', '×');
  closeBtn.setAttribute('aria-label', T.close);
  head.append(title, closeBtn);
  const status = el('div', 'status');
  status.setAttribute('aria-live', 'polite');

  const pre = el('form', 'pre');
  const nameIn = el('input');
  nameIn.type = 'text'; nameIn.maxLength = 100; nameIn.name = 'name'; nameIn.autocomplete = 'name';
  const topicSel = el('select');
  topicSel.name = 'topic';
  const geoIn = el('input');
  geoIn.type = 'checkbox'; geoIn.name = 'geo';
  const labelled = (text, input, cls) => { const l = el('label', cls); l.append(cls ? input : el('span', '', text), cls ? el('span', '', text) : input); return l; };
  const startBtn = el('button', 'primary', T.start);
  startBtn.type = 'submit';
  const topicLabel = labelled(T.topic, topicSel);
  topicLabel.hidden = true;
  pre.append(labelled(T.name, nameIn), topicLabel, labelled(T.geo, geoIn, 'row'), startBtn);

  const log = el('div', 'log');
  log.setAttribute('aria-live', 'polite');
  const typingLine = el('div', 'typing');
  const compose = el('form', 'compose');
  const input = el('textarea');
  input.placeholder = T.placeholder;
  input.setAttribute('aria-label', T.placeholder);
  const sendBtn = el('button', 'primary', T.send);
  sendBtn.type = 'submit';
  compose.append(input, sendBtn);
  const againBtn = el('button', 'primary', T.again);
  againBtn.type = 'button';
  againBtn.hidden = true;
  againBtn.style.margin = '10px';
  panel.append(head, status, pre, log, typingLine, compose, againBtn);
  root.append(style, bubble, panel);

  // --- rendering -------------------------------------------------------------------------------
  let unread = 0;
  let peerTyping = false;
  let typingTimer = 0;
  let statusText = '';
  let statusWarn = false;
  const baseTitle = document.title;

  function render() {
    const inChat = !!S.conv;
    panel.hidden = !S.panelOpen;
    pre.hidden = inChat;
    log.hidden = typingLine.hidden = !inChat;
    compose.hidden = !inChat || S.state === 'closed';
    againBtn.hidden = S.state !== 'closed';
    title.textContent = S.agentName || T.title;
    badge.hidden = !unread;
    badge.textContent = unread > 9 ? '9+' : String(unread);
    status.textContent = statusText;
    status.classList.toggle('warn', statusWarn);
    typingLine.textContent = peerTyping ? T.typing(S.agentName) : '';
    if (inChat) renderLog();
  }

  function renderLog() {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const rows = [];
    for (const m of S.messages) {
      const mine = m.role === 'visitor';
      const row = el('div', 'm ' + (mine ? 'me' : 'them'));
      row.dataset.seq = String(m.seq);
      if (!mine) row.append(el('span', 'who', m.name || T.agent));
      row.append(document.createTextNode(m.text));
      if (mine) row.append(el('span', 'st', m.seq <= S.peerRead ? T.read : T.sent));
      rows.push(row);
    }
    for (const o of S.outbox) {
      const row = el('div', 'm me' + (o.failed ? ' failed' : ''));
      row.dataset.cmid = o.cmid;
      row.append(document.createTextNode(o.text), el('span', 'st', o.failed ? (o.error || T.failed) : T.pending));
      if (o.failed && !o.permanent) row.addEventListener('click', () => retry(o.cmid));
      rows.push(row);
    }
    if (S.state === 'closed') rows.push(el('div', 'note', T.closed));
    log.replaceChildren(...rows);
    if (atBottom || rows.length < 3) log.scrollTop = log.scrollHeight;
  }

  function setStatus(text, warn) { statusText = text || ''; statusWarn = !!warn; render(); }

  function queueStatus() {
    if (S.state === 'queued' && S.queue) setStatus(T.queued(S.queue.position, S.queue.eta));
    else if (S.state === 'assigned' || S.state === 'transferred') setStatus(S.agentName ? T.joined(S.agentName) : T.assigned);
    else setStatus('');
  }

  // --- notices: unread badge, title, a short tone ----------------------------------------------
  let audio = null;
  function notify() {
    if (S.panelOpen && document.visibilityState === 'visible') return;
    unread++;
    document.title = `(${unread}) ${T.newMsg} · ${baseTitle}`;
    try {
      if (audio && audio.state === 'running') {
        const osc = audio.createOscillator(), gain = audio.createGain();
        osc.frequency.value = 880; gain.gain.value = 0.05;
        osc.connect(gain).connect(audio.destination);
        osc.start(); osc.stop(audio.currentTime + 0.15);
      }
    } catch (e) { /* no sound is fine */ }
  }
  function clearNotice() {
    unread = 0;
    document.title = baseTitle;
    markRead();
  }
  document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'visible' && S.panelOpen) { clearNotice(); render(); } });

  // --- the session and the socket --------------------------------------------------------------
  let ws = null;
  let connected = false;   // welcome received on the current socket
  let attempts = 0;
  let retryTimer = 0;
  let pingTimer = 0;
  let pongTimer = 0;
  let typingSentAt = 0;
  let typingOffTimer = 0;

  async function session(extra) {
    const body = { site: SITE, ...extra };
    if (routeLang) body.lang = routeLang.slice(0, 16);
    if (S.visitorId) { body.visitor_id = S.visitorId; body.visitor_secret = S.visitorSecret || undefined; }
    if (S.name) body.name = S.name;
    const r = await fetch(BASE + '/api/v1/visitor/session', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
      credentials: 'omit',
    });
    if (!r.ok) throw new Error('session ' + r.status);
    const data = await r.json();
    if (data.visitor_id !== S.visitorId) Object.assign(S, blank());  // a new identity owns nothing
    S.visitorId = data.visitor_id;
    if (data.visitor_secret) S.visitorSecret = data.visitor_secret;
    S.token = data.token;
    S.tokenExp = data.expires_at;
    S.wsUrl = data.ws_url;
    save();
  }

  let opening = false;
  async function connect() {
    clearTimeout(retryTimer);
    if (ws || opening) return;
    opening = true;
    try {
      if (!S.token || S.tokenExp * 1000 < Date.now() + 60000) await session({});
    } catch (e) {
      return scheduleReconnect();
    } finally {
      opening = false;
    }
    if (ws) return;
    const url = S.wsUrl + (S.wsUrl.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(S.token);
    const sock = new WebSocket(url, 'kefu.json.v1');
    ws = sock;
    setStatus(attempts ? T.offline : T.connecting, attempts > 0);
    sock.onopen = () => {
      const hello = { t: 'hello' };
      if (S.conv && S.epoch != null) hello.resume = { [S.conv]: S.lastSeq };
      sock.send(JSON.stringify(hello));
    };
    sock.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (ws === sock) onFrame(f);
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      connected = false;
      clearInterval(pingTimer); clearTimeout(pongTimer);
      if (ev.code === 1008) S.token = '';   // expired or revoked: a fresh session next time
      for (const o of S.outbox) clearTimeout(o.timer);  // queued, not failed: resent on reconnect
      peerTyping = false;
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    clearTimeout(retryTimer);
    if (!S.started || S.state === 'closed') { queueStatus(); return; }  // nothing to keep alive
    attempts++;
    setStatus(T.offline, true);
    // Exponential base with "equal jitter" (half fixed, half random): a restarted server is not
    // hit by every visitor at the same moment.
    const cap = Math.min(30000, 500 * 2 ** Math.min(attempts, 6));
    retryTimer = setTimeout(connect, cap / 2 + Math.random() * cap / 2);
  }

  function drop() {
    // Close this socket and reconnect at once (a dead link, or an epoch change).
    if (!ws) return;
    const sock = ws;
    ws = null; connected = false;
    clearInterval(pingTimer); clearTimeout(pongTimer);
    try { sock.close(); } catch (e) { /* already closing */ }
    connect();
  }

  function sendFrame(f) {
    if (!ws || !connected) return false;
    ws.send(JSON.stringify(f));
    return true;
  }

  function onFrame(f) {
    switch (f.t) {
      case 'welcome': return onWelcome(f);
      case 'msg': return onMessage(f);
      case 'ack': return onAck(f);
      case 'conv': return onConv(f);
      case 'typing':
        if (f.from && f.from.role !== 'visitor') {
          peerTyping = !!f.on;
          clearTimeout(typingTimer);
          if (peerTyping) typingTimer = setTimeout(() => { peerTyping = false; render(); }, 6000);
          render();
        }
        return;
      case 'read':
        if (f.from && f.from.role !== 'visitor' && f.seq > S.peerRead) { S.peerRead = f.seq; save(); render(); }
        return;
      case 'replayed': return;
      case 'pong': clearTimeout(pongTimer); return;
      case 'error': return onError(f);
    }
  }

  function onWelcome(f) {
    if (S.epoch != null && f.epoch !== S.epoch && S.conv) {
      // The server's database was replaced: what we hold refers to nothing. Start clean.
      Object.assign(S, blank(), { epoch: f.epoch });
      save();
      return drop();
    }
    S.epoch = f.epoch;
    const listed = (f.convs || []).map((c) => c.conv);
    if (!S.conv && listed.length) {
      // An open conversation we forgot (storage cleared): resume it from the start.
      S.conv = listed[0]; S.lastSeq = 0; S.messages = []; S.started = true; save();
      return drop();
    }
    const mine = (f.convs || []).find((c) => c.conv === S.conv);
    if (mine && mine.state) S.state = mine.state;
    connected = true;
    attempts = 0;
    clearInterval(pingTimer);
    pingTimer = setInterval(() => {
      if (!sendFrame({ t: 'ping' })) return;
      clearTimeout(pongTimer);
      pongTimer = setTimeout(drop, PONG_MS);
    }, PING_MS);
    save();
    if (!S.conv && S.started) sendFrame(S.topic ? { t: 'open', tags: [S.topic] } : { t: 'open' });
    else if (!listed.includes(S.conv) && S.state !== 'closed') S.state = 'closed';
    queueStatus();
    flushOutbox();
    markRead();
  }

  function onMessage(f) {
    if (f.conv !== S.conv) return;
    if (f.seq <= S.lastSeq) return;  // already shown (resume never repeats; this is belt and braces)
    S.lastSeq = f.seq;
    const role = f.from && f.from.role;
    S.messages.push({ seq: f.seq, cmid: f.cmid, text: String(f.text), role, name: f.from && f.from.name, ts: f.ts });
    if (role === 'visitor') {
      S.outbox = S.outbox.filter((o) => o.cmid !== f.cmid);
    } else {
      if (f.from && f.from.name) S.agentName = f.from.name;
      peerTyping = false;
      if (S.state === 'queued') S.state = 'assigned';
      notify();
      markRead();
    }
    save();
    queueStatus();
  }

  function onAck(f) {
    const o = S.outbox.find((x) => x.cmid === f.cmid);
    if (!o) return;
    clearTimeout(o.timer);
    // The msg frame (our own message, with its seq) carries the text into the log; until it
    // arrives the entry stays in the outbox, now marked acked so it is not sent again.
    o.acked = true;
    o.failed = false;
    if (f.seq <= S.lastSeq) S.outbox = S.outbox.filter((x) => x !== o);
    save(); render();
  }

  function onConv(f) {
    if (S.conv && f.conv !== S.conv) return;
    const fresh = !S.conv;
    S.conv = f.conv;
    S.state = f.state;
    if (f.agent && f.agent !== S.agentId) { S.agentId = f.agent; S.agentName = ''; }
    if (f.agent_name) S.agentName = String(f.agent_name);
    if (f.state === 'queued') S.queue = { position: f.position || 1, eta: f.eta_s };
    else S.queue = null;
    if (f.state === 'closed') { peerTyping = false; S.outbox = S.outbox.filter((o) => o.acked); }
    save();
    queueStatus();
    if (fresh) { flushOutbox(); }
  }

  function onError(f) {
    const o = f.ref && S.outbox.find((x) => x.cmid === f.ref);
    if (o) {
      clearTimeout(o.timer);
      o.failed = true;
      o.permanent = f.code === 'too_large' || f.code === 'forbidden' || f.code === 'not_found' || f.code === 'conflict';
      o.error = f.code === 'too_large' ? T.tooLong : (o.permanent ? T.error : T.failed);
      save(); render();
    }
  }

  // --- outgoing messages -----------------------------------------------------------------------
  function newCmid() {
    const b = crypto.getRandomValues(new Uint8Array(12));
    return 'w' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  function transmit(o) {
    if (!S.conv || o.acked) return;
    if (sendFrame({ t: 'send', conv: S.conv, cmid: o.cmid, text: o.text })) {
      clearTimeout(o.timer);
      o.timer = setTimeout(() => { if (!o.acked) { o.failed = true; save(); render(); } }, ACK_TIMEOUT_MS);
    }
  }

  function flushOutbox() {
    for (const o of S.outbox) if (!o.permanent) { o.failed = false; transmit(o); }
    render();
  }

  function retry(cmid) {
    const o = S.outbox.find((x) => x.cmid === cmid);
    if (!o) return;
    o.failed = false;
    render();
    if (connected) transmit(o); else connect();
  }

  function markRead() {
    if (!S.panelOpen || document.visibilityState !== 'visible' || !S.conv) return;
    const last = S.messages.length && S.messages[S.messages.length - 1];
    if (last && last.role !== 'visitor' && last.seq > (S.readSent || 0) && sendFrame({ t: 'read', conv: S.conv, seq: last.seq })) {
      S.readSent = last.seq;
    }
  }

  compose.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) { setStatus(T.tooLong, true); return; }
    input.value = '';
    const o = { cmid: newCmid(), text, ts: Date.now() / 1000 };
    S.outbox.push(o);
    save();
    transmit(o);
    stopTyping();
    render();
    if (!ws) connect();
  });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); compose.requestSubmit(); }
  });
  input.addEventListener('input', () => {
    const now = Date.now();
    if (now - typingSentAt > 2000 && input.value && sendFrame({ t: 'typing', conv: S.conv, on: true })) typingSentAt = now;
    clearTimeout(typingOffTimer);
    typingOffTimer = setTimeout(stopTyping, 3000);
  });
  function stopTyping() {
    clearTimeout(typingOffTimer);
    if (typingSentAt) { typingSentAt = 0; sendFrame({ t: 'typing', conv: S.conv, on: false }); }
  }

  // --- pre-chat --------------------------------------------------------------------------------
  async function loadTopics() {
    try {
      const r = await fetch(`${BASE}/api/v1/sites/${encodeURIComponent(SITE)}/topics`, { credentials: 'omit' });
      if (!r.ok) return;
      const data = await r.json();
      const options = [el('option', '', T.anyTopic)];
      options[0].value = '';
      for (const t of data.topics || []) {
        const depth = t.path.split('/').length - 1;
        const o = el('option', '', '\u00a0\u00a0'.repeat(depth) + t.path.split('/').pop());
        o.value = t.path;
        options.push(o);
      }
      topicSel.replaceChildren(...options);
      topicLabel.hidden = options.length < 2;
      if (!data.agents_online) setStatus(T.noAgents);
    } catch (e) { /* topics are optional */ }
  }

  function position() {
    return new Promise((resolve) => {
      if (!navigator.geolocation) return resolve(null);
      navigator.geolocation.getCurrentPosition(
        (p) => resolve({ lat: p.coords.latitude, lon: p.coords.longitude }), () => resolve(null),
        { timeout: 8000, maximumAge: 600000 });
    });
  }

  pre.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    startBtn.disabled = true;
    try {
      S.name = nameIn.value.trim().slice(0, 100);
      S.topic = topicSel.value;
      const extra = {};
      if (S.topic) extra.tags = [S.topic];
      const geo = geoIn.checked ? await position() : null;
      if (geo) extra.geo = geo;
      if (ws) drop();
      await session(extra);
      Object.assign(S, blank(), { epoch: S.epoch, started: true });
      save();
      await connect();
    } catch (e) {
      setStatus(T.error, true);
    } finally {
      startBtn.disabled = false;
    }
  });

  againBtn.addEventListener('click', () => {
    Object.assign(S, blank(), { epoch: S.epoch });
    save();
    if (ws) { const sock = ws; ws = null; connected = false; sock.close(); }
    nameIn.value = S.name || '';
    setStatus('');
    loadTopics();
  });

  // --- open / close ----------------------------------------------------------------------------
  function openPanel(open) {
    S.panelOpen = open;
    save();
    if (open) {
      try { audio = audio || new (window.AudioContext || window.webkitAudioContext)(); audio.resume(); } catch (e) { audio = null; }
      clearNotice();
      if (!S.conv) { nameIn.value = S.name || ''; loadTopics(); }
    }
    render();
    if (open) (S.conv ? input : nameIn).focus();
  }
  bubble.addEventListener('click', () => openPanel(!S.panelOpen));
  closeBtn.addEventListener('click', () => openPanel(false));
  window.addEventListener('online', () => { if (!ws && S.started) { attempts = 0; connect(); } });

  // Rebuild the outbox timers (they do not survive a reload) and go.
  for (const o of S.outbox) { delete o.timer; o.acked = false; }
  (document.body || document.documentElement).append(host);
  render();
  if (S.started) connect();
  if (S.panelOpen && !S.conv) loadTopics();
})();
