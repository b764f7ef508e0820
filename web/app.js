// actor-chat web client: the line protocol of docs/PROTOCOL.md over a WebSocket (one text frame
// = one line), in plain JavaScript with no build step and no request to any other host.
//
// Safety rule for this file: every string that came from the server (names, room names, texts,
// error arguments) reaches the page through textContent or createTextNode, never innerHTML or
// an attribute that the browser interprets (href, src, style, on*). `el()` below is the only way
// elements are made, and it only ever sets text.
"use strict";

(() => {
  // ---------------------------------------------------------------------------------------------
  // Constants

  const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
  const NAME_RULE = "use 1 to 32 of A-Z a-z 0-9 _ . -";
  const HISTORY_PAGE = 50;
  // Reconnect back-off: 0.5 s, 1 s, 2 s … up to 15 s, each with up to 20 % jitter so that a
  // restarted server is not hit by every page in the same millisecond.
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  // A taken name right after a reconnect is usually our own old session, not yet noticed as
  // gone by the server; it is retried this many times before the page gives up.
  const RELOGIN_NAME_TAKEN_TRIES = 5;
  // Bye reasons after which the page does not reconnect by itself (the terminal client does the
  // same): a flood would only be repeated.
  const NO_AUTO_RECONNECT = new Set(["flood"]);

  // ---------------------------------------------------------------------------------------------
  // Small DOM helpers (text only)

  const $ = (id) => {
    const node = document.getElementById(id);
    if (!node) throw new Error("missing element #" + id);
    return node;
  };

  /** An element with classes and text content; children are appended as nodes. */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  /**
   * Text as it is shown: control characters (other than tab), line separators and the
   * bidirectional controls become a visible `<U+202E>`, as in the terminal client, so that a
   * message cannot reorder or hide the text around it. (The CSS also isolates every text.)
   */
  function visible(text) {
    // eslint-disable-next-line no-control-regex
    return String(text).replace(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]/g,
      (c) => "<U+" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0") + ">");
  }

  const lower = (s) => s.toLowerCase();
  const pad2 = (n) => String(n).padStart(2, "0");

  function clockTime(date) {
    const now = new Date();
    const hm = pad2(date.getHours()) + ":" + pad2(date.getMinutes());
    if (date.toDateString() === now.toDateString()) return hm;
    return date.getFullYear() + "-" + pad2(date.getMonth() + 1) + "-" + pad2(date.getDate()) + " " + hm;
  }

  /** Splits a line into at most `n` fields: the last one keeps any further `|`. */
  function fields(line, n) {
    const out = [];
    let rest = line;
    while (out.length < n - 1) {
      const bar = rest.indexOf("|");
      if (bar < 0) break;
      out.push(rest.slice(0, bar));
      rest = rest.slice(bar + 1);
    }
    out.push(rest);
    return out;
  }

  const list = (csv) => (csv === "" ? [] : csv.split(","));
  const byName = (a, b) => lower(a).localeCompare(lower(b));

  // ---------------------------------------------------------------------------------------------
  // Readable sentences: the terminal client's wording (src/client/render.rs, src/client/error.rs)

  function describeError(kind, arg) {
    switch (kind) {
      case "bad-name": return arg === "" ? "that is not a valid name" : `"${arg}" is not a valid name`;
      case "name-taken": return `the name "${arg}" is already taken`;
      case "already-logged-in": return "you are already logged in";
      case "not-logged-in": return "you are not logged in";
      case "no-such-user": return `no such user: ${arg}`;
      case "already-in-room": return `you are already in #${arg}`;
      case "not-in-room": return `you are not in #${arg}`;
      case "unknown-command": return `the server does not know the command "${arg}"`;
      case "bad-arguments": return `the server rejected the arguments of "${arg}"`;
      case "line-too-long": return arg === "" ? "that line is too long" : `that line is too long (the limit is ${arg} bytes)`;
      case "bad-encoding": return "the server could not read that line: it is not UTF-8";
      case "rate-limited": return "slow down: rate limited";
      case "too-many-rooms": return `cannot join #${arg}: you are in too many rooms, or the server has too many`;
      case "no-such-room": return `there is no room #${arg}`;
      case "bad-text": return "that text was not sent: it holds a control character or a line separator";
      case "no-history": return "this server keeps no history";
      case "store-unavailable": return `the history of ${arg} cannot be read now: the server's store is not answering`;
      // Accounts: the terminal client's words, with the web's way to get TLS.
      case "weak-password": return 'that password will not do: it needs 8 to 256 bytes, without "|" or control characters';
      case "registration-closed": return `the server does not let clients register names: ask its operator for an account "${arg}"`;
      case "bad-password": return `wrong password for "${arg}" (or no such account)`;
      case "password-required": return `the name "${arg}" is registered: it needs its password`;
      case "tls-required": return `the server takes passwords only over TLS from another machine, so "${arg}" was refused: open the page with https:// (and change the password if others may have seen it)`;
      default: return arg === "" ? `the server said: ${kind}` : `the server said: ${kind} (${arg})`;
    }
  }

  function describeBye(reason) {
    switch (reason) {
      case null: return "the server closed the connection";
      case "server-full": return "the server is full; try again later";
      case "shutdown": return "the server is shutting down";
      default: return `the server closed the connection: ${reason}`;
    }
  }

  function nameProblem(name, what) {
    if (NAME_RE.test(name)) return null;
    let why;
    const bad = [...name].find((c) => !/[A-Za-z0-9_.-]/.test(c));
    if (name === "") why = "it is empty";
    else if (bad === " ") why = "it contains a space";
    else if (bad !== undefined && /\s/.test(bad)) why = "it contains white space";
    else if (bad !== undefined) why = `it contains "${bad}"`;
    else why = `it is ${name.length} characters long, and the most is 32`;
    return `"${name}" is not a valid ${what}: ${why} (${NAME_RULE})`;
  }

  // ---------------------------------------------------------------------------------------------
  // State

  /**
   * The connection's lifecycle, shown in the header:
   * idle → connecting → online ⇄ waiting (reconnect timer running) → connecting …
   * "stopped" is a lost connection that is not retried by itself (after `bye|flood`).
   */
  const Conn = Object.freeze({
    IDLE: "idle",
    CONNECTING: "connecting",
    ONLINE: "online",
    WAITING: "reconnecting",
    STOPPED: "stopped",
  });

  const state = {
    conn: Conn.IDLE,
    ws: null,
    /** Set once a login on this socket succeeded. */
    loggedIn: false,
    /** The name as the server spells it, once logged in at least once. */
    me: null,
    /** {name, password, mode} — in memory only, for logging in again after a reconnect. */
    credentials: null,
    /** Whether the chat view was reached: from then on a lost connection is retried. */
    session: false,
    attempts: 0,
    retryTimer: null,
    retryAt: 0,
    countdownTimer: null,
    nameTakenRetries: 0,
    byeReason: undefined,
    /** Rooms to be in (spelling as the server last gave it), kept across reconnects. */
    rooms: new Map(),
    /** key → conversation; keys are "#room" or "@name", lowercased. */
    convs: new Map(),
    order: [],
    active: null,
    users: new Map(),
    /** false once the server said `no-history`: not asked again until the next connection. */
    historyAvailable: true,
    /** history target as sent → {conv, items, anchor} */
    pendingHistory: new Map(),
    /** The `missed|…` lines being collected until `end|missed`. */
    missed: [],
  };

  // ---------------------------------------------------------------------------------------------
  // Elements

  const ui = {};
  function bindElements() {
    for (const id of ["login-view", "chat-view", "login-form", "login-name", "login-password",
      "password-row", "login-error", "login-submit", "login-title", "register-toggle", "password-toggle",
      "conn-state", "conn-banner", "conn-banner-text", "retry-now", "me", "logout", "menu-toggle",
      "sidebar", "join-form", "join-name", "my-rooms", "all-rooms", "all-rooms-box",
      "refresh-rooms", "users", "online-count", "refresh-users", "tabs", "panes", "welcome",
      "composer", "composer-input", "send"]) {
      ui[id.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = $(id);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Connection

  function wsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  function send(line) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(line);
      return true;
    }
    return false;
  }

  function loginLine() {
    const { name, password, mode } = state.credentials;
    if (mode === "register") return `register|${name}|${password}`;
    return password ? `login|${name}|${password}` : `login|${name}`;
  }

  /** Closes the socket without treating it as lost. */
  function dropSocket() {
    const old = state.ws;
    state.ws = null;
    if (!old) return;
    old.onclose = old.onmessage = old.onerror = old.onopen = null;
    if (old.readyState === WebSocket.OPEN) {
      try { old.send("exit"); } catch (_) { /* closing */ }
    }
    try { old.close(); } catch (_) { /* already closed */ }
  }

  function connect() {
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    dropSocket();
    state.loggedIn = false;
    state.byeReason = undefined;
    state.missed = [];
    state.pendingHistory.clear();
    setConn(Conn.CONNECTING);
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (err) {
      lost(`cannot connect: ${err.message}`);
      return;
    }
    state.ws = ws;
    ws.onopen = () => {
      if (state.credentials) send(loginLine());
    };
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") return;
      for (const line of event.data.split("\n")) {
        const clean = line.endsWith("\r") ? line.slice(0, -1) : line;
        if (clean !== "") handleLine(clean);
      }
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      const reason = state.byeReason;
      let why;
      if (reason !== undefined) why = describeBye(reason);
      else if (state.loggedIn) why = "lost the connection to the server";
      else why = "cannot reach the server";
      lost(why, reason);
    };
    ws.onerror = () => { /* onclose follows and says what happened */ };
  }

  /** The socket is gone: retry if a chat session was under way, else back to the form. */
  function lost(why, reason) {
    if (state.session && state.conn === Conn.ONLINE) systemToAll(why);
    state.loggedIn = false;
    for (const conv of state.convs.values()) conv.historyAnchor = dropAnchor(conv.historyAnchor);
    if (!state.session) {
      setConn(Conn.IDLE);
      if (why && ui.loginView.hidden === false && state.credentials) {
        showLoginError(`${capital(why)}.`);
      }
      setLoginBusy(false);
      return;
    }
    if (reason !== undefined && NO_AUTO_RECONNECT.has(reason)) {
      setConn(Conn.STOPPED, why);
      return;
    }
    scheduleReconnect(why);
  }

  function scheduleReconnect(why) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.attempts);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    state.attempts += 1;
    state.retryAt = Date.now() + delay;
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(connect, delay);
    setConn(Conn.WAITING, why);
  }

  function retryNow() {
    if (state.conn === Conn.WAITING || state.conn === Conn.STOPPED) {
      state.attempts = 0;
      connect();
    }
  }

  function setConn(conn, why) {
    state.conn = conn;
    if (why !== undefined) state.connWhy = why;
    clearInterval(state.countdownTimer);
    state.countdownTimer = null;
    if (conn === Conn.WAITING) {
      state.countdownTimer = setInterval(renderConn, 250);
    }
    renderConn();
  }

  function renderConn() {
    const badge = ui.connState;
    badge.dataset.state = state.conn;
    let text;
    let banner = null;
    switch (state.conn) {
      case Conn.IDLE: text = "Not connected"; break;
      case Conn.CONNECTING:
        text = state.session ? "Reconnecting…" : "Connecting…";
        if (state.session) banner = "Reconnecting…";
        break;
      case Conn.ONLINE: text = "Connected"; break;
      case Conn.WAITING: {
        const secs = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
        text = `Reconnecting in ${secs} s`;
        banner = `${capital(state.connWhy || "lost the connection")}. Reconnecting in ${secs} s…`;
        break;
      }
      case Conn.STOPPED:
        text = "Disconnected";
        banner = `${capital(state.connWhy || "the connection was closed")}.`;
        break;
      default: text = state.conn;
    }
    badge.textContent = text;
    ui.connBanner.hidden = banner === null;
    if (banner !== null) ui.connBannerText.textContent = banner;
    ui.retryNow.hidden = !(state.conn === Conn.WAITING || state.conn === Conn.STOPPED);
    ui.send.disabled = state.conn !== Conn.ONLINE;
    ui.composerInput.placeholder = state.conn === Conn.ONLINE ? placeholderFor(activeConv()) : "Not connected: waiting for the server…";
  }

  const capital = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);

  // ---------------------------------------------------------------------------------------------
  // Lines from the server

  function handleLine(line) {
    const verb = fields(line, 2)[0];
    switch (verb) {
      case "ping": send("pong"); return;
      case "pong": return;
      case "ok": return onOk(fields(line, 3));
      case "login": return onOnline(fields(line, 2)[1] || "");
      case "logout": return onOffline(fields(line, 2)[1] || "");
      case "talk": { const [, from, text] = fields(line, 3); return onTalk(from, text || ""); }
      case "users": return onUsers(list(fields(line, 2)[1] || ""));
      case "members": { const [, room, names] = fields(line, 3); return onMembers(room, list(names || "")); }
      case "join": { const [, room, name] = fields(line, 3); return onRoomJoined(room, name); }
      case "leave": { const [, room, name] = fields(line, 3); return onRoomLeft(room, name); }
      case "say": { const [, room, from, text] = fields(line, 4); return onSay(room, from, text || ""); }
      case "rooms": return onRooms(list(fields(line, 2)[1] || ""));
      case "bye": { const parts = fields(line, 2); state.byeReason = parts.length > 1 ? parts[1] : null; return; }
      case "error": { const [, kind, arg] = fields(line, 3); return onError(kind || "", arg || ""); }
      case "hist": return onHist(fields(line, 6));
      case "end": return onEnd(fields(line, 4));
      case "queued": return onQueued(fields(line, 2)[1] || "");
      case "missed": return onMissed(fields(line, 5));
      default: return; // A newer server's line this page does not know: ignore it.
    }
  }

  function onOk([, what, arg]) {
    if (what === "login") return onLoggedIn(arg || "");
    if (what === "join") return onJoined(arg || "");
    if (what === "leave") return onLeft(arg || "");
    if (what === "passwd") { const conv = activeConv(); if (conv) system(conv, "your password is changed"); }
  }

  function onLoggedIn(name) {
    const again = state.session;
    state.loggedIn = true;
    state.me = name;
    state.attempts = 0;
    state.nameTakenRetries = 0;
    state.historyAvailable = true;
    if (state.credentials.mode === "register") state.credentials.mode = "login";
    state.session = true;
    setConn(Conn.ONLINE);
    showChat();
    ui.me.textContent = name;
    send("who");
    send("rooms");
    // Back into the rooms we were in, and fresh history for the direct conversations.
    for (const room of state.rooms.values()) send(`join|${room}`);
    if (again) {
      for (const conv of state.convs.values()) {
        if (conv.kind === "direct") {
          conv.historyLoaded = false;
          if (conv.key === state.active) requestHistory(conv);
        } else {
          conv.historyLoaded = false;
          conv.rejoining = state.rooms.has(lower(conv.name));
        }
      }
      systemToAll("connected again");
    }
    setLoginBusy(false);
  }

  function onJoined(room) {
    state.rooms.set(lower(room), room);
    const conv = ensureConv("room", room);
    conv.joined = true;
    conv.name = room;
    // History is asked for once `members` has come, so that it shows under "you joined".
    conv.awaitMembers = true;
    renderTab(conv);
    renderRooms();
    if (!state.active || conv.openRequested) {
      conv.openRequested = false;
      activate(conv.key);
    }
  }

  function onLeft(room) {
    state.rooms.delete(lower(room));
    const conv = state.convs.get("#" + lower(room));
    if (conv) {
      conv.joined = false;
      if (conv.closing) closeConv(conv.key);
      else { system(conv, `you left #${room}`); renderTab(conv); }
    }
    renderRooms();
  }

  function onMembers(room, names) {
    const conv = state.convs.get("#" + lower(room));
    if (conv) {
      conv.members = new Map(names.map((n) => [lower(n), n]));
      renderMembers(conv);
      if (conv.awaitMembers) {
        conv.awaitMembers = false;
        // After a reconnect the room is joined again silently: "connected again" says it.
        if (!conv.rejoining) system(conv, `you joined #${room} (members: ${names.length ? names.join(", ") : "none"})`);
        conv.rejoining = false;
        if (conv.key === state.active) requestHistory(conv);
        return;
      }
    }
    // The answer to a `names` asked from somewhere else.
    const target = conv || activeConv();
    if (target) system(target, `members of #${room}: ${names.length ? names.join(", ") : "none"}`);
  }

  function onRoomJoined(room, name) {
    const conv = state.convs.get("#" + lower(room));
    if (!conv) return;
    conv.members.set(lower(name), name);
    renderMembers(conv);
    system(conv, `${name} joined #${room}`);
  }

  function onRoomLeft(room, name) {
    const conv = state.convs.get("#" + lower(room));
    if (!conv) return;
    conv.members.delete(lower(name));
    renderMembers(conv);
    system(conv, `${name} left #${room}`);
  }

  function onOnline(name) {
    state.users.set(lower(name), name);
    renderUsers();
    const conv = state.convs.get("@" + lower(name));
    if (conv) system(conv, `${name} is online`);
  }

  function onOffline(name) {
    state.users.delete(lower(name));
    renderUsers();
    const conv = state.convs.get("@" + lower(name));
    if (conv) system(conv, `${name} left`);
  }

  function onUsers(names) {
    state.users = new Map(names.map((n) => [lower(n), n]));
    renderUsers();
  }

  function onRooms(rooms) {
    state.allRooms = rooms;
    renderRooms();
  }

  function onTalk(from, text) {
    const conv = ensureConv("direct", from);
    conv.name = from;
    message(conv, { from, text, time: new Date() });
  }

  function onSay(room, from, text) {
    const conv = state.convs.get("#" + lower(room)) || ensureConv("room", room);
    message(conv, { from, text, time: new Date() });
  }

  function onQueued(name) {
    const conv = state.convs.get("@" + lower(name)) || activeConv();
    if (conv) system(conv, `${name} is offline; message queued`);
  }

  function onMissed([, id, time, from, text]) {
    state.missed.push({ id: Number(id), time: parseTime(time), from: from || "", text: text || "" });
  }

  function onHist([, target, id, time, from, text]) {
    const pending = state.pendingHistory.get(target);
    if (pending) pending.items.push({ id: Number(id), time: parseTime(time), from: from || "", text: text || "" });
  }

  function onEnd([, what, a, b]) {
    if (what === "missed") return endMissed(Number(a));
    if (what === "history") return endHistory(a || "", Number(b));
  }

  function parseTime(text) {
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  /** `missed|…` lines go to the direct conversation of each sender, under one divider each. */
  function endMissed(count) {
    const missed = state.missed;
    state.missed = [];
    if (count === 0 || missed.length === 0) return;
    const bySender = new Map();
    for (const item of missed) {
      const key = lower(item.from);
      if (!bySender.has(key)) bySender.set(key, []);
      bySender.get(key).push(item);
    }
    for (const items of bySender.values()) {
      const conv = ensureConv("direct", items[0].from);
      divider(conv, `while you were away (${items.length})`);
      for (const item of items) {
        conv.missedIds.add(item.id);
        message(conv, { ...item, missed: true });
      }
    }
    // With nothing open yet, what was missed is what to read first.
    if (!state.active) activate(keyOf("direct", missed[0].from));
  }

  function onError(kind, arg) {
    const sentence = describeError(kind, arg);
    if (!state.loggedIn) return onLoginError(kind, arg, sentence);
    switch (kind) {
      case "no-history": {
        state.historyAvailable = false;
        const pending = state.pendingHistory.get(arg);
        if (pending) {
          state.pendingHistory.delete(arg);
          pending.conv.historyAnchor = dropAnchor(pending.conv.historyAnchor);
          pending.conv.historyLoaded = true;
        }
        return; // Quietly: a server without a store is normal.
      }
      case "store-unavailable": {
        const pending = state.pendingHistory.get(arg);
        if (pending) {
          state.pendingHistory.delete(arg);
          pending.conv.historyAnchor = dropAnchor(pending.conv.historyAnchor);
          errorLine(pending.conv, sentence);
          return;
        }
        break;
      }
      case "no-such-user": {
        const conv = state.convs.get("@" + lower(arg));
        if (conv) { errorLine(conv, sentence); return; }
        break;
      }
      case "not-in-room":
      case "already-in-room":
      case "too-many-rooms": {
        const conv = state.convs.get("#" + lower(arg));
        if (kind === "too-many-rooms" && conv && !conv.joined) {
          // The tab was opened for a join that did not happen.
          closeConv(conv.key);
          state.rooms.delete(lower(arg));
          renderRooms();
        } else if (conv) { errorLine(conv, sentence); return; }
        break;
      }
      default: break;
    }
    const conv = activeConv();
    if (conv) errorLine(conv, sentence);
    else flash(sentence);
  }

  function onLoginError(kind, arg, sentence) {
    const creds = state.credentials;
    if (!creds) return;
    if (state.session) {
      // Logging in again after a reconnect.
      if (kind === "name-taken" && state.nameTakenRetries < RELOGIN_NAME_TAKEN_TRIES) {
        state.nameTakenRetries += 1;
        dropSocket();
        scheduleReconnect(sentence);
        return;
      }
      // The same answer would come every time: back to the form, with what happened.
      endSession();
      showLoginError(`could not log in again after reconnecting: ${sentence}`);
      if (kind === "password-required" || kind === "bad-password") showPassword(true);
      return;
    }
    // A fresh socket for the next try, so that this one's login deadline cannot cut it short.
    dropSocket();
    setConn(Conn.IDLE);
    setLoginBusy(false);
    if (kind === "password-required") {
      showPassword(true);
      showLoginError(`${capital(sentence)}.`);
      ui.loginPassword.focus();
      return;
    }
    showLoginError(`${capital(sentence)}.`);
    if (kind === "bad-password" || kind === "weak-password") {
      ui.loginPassword.select();
      ui.loginPassword.focus();
    } else {
      ui.loginName.select();
      ui.loginName.focus();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // History

  function requestHistory(conv) {
    if (!state.loggedIn || !state.historyAvailable || conv.historyLoaded) return;
    if (conv.kind === "room" && !conv.joined) return;
    const target = conv.kind === "room" ? `#${conv.name}` : conv.name;
    if (state.pendingHistory.has(target) || conv.awaitMembers) return;
    conv.historyAnchor = dropAnchor(conv.historyAnchor);
    const anchor = el("li", "history-anchor");
    anchor.hidden = true;
    conv.list.appendChild(anchor);
    conv.historyAnchor = anchor;
    state.pendingHistory.set(target, { conv, items: [] });
    conv.pane.classList.add("loading");
    send(`history|${target}|${HISTORY_PAGE}`);
  }

  /** Removes a conversation's pending-history marker; returns null to store in its place. */
  function dropAnchor(anchor) {
    if (anchor) {
      const pane = anchor.closest(".pane");
      if (pane) pane.classList.remove("loading");
      anchor.remove();
    }
    return null;
  }

  /**
   * The stored messages replace the chat lines the tab had when they were asked for (the answer
   * holds those too: the server reads it after everything already delivered to us is written);
   * lines that came in since stay after them.
   */
  function endHistory(target, _count) {
    const pending = state.pendingHistory.get(target);
    if (!pending) return;
    state.pendingHistory.delete(target);
    const { conv, items } = pending;
    const anchor = conv.historyAnchor;
    conv.historyLoaded = true;
    if (!anchor || anchor.parentNode !== conv.list) return;
    // An empty answer replaces nothing: what the tab shows stays.
    if (items.length === 0) {
      conv.historyAnchor = dropAnchor(anchor);
      return;
    }
    // The stored lines go where the first line they replace was (or at the marker).
    let place = anchor;
    for (const node of [...conv.list.children]) {
      if (node === anchor) break;
      if (node.classList.contains("chat") || node.classList.contains("away")) {
        if (place === anchor) {
          place = el("li", "history-anchor");
          place.hidden = true;
          conv.list.insertBefore(place, node);
        }
        node.remove();
      }
    }
    let dividerShown = false;
    const stick = isAtBottom(conv);
    for (const item of items) {
      if (!dividerShown && conv.missedIds.has(item.id)) {
        const count = items.filter((i) => conv.missedIds.has(i.id)).length;
        conv.list.insertBefore(dividerNode(`while you were away (${count})`), place);
        dividerShown = true;
      }
      const own = state.me !== null && lower(item.from) === lower(state.me);
      conv.list.insertBefore(messageNode(conv, { ...item, own, missed: conv.missedIds.has(item.id), history: true }), place);
    }
    if (place !== anchor) place.remove();
    conv.historyAnchor = dropAnchor(anchor);
    if (stick) scrollToBottom(conv);
  }

  // ---------------------------------------------------------------------------------------------
  // Conversations

  function keyOf(kind, name) {
    return (kind === "room" ? "#" : "@") + lower(name);
  }

  function ensureConv(kind, name) {
    const key = keyOf(kind, name);
    let conv = state.convs.get(key);
    if (conv) return conv;
    conv = {
      key, kind, name,
      unread: 0,
      joined: false,
      members: new Map(),
      sent: [],
      recall: -1,
      draft: "",
      historyLoaded: false,
      historyAnchor: null,
      missedIds: new Set(),
    };
    buildPane(conv);
    buildTab(conv);
    state.convs.set(key, conv);
    state.order.push(key);
    renderTabs();
    return conv;
  }

  function buildPane(conv) {
    const pane = el("section", "pane");
    pane.dataset.key = conv.key;
    pane.hidden = true;
    pane.setAttribute("role", "tabpanel");
    const header = el("header", "pane-header");
    const title = el("h2", "pane-title");
    title.appendChild(el("span", "sigil", conv.kind === "room" ? "#" : "@"));
    conv.titleText = el("span", "pane-name", visible(conv.name));
    title.appendChild(conv.titleText);
    header.appendChild(title);
    conv.summary = el("p", "pane-summary", conv.kind === "room" ? "" : "direct conversation");
    header.appendChild(conv.summary);
    const action = el("button", "pane-action", conv.kind === "room" ? "Leave room" : "Close");
    action.type = "button";
    action.addEventListener("click", () => closeTab(conv.key));
    header.appendChild(action);
    pane.appendChild(header);
    const log = el("ol", "messages");
    log.setAttribute("aria-live", "polite");
    log.setAttribute("aria-label", (conv.kind === "room" ? "Messages in #" : "Messages with ") + conv.name);
    pane.appendChild(log);
    conv.pane = pane;
    conv.list = log;
    ui.panes.appendChild(pane);
  }

  function buildTab(conv) {
    const tab = el("div", "tab");
    tab.dataset.key = conv.key;
    const label = el("button", "tab-label");
    label.type = "button";
    label.setAttribute("role", "tab");
    label.appendChild(el("span", "sigil", conv.kind === "room" ? "#" : "@"));
    conv.tabName = el("span", "tab-name", visible(conv.name));
    label.appendChild(conv.tabName);
    conv.badge = el("span", "unread", "");
    conv.badge.hidden = true;
    label.appendChild(conv.badge);
    label.addEventListener("click", () => activate(conv.key));
    const close = el("button", "tab-close", "×");
    close.type = "button";
    close.title = conv.kind === "room" ? "Leave this room" : "Close this conversation";
    close.setAttribute("aria-label", close.title);
    close.addEventListener("click", () => closeTab(conv.key));
    tab.appendChild(label);
    tab.appendChild(close);
    conv.tab = tab;
    conv.tabLabel = label;
  }

  function renderTabs() {
    for (const key of state.order) ui.tabs.appendChild(state.convs.get(key).tab);
    ui.welcome.hidden = state.order.length > 0;
  }

  function renderTab(conv) {
    conv.tabName.textContent = visible(conv.name);
    conv.titleText.textContent = visible(conv.name);
    conv.badge.textContent = conv.unread > 99 ? "99+" : String(conv.unread);
    conv.badge.hidden = conv.unread === 0;
    conv.tab.classList.toggle("has-unread", conv.unread > 0);
    conv.tab.classList.toggle("active", conv.key === state.active);
    conv.tab.classList.toggle("parted", conv.kind === "room" && !conv.joined);
    conv.tabLabel.setAttribute("aria-selected", conv.key === state.active ? "true" : "false");
    const unreadTotal = [...state.convs.values()].reduce((sum, c) => sum + c.unread, 0);
    document.title = unreadTotal > 0 ? `(${unreadTotal}) actor-chat` : "actor-chat";
  }

  function renderMembers(conv) {
    const names = [...conv.members.values()].sort(byName);
    conv.summary.textContent = `${names.length} ${names.length === 1 ? "member" : "members"}: ${names.map(visible).join(", ")}`;
  }

  function activeConv() {
    return state.active ? state.convs.get(state.active) || null : null;
  }

  function activate(key) {
    const conv = state.convs.get(key);
    if (!conv) return;
    const previous = activeConv();
    if (previous && previous !== conv) {
      previous.draft = ui.composerInput.value;
      previous.pane.hidden = true;
    }
    state.active = key;
    conv.pane.hidden = false;
    conv.unread = 0;
    for (const c of state.convs.values()) renderTab(c);
    if (previous !== conv) ui.composerInput.value = conv.draft || "";
    conv.recall = -1;
    renderConn();
    scrollToBottom(conv);
    requestHistory(conv);
    closeMenu();
    renderUsers();
    renderRooms();
    if (!matchMedia("(hover: none)").matches) ui.composerInput.focus();
    conv.tab.scrollIntoView({ block: "nearest", inline: "nearest" });
  }

  function closeTab(key) {
    const conv = state.convs.get(key);
    if (!conv) return;
    if (conv.kind === "room" && conv.joined) {
      conv.closing = true;
      send(`leave|${conv.name}`);
      state.rooms.delete(lower(conv.name));
      renderRooms();
      if (!state.loggedIn) closeConv(key);
      return;
    }
    closeConv(key);
  }

  function closeConv(key) {
    const conv = state.convs.get(key);
    if (!conv) return;
    const index = state.order.indexOf(key);
    state.order.splice(index, 1);
    state.convs.delete(key);
    conv.tab.remove();
    conv.pane.remove();
    if (state.active === key) {
      state.active = null;
      const next = state.order[Math.min(index, state.order.length - 1)];
      if (next) activate(next);
    }
    renderTabs();
    renderRooms();
    renderUsers();
    renderConn();
    for (const c of state.convs.values()) renderTab(c);
    if (state.order.length === 0) document.title = "actor-chat";
  }

  function openDirect(name) {
    const conv = ensureConv("direct", name);
    activate(conv.key);
  }

  function joinRoom(room) {
    const problem = nameProblem(room, "room name");
    if (problem) { flash(problem); return; }
    const existing = state.convs.get("#" + lower(room));
    if (existing && existing.joined) { activate(existing.key); return; }
    if (!send(`join|${room}`)) { flash("not connected: the room is joined once the connection is back"); return; }
    const conv = ensureConv("room", room);
    conv.openRequested = true;
    activate(conv.key);
  }

  // ---------------------------------------------------------------------------------------------
  // Messages

  function isAtBottom(conv) {
    const box = conv.list;
    return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  }

  function scrollToBottom(conv) {
    conv.list.scrollTop = conv.list.scrollHeight;
  }

  function messageNode(conv, { from, text, time, own, missed, history, id }) {
    const item = el("li", "msg chat");
    if (own) item.classList.add("own");
    if (missed) item.classList.add("missed");
    if (history) item.classList.add("history");
    item.dataset.from = from;
    if (id !== undefined) item.dataset.id = String(id);
    const stamp = el("time", "time", time ? clockTime(time) : "--:--");
    if (time) {
      stamp.dateTime = time.toISOString();
      stamp.title = time.toLocaleString();
    }
    item.appendChild(stamp);
    item.appendChild(el("span", "from", visible(from)));
    item.appendChild(el("span", "text", visible(text)));
    return item;
  }

  function append(conv, node, countsAsUnread) {
    const stick = isAtBottom(conv) || conv.key !== state.active;
    conv.list.appendChild(node);
    if (countsAsUnread && (conv.key !== state.active || document.hidden)) {
      conv.unread += 1;
      renderTab(conv);
    }
    if (stick) scrollToBottom(conv);
  }

  function message(conv, item) {
    append(conv, messageNode(conv, item), !item.own);
  }

  function system(conv, sentence) {
    const item = el("li", "msg system");
    item.appendChild(el("time", "time", clockTime(new Date())));
    item.appendChild(el("span", "text", visible(sentence)));
    append(conv, item, false);
  }

  function errorLine(conv, sentence) {
    const item = el("li", "msg error");
    item.setAttribute("role", "alert");
    item.appendChild(el("time", "time", clockTime(new Date())));
    item.appendChild(el("span", "text", visible(capital(sentence))));
    append(conv, item, false);
  }

  function dividerNode(text) {
    const item = el("li", "divider away");
    item.appendChild(el("span", "", text));
    return item;
  }

  function divider(conv, text) {
    append(conv, dividerNode(text), false);
  }

  function systemToAll(sentence) {
    for (const conv of state.convs.values()) system(conv, sentence);
  }

  /** A sentence with no conversation to go to: shown in the welcome panel or the active one. */
  function flash(sentence) {
    const conv = activeConv();
    if (conv) { errorLine(conv, sentence); return; }
    const note = el("p", "form-error", capital(sentence));
    note.setAttribute("role", "alert");
    ui.welcome.appendChild(note);
    ui.welcome.hidden = false;
  }

  // ---------------------------------------------------------------------------------------------
  // Sidebar

  function renderUsers() {
    ui.users.replaceChildren();
    const names = [...state.users.values()].sort(byName);
    ui.onlineCount.textContent = names.length ? `(${names.length})` : "";
    for (const name of names) {
      const item = el("li", "user");
      item.dataset.name = name;
      const button = el("button", "side-item", "");
      button.type = "button";
      button.appendChild(el("span", "name", visible(name)));
      const isMe = state.me && lower(name) === lower(state.me);
      if (isMe) button.appendChild(el("span", "tag", "you"));
      const conv = state.convs.get("@" + lower(name));
      if (conv && conv.key === state.active) button.classList.add("current");
      button.title = isMe ? "Talk to yourself" : `Talk to ${name}`;
      button.addEventListener("click", () => openDirect(name));
      item.appendChild(button);
      ui.users.appendChild(item);
    }
    if (names.length === 0) ui.users.appendChild(el("li", "empty", "no one (yet)"));
  }

  function renderRooms() {
    ui.myRooms.replaceChildren();
    const mine = [...state.rooms.values()].sort(byName);
    for (const room of mine) {
      const item = el("li", "room");
      item.dataset.room = room;
      const open = el("button", "side-item", "");
      open.type = "button";
      open.appendChild(el("span", "name", "#" + visible(room)));
      const conv = state.convs.get("#" + lower(room));
      if (conv && conv.key === state.active) open.classList.add("current");
      open.addEventListener("click", () => {
        const c = state.convs.get("#" + lower(room)) || ensureConv("room", room);
        activate(c.key);
      });
      const leave = el("button", "side-leave", "Leave");
      leave.type = "button";
      leave.title = `Leave #${room}`;
      leave.addEventListener("click", () => closeTab("#" + lower(room)));
      item.appendChild(open);
      item.appendChild(leave);
      ui.myRooms.appendChild(item);
    }
    if (mine.length === 0) ui.myRooms.appendChild(el("li", "empty", "none yet: join one above"));
    ui.allRooms.replaceChildren();
    const all = (state.allRooms || []).slice().sort(byName);
    for (const room of all) {
      const item = el("li", "room");
      const join = el("button", "side-item", "");
      join.type = "button";
      join.appendChild(el("span", "name", "#" + visible(room)));
      if (state.rooms.has(lower(room))) join.appendChild(el("span", "tag", "joined"));
      join.addEventListener("click", () => joinRoom(room));
      item.appendChild(join);
      ui.allRooms.appendChild(item);
    }
    if (all.length === 0) ui.allRooms.appendChild(el("li", "empty", "no rooms"));
  }

  function toggleMenu() {
    const open = !document.body.classList.contains("menu-open");
    document.body.classList.toggle("menu-open", open);
    ui.menuToggle.setAttribute("aria-expanded", open ? "true" : "false");
  }

  function closeMenu() {
    document.body.classList.remove("menu-open");
    ui.menuToggle.setAttribute("aria-expanded", "false");
  }

  // ---------------------------------------------------------------------------------------------
  // Login form

  /** The form asks for a login (password only when wanted) or for a new account. */
  let formMode = "login";

  function showPassword(show) {
    ui.passwordRow.hidden = !show;
    ui.passwordToggle.textContent = show ? "No password" : "I have a password";
    if (!show) ui.loginPassword.value = "";
  }

  function setFormMode(mode) {
    formMode = mode;
    const register = mode === "register";
    ui.loginTitle.textContent = register ? "Register a name" : "Join the chat";
    ui.loginSubmit.textContent = register ? "Register" : "Log in";
    ui.registerToggle.textContent = register ? "I have an account: log in" : "Register this name with a password";
    ui.passwordToggle.hidden = register;
    ui.loginPassword.autocomplete = register ? "new-password" : "current-password";
    showPassword(register);
    showLoginError("");
  }

  function showLoginError(text) {
    ui.loginError.textContent = text;
    ui.loginError.hidden = !text;
  }

  function setLoginBusy(busy) {
    ui.loginSubmit.disabled = busy;
  }

  function startLogin() {
    const name = ui.loginName.value.trim();
    const problem = nameProblem(name, "name");
    if (problem) { showLoginError(capital(problem) + "."); ui.loginName.focus(); return; }
    // A line never holds a line break; a pasted one would end the line early.
    const password = ui.passwordRow.hidden ? "" : ui.loginPassword.value.replace(/[\r\n]/g, "");
    if (formMode === "register" && password === "") {
      showLoginError("Choose a password to register this name.");
      ui.loginPassword.focus();
      return;
    }
    state.credentials = { name, password: password || null, mode: formMode };
    try { localStorage.setItem("actor-chat.name", name); } catch (_) { /* storage off */ }
    showLoginError("");
    setLoginBusy(true);
    connect();
  }

  function showChat() {
    document.body.dataset.phase = "chat";
    ui.loginView.hidden = true;
    ui.chatView.hidden = false;
    ui.me.hidden = false;
    ui.logout.hidden = false;
    ui.loginPassword.value = "";
    renderUsers();
    renderRooms();
    renderConn();
    const conv = activeConv();
    if (!conv) ui.composerInput.focus();
  }

  /** Back to the login form; forgets the password, the rooms and the conversations. */
  function endSession() {
    state.session = false;
    state.credentials = null;
    state.me = null;
    state.rooms.clear();
    for (const key of [...state.order]) closeConv(key);
    state.users.clear();
    clearTimeout(state.retryTimer);
    dropSocket();
    state.loggedIn = false;
    setConn(Conn.IDLE);
    document.body.dataset.phase = "login";
    ui.chatView.hidden = true;
    ui.loginView.hidden = false;
    ui.me.hidden = true;
    ui.logout.hidden = true;
    setLoginBusy(false);
    setFormMode("login");
    ui.loginName.focus();
  }

  // ---------------------------------------------------------------------------------------------
  // Composer

  function placeholderFor(conv) {
    if (!conv) return "Type /join ROOM or pick someone on the left";
    return conv.kind === "room" ? `Message #${conv.name}` : `Message ${conv.name}`;
  }

  function submitComposer() {
    const input = ui.composerInput;
    const text = input.value;
    if (text.trim() === "") return;
    const conv = activeConv();
    if (text.startsWith("/") && !text.startsWith("//")) {
      // Cleared first: a command may switch tabs, and the tab keeps what the box holds.
      input.value = "";
      if (!runCommand(text.slice(1), conv)) input.value = text;
      return;
    }
    if (!conv) { flash("pick a conversation first: join a room or choose someone who is online"); return; }
    const body = text.startsWith("//") ? text.slice(1) : text;
    if (state.conn !== Conn.ONLINE) { errorLine(conv, "not connected: the message was not sent"); return; }
    if (conv.kind === "room") {
      if (!conv.joined) { errorLine(conv, `you are not in #${conv.name}`); return; }
      send(`say|${conv.name}|${body}`);
    } else {
      send(`talk|${conv.name}|${body}`);
    }
    // The server does not echo our own lines (except a talk to ourselves).
    if (!(conv.kind === "direct" && state.me && lower(conv.name) === lower(state.me))) {
      message(conv, { from: state.me, text: body, time: new Date(), own: true });
    }
    conv.sent.push(text);
    if (conv.sent.length > 100) conv.sent.shift();
    conv.recall = -1;
    input.value = "";
    scrollToBottom(conv);
  }

  /** `/join`, `/leave`, `/msg`, `/who`, `/rooms`, `/names`: true when the input is used up. */
  function runCommand(line, conv) {
    const [command, ...rest] = line.trim().split(/\s+/);
    const arg = rest.join(" ");
    const bare = (s) => (s.startsWith("#") ? s.slice(1) : s);
    switch (command) {
      case "join": if (!arg) break; joinRoom(bare(arg)); return true;
      case "leave": {
        const target = arg ? state.convs.get("#" + lower(bare(arg))) : conv;
        if (target && target.kind === "room") { closeTab(target.key); return true; }
        if (arg) { send(`leave|${bare(arg)}`); return true; }
        break;
      }
      case "msg": case "to": {
        const [name, ...words] = rest;
        if (!name) break;
        const problem = nameProblem(name, "name");
        if (problem) { flash(problem); return false; }
        openDirect(name);
        if (words.length) { ui.composerInput.value = words.join(" "); submitComposer(); }
        return true;
      }
      case "who": send("who"); if (window.innerWidth < 760) toggleMenu(); return true;
      case "rooms": send("rooms"); ui.allRoomsBox.open = true; if (window.innerWidth < 760) toggleMenu(); return true;
      case "names": {
        const room = arg ? bare(arg) : conv && conv.kind === "room" ? conv.name : "";
        if (!room) break;
        send(`names|${room}`);
        return true;
      }
      case "help": break;
      default: flash(`unknown command "/${command}": try /join ROOM, /leave, /msg NAME TEXT, /who, /rooms, /names`); return false;
    }
    flash("commands: /join ROOM, /leave [ROOM], /msg NAME [TEXT], /who, /rooms, /names [ROOM]; start a line with // to send a /");
    return false;
  }

  /** Up and Down walk through what was sent in this conversation; Down past the end restores the draft. */
  function recall(direction) {
    const conv = activeConv();
    if (!conv || conv.sent.length === 0) return false;
    const input = ui.composerInput;
    if (conv.recall === -1) {
      if (direction > 0) return false;
      conv.draft = input.value;
      conv.recall = conv.sent.length - 1;
    } else {
      conv.recall += direction;
      if (conv.recall >= conv.sent.length) {
        conv.recall = -1;
        input.value = conv.draft || "";
        return true;
      }
      if (conv.recall < 0) conv.recall = 0;
    }
    input.value = conv.sent[conv.recall];
    const end = input.value.length;
    input.setSelectionRange(end, end);
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // Wiring

  function wire() {
    ui.loginForm.addEventListener("submit", (event) => {
      event.preventDefault();
      startLogin();
    });
    ui.registerToggle.addEventListener("click", () => {
      setFormMode(formMode === "register" ? "login" : "register");
      (ui.loginName.value ? ui.passwordRow.hidden ? ui.loginName : ui.loginPassword : ui.loginName).focus();
    });
    ui.passwordToggle.addEventListener("click", () => {
      const show = ui.passwordRow.hidden;
      showPassword(show);
      (show ? ui.loginPassword : ui.loginName).focus();
    });
    ui.logout.addEventListener("click", endSession);
    ui.retryNow.addEventListener("click", retryNow);
    ui.menuToggle.addEventListener("click", toggleMenu);
    ui.joinForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const room = ui.joinName.value.trim().replace(/^#/, "");
      if (room === "") return;
      joinRoom(room);
      ui.joinName.value = "";
    });
    ui.refreshUsers.addEventListener("click", () => send("who"));
    ui.refreshRooms.addEventListener("click", () => send("rooms"));
    ui.allRoomsBox.addEventListener("toggle", () => { if (ui.allRoomsBox.open) send("rooms"); });
    ui.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      submitComposer();
    });
    ui.composerInput.addEventListener("keydown", (event) => {
      if (event.isComposing) return;
      const input = ui.composerInput;
      if (event.key === "ArrowUp" && !event.altKey && (input.value === "" || input.selectionStart === 0)) {
        if (recall(-1)) event.preventDefault();
      } else if (event.key === "ArrowDown" && activeConv() && activeConv().recall !== -1) {
        if (recall(1)) event.preventDefault();
      }
    });
    document.addEventListener("keydown", (event) => {
      if (state.session && event.altKey && /^[1-9]$/.test(event.key)) {
        const key = state.order[Number(event.key) - 1];
        if (key) { event.preventDefault(); activate(key); }
      } else if (event.key === "Escape" && state.session) {
        closeMenu();
        ui.composerInput.focus();
      }
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) {
        const conv = activeConv();
        if (conv && conv.unread) { conv.unread = 0; renderTab(conv); }
        if (state.conn === Conn.WAITING) retryNow();
      }
    });
    window.addEventListener("online", retryNow);
    try {
      const name = localStorage.getItem("actor-chat.name");
      if (name) ui.loginName.value = name;
    } catch (_) { /* storage off */ }
  }

  function start() {
    bindElements();
    wire();
    renderConn();
    renderUsers();
    renderRooms();
    ui.loginName.focus();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
