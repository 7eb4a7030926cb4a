// The WebSocket: connect, subscribe (resuming where each room left off), send
// frames, and reconnect with backoff.

import { config, els, otherLastId, outbox, subscribed, timeline } from "./state.js";
import { showError } from "./dom.js";
import { goToLogin } from "./api.js";
import { setPendingState, transmit } from "./outbox.js";
import { handle } from "./events.js";

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 10_000;
const PING_EVERY_MS = 25_000;
const SILENCE_LIMIT_MS = 60_000;

let ws = null;
let attempt = 0;
let reconnectTimer = null;
let stopped = false;
let lastFrameAt = Date.now();
let connections = 0;

export function setStatus(state, text) {
  els.status.dataset.state = state;
  els.status.querySelector(".conn-text").textContent = text;
}

export function sendFrame(frame) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(frame));
  return true;
}

function subscribeFrame(room) {
  const frame = { type: "subscribe", room, ref: subscribeRef(room) };
  // The current room always resumes: 0 means "everything", which is right for
  // a room that was empty when the page was rendered.
  const last = room === config.room ? timeline.streamLastId : otherLastId.get(room);
  if (last !== undefined) frame.last_id = last;
  return frame;
}

export function subscribeRef(room) {
  return `sub-${room}`;
}

export function subscribeMissing() {
  for (const room of [config.room, ...config.other_rooms]) {
    if (!subscribed.has(room)) sendFrame(subscribeFrame(room));
  }
}

export function connect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  if (stopped || ws) return;
  setStatus("connecting", attempt ? "Reconnecting…" : "Connecting…");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const sock = new WebSocket(`${scheme}//${location.host}/ws/`);
  ws = sock;
  sock.addEventListener("open", () => {
    if (sock !== ws) return;
    lastFrameAt = Date.now();
    connections += 1;
    subscribed.clear();
    subscribeMissing();
    for (const item of outbox.values()) transmit(item);
  });
  sock.addEventListener("message", (event) => {
    if (sock !== ws) return;
    lastFrameAt = Date.now();
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    for (const frame of Array.isArray(data) ? data : [data]) {
      if (frame && typeof frame.type === "string") handle(frame);
    }
  });
  sock.addEventListener("close", (event) => {
    if (sock !== ws) return;
    dropSocket();
    if (event.code === 4401) {
      stopped = true;
      setStatus("offline", "Signed out");
      goToLogin();
      return;
    }
    if (event.code === 4429) showError("Too many open chat windows; close some and this one reconnects.");
    scheduleReconnect();
  });
}

/** Forget the current socket (closing it if needed) and mark unsent messages as waiting. */
function dropSocket() {
  const sock = ws;
  ws = null;
  subscribed.clear();
  if (sock && sock.readyState <= WebSocket.OPEN) sock.close();
  for (const item of outbox.values()) if (!item.failed) setPendingState(item, "Waiting for connection…");
}

function scheduleReconnect() {
  if (stopped || reconnectTimer) return;
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  attempt += 1;
  setStatus("offline", `Offline, retrying in ${Math.ceil(delay / 1000)} s`);
  reconnectTimer = setTimeout(connect, delay);
}

function connectNow() {
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  connect();
}

/** The hello frame: the connection works, so the next reconnect starts from a short wait. */
export function onHello() {
  attempt = 0;
  setStatus("online", "Connected");
}

/** Whether this is the second or a later connection of the page (a reconnect). */
export function isReconnect() {
  return connections > 1;
}

/** Connect now unless a socket is open or the session ended. */
export function reconnectIfIdle() {
  if (!ws && !stopped) connectNow();
}

/** Ping, and follow the browser's online and offline events. */
export function watchConnection() {
  // A socket can die without a close event (sleep, network change): ping, and
  // give up on one that has been silent for too long.
  setInterval(() => {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - lastFrameAt > SILENCE_LIMIT_MS) {
      dropSocket();
      scheduleReconnect();
      return;
    }
    sendFrame({ type: "ping" });
  }, PING_EVERY_MS);

  window.addEventListener("offline", () => {
    dropSocket();
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    setStatus("offline", "Offline");
  });

  window.addEventListener("online", () => {
    attempt = 0;
    connectNow();
  });
}
