// The admin page: agents, the site (origins, embed snippet, routing), canned replies, live statistics.
// Talks only to /api/v1/admin/… with the admin's token (kept in sessionStorage for this tab).
"use strict";

(() => {
  const {h, append, clear, t} = Kefu;
  const STORE_KEY = "kefu.admin";
  const STATS_EVERY_MS = 2000;
  const CHART_POINTS = 150;  // five minutes at one point per two seconds

  Kefu.addStrings({
    admin_title: ["Kefu admin", "Kefu 管理后台"], agents: ["Agents", "客服"], site: ["Site", "站点"],
    canned: ["Canned replies", "快捷回复"], live: ["Live", "实时"], name: ["Name", "姓名"],
    role: ["Role", "角色"], skills: ["Skills (proficiency 0–1)", "技能（熟练度 0–1）"], capacity: ["Capacity", "接待上限"],
    teams: ["Teams (comma separated)", "团队（逗号分隔）"], languages: ["Languages (comma separated)", "语言（逗号分隔）"],
    status: ["Status", "状态"], create: ["Create agent", "创建客服"], save: ["Save", "保存"], edit: ["Edit", "编辑"],
    disable: ["Disable", "停用"], enable: ["Enable", "启用"], disabled: ["disabled", "已停用"], online: ["online", "在线"],
    offline: ["offline", "离线"], add_skill: ["Add skill", "添加技能"], remove: ["Remove", "删除"],
    new_password: ["New password (optional)", "新密码（可选）"], origins: ["Allowed origins, one per line", "允许的来源，每行一个"],
    embed: ["Embed snippet", "嵌入代码"], copy: ["Copy", "复制"], copied: ["Copied", "已复制"],
    routing: ["Routing", "路由"], weights: ["Weights", "权重"], rings: ["Ring schedule: after N seconds, minimum skill match",
      "匹配圈：等待 N 秒后的最低技能匹配度"], add_ring: ["Add ring", "添加匹配圈"], accept_timeout: ["Accept timeout (s)", "接受超时（秒）"],
    saved: ["Saved", "已保存"], shortcut: ["Shortcut", "快捷键"], text: ["Text", "内容"], add: ["Add", "添加"],
    delete: ["Delete", "删除"], connections: ["Connections", "连接数"], agents_online: ["Agents online", "在线客服"],
    msgs_s: ["Messages/s", "消息/秒"], ack: ["Ack p50 / p99", "确认延迟 p50 / p99"],
    delivery: ["Delivery p50 / p99", "投递延迟 p50 / p99"], queue_len: ["Queue length", "排队长度"],
    key: ["Site key", "站点密钥"], cancel: ["Cancel", "取消"], skills_h: ["Skills", "技能"], teams_h: ["Teams", "团队"],
    languages_h: ["Languages", "语言"],
  });

  let auth = Kefu.session(STORE_KEY);
  const root = document.getElementById("app");
  let main;
  let tab = "agents";
  let statsTimer = 0;

  const api = (method, path, body) => Kefu.call(method, path, body, auth.token).catch((error) => {
    if (error.status === 401) signOut();
    throw error;
  });

  function signOut() {
    sessionStorage.removeItem(STORE_KEY);
    auth = null;
    clearTimeout(statsTimer);
    showLogin();
  }

  function showLogin() {
    root.classList.remove("admin");
    Kefu.loginForm(root, t("admin_title"), (answer) => {
      if (answer.role !== "admin") {
        root.querySelector(".error").textContent = t("admins_only");
        return;
      }
      auth = answer;
      sessionStorage.setItem(STORE_KEY, JSON.stringify(answer));
      start();
    });
  }

  function start() {
    root.classList.add("admin");
    main = h("main", {});
    const tabs = ["agents", "site", "canned", "live"].map((name) => h("button", {
      role: "tab", id: `tab-${name}`, "aria-selected": String(name === tab), onclick: () => { tab = name; start(); }},
    t(name)));
    append(clear(root), [
      h("header", {class: "top"}, h("strong", {}, t("admin_title")), h("span", {class: "grow"}),
        h("button", {class: "ghost", onclick: () => { Kefu.setLang(Kefu.lang === "en" ? "zh-CN" : "en"); start(); }},
          t("other_lang")),
        h("button", {class: "ghost", id: "logout", onclick: async () => { await Kefu.logout(auth.token); signOut(); }},
          t("logout"))),
      h("div", {}, h("main", {}, h("nav", {class: "tabs", role: "tablist"}, tabs), main))]);
    document.title = t("admin_title");
    clearTimeout(statsTimer);
    ({agents: showAgents, site: showSite, canned: showCanned, live: showLive})[tab]();
  }

  function flash(el, text) {
    el.textContent = text;
    setTimeout(() => { el.textContent = ""; }, 3000);
  }

  const splitList = (value) => value.split(/[,，]/).map((s) => s.trim()).filter(Boolean);

  // --- agents ------------------------------------------------------------------------------------
  async function showAgents() {
    const {agents} = await api("GET", "/api/v1/admin/agents");
    const form = agentForm(null);
    const rows = agents.map((a) => h("tr", {"data-agent": a.username},
      h("td", {}, h("strong", {}, a.name), h("div", {class: "muted"}, a.username)),
      h("td", {}, a.role),
      h("td", {}, skillsTree(a.skills)),
      h("td", {}, String(a.capacity)),
      h("td", {}, a.teams.join(", ")),
      h("td", {}, a.languages.join(", ")),
      h("td", {class: "agent-status"}, a.disabled ? t("disabled") : a.online ? t("online") : t("offline")),
      h("td", {}, h("div", {class: "actions"},
        h("button", {class: "ghost", onclick: () => {
          form.replaceWith(agentForm(a));
          window.scrollTo(0, 0);
        }}, t("edit")),
        h("button", {class: a.disabled ? "ghost" : "ghost danger", "data-action": a.disabled ? "enable" : "disable",
          onclick: async () => {
            await api("PATCH", `/api/v1/admin/agents/${a.agent_id}`, {disabled: !a.disabled});
            start();
          }}, a.disabled ? t("enable") : t("disable"))))));
    append(clear(main), [form, h("section", {class: "card"}, h("h2", {}, t("agents")),
      h("table", {class: "list", id: "agents"},
        h("thead", {}, h("tr", {}, [t("name"), t("role"), t("skills_h"), t("capacity"), t("teams_h"), t("languages_h"),
          t("status"), ""].map((x) => h("th", {}, x)))),
        h("tbody", {}, rows)))]);
  }

  // Skill paths as a tree: "billing/refund" is shown under "billing".
  function skillsTree(skills) {
    const paths = Object.keys(skills).sort();
    const list = h("ul", {class: "skills-tree"});
    const shown = new Set();
    for (const path of paths) {
      const parts = path.split("/");
      for (let depth = 0; depth < parts.length; depth++) {
        const prefix = parts.slice(0, depth + 1).join("/");
        if (shown.has(prefix)) continue;
        shown.add(prefix);
        const level = prefix in skills ? ` ${Number(skills[prefix]).toFixed(2)}` : "";
        const item = h("li", {}, parts[depth], h("span", {class: "muted"}, level));
        item.style.paddingLeft = `${depth * 12}px`;
        list.append(item);
      }
    }
    return list;
  }

  function agentForm(agent) {
    const editing = agent !== null;
    const field = (label, input) => h("label", {}, label, input);
    const username = h("input", {name: "username", required: !editing, disabled: editing, value: agent ? agent.username : ""});
    const password = h("input", {name: "password", type: "password", minlength: 8, required: !editing, autocomplete: "new-password"});
    const name = h("input", {name: "name", value: agent ? agent.name : ""});
    const role = h("select", {name: "role"}, h("option", {value: "agent"}, "agent"), h("option", {value: "admin"}, "admin"));
    role.value = agent ? agent.role : "agent";
    const capacity = h("input", {name: "capacity", type: "number", min: 1, max: 1000, value: agent ? agent.capacity : 5});
    const teams = h("input", {name: "teams", value: agent ? agent.teams.join(", ") : ""});
    const languages = h("input", {name: "languages", value: agent ? agent.languages.join(", ") : ""});
    const skillRows = h("div", {class: "skills"});
    const addSkill = (path, level) => {
      const row = h("div", {class: "skill-row"},
        h("input", {type: "text", class: "skill-path", placeholder: "billing/refund", value: path}),
        h("input", {type: "number", class: "skill-level", min: 0, max: 1, step: 0.05, value: level}),
        h("button", {type: "button", class: "ghost", onclick: () => row.remove()}, t("remove")));
      skillRows.append(row);
    };
    for (const [path, level] of Object.entries(agent ? agent.skills : {})) addSkill(path, level);
    const error = h("p", {class: "error", role: "alert"});
    const form = h("form", {class: "card", id: "agent-form", onsubmit: async (event) => {
      event.preventDefault();
      const skills = {};
      for (const row of skillRows.querySelectorAll(".skill-row")) {
        const path = row.querySelector(".skill-path").value.trim();
        if (path) skills[path] = Number(row.querySelector(".skill-level").value || 0);
      }
      const body = {name: name.value.trim() || undefined, role: role.value, capacity: Number(capacity.value),
                    teams: splitList(teams.value), languages: splitList(languages.value), skills};
      if (password.value) body.password = password.value;
      try {
        if (editing) await api("PATCH", `/api/v1/admin/agents/${agent.agent_id}`, body);
        else await api("POST", "/api/v1/admin/agents", {username: username.value.trim(), ...body});
        start();
      } catch (e) { error.textContent = e.message; }
    }},
    h("h2", {}, editing ? `${t("edit")}: ${agent.username}` : t("create")),
    h("div", {class: "grid-form"},
      field(t("username"), username), field(editing ? t("new_password") : t("password"), password),
      field(t("name"), name), field(t("role"), role), field(t("capacity"), capacity),
      field(t("teams"), teams), field(t("languages"), languages)),
    h("h3", {}, t("skills")), skillRows,
    h("div", {class: "actions"},
      h("button", {type: "button", class: "ghost", onclick: () => addSkill("", 1)}, t("add_skill")),
      editing ? h("button", {type: "button", class: "ghost", onclick: () => start()}, t("cancel")) : null,
      h("button", {type: "submit", id: "agent-submit"}, editing ? t("save") : t("create"))),
    error);
    return form;
  }

  // --- site -----------------------------------------------------------------------------------------
  async function showSite() {
    const site = await api("GET", "/api/v1/admin/site");
    const origins = h("textarea", {id: "origins", rows: 4}, site.allowed_origins.join("\n"));
    const originsNote = h("span", {class: "muted"});
    const snippet = h("pre", {class: "snippet", id: "embed"}, site.embed);
    const copyNote = h("span", {class: "muted"});
    const effective = site.effective;
    const weightInputs = Object.entries(effective.weights).map(([key, value]) =>
      h("label", {}, key, h("input", {type: "number", step: 0.05, min: 0, max: 10, value, "data-weight": key})));
    const rings = h("div", {id: "rings"});
    const addRing = (wait, match) => {
      const row = h("div", {class: "skill-row"},
        h("input", {type: "number", class: "ring-wait", min: 0, step: 1, value: wait}),
        h("input", {type: "number", class: "ring-match", min: 0, max: 1, step: 0.01, value: match}),
        h("button", {type: "button", class: "ghost", onclick: () => row.remove()}, t("remove")));
      rings.append(row);
    };
    for (const [wait, match] of effective.ring_schedule) addRing(wait, match);
    const timeout = h("input", {type: "number", id: "accept-timeout", min: 5, max: 3600, value: effective.accept_timeout_s});
    const routingNote = h("span", {class: "muted"});
    append(clear(main), [
      h("section", {class: "card"}, h("h2", {}, `${t("site")}: ${site.name}`),
        h("p", {}, `${t("key")}: `, h("code", {}, site.key)),
        h("h3", {}, t("embed")), snippet,
        h("button", {class: "ghost", onclick: async () => {
          try { await navigator.clipboard.writeText(site.embed); flash(copyNote, t("copied")); } catch {
            getSelection().selectAllChildren(snippet);
          }
        }}, t("copy")), " ", copyNote),
      h("form", {class: "card", onsubmit: async (event) => {
        event.preventDefault();
        try {
          await api("PATCH", "/api/v1/admin/site", {allowed_origins: origins.value.split("\n").map((s) => s.trim()).filter(Boolean)});
          flash(originsNote, t("saved"));
        } catch (e) { flash(originsNote, e.message); }
      }}, h("h2", {}, t("origins")), origins, h("div", {class: "actions"}, h("button", {type: "submit", id: "save-origins"}, t("save")), originsNote)),
      h("form", {class: "card", onsubmit: async (event) => {
        event.preventDefault();
        const weights = {};
        for (const input of main.querySelectorAll("[data-weight]")) weights[input.dataset.weight] = Number(input.value);
        const schedule = [...rings.querySelectorAll(".skill-row")].map((row) =>
          [Number(row.querySelector(".ring-wait").value), Number(row.querySelector(".ring-match").value)]);
        try {
          await api("PATCH", "/api/v1/admin/site", {routing: {weights, ring_schedule: schedule, accept_timeout_s: Number(timeout.value)}});
          flash(routingNote, t("saved"));
        } catch (e) { flash(routingNote, e.message); }
      }},
      h("h2", {}, t("routing")), h("h3", {}, t("weights")), h("div", {class: "grid-form"}, weightInputs),
      h("h3", {}, t("rings")), rings,
      h("button", {type: "button", class: "ghost", onclick: () => addRing(0, 0)}, t("add_ring")),
      h("div", {class: "grid-form"}, h("label", {}, t("accept_timeout"), timeout)),
      h("div", {class: "actions"}, h("button", {type: "submit", id: "save-routing"}, t("save")), routingNote))]);
  }

  // --- canned replies -----------------------------------------------------------------------------
  async function showCanned() {
    const {replies} = await api("GET", "/api/v1/console/canned?limit=1000");
    const shortcut = h("input", {id: "canned-shortcut", placeholder: "/refund", maxlength: 32, required: true});
    const text = h("textarea", {id: "canned-text", rows: 2, maxlength: 4000, required: true});
    const error = h("p", {class: "error", role: "alert"});
    const rows = replies.map((reply) => {
      const editText = h("textarea", {rows: 2, maxlength: 4000}, reply.text);
      return h("tr", {}, h("td", {}, h("code", {}, reply.shortcut)), h("td", {}, editText),
        h("td", {}, h("div", {class: "actions"},
          h("button", {class: "ghost", onclick: async () => {
            try { await api("PATCH", `/api/v1/admin/canned/${reply.id}`, {text: editText.value}); start(); } catch (e) { error.textContent = e.message; }
          }}, t("save")),
          h("button", {class: "ghost danger", onclick: async () => {
            await api("DELETE", `/api/v1/admin/canned/${reply.id}`);
            start();
          }}, t("delete")))));
    });
    append(clear(main), [
      h("form", {class: "card", onsubmit: async (event) => {
        event.preventDefault();
        try {
          await api("POST", "/api/v1/admin/canned", {shortcut: shortcut.value.trim(), text: text.value});
          start();
        } catch (e) { error.textContent = e.message; }
      }}, h("h2", {}, t("canned")),
      h("div", {class: "grid-form"}, h("label", {}, t("shortcut"), shortcut), h("label", {}, t("text"), text),
        h("button", {type: "submit", id: "canned-add"}, t("add"))), error),
      h("section", {class: "card"}, h("table", {class: "list", id: "canned"},
        h("thead", {}, h("tr", {}, h("th", {}, t("shortcut")), h("th", {}, t("text")), h("th", {}, ""))),
        h("tbody", {}, rows)))]);
  }

  // --- live statistics ------------------------------------------------------------------------------
  const series = {msgs: [], conns: []};
  let previous = null;

  // p-quantile over the observations between two cumulative snapshots, as a bucket's upper bound.
  function windowQuantile(before, after, q) {
    const counts = after.counts.map((n, i) => n - (before ? before.counts[i] : 0));
    const total = counts.reduce((a, b) => a + b, 0);
    if (!total) return null;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      seen += counts[i];
      if (seen >= q * total) return i < after.bounds_ms.length ? after.bounds_ms[i] : Infinity;
    }
    return Infinity;
  }

  const ms = (value) => value === null ? "—" : value === Infinity ? "> 5000 ms" : `≤ ${value} ms`;

  function showLive() {
    const cards = {};
    const card = (key) => (cards[key] = h("b", {id: `stat-${key}`}, "—"));
    const canvas = h("canvas", {class: "chart", id: "chart", width: 1000, height: 220});
    const legend = h("div", {class: "legend"});
    for (const [label, color] of [[t("msgs_s"), "#2f6fed"], [t("connections"), "#1c8a4a"]]) {
      const swatch = h("i", {});
      swatch.style.background = color;
      legend.append(h("span", {}, swatch, label));
    }
    append(clear(main), [h("section", {class: "card"}, h("h2", {}, t("live")),
      h("div", {class: "stats"},
        h("div", {class: "stat"}, t("connections"), card("connections")),
        h("div", {class: "stat"}, t("agents_online"), card("agents")),
        h("div", {class: "stat"}, t("msgs_s"), card("rate")),
        h("div", {class: "stat"}, t("ack"), card("ack")),
        h("div", {class: "stat"}, t("delivery"), card("delivery")),
        h("div", {class: "stat"}, t("queue_len"), card("queue"))),
      canvas, legend)]);
    const poll = async () => {
      let now;
      try { now = await api("GET", "/api/v1/admin/stats"); } catch { now = null; }
      if (now && tab === "live") {
        const rate = previous ? Math.max(0, (now.messages_acked - previous.messages_acked) / (now.ts - previous.ts)) : 0;
        series.msgs.push(rate);
        series.conns.push(now.connections);
        for (const list of Object.values(series)) if (list.length > CHART_POINTS) list.shift();
        cards.connections.textContent = String(now.connections);
        cards.agents.textContent = String(now.agents_online);
        cards.rate.textContent = rate.toFixed(1);
        cards.queue.textContent = String(now.queue_length);
        const span = (key) => `${ms(windowQuantile(previous && previous[key], now[key], 0.5))} / ${ms(windowQuantile(previous && previous[key], now[key], 0.99))}`;
        cards.ack.textContent = previous ? span("ack") : `${ms(now.ack.p50_ms)} / ${ms(now.ack.p99_ms)}`;
        cards.delivery.textContent = previous ? span("delivery") : `${ms(now.delivery.p50_ms)} / ${ms(now.delivery.p99_ms)}`;
        previous = now;
        draw(canvas);
      }
      if (tab === "live") statsTimer = setTimeout(poll, STATS_EVERY_MS);
    };
    poll();
  }

  function draw(canvas) {
    const ctx = canvas.getContext("2d");
    const {width, height} = canvas;
    ctx.clearRect(0, 0, width, height);
    ctx.strokeStyle = "#e2e5ea";
    ctx.lineWidth = 1;
    for (let i = 1; i < 4; i++) {
      ctx.beginPath();
      ctx.moveTo(0, (height * i) / 4);
      ctx.lineTo(width, (height * i) / 4);
      ctx.stroke();
    }
    const line = (values, color) => {
      const top = Math.max(1, ...values) * 1.15;
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      values.forEach((value, i) => {
        const x = (i / (CHART_POINTS - 1)) * width;
        const y = height - (value / top) * (height - 10) - 5;
        if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      });
      ctx.stroke();
      ctx.fillStyle = color;
      ctx.font = "12px system-ui";
      ctx.fillText(`max ${top.toFixed(1)}`, 6, color === "#2f6fed" ? 14 : 28);
    };
    line(series.msgs, "#2f6fed");
    line(series.conns, "#1c8a4a");
  }

  Kefu.setLang(Kefu.lang);
  if (auth && auth.expires_at * 1000 > Date.now()) start();
  else showLogin();
})();
