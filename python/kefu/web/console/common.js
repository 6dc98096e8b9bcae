// Shared by /console and /admin: DOM building (text only), translations, the HTTP API client, login.
// Plain modern JavaScript, no build step. Every string that came from the network is put into the page
// with textContent (never innerHTML), so a visitor's "<img onerror=…>" is shown, not run.
"use strict";

const Kefu = (() => {
  // h("div", {class: "x", onclick: f}, "text", child) — strings become text nodes.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key in el && typeof value !== "string") el[key] = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.firstChild.remove();
    return el;
  }

  // --- translations ------------------------------------------------------------------------------
  const dictionaries = {en: {}, "zh-CN": {}};
  let lang = localStorage.getItem("kefu.lang") ||
    ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en");

  function addStrings(table) {  // {key: [english, chinese]}
    for (const [key, [en, zh]] of Object.entries(table)) {
      dictionaries.en[key] = en;
      dictionaries["zh-CN"][key] = zh;
    }
  }

  function t(key, vars) {
    let text = dictionaries[lang][key] ?? dictionaries.en[key] ?? key;
    for (const [name, value] of Object.entries(vars || {})) text = text.replaceAll(`{${name}}`, String(value));
    return text;
  }

  function setLang(next) {
    lang = next;
    localStorage.setItem("kefu.lang", next);
    document.documentElement.lang = next;
  }

  addStrings({
    username: ["Username", "用户名"], password: ["Password", "密码"], login: ["Sign in", "登录"],
    logout: ["Sign out", "退出"], wrong_login: ["Wrong username or password", "用户名或密码错误"],
    too_many: ["Too many attempts, try again in {s} s", "尝试次数过多，请 {s} 秒后重试"],
    network_error: ["Network error", "网络错误"], other_lang: ["中文", "English"],
    admins_only: ["This page is for administrators", "此页面仅供管理员使用"],
  });

  // --- HTTP API ----------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.msg) || `HTTP ${status}`);
      this.status = status;
      this.code = body && body.error;
      this.retryAfter = 0;
    }
  }

  function session(key) {
    try { return JSON.parse(sessionStorage.getItem(key) || "null"); } catch { return null; }
  }

  async function call(method, path, body, token) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = new ApiError(response.status, data);
      error.retryAfter = Number(response.headers.get("Retry-After") || 0);
      throw error;
    }
    return data;
  }

  // A login form; resolves with the login answer ({token, agent_id, role, ws_url, expires_at}).
  function loginForm(root, title, onDone) {
    const user = h("input", {name: "username", autocomplete: "username", required: true});
    const pass = h("input", {name: "password", type: "password", autocomplete: "current-password", required: true});
    const error = h("p", {class: "error", role: "alert"});
    const form = h("form", {class: "login", onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      try {
        onDone(await call("POST", "/api/v1/auth/login", {username: user.value, password: pass.value}));
      } catch (e) {
        error.textContent = e.status === 401 ? t("wrong_login")
          : e.status === 429 ? t("too_many", {s: e.retryAfter}) : (e.message || t("network_error"));
      }
    }},
    h("h1", {}, title),
    h("label", {}, t("username"), user), h("label", {}, t("password"), pass),
    h("button", {type: "submit"}, t("login")), error);
    append(clear(root), [form]);
    user.focus();
  }

  // Ends the session on the server when it supports it (POST /api/v1/auth/logout), then locally.
  async function logout(token) {
    try { await call("POST", "/api/v1/auth/logout", {}, token); } catch { /* older server or expired */ }
  }

  function formatTime(ts) {
    return new Date(ts * 1000).toLocaleTimeString(lang, {hour: "2-digit", minute: "2-digit"});
  }

  function formatDate(ts) {
    return new Date(ts * 1000).toLocaleString(lang, {dateStyle: "short", timeStyle: "short"});
  }

  // A short beep without any sound file (WebAudio); silently nothing when audio is not allowed yet.
  function beep() {
    try {
      const audio = new AudioContext();
      const tone = audio.createOscillator();
      const gain = audio.createGain();
      tone.frequency.value = 880;
      gain.gain.setValueAtTime(0.08, audio.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + 0.25);
      tone.connect(gain).connect(audio.destination);
      tone.start();
      tone.stop(audio.currentTime + 0.25);
      tone.onended = () => audio.close();
    } catch { /* no audio */ }
  }

  return {h, append, clear, t, addStrings, setLang, get lang() { return lang; }, call, ApiError, session,
          loginForm, logout, formatTime, formatDate, beep};
})();
