// The agent console: one WebSocket (docs/protocol.md) plus a few HTTP endpoints (/api/v1/console/…).
//
// Delivery follows the protocol's resume rules: per conversation the highest seq processed, the
// database epoch and the unsent messages (each with its cmid) live in sessionStorage, so a reload or a
// dropped socket resumes exactly where it stopped and resends what was not acknowledged; a message is
// shown once per seq, whatever arrives twice. The DOM is updated per item (one list entry per
// conversation, one node per message) so fifty open conversations stay cheap.
"use strict";

(() => {
  const {h, append, clear, t} = Kefu;
  const STORE_KEY = "kefu.console";
  const KEEP_MESSAGES = 100;  // per conversation in sessionStorage; older ones come from the history API
  const TYPING_SHOW_MS = 6000;
  const PING_EVERY_MS = 20000;
  const PONG_WAIT_MS = 10000;

  Kefu.addStrings({
    console_title: ["Kefu console", "Kefu 客服工作台"], mine: ["My conversations", "我的会话"],
    queue: ["Queue", "排队中"], queue_empty: ["Nobody is waiting", "暂无排队访客"],
    waiting: ["waiting {s}", "已等待 {s}"], position: ["#{n} in line", "第 {n} 位"],
    online: ["Online", "在线"], away: ["Away", "离开"], connected: ["Connected", "已连接"],
    reconnecting: ["Reconnecting…", "正在重连…"], pick: ["Pick a conversation", "请选择一个会话"],
    accept: ["Accept", "接受"], transfer: ["Transfer", "转接"], close: ["Close", "结束会话"],
    send: ["Send", "发送"], type_here: ["Type a reply — “/” for canned replies", "输入回复，输入“/”使用快捷回复"],
    canned: ["Canned replies", "快捷回复"], search: ["Search", "搜索"], none: ["Nothing found", "没有结果"],
    typing: ["Visitor is typing…", "访客正在输入…"], read: ["Read", "已读"], sent: ["Sent", "已发送"],
    sending: ["Sending…", "发送中…"], failed: ["Not sent — retry", "发送失败，点击重试"],
    closed: ["Closed", "已结束"], ended: ["Ended", "已结束"], assigned: ["Active", "进行中"],
    offered: ["New — accept it", "新会话，请接受"], transferred: ["Transferred to you", "转接给您"],
    visitor: ["Visitor", "访客"], location: ["Location", "位置"], language: ["Language", "语言"],
    tags: ["Tags", "标签"], mood: ["Mood", "情绪"], earlier: ["Earlier conversations", "历史会话"],
    no_earlier: ["First conversation", "首次咨询"], why: ["Why this conversation came to you", "分配原因"],
    reason: ["Reason", "原因"], ring: ["Ring", "匹配圈"], weights: ["Weights", "权重"],
    candidates: ["Candidates", "候选客服"], eligible: ["Eligible agents", "符合条件的客服"],
    to_agent: ["To an agent", "转给客服"], to_skill: ["To a skill (e.g. billing/refund)", "转给技能组（如 billing/refund）"],
    cancel: ["Cancel", "取消"], notify: ["Enable notifications", "开启通知"], new_chat: ["New conversation", "新会话"],
    new_message: ["New message", "新消息"], load_earlier: ["Load earlier messages", "加载更早的消息"],
    signed_out: ["You were signed out: {r}", "您已被登出：{r}"], me: ["Me", "我"],
    calm: ["calm", "平静"], upset: ["upset", "不满"], unknown: ["unknown", "未知"],
    messages_n: ["{n} messages", "{n} 条消息"],
  });

  // --- persistent state --------------------------------------------------------------------------
  let state = Kefu.session(STORE_KEY) || {};
  function blankState(auth) {
    return {auth, epoch: null, convs: {}, outbox: [], selected: null, availability: "online"};
  }
  let saveTimer = 0;
  function save() {
    if (saveTimer) return;
    saveTimer = setTimeout(() => {
      saveTimer = 0;
      const convs = {};
      for (const [id, conv] of Object.entries(state.convs || {})) {
        convs[id] = {...conv, msgs: conv.msgs.slice(-KEEP_MESSAGES), typingUntil: 0};
      }
      try {
        sessionStorage.setItem(STORE_KEY, JSON.stringify({...state, convs}));
      } catch { /* quota: the server still has everything; a reload then replays more */ }
    }, 150);
  }

  function newConv(id) {
    return {id, state: "assigned", accepted: false, why: null, lastSeq: 0, readSent: 0, otherRead: 0,
            msgs: [], name: null, tags: [], activity: Date.now() / 1000, typingUntil: 0, unread: 0};
  }

  function conv(id) {
    id = String(id);
    return state.convs[id] || (state.convs[id] = newConv(Number(id)));
  }

  const isOpen = (c) => c.state !== "closed" && c.state !== "gone";

  // --- the socket ----------------------------------------------------------------------------------
  let ws = null;
  let attempts = 0;
  let reconnectTimer = 0;
  let pingTimer = 0;
  let pongTimer = 0;
  let greeted = false;
  let resumedIds = new Set();  // conversations named in this connection's hello.resume
  const typingSent = {};

  function connect() {
    clearTimeout(reconnectTimer);
    const url = new URL(state.auth.ws_url, location.href);
    url.searchParams.set("token", state.auth.token);
    const socket = new WebSocket(url, "kefu.json.v1");
    ws = socket;
    greeted = false;
    socket.onopen = () => {
      const resume = {};
      if (state.epoch) {
        for (const c of Object.values(state.convs)) if (isOpen(c)) resume[String(c.id)] = c.lastSeq;
      }
      resumedIds = new Set(Object.keys(resume));
      socket.send(JSON.stringify({t: "hello", resume}));
      pingTimer = setInterval(() => {
        if (socket.readyState !== WebSocket.OPEN) return;
        socket.send(JSON.stringify({t: "ping", n: Date.now()}));
        // A dropped network often leaves the socket "open": no pong in time means it is dead.
        clearTimeout(pongTimer);
        pongTimer = setTimeout(() => socket.close(4000, "no pong"), PONG_WAIT_MS);
      }, PING_EVERY_MS);
    };
    socket.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      if (ws === socket) handle(frame);
    };
    socket.onclose = (event) => {
      clearInterval(pingTimer);
      clearTimeout(pongTimer);
      if (ws !== socket) return;
      ws = null;
      greeted = false;
      setStatus(false);
      if (event.code === 1008) return signOut(event.reason || "policy");
      const delay = Math.min(15000, 500 * 2 ** Math.min(attempts++, 5)) * (0.5 + Math.random());
      reconnectTimer = setTimeout(connect, delay);
    };
  }

  function sendFrame(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN || !greeted) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function handle(frame) {
    switch (frame.t) {
      case "welcome": return onWelcome(frame);
      case "msg": return onMessage(frame);
      case "ack": return onAck(frame);
      case "replayed": return onReplayed(frame);
      case "conv": return onConv(frame);
      case "typing": return onTyping(frame);
      case "read": return onRead(frame);
      case "error": return onError(frame);
      case "pong": clearTimeout(pongTimer); return undefined;
      default: return undefined;
    }
  }

  function onWelcome(frame) {
    if (state.epoch && frame.epoch !== state.epoch) {
      // The server's database was replaced: what we remember describes another world.
      Object.assign(state, {epoch: frame.epoch, convs: {}, outbox: [], selected: null});
      save();
      ws.close(4000, "epoch changed");
      return;
    }
    state.epoch = frame.epoch;
    greeted = true;
    attempts = 0;
    setStatus(true);
    const listed = new Set();
    for (const entry of frame.convs) {
      listed.add(String(entry.conv));
      const c = conv(entry.conv);
      c.state = entry.state;
      if (entry.state === "transferred") c.accepted = false;
      // Conversations not in our resume map are live-subscribed without a replay: fetch their past.
      if (!resumedIds.has(String(entry.conv))) {
        fetchHistory(c, Math.max(c.lastSeq, entry.last_seq - KEEP_MESSAGES), entry.last_seq);
      }
      renderItem(c);
    }
    for (const c of Object.values(state.convs)) {
      if (isOpen(c) && !listed.has(String(c.id))) { c.state = "gone"; renderItem(c); }
    }
    if (state.availability === "away") putAvailability("away");
    for (const entry of state.outbox) transmit(entry);
    save();
    renderChat();
  }

  async function fetchHistory(c, afterSeq, untilSeq) {
    let after = afterSeq;
    while (after < untilSeq) {
      let page;
      try {
        page = await Kefu.call("GET", `/api/v1/conversations/${c.id}/messages?after_seq=${after}&limit=500`,
          undefined, state.auth.token);
      } catch { return; }
      if (!page.messages.length) return;
      for (const m of page.messages) addMessage(c, m, false);
      after = page.messages[page.messages.length - 1].seq;
    }
  }

  function onMessage(frame) {
    const c = conv(frame.conv);
    const fresh = addMessage(c, frame, true);
    if (!fresh) return;
    if (frame.from.role === "visitor") {
      c.typingUntil = 0;
      if (state.selected === c.id) renderTyping(c);
      if (!(state.selected === c.id && document.hasFocus())) notify(t("new_message"), frame.text, c);
    }
  }

  // Adds a message once (by seq); returns whether it was new. Keeps `msgs` ordered by seq.
  function addMessage(c, m, live) {
    const msgs = c.msgs;
    if (msgs.length && msgs[0].seq <= m.seq && m.seq <= msgs[msgs.length - 1].seq &&
        msgs.some((x) => x.seq === m.seq)) return false;
    const message = {seq: m.seq, cmid: m.cmid, from: m.from, text: m.text, kind: m.kind, ts: m.ts};
    let index = msgs.length;
    while (index > 0 && msgs[index - 1].seq > m.seq) index--;
    msgs.splice(index, 0, message);
    if (m.seq === c.lastSeq + 1 || !live) c.lastSeq = Math.max(c.lastSeq, contiguousEnd(c));
    else if (m.seq > c.lastSeq + 1) {  // history still loading (or a gap): fetch what is before it
      fetchHistory(c, Math.max(c.lastSeq, m.seq - 1 - KEEP_MESSAGES), m.seq - 1);
    }
    if (m.from.role === "visitor" && m.from.name) c.name = m.from.name;
    c.activity = m.ts;
    const mine = state.outbox.findIndex((e) => e.conv === c.id && e.cmid === m.cmid && m.from.id === state.auth.agent_id);
    if (mine >= 0) {
      state.outbox.splice(mine, 1);
      removePending(m.cmid);
    }
    if (state.selected === c.id) insertMessageNode(c, message, index);
    markRead(c);
    renderItem(c);
    save();
    return true;
  }

  function contiguousEnd(c) {
    let end = c.lastSeq;
    const seqs = new Set(c.msgs.map((m) => m.seq));
    while (seqs.has(end + 1)) end++;
    // History pages start past seqs we never kept (older than KEEP_MESSAGES): trust the newest page.
    if (end === c.lastSeq && c.msgs.length && c.msgs[0].seq > c.lastSeq + 1) end = c.msgs[c.msgs.length - 1].seq;
    return end;
  }

  function onAck(frame) {
    const entry = state.outbox.find((e) => e.cmid === frame.cmid && e.conv === frame.conv);
    if (entry) {
      entry.status = "sent";
      entry.seq = frame.seq;
      renderPending(entry);
      save();
    }
  }

  function onReplayed(frame) {
    const c = conv(frame.conv);
    c.lastSeq = Math.max(c.lastSeq, frame.last_seq);
    if (frame.limited) fetchHistory(c, Math.max(0, frame.last_seq - 500 - KEEP_MESSAGES), frame.last_seq - 500);
    renderItem(c);
    save();
  }

  function onConv(frame) {
    const me = state.auth.agent_id;
    const known = String(frame.conv) in state.convs;
    const c = conv(frame.conv);
    if (frame.state === "closed") {
      c.state = "closed";
    } else if (frame.agent && frame.agent !== me) {
      c.state = "gone";  // transferred to a colleague
    } else if (frame.agent === me) {
      const offered = frame.why !== undefined;
      if (offered) {
        c.why = frame.why;
        c.accepted = false;
        if (!known || !isOpen(c)) notify(t("new_chat"), (frame.why && frame.why.reason) || "", c);
      } else if (frame.state === "assigned") {
        c.accepted = true;  // the broadcast that follows an accept carries no `why`
      }
      c.state = frame.state;
      c.activity = Date.now() / 1000;
    }
    renderItem(c);
    if (state.selected === c.id) renderChatHeader(c);
    save();
  }

  function onTyping(frame) {
    const c = state.convs[String(frame.conv)];
    if (!c || frame.from.role !== "visitor") return;
    c.typingUntil = frame.on ? Date.now() + TYPING_SHOW_MS : 0;
    if (state.selected === c.id) renderTyping(c);
  }

  function onRead(frame) {
    const c = state.convs[String(frame.conv)];
    if (!c || frame.from.role !== "visitor") return;
    c.otherRead = Math.max(c.otherRead, frame.seq);
    if (state.selected === c.id) renderReadMarks(c);
    save();
  }

  function onError(frame) {
    const entry = state.outbox.find((e) => e.cmid === frame.ref);
    if (entry) {
      if (frame.code === "unavailable" || frame.code === "rate_limited") {
        setTimeout(() => transmit(entry), 2000);  // nothing was stored: the same cmid is safe to resend
      } else {
        entry.status = "failed";
        entry.error = frame.msg;
        renderPending(entry);
        if (frame.code === "not_found" || frame.code === "conflict") {
          const c = state.convs[String(entry.conv)];
          if (c && isOpen(c)) { c.state = "gone"; renderItem(c); renderChatHeader(c); }
        }
      }
      save();
      return;
    }
    toast(frame.msg || frame.code);
  }

  // --- outgoing --------------------------------------------------------------------------------------
  function newCmid() {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    return "c" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function sendText(c, text) {
    const entry = {cmid: newCmid(), conv: c.id, text, ts: Date.now() / 1000, status: "pending"};
    state.outbox.push(entry);
    save();
    appendPending(entry);
    transmit(entry);
    stopTyping(c);
  }

  function transmit(entry) {
    if (entry.status === "sent") return;  // acked; its msg frame is on the way
    entry.status = "pending";
    renderPending(entry);
    sendFrame({t: "send", conv: entry.conv, cmid: entry.cmid, text: entry.text});
  }

  // Debounced: a history page adds many messages at once, and the server rate-limits frames.
  let readTimer = 0;
  function markRead(c) {
    if (state.selected !== c.id || readTimer) return;
    readTimer = setTimeout(() => { readTimer = 0; sendRead(c); }, 250);
  }

  function sendRead(c) {
    if (state.selected !== c.id || !document.hasFocus() || document.hidden) return;
    const last = c.msgs.length ? c.msgs[c.msgs.length - 1].seq : 0;
    if (last > c.readSent && sendFrame({t: "read", conv: c.id, seq: last})) {
      c.readSent = last;
      c.unread = 0;
      renderItem(c);
      updateTitle();
      save();
    }
  }

  function typingInput(c) {
    const now = Date.now();
    if (now - (typingSent[c.id] || 0) > 1000) {
      typingSent[c.id] = now;
      sendFrame({t: "typing", conv: c.id, on: true});
    }
    clearTimeout(typingSent["t" + c.id]);
    typingSent["t" + c.id] = setTimeout(() => stopTyping(c), 3000);
  }

  function stopTyping(c) {
    clearTimeout(typingSent["t" + c.id]);
    if (typingSent[c.id]) {
      typingSent[c.id] = 0;
      sendFrame({t: "typing", conv: c.id, on: false});
    }
  }

  async function putAvailability(status) {
    state.availability = status;
    save();
    try {
      await Kefu.call("PUT", "/api/v1/console/availability", {status}, state.auth.token);
    } catch (e) {
      if (e.status !== 409) toast(e.message);  // 409: not connected yet; applied after welcome
    }
  }

  // --- notifications ------------------------------------------------------------------------------
  function unreadTotal() {
    let total = 0;
    for (const c of Object.values(state.convs)) {
      if (isOpen(c)) total += unreadOf(c) + (c.accepted ? 0 : 1);
    }
    return total;
  }

  function unreadOf(c) {
    let count = 0;
    for (let i = c.msgs.length - 1; i >= 0 && c.msgs[i].seq > c.readSent; i--) {
      if (c.msgs[i].from.role === "visitor") count++;
    }
    return count;
  }

  function updateTitle() {
    const total = unreadTotal();
    document.title = (total ? `(${total}) ` : "") + t("console_title");
  }

  function notify(title, body, c) {
    updateTitle();
    if (document.hasFocus() && state.selected === c.id) return;
    Kefu.beep();
    if (document.hidden && "Notification" in window && Notification.permission === "granted") {
      const note = new Notification(title, {body: String(body).slice(0, 120), tag: `kefu-${c.id}`});
      note.onclick = () => { window.focus(); select(c.id); };
    }
  }

  // --- view -------------------------------------------------------------------------------------------
  const root = document.getElementById("app");
  const view = {};
  const items = new Map();  // conv id -> {li, name, preview, badge, status}

  function setStatus(up) {
    if (!view.status) return;
    view.status.dataset.state = up ? "connected" : "reconnecting";
    view.status.textContent = up ? t("connected") : t("reconnecting");
  }

  function toast(text) {
    if (!view.toasts) return;
    const note = h("div", {class: "toast", role: "status"}, text);
    view.toasts.append(note);
    setTimeout(() => note.remove(), 5000);
  }

  function signOut(reason) {
    const message = reason ? t("signed_out", {r: reason}) : "";
    sessionStorage.removeItem(STORE_KEY);
    state = {};
    showLogin(message);
  }

  function showLogin(message) {
    document.title = t("console_title");
    Kefu.loginForm(root, t("console_title"), (auth) => {
      const previous = Kefu.session(STORE_KEY);
      state = previous && previous.auth && previous.auth.agent_id === auth.agent_id
        ? {...previous, auth} : blankState(auth);
      save();
      start();
    });
    if (message) root.querySelector(".error").textContent = message;
  }

  function start() {
    items.clear();
    view.status = h("span", {class: "status", "data-state": "reconnecting"}, t("reconnecting"));
    view.availability = h("select", {class: "availability", "aria-label": "availability",
      onchange: () => putAvailability(view.availability.value)},
    h("option", {value: "online"}, t("online")), h("option", {value: "away"}, t("away")));
    view.availability.value = state.availability || "online";
    const notifyButton = "Notification" in window && Notification.permission === "default"
      ? h("button", {class: "ghost", onclick: () => Notification.requestPermission().then(() => notifyButton.remove())},
        t("notify")) : null;
    view.list = h("ul", {class: "convs", id: "convs"});
    view.queue = h("ul", {class: "queue", id: "queue"});
    view.queueCount = h("span", {class: "count"}, "0");
    view.chat = h("section", {class: "chat", id: "chat"});
    view.panel = h("aside", {class: "panel", id: "panel"});
    view.toasts = h("div", {class: "toasts"});
    append(clear(root), [
      h("header", {class: "top"},
        h("strong", {}, t("console_title")), view.status, view.availability, notifyButton,
        h("span", {class: "grow"}),
        h("span", {class: "who"}, displayName()),
        h("button", {class: "ghost", onclick: () => { Kefu.setLang(Kefu.lang === "en" ? "zh-CN" : "en"); start(); }},
          t("other_lang")),
        h("button", {class: "ghost", id: "logout", onclick: async () => {
          const token = state.auth.token;
          ws && ws.close(1000);
          ws = null;
          await Kefu.logout(token);
          signOut("");
        }}, t("logout"))),
      h("nav", {class: "side"},
        h("h2", {}, t("mine")), view.list,
        h("h2", {}, t("queue"), " ", view.queueCount), view.queue),
      view.chat, view.panel, view.toasts]);
    for (const c of sortedConvs()) renderItem(c);
    renderChat();
    updateTitle();
    if (!ws) connect();
    pollQueue();
  }

  // The token's claims carry the agent's name; read for display only (the server verifies tokens).
  function displayName() {
    try {
      const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(
        atob(state.auth.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")), (ch) => ch.charCodeAt(0))));
      return claims.name || state.auth.agent_id;
    } catch { return state.auth.agent_id; }
  }

  function sortedConvs() {
    return Object.values(state.convs).sort((a, b) => (isOpen(b) - isOpen(a)) || (b.activity - a.activity));
  }

  function label(c) {
    return c.name || `${t("visitor")} #${c.id}`;
  }

  function stateLabel(c) {
    if (c.state === "closed") return t("closed");
    if (c.state === "gone") return t("ended");
    if (!c.accepted) return c.state === "transferred" ? t("transferred") : t("offered");
    return t("assigned");
  }

  function renderItem(c) {
    if (!view.list) return;
    let item = items.get(c.id);
    if (!item) {
      item = {name: h("span", {class: "name"}), badge: h("span", {class: "badge"}),
              preview: h("span", {class: "preview"}), status: h("span", {class: "state"})};
      item.li = h("li", {"data-conv": c.id, onclick: () => select(c.id)},
        h("div", {class: "row"}, item.name, item.badge), h("div", {class: "row"}, item.preview, item.status));
      items.set(c.id, item);
      view.list.prepend(item.li);
    }
    item.name.textContent = label(c);
    const unread = unreadOf(c);
    item.badge.textContent = unread ? String(unread) : "";
    item.badge.hidden = !unread;
    const last = c.msgs[c.msgs.length - 1];
    item.preview.textContent = last ? last.text.slice(0, 60) : "";
    item.status.textContent = stateLabel(c);
    item.li.classList.toggle("selected", state.selected === c.id);
    item.li.classList.toggle("ended", !isOpen(c));
    item.li.classList.toggle("offer", isOpen(c) && !c.accepted);
    // Keep the list ordered by activity, moving only the item that changed.
    const before = item.li.previousElementSibling;
    if (before && isOpen(c)) {
      const other = state.convs[before.dataset.conv];
      if (other && (!isOpen(other) || other.activity < c.activity)) {
        let target = before;
        while (target.previousElementSibling) {
          const o = state.convs[target.previousElementSibling.dataset.conv];
          if (o && isOpen(o) && o.activity >= c.activity) break;
          target = target.previousElementSibling;
        }
        view.list.insertBefore(item.li, target);
      }
    }
    updateTitle();
  }

  function select(id) {
    const previous = state.selected;
    state.selected = id;
    if (previous !== null && state.convs[String(previous)]) renderItem(state.convs[String(previous)]);
    save();
    renderChat();
  }

  function renderChat() {
    if (!view.chat) return;
    const c = state.selected !== null ? state.convs[String(state.selected)] : null;
    clear(view.chat);
    clear(view.panel);
    if (!c) {
      view.chat.append(h("p", {class: "empty"}, t("pick")));
      return;
    }
    renderItem(c);
    view.header = h("div", {class: "chat-head"});
    view.earlier = h("button", {class: "ghost earlier", onclick: () => loadEarlier(c)}, t("load_earlier"));
    view.messages = h("div", {class: "messages", id: "messages", "aria-live": "polite"});
    view.pending = h("div", {class: "pending"});
    view.typing = h("div", {class: "typing", id: "typing"});
    const input = h("textarea", {id: "composer", rows: 3, placeholder: t("type_here"), maxlength: 8000,
      oninput: () => { typingInput(c); cannedFromComposer(input); },
      onkeydown: (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          submit();
        } else if (event.key === "Escape") closeCanned();
      }});
    view.composer = input;
    const submit = () => {
      const text = input.value.trim();
      if (!text || !isOpen(c)) return;
      sendText(c, text);
      input.value = "";
      closeCanned();
    };
    view.canned = h("div", {class: "canned", hidden: true});
    append(view.chat, [view.header, view.earlier, view.messages, view.pending, view.typing, view.canned,
      h("form", {class: "composer", onsubmit: (e) => { e.preventDefault(); submit(); }},
        input,
        h("div", {class: "composer-actions"},
          h("button", {type: "button", class: "ghost", id: "canned-button", onclick: () => openCanned("")}, t("canned")),
          h("button", {type: "submit", id: "send"}, t("send"))))]);
    renderChatHeader(c);
    for (const m of c.msgs) view.messages.append(messageNode(c, m));
    for (const entry of state.outbox) if (entry.conv === c.id) appendPending(entry);
    view.earlier.hidden = !(c.msgs.length && c.msgs[0].seq > 1);
    renderTyping(c);
    renderReadMarks(c);
    view.messages.scrollTop = view.messages.scrollHeight;
    markRead(c);
    renderPanel(c);
  }

  function renderChatHeader(c) {
    if (!view.header || state.selected !== c.id) return;
    const actions = [];
    if (isOpen(c)) {
      if (!c.accepted) {
        actions.push(h("button", {id: "accept", onclick: () => {
          if (sendFrame({t: "accept", conv: c.id})) { c.accepted = true; renderItem(c); renderChatHeader(c); save(); }
        }}, t("accept")));
      }
      actions.push(h("button", {class: "ghost", id: "transfer", onclick: () => openTransfer(c)}, t("transfer")));
      actions.push(h("button", {class: "ghost danger", id: "close", onclick: () => sendFrame({t: "close", conv: c.id})},
        t("close")));
    }
    append(clear(view.header), [
      h("div", {}, h("strong", {class: "title"}, label(c)), " ", h("span", {class: "state"}, stateLabel(c))),
      h("div", {class: "actions"}, actions)]);
    if (view.composer) view.composer.disabled = !isOpen(c);
  }

  function messageNode(c, m) {
    const mine = m.from.role !== "visitor";
    const who = m.from.id === state.auth.agent_id ? t("me") : (m.from.name || (mine ? m.from.id : t("visitor")));
    return h("div", {class: `msg ${mine ? "mine" : "theirs"}`, "data-seq": m.seq},
      h("div", {class: "bubble"}, h("span", {class: "text"}, m.text)),
      h("div", {class: "meta"}, `${who} · ${Kefu.formatTime(m.ts)}`, mine ? h("span", {class: "tick"}) : null));
  }

  function insertMessageNode(c, m, index) {
    if (!view.messages) return;
    const atBottom = view.messages.scrollHeight - view.messages.scrollTop - view.messages.clientHeight < 40;
    const node = messageNode(c, m);
    const next = c.msgs[index + 1];
    const nextNode = next && view.messages.querySelector(`[data-seq="${next.seq}"]`);
    view.messages.insertBefore(node, nextNode || null);
    renderReadMarks(c);
    if (atBottom) view.messages.scrollTop = view.messages.scrollHeight;
  }

  function pendingNode(entry) {
    return view.pending && view.pending.querySelector(`[data-cmid="${CSS.escape(entry.cmid)}"]`);
  }

  function appendPending(entry) {
    if (!view.pending || state.selected !== entry.conv || pendingNode(entry)) return;
    const node = h("div", {class: "msg mine pending", "data-cmid": entry.cmid},
      h("div", {class: "bubble"}, h("span", {class: "text"}, entry.text)),
      h("div", {class: "meta"}, h("span", {class: "delivery"})));
    view.pending.append(node);
    renderPending(entry);
    view.messages.scrollTop = view.messages.scrollHeight;
  }

  function renderPending(entry) {
    const node = pendingNode(entry);
    if (!node) return;
    node.dataset.status = entry.status;
    const delivery = node.querySelector(".delivery");
    clear(delivery);
    if (entry.status === "failed") {
      delivery.append(h("button", {class: "link", onclick: () => transmit(entry)}, t("failed")));
    } else {
      delivery.textContent = entry.status === "sent" ? t("sent") : t("sending");
    }
  }

  function removePending(cmid) {
    const node = view.pending && view.pending.querySelector(`[data-cmid="${CSS.escape(cmid)}"]`);
    if (node) node.remove();
  }

  function renderTyping(c) {
    if (!view.typing) return;
    const on = c.typingUntil > Date.now();
    view.typing.textContent = on ? t("typing") : "";
    if (on) setTimeout(() => state.selected === c.id && renderTyping(c), c.typingUntil - Date.now() + 50);
  }

  function renderReadMarks(c) {
    if (!view.messages) return;
    for (const node of view.messages.querySelectorAll(".msg.mine .tick")) {
      const seq = Number(node.closest(".msg").dataset.seq);
      node.textContent = seq <= c.otherRead ? ` · ${t("read")}` : "";
    }
  }

  async function loadEarlier(c) {
    const first = c.msgs.length ? c.msgs[0].seq : 1;
    const after = Math.max(0, first - 1 - KEEP_MESSAGES);
    await fetchHistory(c, after, first - 1);
    if (view.earlier) view.earlier.hidden = !(c.msgs.length && c.msgs[0].seq > 1);
  }

  // --- canned replies ---------------------------------------------------------------------------
  let cannedQuery = 0;
  function cannedFromComposer(input) {
    const value = input.value;
    if (value.startsWith("/") && !value.includes("\n")) openCanned(value.slice(1));
    else if (!view.canned.hidden && !value.startsWith("/")) closeCanned();
  }

  function openCanned(query) {
    const box = view.canned;
    if (box.hidden) {
      box.hidden = false;
      const search = h("input", {type: "search", id: "canned-search", placeholder: t("search"), value: query,
        oninput: () => loadCanned(search.value), onkeydown: (e) => e.key === "Escape" && closeCanned()});
      view.cannedList = h("ul", {class: "canned-list"});
      append(clear(box), [h("div", {class: "canned-head"}, h("strong", {}, t("canned")), search), view.cannedList]);
      if (!query) search.focus();
    }
    loadCanned(query);
  }

  function closeCanned() {
    if (view.canned) view.canned.hidden = true;
  }

  async function loadCanned(query) {
    const ticket = ++cannedQuery;
    let replies = [];
    try {
      const q = query.replace(/^\//, "").trim();
      replies = (await Kefu.call("GET", `/api/v1/console/canned${q ? `?q=${encodeURIComponent(q)}` : ""}`,
        undefined, state.auth.token)).replies;
    } catch (e) { toast(e.message); }
    if (ticket !== cannedQuery || !view.cannedList) return;
    clear(view.cannedList);
    if (!replies.length) view.cannedList.append(h("li", {class: "muted"}, t("none")));
    for (const reply of replies) {
      view.cannedList.append(h("li", {onclick: () => {
        view.composer.value = reply.text;
        view.composer.focus();
        closeCanned();
      }}, h("code", {}, reply.shortcut), " ", h("span", {}, reply.text)));
    }
  }

  // --- transfer ------------------------------------------------------------------------------------
  async function openTransfer(c) {
    let agents = [];
    try {
      agents = (await Kefu.call("GET", "/api/v1/console/agents", undefined, state.auth.token)).agents;
    } catch (e) { toast(e.message); }
    const who = h("select", {id: "transfer-agent"}, h("option", {value: ""}, "—"),
      agents.filter((a) => a.online && a.agent_id !== state.auth.agent_id)
        .map((a) => h("option", {value: a.agent_id}, a.name)));
    const skill = h("input", {id: "transfer-skill", placeholder: "billing/refund"});
    const dialog = h("dialog", {class: "dialog"},
      h("form", {method: "dialog", onsubmit: (event) => {
        event.preventDefault();
        const frame = {t: "transfer", conv: c.id};
        if (who.value) frame.to_agent = who.value;
        else if (skill.value.trim()) frame.to_skill = skill.value.trim();
        else return;
        sendFrame(frame);
        dialog.close();
      }},
      h("h3", {}, t("transfer")), h("label", {}, t("to_agent"), who), h("label", {}, t("to_skill"), skill),
      h("div", {class: "actions"}, h("button", {type: "button", class: "ghost", onclick: () => dialog.close()}, t("cancel")),
        h("button", {type: "submit"}, t("transfer")))));
    dialog.addEventListener("close", () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
  }

  // --- visitor panel and routing explanation -------------------------------------------------------
  async function renderPanel(c) {
    const panel = view.panel;
    append(clear(panel), [whyBlock(c)]);
    let info;
    try {
      info = await Kefu.call("GET", `/api/v1/conversations/${c.id}/visitor`, undefined, state.auth.token);
    } catch { return; }
    if (state.selected !== c.id || view.panel !== panel) return;
    const v = info.visitor;
    if (v.name && !c.name) { c.name = v.name; renderItem(c); }
    const geo = v.geo ? `${v.geo.lat.toFixed(3)}, ${v.geo.lon.toFixed(3)}` : "—";
    const tags = [...new Set([...info.conv.tags, ...v.tags])];
    panel.prepend(h("section", {class: "visitor", id: "visitor-panel"},
      h("h3", {}, label(c)),
      h("dl", {},
        h("dt", {}, t("language")), h("dd", {}, v.lang || "—"),
        h("dt", {}, t("location")), h("dd", {}, geo),
        h("dt", {}, t("tags")), h("dd", {}, tags.length ? tags.map((tag) => h("span", {class: "tag"}, tag)) : "—"),
        h("dt", {}, t("mood")), h("dd", {}, moodBlock(info.mood))),
      h("h4", {}, t("earlier")),
      info.earlier.length
        ? h("ul", {class: "earlier-list"}, info.earlier.map((e) => h("li", {},
          `#${e.conv} · ${Kefu.formatDate(e.created_at)} · ${t("messages_n", {n: e.messages})}`,
          e.tags.length ? ` · ${e.tags.join(", ")}` : "")))
        : h("p", {class: "muted"}, t("no_earlier"))));
  }

  function moodBlock(mood) {
    const label = mood.current === null ? t("unknown") : mood.current >= 0.7 ? t("upset") : t("calm");
    if (!mood.trend.length) return label;
    // A small trend line of p_neg per visitor message (0 at the bottom, 1 at the top).
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 100 30");
    svg.setAttribute("class", "trend");
    const step = mood.trend.length > 1 ? 100 / (mood.trend.length - 1) : 0;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", mood.trend.map((p, i) => `${(i * step).toFixed(1)},${(28 - p.p_neg * 26).toFixed(1)}`).join(" "));
    svg.append(line);
    return h("span", {}, label, svg);
  }

  function whyBlock(c) {
    const why = c.why;
    if (!why) return h("section", {class: "why", id: "why"});
    const rows = (why.top || []).map((cand) => h("tr", {class: cand.agent === why.agent ? "chosen" : ""},
      h("td", {}, cand.agent), h("td", {}, cand.score.toFixed(3)),
      ["skill", "geo", "sent", "load", "fair"].map((k) => h("td", {}, Number(cand[k]).toFixed(2)))));
    const weights = Object.entries(why.weights || {}).map(([k, v]) => `${k} ${v}`).join(" · ");
    return h("section", {class: "why", id: "why"},
      h("h4", {}, t("why")),
      h("dl", {}, h("dt", {}, t("reason")), h("dd", {}, why.reason), h("dt", {}, t("ring")), h("dd", {}, String(why.ring)),
        h("dt", {}, t("eligible")), h("dd", {}, String(why.eligible)), h("dt", {}, t("weights")), h("dd", {}, weights)),
      rows.length ? h("table", {class: "candidates"},
        h("thead", {}, h("tr", {}, ["agent", "score", "skill", "geo", "sent", "load", "fair"].map((k) => h("th", {}, k)))),
        h("tbody", {}, rows)) : null);
  }

  // --- the queue -------------------------------------------------------------------------------------
  let queueTimer = 0;
  async function pollQueue() {
    clearTimeout(queueTimer);
    if (!state.auth) return;
    try {
      const answer = await Kefu.call("GET", "/api/v1/console/queue", undefined, state.auth.token);
      renderQueue(answer);
    } catch (e) {
      if (e.status === 401) return signOut(e.message);
    }
    queueTimer = setTimeout(pollQueue, document.hidden ? 15000 : 4000);
  }

  function renderQueue(answer) {
    if (!view.queue) return;
    view.queueCount.textContent = String(answer.length);
    clear(view.queue);
    if (!answer.queued.length) view.queue.append(h("li", {class: "muted"}, t("queue_empty")));
    for (const entry of answer.queued.slice(0, 50)) {
      // An offer that timed out (or a transfer to a skill) requeues without telling us: not ours now.
      const mine = state.convs[String(entry.conv)];
      if (mine && isOpen(mine)) { mine.state = "gone"; renderItem(mine); renderChatHeader(mine); }
      view.queue.append(h("li", {"data-conv": entry.conv},
        `#${entry.conv} `, entry.tags.length ? h("span", {class: "tag"}, entry.tags[0]) : null,
        h("span", {class: "muted"}, ` ${t("waiting", {s: duration(entry.waited_s)})}`,
          entry.position ? ` · ${t("position", {n: entry.position})}` : "")));
    }
  }

  function duration(seconds) {
    return seconds < 90 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
  }

  // --- start-up ---------------------------------------------------------------------------------------
  window.addEventListener("focus", () => {
    const c = state.selected !== null && state.convs && state.convs[String(state.selected)];
    if (c) markRead(c);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) pollQueue();
  });
  Kefu.setLang(Kefu.lang);
  if (state.auth && state.auth.expires_at * 1000 > Date.now()) start();
  else showLogin("");
  // For the browser tests and for support: how many times each seq is shown, per conversation.
  window.kefuConsole = {state: () => state, socket: () => ws};
})();
