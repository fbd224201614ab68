// The demo page: sign in over REST, then /chat (and /admin for admins) over Socket.IO.
// Plain JS, no build; socket.io.min.js (the pinned socket.io-client) defines `io`.
// User text is only ever set with textContent, never parsed as HTML.
// Type-checked (tsc --checkJs, web/tsconfig.json) against the types generated from the
// server's event models (clients/typescript/, `make client-types`): a payload the
// server would refuse does not compile.
"use strict";

/** @typedef {import("../../../clients/typescript/socket-events").ChatSocket} ChatSocket */
/** @typedef {import("../../../clients/typescript/socket-events").AdminSocket} AdminSocket */
/** @typedef {import("../../../clients/typescript/socket-events").AdminClientToServerEvents} AdminEvents */

(() => {
  /** @type {(id: string) => any} the page's elements, by id */
  const $ = (id) => document.getElementById(id);
  const SUGGESTED_ROOMS = ["general", "random"];
  // connect_error codes that a new token fixes: back to the sign-in form.
  const AUTH_CODES = new Set(["missing_token", "malformed_token", "invalid_token", "token_expired",
                              "token_revoked", "banned"]);

  const state = {
    token: null,      // the current access token, in memory only
    refreshToken: null, // exchanged for a new pair before the access token expires
    user: null,       // {id, name, role}
    chat: /** @type {ChatSocket | null} */ (null),   // the /chat socket
    admin: /** @type {AdminSocket | null} */ (null), // the /admin socket (admins only)
    room: null,       // the current room
    seen: new Set(),  // ids of rendered messages (a re-join's history repeats some)
    members: new Map(), // the current room's users: id -> name (join ack, then presence events)
    lastId: null,     // the current room's latest stream_id on screen: a re-join's `since`
    wasConnected: false,
    kicked: false,    // set by a `kicked` event, until the next connect
    // While re-joining after a reconnect: messages that arrive before the join ack are
    // the ones connection-state recovery replays (the server sends them first).
    rejoin: null,     // {recovered, missed}
    rooms: new Set(SUGGESTED_ROOMS),
    users: new Set(),
  };

  // --- status line ----------------------------------------------------------
  function setStatus(stateName, text) {
    const el = $("status");
    el.dataset.state = stateName;
    el.textContent = text;
  }

  function notice(text, kind = "info", action = null) {
    const el = $("notice");
    el.replaceChildren(text);
    el.dataset.kind = kind;
    if (action) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "linkish";
      button.textContent = action.label;
      button.addEventListener("click", action.run);
      el.append(" ", button);
    }
    el.hidden = false;
  }

  function clearNotice() {
    $("notice").hidden = true;
  }

  function errorText(error) {
    if (!error) return "unknown error";
    return error.code ? `${error.message} (${error.code})` : String(error.message || error);
  }

  // --- sign in / out ----------------------------------------------------------
  async function signIn(username, password) {
    const response = await fetch("/api/auth/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw body.error || { message: `HTTP ${response.status}` };
    return body;
  }

  // A new token pair from the refresh token (each refresh token works once).
  async function refreshTokens() {
    if (!state.refreshToken) return false;
    const response = await fetch("/api/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: state.refreshToken }),
    }).catch(() => null);
    if (!response || !response.ok) return false;
    const session = await response.json();
    state.token = session.access_token;
    state.refreshToken = session.refresh_token;
    return true;
  }

  // The server warns before the token expires: refresh, and hand the live sockets the
  // new token (`refresh` event) so they stay connected.
  async function renewSockets() {
    if (!(await refreshTokens())) {
      showSignIn("Your session has expired: please sign in again (token_expired).");
      return;
    }
    for (const socket of [state.chat, state.admin]) {
      if (socket && socket.connected) socket.emit("refresh", { token: state.token }, () => {});
    }
  }

  function showSignIn(message) {
    closeSockets();
    state.token = null;
    state.refreshToken = null;
    state.user = null;
    $("app").hidden = true;
    $("signin").hidden = false;
    $("whoami").hidden = true;
    $("signout").hidden = true;
    $("signin-error").textContent = message || "";
    setStatus("signed-out", "signed out");
    $("username").focus();
  }

  function showApp() {
    $("signin").hidden = true;
    $("app").hidden = false;
    $("whoami").textContent = `${state.user.name} (${state.user.role})`;
    $("whoami").hidden = false;
    $("signout").hidden = false;
    $("admin").hidden = state.user.role !== "admin";
    renderRoomChips();
  }

  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = /** @type {any} */ (event.currentTarget);
    $("signin-error").textContent = "";
    try {
      const session = await signIn(form.username.value, form.password.value);
      form.password.value = "";
      state.token = session.access_token;
      state.refreshToken = session.refresh_token;
      state.user = session.user;
      showApp();
      connect();
    } catch (error) {
      $("signin-error").textContent = errorText(error);
    }
  });

  document.querySelectorAll("[data-demo-user]").forEach((button) => {
    button.addEventListener("click", () => {
      const name = /** @type {HTMLElement} */ (button).dataset.demoUser;
      $("username").value = name;
      $("password").value = `${name}-password`;
    });
  });

  $("signout").addEventListener("click", () => showSignIn(""));

  // --- sockets ------------------------------------------------------------------
  function closeSockets() {
    for (const socket of [state.admin, state.chat]) {
      if (socket) {
        socket.removeAllListeners();
        socket.io.removeAllListeners();
        socket.disconnect();
      }
    }
    state.chat = state.admin = null;
    state.room = null;
    state.wasConnected = false;
    state.kicked = false;
    state.rejoin = null;
    state.seen.clear();
    $("messages").replaceChildren();
    state.members.clear();
    renderPresence();
    setComposer(false);
    clearNotice();
  }

  function connect() {
    setStatus("connecting", "connecting…");
    // forceNew: one Manager (one connection) per sign-in; /admin shares it.
    const chat = /** @type {ChatSocket} */ (io("/chat", {
      forceNew: true,
      transports: ["websocket"],
      // Called on every (re)connect, so a reconnect sends the current token.
      auth: (cb) => cb({ token: state.token }),
    }));
    state.chat = chat;
    let attempt = 0; // the Manager's current reconnection attempt (0: none)

    chat.on("connect", () => {
      const again = state.wasConnected;
      state.wasConnected = true;
      state.kicked = false;
      clearNotice();
      if (state.room) {
        if (again) state.rejoin = { recovered: chat.recovered, missed: 0 };
        setStatus("connected", "connected · re-joining…");
        join(state.room, { rejoin: again });
      } else {
        setStatus("connected", "connected");
      }
    });

    chat.on("disconnect", (reason) => {
      setComposer(false);
      if (reason === "io client disconnect") return;
      if (chat.active) {
        // The Manager reconnects by itself (transport closed, server restarting...).
        setStatus("reconnecting", "reconnecting…");
      } else {
        // "io server disconnect": the server ended this socket on purpose (a kick).
        if (!state.kicked) {
          setStatus("disconnected", "disconnected");
          notice("The server closed the connection.", "warn",
                 { label: "Reconnect", run: () => chat.connect() });
        }
      }
    });

    chat.on("connect_error", async (/** @type {any} */ err) => {
      const code = err.data && err.data.code;
      if (code === "token_expired" && (await refreshTokens())) {
        chat.connect(); // a refusal is not retried by the client: again, with the new token
      } else if (AUTH_CODES.has(code)) {
        showSignIn(`Please sign in again: ${err.message} (${code}).`);
      } else if (chat.active) {
        // a failed attempt; the Manager waits (backing off) and tries again
        const failed = attempt ? `attempt ${attempt} failed: ` : "";
        setStatus("reconnecting", `reconnecting… (${failed}${code || err.message})`);
      } else {
        // Refused by the server (e.g. shutting_down on a draining worker): a refusal
        // is not retried by socket.io-client, so retry after a pause.
        setStatus("reconnecting", `refused (${code || err.message}), retrying…`);
        setTimeout(() => state.chat === chat && !chat.connected && chat.connect(), 2000);
      }
    });

    // The Manager's events: backoff between attempts (reconnectionDelay doubling up
    // to reconnectionDelayMax, randomized).
    chat.io.on("reconnect_attempt", (n) => {
      attempt = n;
      setStatus("reconnecting", `reconnecting… (attempt ${n})`);
    });
    chat.io.on("reconnect", () => {
      attempt = 0;
    });
    chat.io.on("reconnect_failed", () => {
      setStatus("disconnected", "disconnected");
      notice("Could not reconnect.", "warn", { label: "Retry", run: () => chat.connect() });
    });

    chat.on("message", (message) => {
      if (message.room !== state.room) return;
      const fresh = addMessage(message, state.rejoin ? "missed" : "");
      if (fresh && state.rejoin) state.rejoin.missed += 1;
    });
    chat.on("announcement", (message) => addMessage(message, "announcement"));
    // {room, user: {id, name}, action: "join" | "leave"}: a user's first socket came, or
    // their last one left
    chat.on("presence", (change) => {
      if (!change || change.room !== state.room || !change.user) return;
      if (change.action === "join") state.members.set(change.user.id, change.user.name);
      else state.members.delete(change.user.id);
      renderPresence();
    });
    chat.on("kicked", (payload) => {
      state.kicked = true;
      setStatus("kicked", "kicked");
      setComposer(false);
      notice(`You were kicked: ${(payload && payload.reason) || "by an administrator"}.`, "kicked",
             { label: "Reconnect", run: () => chat.connect() });
    });
    chat.on("shutdown", () => {
      setStatus("reconnecting", "server restarting…");
    });
    chat.on("token_expiring", () => renewSockets());
    chat.on("session_ended", (payload) => {
      // the server disconnects next; an expired token is renewed and the page connects
      // again, a ban or a revoked token needs a new sign-in
      state.kicked = true;
      const code = payload && payload.code;
      if (code === "token_expired") {
        refreshTokens().then((ok) => ok ? chat.connect()
          : showSignIn("Your session has expired: please sign in again (token_expired)."));
      } else {
        showSignIn(`${(payload && payload.message) || "Session ended"} (${code}).`);
      }
    });

    if (state.user.role === "admin") connectAdmin(chat);
  }

  // --- rooms and messages -------------------------------------------------------
  function join(room, { rejoin = false } = {}) {
    const chat = state.chat;
    const previous = state.room;
    if (previous && previous !== room && chat.connected) chat.emit("leave", { room: previous });
    if (previous !== room) {
      state.room = room;
      state.seen.clear();
      state.lastId = null;
      $("messages").replaceChildren();
      state.members.clear();
      renderPresence();
    }
    $("room-title").textContent = `# ${room}`;
    state.rooms.add(room);
    renderRoomChips();
    if (!chat.connected) return; // joined on the next connect
    // a re-join asks for what followed the last message on screen
    const since = rejoin && state.lastId ? state.lastId : undefined;
    chat.emit("join", { room, since }, (ack) => {
      if (state.chat !== chat || state.room !== room) return;
      if (!ack || !ack.ok) {
        notice(`Could not join ${room}: ${errorText(ack && ack.error)}`, "error");
        return;
      }
      const counted = state.rejoin;
      state.rejoin = null;
      // History (when the server keeps it): render what is not on screen yet; after a
      // reconnect those are the messages sent while this page was away.
      const hasHistory = Array.isArray(ack.history);
      $("messages").dataset.history = hasHistory ? "yes" : "no";
      let missed = counted ? counted.missed : 0;
      if (hasHistory) {
        for (const message of ack.history) {
          if (addMessage(message, rejoin ? "missed" : "history") && rejoin) missed += 1;
        }
        const last = ack.history[ack.history.length - 1];
        if (ack.more && last) pageMissed(chat, room, last.stream_id, rejoin ? "missed" : "history");
      }
      if (Array.isArray(ack.presence)) {  // [{id, name, sockets}]: who is in the room now
        state.members = new Map(ack.presence.map((member) => [member.id, member.name]));
        renderPresence();
      }
      setComposer(true);
      if (!rejoin) {
        setStatus("connected", "connected");
      } else if (counted && counted.recovered) {
        setStatus("connected", `connected · recovered, ${missed} missed`);
        reconnectNotice(missed, "recovered");
      } else if (hasHistory) {
        setStatus("connected", `connected · reconnected, ${missed} missed`);
        reconnectNotice(missed, "reconnected");
      } else {
        setStatus("connected", "connected · reconnected");
        notice("Reconnected. This server keeps no history: messages sent while you were away are not shown.",
               "info");
      }
    });
  }

  function reconnectNotice(missed, how) {
    const what = missed === 1 ? "1 message" : `${missed} messages`;
    notice(`${how === "recovered" ? "Recovered" : "Reconnected"}: ${what} missed while away${missed ? " (marked)" : ""}.`,
           "info");
    $("notice").dataset.missed = String(missed);
  }

  // stream ids are "<ms>-<n>", ordered per room
  function later(id, than) {
    if (!than) return true;
    const [a, b] = [id, than].map((x) => x.split("-").map(Number));
    return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
  }

  // More were missed than one join ack carries (HISTORY_ON_JOIN): join again from the
  // last one, a page at a time, while the ack says `more`.
  function pageMissed(chat, room, since, kind) {
    chat.emit("join", { room, since }, (ack) => {
      if (state.chat !== chat || state.room !== room || !ack || !ack.ok) return;
      for (const message of ack.history) addMessage(message, kind);
      const last = ack.history[ack.history.length - 1];
      if (ack.more && last) pageMissed(chat, room, last.stream_id, kind);
    });
  }

  function addMessage(message, kind) {
    if (!message || state.seen.has(message.id)) return false;
    state.seen.add(message.id);
    if (message.stream_id && message.room === state.room && later(message.stream_id, state.lastId)) {
      state.lastId = message.stream_id;
    }
    const item = document.createElement("li");
    item.className = `message ${kind || ""}`.trim();
    item.dataset.id = message.id;
    const meta = document.createElement("div");
    meta.className = "meta";
    const sender = document.createElement("span");
    sender.className = "sender";
    const name = (message.sender && message.sender.name) || "server";
    sender.textContent = name;
    const time = document.createElement("time");
    time.dateTime = new Date(message.ts).toISOString();
    time.textContent = new Date(message.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    meta.append(sender, time);
    if (kind === "missed" || kind === "announcement") {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = kind === "missed" ? "missed" : "announcement to everyone";
      meta.append(tag);
    }
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = message.text;
    item.append(meta, text);
    const list = $("messages");
    list.append(item);
    list.scrollTop = list.scrollHeight;
    if (message.sender && message.sender.id) rememberUser(message.sender.id);
    return true;
  }

  function setComposer(enabled) {
    $("message-input").disabled = !enabled;
    $("send").disabled = !enabled;
  }

  function renderRoomChips() {
    const chips = [...state.rooms].map((room) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.textContent = `# ${room}`;
      chip.setAttribute("aria-pressed", String(room === state.room));
      chip.addEventListener("click", () => join(room));
      return chip;
    });
    $("room-chips").replaceChildren(...chips);
  }

  function renderPresence() {
    const names = [...state.members.values()].sort();
    $("presence").replaceChildren(...names.map((name) => {
      const item = document.createElement("li");
      item.textContent = name;
      return item;
    }));
    $("presence-empty").hidden = names.length > 0;
  }

  function rememberUser(id) {
    if (state.users.has(id)) return;
    state.users.add(id);
    const option = document.createElement("option");
    option.value = id;
    $("known-users").append(option);
  }

  $("room-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("room-input");
    const room = input.value.trim();
    if (!room) return;
    input.value = "";
    join(room);
  });

  $("message-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("message-input");
    const text = input.value.trim();
    if (!text || !state.room || !state.chat) return;
    const chat = state.chat;
    const room = state.room;
    // one id for every attempt: a retry after a lost ack or a refusal is delivered once
    const clientId = crypto.randomUUID ? crypto.randomUUID()
      : `${Date.now().toString(36)}.${Math.random().toString(36).slice(2)}`;
    const attempt = (n) => chat.timeout(5000).emit("message", { room, text, client_id: clientId }, (err, ack) => {
      const transient = err || (ack && !ack.ok && ack.error
        && ["queue_unavailable", "delivery_incomplete"].includes(ack.error.code));
      if (transient && n < 3 && state.chat === chat) {
        setTimeout(() => attempt(n + 1), 1000 * n);
        return;
      }
      if (ack && ack.ok) {
        // The server skips the sender's own socket: the ack carries the message.
        input.value = "";
        if (state.chat === chat) addMessage(ack.message, "mine");
      } else {
        notice(`Not sent: ${err ? "no answer from the server" : errorText(ack && ack.error)}`, "error");
      }
    });
    attempt(1);
  });

  // --- admin panel -------------------------------------------------------------
  function connectAdmin(chat) {
    const admin = /** @type {AdminSocket} */ (chat.io.socket("/admin", {
      auth: (cb) => cb({ token: state.token }),
    }));
    state.admin = admin;
    const badge = $("admin-status");
    const setBadge = (name, text) => {
      badge.dataset.state = name;
      badge.textContent = text;
    };
    admin.on("connect", () => {
      setBadge("connected", "connected");
      refreshAdmin();
    });
    admin.on("disconnect", () => setBadge("disconnected", "disconnected"));
    admin.on("connect_error", (/** @type {any} */ err) => {
      const code = (err.data && err.data.code) || err.message;
      setBadge("refused", `refused: ${code}`);
    });
    admin.on("kicked", (payload) => setBadge("kicked", `kicked: ${payload && payload.reason}`));
    // (the Manager opens it: autoConnect)
  }

  /**
   * @template {keyof AdminEvents} E
   * @param {E} event
   * @param {Parameters<AdminEvents[E]>[0]} payload
   */
  function adminCall(event, payload) {
    return new Promise((resolve) => {
      if (!state.admin || !state.admin.connected) {
        resolve({ ok: false, error: { code: "not_connected", message: "the admin socket is not connected" } });
        return;
      }
      // (event and payload are checked at each call, against AdminEvents)
      /** @type {any} */ (state.admin).timeout(10000).emit(event, payload, (err, ack) => {
        resolve(err ? { ok: false, error: { code: "timeout", message: "no answer" } } : ack);
      });
    });
  }

  function adminResult(text) {
    $("admin-result").textContent = text;
  }

  async function refreshAdmin() {
    const [stats, rooms] = await Promise.all([adminCall("stats", {}), adminCall("rooms", {})]);
    if (stats.ok) {
      const rows = [
        ["chat connections", stats.connections["/chat"] || 0],
        ["admin connections", stats.connections["/admin"] || 0],
        ["rooms", stats.rooms],
        ["workers", stats.workers.length],
      ];
      if (stats.errors.length) rows.push(["partial", `${stats.errors.length} worker(s) did not answer`]);
      $("stats").replaceChildren(...rows.flatMap(([label, value]) => {
        const term = document.createElement("dt");
        term.textContent = label;
        const detail = document.createElement("dd");
        detail.textContent = String(value);
        return [term, detail];
      }));
    } else {
      adminResult(`stats: ${errorText(stats.error)}`);
    }
    if (rooms.ok) {
      const items = rooms.rooms.map(({ room, members }) => {
        const item = document.createElement("li");
        item.textContent = `${room.replace(/^room:/, "# ")} — ${members} connected`;
        return item;
      });
      if (!items.length) {
        const item = document.createElement("li");
        item.className = "muted";
        item.textContent = "no rooms joined";
        items.push(item);
      }
      $("admin-rooms").replaceChildren(...items);
    }
  }

  $("stats-refresh").addEventListener("click", refreshAdmin);

  $("kick-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const payload = { user_id: $("kick-user").value.trim() };
    const reason = $("kick-reason").value.trim();
    if (reason) payload.reason = reason;
    const ack = await adminCall("kick", payload);
    adminResult(ack.ok ? `kicked ${ack.user_id}: ${ack.sockets} socket(s)` : `kick: ${errorText(ack.error)}`);
    if (ack.ok) refreshAdmin();
  });

  $("broadcast-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("broadcast-text");
    const ack = await adminCall("broadcast", { text: input.value });
    if (ack.ok) {
      input.value = "";
      adminResult("announcement sent");
    } else {
      adminResult(`broadcast: ${errorText(ack.error)}`);
    }
  });
})();
