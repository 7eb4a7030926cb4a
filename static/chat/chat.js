// The room page client: one WebSocket per tab, live messages, resume after a
// reconnect, idempotent sends, history paging, edit and delete, reactions,
// threads, pins, saved messages and the threads you follow (one side panel, or a
// full-screen overlay on small screens).
//
// User text only ever reaches the DOM through textContent, never innerHTML.

const config = JSON.parse(document.getElementById("chat-config").textContent);

const ME = config.user.id;
const MODERATOR_ROLES = new Set(["owner", "admin"]);
const canModerate = MODERATOR_ROLES.has(config.my_role);
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 10_000;
const PING_EVERY_MS = 25_000;
const SILENCE_LIMIT_MS = 60_000;

const $ = (id) => document.getElementById(id);
const els = {
  scroller: $("scroller"),
  list: $("messages"),
  pending: $("pending"),
  older: $("load-older"),
  historyStart: $("history-start"),
  composer: $("composer"),
  input: $("composer-input"),
  error: $("composer-error"),
  status: $("conn-status"),
  nav: $("room-nav"),
  room: $("room"),
  panel: $("thread-panel"),
  panelScroller: $("thread-scroller"),
  panelRoot: $("thread-root"),
  panelList: $("thread-replies"),
  panelPending: $("thread-pending"),
  panelOlder: $("thread-older"),
  panelNote: $("thread-loading"),
  panelClose: $("thread-close"),
  panelFollow: $("thread-follow"),
  panelComposer: $("thread-composer"),
  panelInput: $("thread-input"),
  panelError: $("thread-error"),
  panelTitle: $("thread-title"),
  panelGone: $("thread-gone"),
  panelWhere: $("thread-where"),
  listScroller: $("list-scroller"),
  listNote: $("list-note"),
  sideList: $("side-list"),
  listMore: $("list-more"),
  listError: $("list-error"),
  pinsOpen: $("pins-open"),
  pinCount: $("pin-count"),
  savedOpen: $("saved-open"),
  threadsOpen: $("threads-open"),
  threadsUnread: $("threads-unread"),
  typing: $("typing"),
  online: $("online-count"),
  notifyEnable: $("notify-enable"),
  roomsOpen: $("rooms-open"),
  roomsDot: $("rooms-dot"),
  dmNav: $("dm-nav"),
  attach: $("composer-attach"),
  fileInput: $("composer-file"),
};

// --- state ---------------------------------------------------------------

/** Confirmed messages of the current room: id -> <li>. */
const rendered = new Map();
/** Newest id received through the room's ordered stream (page render or message.new).
 *  Acks do not move it: an ack can overtake older messages still in flight. */
let streamLastId = 0;
/** Newest message id seen in each other room, to resume their badges. */
const otherLastId = new Map();
/** Each room's event seq, as far as its ordered stream has come (see noteSeq). */
const roomSeq = new Map();
/** Unacknowledged sends, in send order: client_id -> {clientId, body, threadRoot, el, failed}. */
const outbox = new Map();
/** Cursor for the next older page: undefined = not asked yet, null = no older messages. */
let nextCursor = config.has_older ? undefined : null;
const subscribed = new Set();
let lastReadSent = 0;
let readTimer = null;
let unseenWhileHidden = 0;
const baseTitle = document.title;

/** Where messages are shown: the room's main timeline, and the open thread's replies. */
const mainView = { list: els.list, rendered, inThread: false };
const threadView = { list: els.panelList, rendered: new Map(), inThread: true };
/** The open thread: root id (null when closed), its root's element, paging, follow and read state. */
const thread = {
  root: null,
  rootLi: null,
  nextCursor: null,
  following: false,
  readSent: 0,
  readTimer: null,
  opener: null,
  /** Bumped whenever the panel is emptied, so answers for an earlier opening are dropped. */
  generation: 0,
  /** Unsent text per root, kept while another thread is open. */
  drafts: new Map(),
};

// --- small helpers -----------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A message body: its own paragraph direction, so right-to-left text (or an override) cannot spill over.
 *  ``msg`` is a message (its ``html`` shown when it has one) or plain text (a message still being sent). */
function bodyEl(msg) {
  const node = el("div", "msg-body");
  node.dir = "auto";
  fillBody(node, msg);
  return node;
}

function fillBody(node, msg) {
  const rich = typeof msg !== "string" && Boolean(msg.html);
  node.classList.toggle("rich", rich);
  if (rich) node.replaceChildren(...richNodes(msg.html));
  else node.textContent = typeof msg === "string" ? msg : msg.body;
}

// The tags chat.rendering lets through, copied node by node from the server's sanitized
// HTML: nothing else reaches the page, whatever the string holds.
const RICH_TAGS = new Set(["P", "BR", "EM", "STRONG", "S", "CODE", "PRE", "BLOCKQUOTE", "UL", "OL", "LI", "A", "SPAN", "HR"]);

function richNodes(html) {
  const doc = new DOMParser().parseFromString(html, "text/html");
  return [...doc.body.childNodes].map(richCopy);
}

function richCopy(node) {
  if (node.nodeType !== Node.ELEMENT_NODE || !RICH_TAGS.has(node.tagName)) return document.createTextNode(node.textContent);
  if (node.tagName === "SPAN") return richSpan(node);
  const out = document.createElement(node.tagName.toLowerCase());
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (/^(https?:|mailto:)/i.test(href) || FILE_HREF.test(href)) {
      out.href = href;
      out.target = "_blank";
      out.rel = "noopener noreferrer nofollow ugc";
    }
    if (FILE_HREF.test(href)) {
      for (const child of node.childNodes) out.append(richCopy(child));
      fileLink(out);
      return out;
    }
  } else if (node.tagName === "OL" && /^\d{1,9}$/.test(node.getAttribute("start") || "")) {
    out.setAttribute("start", node.getAttribute("start"));
  }
  for (const child of node.childNodes) out.append(richCopy(child));
  return out;
}

/** ``@name`` (yours highlighted) and ``#room`` (a link to that room of this project). */
function richSpan(node) {
  const text = node.textContent;
  if (node.classList.contains("room-ref") && /^[a-z0-9][a-z0-9_-]*$/.test(node.dataset.room || "")) {
    const link = el("a", "room-ref", text);
    link.href = config.room_url.replace("__room__", node.dataset.room);
    return link;
  }
  if (node.classList.contains("mention")) {
    const mention = el("span", "mention", text);
    if (node.dataset.username === config.user.username) mention.classList.add("mention-me");
    return mention;
  }
  return document.createTextNode(text);
}

/** The server rendered the page's messages: give their mentions, room references and files the same treatment. */
function upgradeRendered(root) {
  for (const node of root.querySelectorAll(".msg-body span.mention, .msg-body span.room-ref")) node.replaceWith(richSpan(node));
  for (const link of root.querySelectorAll(".msg-body a.file")) fileLink(link);
}

// A file shared in a room (chat.services.uploads): /files/<id>/<name>.
const FILE_HREF = /^\/files\/(\d+)\//;
const IMAGE_NAME = /\.(png|jpe?g|gif|webp)$/i;
const THUMB_RETRIES = 4;

/** A link to a shared file: marked as one, and an image shows its thumbnail (made shortly after the upload). */
function fileLink(link) {
  link.className = "file";
  const id = FILE_HREF.exec(link.getAttribute("href") || "")?.[1];
  if (!id || !IMAGE_NAME.test(decodeURIComponent(link.getAttribute("href")))) return;
  const img = document.createElement("img");
  img.className = "file-thumb";
  img.alt = link.textContent;
  img.loading = "lazy";
  let tries = 0;
  img.addEventListener("error", () => {
    tries += 1;
    if (tries > THUMB_RETRIES) img.remove();
    else setTimeout(() => (img.src = `/files/${id}/thumb?try=${tries}`), 1500 * tries);
  });
  img.src = `/files/${id}/thumb`;
  link.prepend(img);
}

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // Plain-http origins other than localhost have no randomUUID.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return "";
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function localizeTime(node) {
  const d = new Date(node.getAttribute("datetime"));
  if (Number.isNaN(d.getTime())) return;
  const today = d.toDateString() === new Date().toDateString();
  node.textContent = today ? timeFmt.format(d) : fullFmt.format(d);
  node.title = fullFmt.format(d);
}

function showError(text, { inThread = false, inList = false } = {}) {
  const target = inList ? els.listError : inThread ? els.panelError : els.error;
  target.textContent = text;
  target.hidden = !text;
}

/** Errors about something in the side panel are shown there, where the person is looking. */
function showErrorFor(node, text) {
  const inPanel = Boolean(node && els.panel.contains(node));
  showError(text, { inThread: inPanel, inList: inPanel && els.listScroller.contains(node) });
}

function nearBottom() {
  const s = els.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
}

function scrollToBottom() {
  els.scroller.scrollTop = els.scroller.scrollHeight;
}

// --- HTTP API ----------------------------------------------------------

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRFToken"] = cookie("csrftoken");
  const res = await fetch(config.api + path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  if (res.status !== 204) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (res.status === 401) {
    goToLogin();
  }
  if (!res.ok) {
    throw new Error((data && (data.detail || data.message)) || `Request failed (${res.status}).`);
  }
  return data;
}

function goToLogin() {
  const next = encodeURIComponent(location.pathname);
  location.assign(`${config.login_url}?next=${next}`);
}

// --- rendering ---------------------------------------------------------

function actionButton(action, label, className = "btn-link") {
  const button = el("button", className, label);
  button.type = "button";
  button.dataset.action = action;
  return button;
}

/** Save is for every reader; Pin, Edit and Delete for the author and project admins (as the server allows). */
function actionButtons({ reply, manage }) {
  const box = el("div", "msg-actions");
  if (reply) box.append(actionButton("reply", "Reply"));
  box.append(actionButton("save", "Save"));
  if (manage) {
    box.append(actionButton("pin", "Pin"), actionButton("edit", "Edit"), actionButton("delete", "Delete", "btn-link danger"));
  }
  return box;
}

/** A message element; the same markup as templates/chat/_message.html.
 *  In the thread panel (``inThread``) there is no Reply action and no summary line: the panel is the thread. */
function renderMessage(msg, { inThread = false } = {}) {
  const li = el("li", "msg");
  const mine = msg.author.id === ME;
  if (mine) li.classList.add("mine");
  li.dataset.id = String(msg.id);
  li.dataset.seq = String(msg.seq);
  li.dataset.author = String(msg.author.id);

  const meta = el("div", "msg-meta");
  meta.append(el("span", "msg-author", msg.author.display_name || msg.author.username), " ");
  const time = el("time", "msg-time");
  time.setAttribute("datetime", msg.created_at);
  localizeTime(time);
  meta.append(time);
  li.append(meta);

  const summary = !inThread && msg.thread && msg.thread.reply_count > 0 ? threadSummary(msg.thread) : null;
  if (msg.deleted) {
    li.classList.add("deleted");
    li.append(el("div", "msg-body tombstone", "message deleted"));
    if (summary) li.append(summary);
  } else {
    if (msg.edited_at) meta.append(" ", el("span", "msg-edited", "(edited)"));
    li.dataset.body = msg.body;
    li.append(bodyEl(msg));
    li.append(reactionBar(msg.reactions));
    if (summary) li.append(summary);
    li.append(actionButtons({ reply: !inThread, manage: mine || canModerate }));
    markPinSaved(li);
  }
  return li;
}

/** Put ``li`` into ``list`` so ids stay increasing. New messages are usually last. */
function insertInOrder(li, id, list) {
  for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
    if (Number(node.dataset.id) < id) {
      node.after(li);
      return;
    }
  }
  list.prepend(li);
}

/** Add or refresh a confirmed message in ``view``. Returns true when it was not shown before. */
function upsert(view, msg, { provisional = false } = {}) {
  const existing = view.rendered.get(msg.id);
  if (existing && !existing.dataset.provisional) return false;
  const li = renderMessage(msg, { inThread: view.inThread });
  if (provisional) li.dataset.provisional = "1";
  if (existing) existing.replaceWith(li);
  else insertInOrder(li, msg.id, view.list);
  view.rendered.set(msg.id, li);
  return !existing;
}

/** Every element showing message ``id``: a thread's root is in the main list and at the top of its panel. */
function copiesOf(id) {
  const found = [];
  for (const li of [rendered.get(id), threadView.rendered.get(id), thread.root === id ? thread.rootLi : null]) {
    if (li) found.push(li);
  }
  return found;
}

function applyEdit(msg) {
  for (const li of copiesOf(msg.id)) {
    if (li.classList.contains("deleted")) continue;
    fillBody(li.querySelector(".msg-body"), msg);
    li.dataset.body = msg.body;
    if (!li.querySelector(".msg-edited")) {
      li.querySelector(".msg-meta").append(" ", el("span", "msg-edited", "(edited)"));
    }
  }
  if (msg.reactions) applyReactions(msg.id, msg.reactions);
  // An edit event's summary has no version: it only fills in a root no thread.updated has reached yet.
  if (msg.thread_root === null && msg.thread !== undefined && !threadVersion.has(msg.id)) applySummary(msg.id, msg.thread);
}

function applyDelete(id) {
  for (const li of copiesOf(id)) {
    li.classList.add("deleted");
    li.querySelector(".msg-edited")?.remove();
    li.querySelector(".msg-actions")?.remove();
    li.querySelector(".msg-editor")?.remove();
    li.querySelector(".msg-reactions")?.remove();
    li.querySelector(".reaction-picker")?.remove();
    const body = li.querySelector(".msg-body");
    body.hidden = false;
    body.className = "msg-body tombstone";
    body.textContent = "message deleted";
    li.classList.remove("pinned");
    li.querySelector(".msg-pin")?.remove();
  }
  if (thread.root === id) rootGone();
  forgetDeleted(id);
}

// --- reactions -------------------------------------------------------------

const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀", "✅", "🚀"];
/** Newest summary version applied per message id (reaction events may arrive out of order). */
const reactionVersion = new Map();

function reactionChip(r) {
  const users = r.user_ids || [];
  const chip = el("button", "reaction");
  chip.type = "button";
  chip.dataset.emoji = r.emoji;
  chip.dataset.users = users.join(",");
  const names = (r.users || []).map((u) => u.display_name || u.username);
  chip.title = names.join(", ") + (r.count > names.length ? ` and ${r.count} in all` : "");
  chip.append(r.emoji, " ", el("span", "reaction-count", String(r.count)));
  markMine(chip);
  return chip;
}

function markMine(chip) {
  const mine = chip.dataset.users.split(",").includes(String(ME));
  chip.classList.toggle("mine", mine);
  chip.setAttribute("aria-pressed", mine ? "true" : "false");
}

function addButton() {
  const add = el("button", "reaction-add", "+");
  add.type = "button";
  add.dataset.action = "react";
  add.setAttribute("aria-label", "Add a reaction");
  add.title = "Add a reaction";
  return add;
}

/** The reaction bar under a message; the same markup as templates/chat/_reactions.html. */
function reactionBar(reactions) {
  const bar = el("div", "msg-reactions");
  for (const r of reactions || []) bar.append(reactionChip(r));
  bar.append(addButton());
  return bar;
}

function applyReactions(messageId, reactions, version) {
  if (version !== undefined) {
    if (version < (reactionVersion.get(messageId) || 0)) return;
    reactionVersion.set(messageId, version);
  }
  for (const li of copiesOf(messageId)) {
    if (li.classList.contains("deleted")) continue;
    const bar = li.querySelector(".msg-reactions");
    const fresh = reactionBar(reactions);
    if (bar) bar.replaceWith(fresh);
    else li.querySelector(".msg-body").after(fresh);
  }
}

async function toggleReaction(li, emoji, on) {
  const id = Number(li.dataset.id);
  try {
    const path = `messages/${id}/reactions`;
    const result = on
      ? await api("POST", path, { emoji })
      : await api("DELETE", `${path}/${encodeURIComponent(emoji)}`);
    applyReactions(id, result.reactions);
  } catch (error) {
    showErrorFor(li, error.message);
  }
}

function openPicker(li, button) {
  li.querySelector(".reaction-picker")?.remove();
  const picker = el("div", "reaction-picker");
  picker.setAttribute("role", "menu");
  for (const emoji of QUICK_REACTIONS) {
    const choice = el("button", "reaction-choice", emoji);
    choice.type = "button";
    choice.setAttribute("role", "menuitem");
    choice.addEventListener("click", () => {
      picker.remove();
      toggleReaction(li, emoji, true);
    });
    picker.append(choice);
  }
  picker.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      picker.remove();
      button.focus();
    }
  });
  button.after(picker);
  picker.querySelector("button").focus();
}

// --- thread summaries -----------------------------------------------------

/** Newest thread summary version applied per root id (thread.updated events may arrive out of order). */
const threadVersion = new Map();

function personName(p) {
  return p.display_name || p.username;
}

/** The first character (a whole code point, as the template's ``first`` filter takes it), upper-cased. */
function initial(name) {
  return ([...name][0] || "?").toUpperCase();
}

/** A root's "3 replies · Last reply 14:02" line; the same markup as templates/chat/_thread_summary.html. */
function threadSummary(summary) {
  const button = el("button", "thread-summary");
  button.type = "button";
  button.dataset.action = "thread";
  const participants = summary.participants || [];
  button.title = `Replies from ${participants.map(personName).join(", ")}`;
  const people = el("span", "thread-people");
  people.setAttribute("aria-hidden", "true");
  for (const p of participants.slice(0, 3)) people.append(el("span", "avatar thread-avatar", initial(personName(p))));
  const n = summary.reply_count;
  const time = el("time", "thread-time");
  time.setAttribute("datetime", summary.last_reply_at || "");
  localizeTime(time);
  const last = el("span", "thread-last", "Last reply ");
  last.append(time);
  button.append(people, el("span", "thread-count", `${n} ${n === 1 ? "reply" : "replies"}`), last);
  return button;
}

/** Show ``summary`` (or none) under root ``rootId`` in the main list; ``version`` orders thread.updated events. */
function applySummary(rootId, summary, version) {
  if (version !== undefined) {
    if (version < (threadVersion.get(rootId) || 0)) return;
    threadVersion.set(rootId, version);
  }
  const li = rendered.get(rootId);
  if (!li) return;
  const old = li.querySelector(":scope > .thread-summary");
  if (!summary || !summary.reply_count) {
    old?.remove();
    return;
  }
  const fresh = threadSummary(summary);
  if (old) old.replaceWith(fresh);
  else (li.querySelector(":scope > .msg-reactions") || li.querySelector(":scope > .msg-body")).after(fresh);
}

// --- pins and saved messages ----------------------------------------------

/** The room's pins: message id -> {message, pinned_by, pinned_at}. */
const pins = new Map();
/** Your saved messages known here (the first page, live changes, pages loaded since): id -> {message, saved_at}. */
const saved = new Map();
/** Load state of each: whether an answer arrived, whether a request is in flight, and the saved list's next page. */
const lists = { pinsLoaded: false, pinsLoading: false, savedLoaded: false, savedLoading: false, savedCursor: null };
/** The threads you follow in this project, in the server's order (newest reply first): {message: root, unread,
 *  last_read_id} each; by root id; load state; the pending refetch; and read markers moved here since. */
const followed = {
  entries: [],
  byRoot: new Map(),
  loaded: false,
  loading: false,
  again: false,
  timer: null,
  fetchedAt: 0,
  readUpTo: new Map(),
};
/** A refetch waits a moment (the server writes follows just after it announces a reply) and comes at most this often. */
const FOLLOWED_DELAY_MS = 1000;
const FOLLOWED_INTERVAL_MS = 4000;
/** What the side panel lists (null while it is closed or shows a thread), and the button that opened it. */
const list = { mode: null, opener: null };
/** The panel's items: message id -> {entry, li}; an item is rebuilt when its entry object changes. */
const listItems = new Map();
const PANEL_TITLES = { thread: "Thread", pins: "Pinned messages", saved: "Saved messages", threads: "Threads" };
const roomWhere = els.panelWhere.textContent;

/** Live changes heard while a list request is in flight, replayed over its answer, which may predate them. */
function changeLog() {
  const open = new Set();
  return {
    start() {
      const log = [];
      open.add(log);
      return log;
    },
    stop(log) {
      open.delete(log);
    },
    record(change) {
      for (const log of open) log.push(change);
    },
  };
}
const pinLog = changeLog();
const savedLog = changeLog();

function newestFirst(key) {
  return (a, b) => Date.parse(b[key]) - Date.parse(a[key]) || b.message.id - a.message.id;
}

/** A drawn pushpin: an emoji depends on the reader's fonts. */
function pinIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("width", "12");
  svg.setAttribute("height", "12");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "msg-pin-icon");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", "M10.2 1.3l4.5 4.5-1.4.6-2.6 2.6.4 3.2-1.1 1.1-3.1-3.1-4.2 4.2-.7-.7 4.2-4.2-3.1-3.1 1.1-1.1 3.2.4 2.6-2.6z");
  path.setAttribute("fill", "currentColor");
  svg.append(path);
  return svg;
}

/** The pin marker and the Pin/Save labels of one message element, from the current state. */
function markPinSaved(li) {
  const id = Number(li.dataset.id);
  const pin = pins.get(id);
  li.classList.toggle("pinned", Boolean(pin) && !li.classList.contains("deleted"));
  const meta = li.querySelector(":scope > .msg-meta");
  let mark = meta?.querySelector(".msg-pin");
  if (pin && meta && !li.classList.contains("deleted")) {
    if (!mark) {
      mark = el("span", "msg-pin");
      mark.append(pinIcon(), "Pinned");
      meta.append(mark);
    }
    mark.title = pin.pinned_by ? `Pinned by ${personName(pin.pinned_by)}` : "Pinned";
  } else mark?.remove();
  const pinButton = li.querySelector(":scope > .msg-actions [data-action=pin]");
  if (pinButton) pinButton.textContent = pin ? "Unpin" : "Pin";
  const saveButton = li.querySelector(":scope > .msg-actions [data-action=save]");
  if (saveButton) saveButton.textContent = saved.has(id) ? "Unsave" : "Save";
}

function markAll() {
  for (const li of [...rendered.values(), ...threadView.rendered.values(), thread.rootLi]) if (li) markPinSaved(li);
}

function showPinCount() {
  els.pinCount.hidden = !lists.pinsLoaded;
  els.pinCount.textContent = ` (${pins.size})`;
  els.pinsOpen.title = lists.pinsLoaded ? `${pins.size} pinned in this room` : "Pinned messages";
}

/** ``change`` is {pin} (pinned) or {id} (unpinned). */
function pinChange(change) {
  if (change.pin) pins.set(change.pin.message.id, change.pin);
  else pins.delete(change.id);
}

function applyPinChange(change) {
  pinChange(change);
  pinLog.record(change);
  for (const li of copiesOf(change.pin ? change.pin.message.id : change.id)) markPinSaved(li);
  showPinCount();
  if (list.mode === "pins") renderList();
}

/** ``change`` is {entry} (saved) or {id} (unsaved). */
function savedChange(change) {
  if (change.entry) saved.set(change.entry.message.id, change.entry);
  else saved.delete(change.id);
}

function applySavedChange(change) {
  savedChange(change);
  savedLog.record(change);
  for (const li of copiesOf(change.entry ? change.entry.message.id : change.id)) markPinSaved(li);
  if (list.mode === "saved") renderList();
}

/** The room's pins, all of them (a room has at most PINS_MAX); on open and after each reconnect. */
async function loadPins() {
  const log = pinLog.start();
  lists.pinsLoading = true;
  if (list.mode === "pins") renderList();
  try {
    const data = await api("GET", `rooms/${config.room}/pins`);
    pins.clear();
    for (const pin of data.items) pins.set(pin.message.id, pin);
    for (const change of log) pinChange(change);
    lists.pinsLoaded = true;
    markAll();
    showPinCount();
  } catch (error) {
    showError(`Could not load the pinned messages: ${error.message}`, { inList: list.mode === "pins" });
  } finally {
    pinLog.stop(log);
    lists.pinsLoading = false;
    if (list.mode === "pins") renderList();
  }
}

/** The first page of your saved messages, replacing what was known; on open and after each reconnect.
 *  A save beyond it shows "Save", and saving again is harmless (the server keeps one). */
async function loadSaved() {
  const log = savedLog.start();
  lists.savedLoading = true;
  if (list.mode === "saved") renderList();
  try {
    const page = await api("GET", "me/saved");
    saved.clear();
    for (const entry of page.items) saved.set(entry.message.id, entry);
    for (const change of log) savedChange(change);
    lists.savedCursor = page.next_cursor;
    lists.savedLoaded = true;
    markAll();
  } catch (error) {
    showError(`Could not load your saved messages: ${error.message}`, { inList: list.mode === "saved" });
  } finally {
    savedLog.stop(log);
    lists.savedLoading = false;
    if (list.mode === "saved") renderList();
  }
}

async function loadMoreSaved() {
  const cursor = lists.savedCursor;
  if (!cursor) return;
  const log = savedLog.start();
  els.listMore.disabled = true;
  try {
    const page = await api("GET", `me/saved?cursor=${encodeURIComponent(cursor)}`);
    if (lists.savedCursor !== cursor) return; // a reload started the list again meanwhile
    for (const entry of page.items) if (!saved.has(entry.message.id)) saved.set(entry.message.id, entry);
    for (const change of log) savedChange(change);
    lists.savedCursor = page.next_cursor;
    markAll();
  } catch (error) {
    showError(`Could not load more saved messages: ${error.message}`, { inList: true });
  } finally {
    savedLog.stop(log);
    els.listMore.disabled = false;
    if (list.mode === "saved") renderList();
  }
}

async function setPinned(id, on, button) {
  button.disabled = true;
  try {
    if (on) applyPinChange({ pin: await api("PUT", `messages/${id}/pin`) });
    else {
      await api("DELETE", `messages/${id}/pin`);
      applyPinChange({ id });
    }
  } catch (error) {
    showErrorFor(button, error.message);
  } finally {
    button.disabled = false;
  }
}

async function setSaved(id, on, button) {
  button.disabled = true;
  try {
    if (on) applySavedChange({ entry: await api("PUT", `messages/${id}/saved`) });
    else {
      await api("DELETE", `messages/${id}/saved`);
      applySavedChange({ id });
    }
  } catch (error) {
    showErrorFor(button, error.message);
  } finally {
    button.disabled = false;
  }
}

/** An edit reaches the copies kept in the lists too. */
function updateListedMessage(msg) {
  const pin = pins.get(msg.id);
  if (pin) pins.set(msg.id, { ...pin, message: msg });
  const entry = saved.get(msg.id);
  if (entry) saved.set(msg.id, { ...entry, message: msg });
  if ((pin && list.mode === "pins") || (entry && list.mode === "saved")) renderList();
  const index = followed.entries.findIndex((e) => e.message.id === msg.id);
  if (index >= 0) {
    // An edit event may lack the summary: keep the one the list has.
    const old = followed.entries[index];
    const fresh = { ...old, message: { ...msg, thread: msg.thread ?? old.message.thread } };
    setFollowed(followed.entries.map((e) => (e === old ? fresh : e)));
  }
}

/** A deleted message leaves every list without an unpin or unsave event (docs/PROTOCOL.md). */
function forgetDeleted(id) {
  if (pins.has(id)) applyPinChange({ id });
  if (saved.has(id)) applySavedChange({ id });
  if (followed.byRoot.has(id)) setFollowed(followed.entries.filter((e) => e.message.id !== id));
}

function timeEl(className, iso) {
  const time = el("time", className);
  time.setAttribute("datetime", iso);
  localizeTime(time);
  return time;
}

/** Where a saved message is: this room, a room of the sidebar (linked), or a room of another project. */
function whereParts(roomId) {
  if (roomId === config.room) return ["In this room"];
  const link = els.nav?.querySelector(`a[data-room-id="${Number(roomId)}"]`);
  if (!link) return ["In a room of another project"];
  const sigil = link.classList.contains("dm-link") ? "@" : "#";
  const to = el("a", "side-room", sigil + (link.querySelector(".room-name")?.textContent.trim() || "room"));
  to.href = link.getAttribute("href");
  return ["In ", to];
}

/** One item of the pinned or saved list: the message, who pinned it or where it is, and its actions. */
function renderListItem(entry, mode) {
  const msg = entry.message;
  const li = el("li", "msg side-item");
  li.dataset.id = String(msg.id);
  if (msg.author.id === ME) li.classList.add("mine");
  const meta = el("div", "msg-meta");
  meta.append(el("span", "msg-author", personName(msg.author)), timeEl("msg-time", msg.created_at));
  if (msg.edited_at) meta.append(el("span", "msg-edited", "(edited)"));
  const note = el("p", "side-note muted");
  if (mode === "pins") {
    const by = entry.pinned_by ? `Pinned by ${personName(entry.pinned_by)} · ` : "Pinned · ";
    note.append(by, timeEl("side-time", entry.pinned_at));
  } else {
    note.append(...whereParts(msg.room), " · Saved ", timeEl("side-time", entry.saved_at));
  }
  const actions = el("div", "side-actions");
  if (msg.room === config.room) actions.append(actionButton("jump", msg.thread_root ? "Open thread" : "Jump"));
  if (mode === "pins" && (msg.author.id === ME || canModerate)) actions.append(actionButton("unpin", "Unpin"));
  if (mode === "saved") actions.append(actionButton("unsave", "Unsave"));
  const status = el("p", "side-status muted");
  status.setAttribute("role", "status");
  li.append(meta, bodyEl(msg), note, actions, status);
  return li;
}

/** Show the open list's items, newest first, moving only the elements that changed (focus stays put). */
function renderList() {
  const mode = list.mode;
  if (!mode) return;
  let entries = followed.entries; // in the server's order: newest reply first
  if (mode === "pins") entries = [...pins.values()].sort(newestFirst("pinned_at"));
  if (mode === "saved") entries = [...saved.values()].sort(newestFirst("saved_at"));
  const wanted = new Set(entries.map((entry) => entry.message.id));
  for (const [id, item] of listItems) {
    if (!wanted.has(id)) {
      item.li.remove();
      listItems.delete(id);
    }
  }
  let next = els.sideList.firstElementChild;
  for (const entry of entries) {
    const id = entry.message.id;
    let item = listItems.get(id);
    if (!item || item.entry !== entry) {
      const li = mode === "threads" ? renderThreadItem(entry) : renderListItem(entry, mode);
      if (item) {
        if (next === item.li) next = li;
        item.li.replaceWith(li);
      }
      item = { entry, li };
      listItems.set(id, item);
    }
    if (item.li === next) next = next.nextElementSibling;
    else els.sideList.insertBefore(item.li, next);
  }
  const loaded = { pins: lists.pinsLoaded, saved: lists.savedLoaded, threads: followed.loaded }[mode];
  const loading = { pins: lists.pinsLoading, saved: lists.savedLoading, threads: followed.loading }[mode];
  const empty = {
    pins: "Nothing is pinned in this room yet.",
    saved: "You have not saved any messages yet.",
    threads: "You follow no threads in this project yet: start one or reply in one.",
  };
  let note = "";
  if (!entries.length) {
    if (loading) note = "Loading…";
    else if (!loaded) note = "Not loaded.";
    else note = empty[mode];
  }
  els.listNote.textContent = note;
  els.listScroller.setAttribute("aria-busy", loading ? "true" : "false");
  els.listMore.hidden = mode !== "saved" || !lists.savedCursor;
}

let jumped = null;

/** Scroll to a listed message and flash it; a reply opens its thread instead. */
function jumpTo(id, item) {
  const entry = (list.mode === "pins" ? pins : saved).get(id);
  if (!entry) return;
  if (entry.message.thread_root) {
    openThread(entry.message.thread_root, null);
    return;
  }
  const li = rendered.get(id);
  if (!li) {
    item.querySelector(".side-status").textContent = "Not loaded: use “Load older messages” in the room first.";
    return;
  }
  // On a phone the list covers the room: close it to show the message.
  if (narrow.matches) closeList({ restoreFocus: false });
  li.scrollIntoView({ block: "center" });
  if (jumped) clearTimeout(jumped.timer);
  jumped?.li.classList.remove("jumped");
  li.classList.add("jumped");
  jumped = { li, timer: setTimeout(() => li.classList.remove("jumped"), 2000) };
  if (els.panel.hidden) {
    li.tabIndex = -1;
    li.focus({ preventScroll: true });
  }
}

/** Name the shared panel for what it shows; the header buttons say which list is open. */
function setPanelFrame(mode) {
  els.panel.dataset.mode = mode === "thread" ? "thread" : "list";
  els.panelTitle.textContent = PANEL_TITLES[mode];
  els.panelWhere.textContent = { saved: "From all your rooms", threads: "Followed, in this project" }[mode] || roomWhere;
  const close = `Close ${PANEL_TITLES[mode].toLowerCase()}`;
  els.panelClose.setAttribute("aria-label", close);
  els.panelClose.title = `${close} (Esc)`;
  els.pinsOpen.setAttribute("aria-expanded", String(list.mode === "pins"));
  els.savedOpen.setAttribute("aria-expanded", String(list.mode === "saved"));
  els.threadsOpen.setAttribute("aria-expanded", String(list.mode === "threads"));
}

/** Show the pinned, saved or followed threads list in the side panel; its header button again closes it. */
function openList(mode, opener) {
  if (list.mode === mode) {
    closeList();
    return;
  }
  if (thread.root !== null) closeThread({ restoreFocus: false });
  listItems.clear();
  els.sideList.replaceChildren();
  list.mode = mode;
  list.opener = opener;
  setPanelFrame(mode);
  showError("", { inList: true });
  els.panel.hidden = false;
  applyPanelMode();
  renderList();
  els.listScroller.scrollTop = 0;
  els.panelTitle.focus();
  // The first load failed: try again now that someone asks.
  if (mode === "pins" && !lists.pinsLoaded && !lists.pinsLoading) loadPins();
  if (mode === "saved" && !lists.savedLoaded && !lists.savedLoading) loadSaved();
  if (mode === "threads" && !followed.loaded && !followed.loading) loadThreads();
}

function closeList({ restoreFocus = true } = {}) {
  if (list.mode === null) return;
  const opener = list.opener;
  list.mode = null;
  list.opener = null;
  listItems.clear();
  els.sideList.replaceChildren();
  els.listMore.hidden = true;
  showError("", { inList: true });
  els.panel.hidden = true;
  setPanelFrame("thread");
  applyPanelMode();
  if (!restoreFocus) return;
  if (opener?.isConnected) opener.focus();
  else els.input.focus();
}

els.pinsOpen.addEventListener("click", () => openList("pins", els.pinsOpen));
els.savedOpen.addEventListener("click", () => openList("saved", els.savedOpen));
els.threadsOpen.addEventListener("click", () => openList("threads", els.threadsOpen));
els.listMore.addEventListener("click", loadMoreSaved);
els.sideList.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  const item = event.target.closest("li.side-item");
  if (!item) return;
  if (!button) {
    // A followed thread opens from anywhere on its item, not only its summary line (which keyboards use).
    if (item.classList.contains("followed-item") && !event.target.closest("a, button")) item.querySelector(".followed-open")?.click();
    return;
  }
  const id = Number(item.dataset.id);
  if (button.dataset.action === "open-thread") openThread(id, els.threadsOpen);
  else if (button.dataset.action === "jump") jumpTo(id, item);
  else if (button.dataset.action === "unpin") await setPinned(id, false, button);
  else if (button.dataset.action === "unsave") await setSaved(id, false, button);
  // The item left the list with the focused button: keep focus in the panel.
  if (!button.isConnected && list.mode !== null) els.panelTitle.focus();
});

// --- threads you follow -------------------------------------------------------

/** Whether two list entries show the same thing, so a refetch keeps unchanged items (and the focus in them). */
function sameFollowed(a, b) {
  const x = a.message;
  const y = b.message;
  return (
    a.unread === b.unread &&
    a.last_read_id === b.last_read_id &&
    x.body === y.body &&
    x.edited_at === y.edited_at &&
    JSON.stringify(x.thread) === JSON.stringify(y.thread)
  );
}

/** Replace the list (keeping unchanged entry objects), then the badge and, when open, the panel. */
function setFollowed(entries) {
  const kept = entries.map((entry) => {
    const old = followed.byRoot.get(entry.message.id);
    return old && sameFollowed(old, entry) ? old : entry;
  });
  followed.entries = kept;
  followed.byRoot = new Map(kept.map((entry) => [entry.message.id, entry]));
  showFollowedBadge();
  if (list.mode === "threads") renderList();
}

function showFollowedBadge() {
  const total = followed.entries.reduce((sum, entry) => sum + entry.unread, 0);
  els.threadsUnread.hidden = total === 0;
  els.threadsUnread.textContent = total >= 100 ? "99+" : String(total);
  els.threadsOpen.title = total
    ? `${total} unread ${total === 1 ? "reply" : "replies"} in threads you follow`
    : "Threads you follow";
}

/** The followed threads of the project; on open, after each reconnect, and (through scheduleFollowed) on activity. */
async function loadThreads() {
  if (followed.loading) {
    followed.again = true; // the answer in flight may predate what asked for this one
    return;
  }
  clearTimeout(followed.timer);
  followed.timer = null;
  followed.loading = true;
  followed.fetchedAt = Date.now();
  if (list.mode === "threads") renderList();
  try {
    const data = await api("GET", `projects/${encodeURIComponent(config.project)}/threads`);
    setFollowed(
      data.items.map((item) => {
        const entry = { message: item.root, unread: item.unread, last_read_id: item.last_read_id };
        // A read marker moved here after the server answered: the replies it covers are read.
        const read = followed.readUpTo.get(item.root.id) || 0;
        if (read > item.last_read_id && read >= (item.root.thread?.last_reply_id || 0)) entry.unread = 0;
        return entry;
      }),
    );
    followed.loaded = true;
  } catch (error) {
    showError(`Could not load the threads you follow: ${error.message}`, { inList: list.mode === "threads" });
  } finally {
    followed.loading = false;
    if (list.mode === "threads") renderList();
    if (followed.again) {
      followed.again = false;
      scheduleFollowed();
    }
  }
}

/** Refetch the list soon, at most once every FOLLOWED_INTERVAL_MS. */
function scheduleFollowed() {
  if (followed.timer) return;
  if (followed.loading) {
    followed.again = true;
    return;
  }
  const wait = Math.max(FOLLOWED_DELAY_MS, followed.fetchedAt + FOLLOWED_INTERVAL_MS - Date.now());
  followed.timer = setTimeout(loadThreads, wait);
}

/** Whether root ``id`` is a message of yours shown here (its author follows a thread on it once it has replies). */
function rootIsMine(id) {
  const li = rendered.get(id) || (thread.root === id ? thread.rootLi : null);
  return li?.dataset.author === String(ME);
}

/** A reply arrived: yours, or in a thread you follow or may now follow. */
function noteReply(msg) {
  if (msg.author.id === ME || followed.byRoot.has(msg.thread_root) || rootIsMine(msg.thread_root)) scheduleFollowed();
}

/** A thread's summary changed (``thread.updated``), in any room of the project. */
function noteThreadUpdated(rootId, summary) {
  const mine = summary?.participant_ids?.includes(ME);
  if (followed.byRoot.has(rootId) || mine || rootIsMine(rootId)) scheduleFollowed();
}

/** Your read marker in thread ``rootId`` moved to ``lastId``: its replies up to there are read. */
function followedRead(rootId, lastId) {
  followed.readUpTo.set(rootId, Math.max(followed.readUpTo.get(rootId) || 0, lastId));
  const entry = followed.byRoot.get(rootId);
  if (!entry || lastId <= entry.last_read_id) return;
  const newest = entry.message.thread?.last_reply_id || 0;
  // Replies after the marker that this tab has not seen yet stay counted until the next refetch.
  const unread = lastId >= newest ? 0 : entry.unread;
  setFollowed(followed.entries.map((e) => (e === entry ? { ...entry, unread, last_read_id: lastId } : e)));
}

/** The room a followed thread is in: this one, or a room of the sidebar (with its link). */
function followedRoom(roomId) {
  if (roomId === config.room) return { label: "In this room", href: null };
  const link = els.nav?.querySelector(`a[data-room-id="${Number(roomId)}"]`);
  if (!link) return { label: "In another room", href: null };
  const sigil = link.classList.contains("dm-link") ? "@" : "#";
  return { label: `In ${sigil}${link.querySelector(".room-name")?.textContent.trim() || "room"}`, href: link.getAttribute("href") };
}

/** One followed thread: its root, where it is, "N replies · Last reply HH:MM" (opening it), and its unread count. */
function renderThreadItem(entry) {
  const msg = entry.message;
  const li = el("li", "msg side-item followed-item");
  li.dataset.id = String(msg.id);
  if (msg.author.id === ME) li.classList.add("mine");
  if (entry.unread) li.classList.add("has-unread");
  const meta = el("div", "msg-meta");
  meta.append(el("span", "msg-author", personName(msg.author)), timeEl("msg-time", msg.created_at));
  if (msg.edited_at) meta.append(el("span", "msg-edited", "(edited)"));
  if (entry.unread) meta.append(el("span", "badge followed-unread", `${entry.unread >= 100 ? "99+" : entry.unread} unread`));
  const where = followedRoom(msg.room);
  const n = msg.thread?.reply_count || 0;
  let open;
  if (msg.room === config.room) {
    open = actionButton("open-thread", "", "followed-open");
  } else if (where.href) {
    // The room's page opens the thread itself (see openFromHash).
    open = el("a", "followed-open");
    open.href = `${where.href}#thread-${msg.id}`;
  } else {
    open = el("span", "followed-open");
  }
  open.append(el("span", "thread-count", `${n} ${n === 1 ? "reply" : "replies"}`));
  if (msg.thread?.last_reply_at) {
    const last = el("span", "thread-last", "Last reply ");
    last.append(timeEl("thread-time", msg.thread.last_reply_at));
    open.append(last);
  }
  li.append(meta, bodyEl(msg), el("p", "side-note muted", where.label), open);
  return li;
}

/** A link from another room's Threads list (``#thread-<root id>``) opens that thread here. */
function openFromHash() {
  const match = /^#thread-(\d+)$/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, "", location.pathname + location.search);
  openThread(Number(match[1]), null);
}

// --- sidebar badges and read state ---------------------------------------

function bumpBadge(roomId) {
  const link = els.nav?.querySelector(`a[data-room-id="${Number(roomId)}"]`);
  const badge = link?.querySelector(".badge");
  if (!badge) return;
  const n = Number(badge.dataset.unread || 0) + 1;
  badge.dataset.unread = String(n);
  badge.textContent = n >= 100 ? "99+" : String(n); // the server caps counts at 100
  badge.hidden = false;
  link.classList.add("has-unread");
  els.roomsDot.hidden = false;
}

function scheduleRead() {
  if (document.visibilityState !== "visible" || streamLastId <= lastReadSent) return;
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    if (streamLastId > lastReadSent && sendFrame({ type: "read", room: config.room, last_id: streamLastId })) {
      lastReadSent = streamLastId;
    }
  }, 300);
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "visible") return;
  unseenWhileHidden = 0;
  document.title = baseTitle;
  scheduleRead();
  scheduleThreadRead();
  if (!ws && !stopped) connectNow();
});

// --- sending -------------------------------------------------------------

function renderPending(item) {
  const li = el("li", "msg mine pending");
  li.dataset.clientId = item.clientId;
  const meta = el("div", "msg-meta");
  meta.append(el("span", "msg-author", config.user.display_name || config.user.username), " ", el("span", "msg-state", "Sending…"));
  li.append(meta, bodyEl(item.body));
  return li;
}

function setPendingState(item, text, failed = false) {
  item.failed = failed;
  item.el.classList.toggle("failed", failed);
  item.el.querySelector(".msg-state").textContent = text;
  item.el.querySelector(".msg-actions")?.remove();
  if (failed) {
    const box = el("div", "msg-actions");
    const retry = el("button", "btn-link", "Retry");
    retry.type = "button";
    retry.dataset.action = "retry";
    const discard = el("button", "btn-link danger", "Discard");
    discard.type = "button";
    discard.dataset.action = "discard";
    box.append(retry, discard);
    item.el.append(box);
  }
}

function transmit(item) {
  if (item.failed) return;
  const frame = { type: "message.send", room: config.room, body: item.body, client_id: item.clientId };
  if (item.threadRoot) frame.thread_root = item.threadRoot;
  const sent = sendFrame(frame);
  setPendingState(item, sent ? "Sending…" : "Waiting for connection…");
}

/** Queue ``body`` for the room, or as a reply in thread ``threadRoot``; one outbox for both. */
function send(body, threadRoot = null) {
  const item = { clientId: newClientId(), body, threadRoot, el: null, failed: false };
  item.el = renderPending(item);
  outbox.set(item.clientId, item);
  if (threadRoot) els.panelPending.append(item.el);
  else els.pending.append(item.el);
  transmit(item);
  if (threadRoot) {
    showReplyNote();
    scrollPanelToBottom();
  } else scrollToBottom();
}

/** The send is confirmed: drop it from the queue. */
function settle(clientId) {
  const item = outbox.get(clientId);
  if (!item) return null;
  outbox.delete(clientId);
  item.el.remove();
  return item;
}

function onPendingClick(event) {
  const button = event.target.closest("button[data-action]");
  const li = event.target.closest("li[data-client-id]");
  const item = li && outbox.get(li.dataset.clientId);
  if (!button || !item) return;
  if (button.dataset.action === "discard") settle(item.clientId);
  if (button.dataset.action === "retry") {
    item.failed = false;
    transmit(item);
  }
}
els.pending.addEventListener("click", onPendingClick);
els.panelPending.addEventListener("click", onPendingClick);

/** The main composer and the thread's: the same checks, the same outbox. */
function wireComposer(form, input, threadRootOf) {
  const inThread = form === els.panelComposer;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = input.value;
    if (!body.trim()) return;
    if (body.length > config.max_length) {
      showError(`A message can be at most ${config.max_length} characters.`, { inThread });
      return;
    }
    showError("", { inThread });
    send(body, threadRootOf());
    input.value = "";
    autosize(input);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener("input", () => autosize(input));
}

function autosize(input = els.input) {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

wireComposer(els.composer, els.input, () => null);
wireComposer(els.panelComposer, els.panelInput, () => thread.root);

// --- sharing files ---------------------------------------------------------

/** Upload ``files`` to this room, then put a link to each in ``input`` for the message that shares them. */
async function shareFiles(files, input = els.input) {
  const inThread = input === els.panelInput;
  for (const file of files) {
    if (file.size > config.upload_max_bytes) {
      showError(`${file.name} is too large: files can be at most ${Math.floor(config.upload_max_bytes / 1048576)} MB.`, { inThread });
      continue;
    }
    showError(`Uploading ${file.name}…`, { inThread });
    const form = new FormData();
    form.append("file", file, file.name || "pasted.png");
    try {
      const res = await fetch(`${config.api}rooms/${config.room}/uploads`, {
        method: "POST",
        headers: { Accept: "application/json", "X-CSRFToken": cookie("csrftoken") },
        credentials: "same-origin",
        body: form,
      });
      const data = await res.json().catch(() => null);
      if (!res.ok) throw new Error(data?.detail || `Upload failed (${res.status}).`);
      const before = input.value && !input.value.endsWith("\n") ? `${input.value}\n` : input.value;
      input.value = `${before}${data.markdown}`;
      autosize(input);
      showError("", { inThread });
    } catch (error) {
      showError(`${file.name}: ${error.message}`, { inThread });
    }
  }
  input.focus();
}

els.attach.addEventListener("click", () => els.fileInput.click());
els.fileInput.addEventListener("change", () => {
  shareFiles([...els.fileInput.files]);
  els.fileInput.value = "";
});
els.input.addEventListener("paste", (event) => {
  const pasted = [...(event.clipboardData?.files || [])];
  if (!pasted.length) return;
  event.preventDefault();
  shareFiles(pasted);
});
els.room.addEventListener("dragover", (event) => {
  if (![...(event.dataTransfer?.types || [])].includes("Files")) return;
  event.preventDefault();
  els.room.classList.add("dropping");
});
els.room.addEventListener("dragleave", (event) => {
  if (!els.room.contains(event.relatedTarget)) els.room.classList.remove("dropping");
});
els.room.addEventListener("drop", (event) => {
  els.room.classList.remove("dropping");
  const dropped = [...(event.dataTransfer?.files || [])];
  if (!dropped.length) return;
  event.preventDefault();
  shareFiles(dropped);
});

// --- edit and delete -----------------------------------------------------

function openEditor(li) {
  if (li.querySelector(".msg-editor")) return;
  const body = li.querySelector(".msg-body");
  const form = el("form", "msg-editor");
  const area = el("textarea");
  area.value = li.dataset.body ?? body.textContent;
  area.rows = Math.min(8, area.value.split("\n").length + 1);
  area.setAttribute("aria-label", "Edit message");
  const save = el("button", "btn btn-small", "Save");
  save.type = "submit";
  const cancel = el("button", "btn btn-ghost btn-small", "Cancel");
  cancel.type = "button";
  const problem = el("span", "editor-error");
  form.append(area, save, cancel, problem);
  body.hidden = true;
  body.after(form);
  area.focus();

  const close = () => {
    form.remove();
    body.hidden = false;
  };
  cancel.addEventListener("click", close);
  area.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!area.value.trim()) {
      problem.textContent = "A message cannot be empty; delete it instead.";
      return;
    }
    save.disabled = true;
    try {
      const msg = await api("PATCH", `messages/${li.dataset.id}`, { body: area.value });
      close();
      if (msg && msg.id) applyEdit(msg);
    } catch (error) {
      problem.textContent = error.message;
      save.disabled = false;
    }
  });
}

async function deleteMessage(li, button) {
  // Two clicks: the first arms the button for a few seconds.
  if (!button.dataset.armed) {
    button.dataset.armed = "1";
    button.textContent = "Really delete?";
    setTimeout(() => {
      delete button.dataset.armed;
      button.textContent = "Delete";
    }, 4000);
    return;
  }
  button.disabled = true;
  try {
    await api("DELETE", `messages/${li.dataset.id}`);
    applyDelete(Number(li.dataset.id));
  } catch (error) {
    button.disabled = false;
    showErrorFor(li, error.message);
  }
}

/** Clicks on a message, in the main list or in the thread panel. */
function onMessageClick(event) {
  const li = event.target.closest("li.msg");
  const chip = event.target.closest("button.reaction");
  if (chip && li) {
    toggleReaction(li, chip.dataset.emoji, !chip.classList.contains("mine"));
    return;
  }
  const button = event.target.closest("button[data-action]");
  if (!button || !li) return;
  if (button.dataset.action === "react") openPicker(li, button);
  if (button.dataset.action === "edit") openEditor(li);
  if (button.dataset.action === "delete") deleteMessage(li, button);
  if (button.dataset.action === "pin") setPinned(Number(li.dataset.id), !pins.has(Number(li.dataset.id)), button);
  if (button.dataset.action === "save") setSaved(Number(li.dataset.id), !saved.has(Number(li.dataset.id)), button);
  if (button.dataset.action === "reply" || button.dataset.action === "thread") openThread(Number(li.dataset.id), button);
}
for (const list of [els.list, els.panelRoot, els.panelList]) list.addEventListener("click", onMessageClick);

// --- history -------------------------------------------------------------

function roomMessagesPath(query) {
  return `rooms/${config.room}/messages?${query}`;
}

/** Insert a page of older messages keeping the viewport still. Returns how many were new. */
function mergeOlder(items) {
  const fromBottom = els.scroller.scrollHeight - els.scroller.scrollTop;
  let added = 0;
  for (const msg of items) if (upsert(mainView, msg)) added += 1;
  els.scroller.scrollTop = els.scroller.scrollHeight - fromBottom;
  return added;
}

function showOlderControls() {
  els.older.hidden = nextCursor === null;
  els.historyStart.hidden = nextCursor !== null;
}

async function loadOlder() {
  els.older.disabled = true;
  try {
    if (nextCursor === undefined) {
      // The first time, ask the API for the newest page: its cursor leads to
      // the messages older than it, without this page knowing the cursor format.
      const first = await api("GET", roomMessagesPath(`limit=${config.page_size}`));
      mergeOlder(first.items);
      nextCursor = first.next_cursor;
    }
    // Pages made only of messages already shown (they arrived live) are skipped.
    for (let rounds = 0; nextCursor && rounds < 20; rounds += 1) {
      const page = await api("GET", roomMessagesPath(`cursor=${encodeURIComponent(nextCursor)}`));
      nextCursor = page.next_cursor;
      if (mergeOlder(page.items) > 0) break;
    }
    showError("");
  } catch (error) {
    showError(`Could not load older messages: ${error.message}`);
  } finally {
    els.older.disabled = false;
    showOlderControls();
  }
}

els.older.addEventListener("click", loadOlder);

/** A fetched message over what ``li`` shows: a delete, an edit, or else its reactions. */
function refreshOne(li, msg) {
  if (msg.deleted) applyDelete(msg.id);
  else if (msg.edited_at && li.dataset.body !== msg.body) applyEdit(msg);
  else applyReactions(msg.id, msg.reactions);
}

/** After a reconnect: resume replayed the room's missed messages and changes (edits, deletes,
 *  reactions, pins, thread summaries). The user's own lists are not the room's: read them again. */
function refreshShown() {
  loadSaved();
  loadThreads();
}

/** Too much was missed to replay: take the newest page over HTTP and drop what is older. */
async function resync() {
  try {
    const page = await api("GET", roomMessagesPath(`limit=${config.page_size}`));
    if (!page.items.length) return;
    const oldestKept = page.items[0].id;
    for (const [id, li] of rendered) {
      if (id < oldestKept) {
        li.remove();
        rendered.delete(id);
      }
    }
    for (const msg of page.items) {
      upsert(mainView, msg);
      streamLastId = Math.max(streamLastId, msg.id);
    }
    nextCursor = page.next_cursor;
    showOlderControls();
    scrollToBottom();
    scheduleRead();
    // Replies missed meanwhile were not replayed either, nor pins, nor their unread counts.
    refreshThread();
    loadPins();
    scheduleFollowed();
  } catch (error) {
    showError(`Could not reload messages: ${error.message}`);
  }
}

// --- the thread panel ------------------------------------------------------

const narrow = window.matchMedia("(max-width: 760px)");

function threadPath(root, query) {
  return `messages/${root}/thread?${query}`;
}

function panelNearBottom() {
  const s = els.panelScroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
}

function scrollPanelToBottom() {
  els.panelScroller.scrollTop = els.panelScroller.scrollHeight;
}

/** On a small screen the panel covers the page: a modal dialog, with the room behind it inert. */
function applyPanelMode() {
  const modal = !els.panel.hidden && narrow.matches;
  els.panel.setAttribute("role", modal ? "dialog" : "complementary");
  if (modal) els.panel.setAttribute("aria-modal", "true");
  else els.panel.removeAttribute("aria-modal");
  els.room.inert = modal;
}
narrow.addEventListener("change", applyPanelMode);

function setFollowing(on) {
  thread.following = on;
  els.panelFollow.hidden = false;
  els.panelFollow.textContent = on ? "Following" : "Follow";
  els.panelFollow.setAttribute("aria-pressed", on ? "true" : "false");
  els.panelFollow.title = on ? "You follow this thread; click to stop" : "Follow this thread";
}

/** Empty the panel (it stays as shown or hidden). */
function resetThread() {
  if (thread.root !== null) {
    thread.drafts.set(thread.root, els.panelInput.value);
    rendered.get(thread.root)?.classList.remove("thread-open");
  }
  clearTimeout(thread.readTimer);
  thread.generation += 1;
  thread.root = null;
  thread.rootLi = null;
  thread.nextCursor = null;
  thread.following = false;
  thread.readSent = 0;
  threadView.rendered.clear();
  els.panelRoot.replaceChildren();
  els.panelList.replaceChildren();
  els.panelPending.replaceChildren();
  els.panelOlder.hidden = true;
  els.panelFollow.hidden = true;
  els.panelNote.textContent = "";
  els.panelGone.hidden = true;
  els.panelComposer.hidden = false;
  showError("", { inThread: true });
}

/** Open the thread of root ``rootId`` (from ``opener``, a Reply button or a summary line). */
function openThread(rootId, opener) {
  const toReply = opener?.dataset.action === "reply";
  if (thread.root !== rootId) {
    closeList({ restoreFocus: false });
    resetThread();
    thread.root = rootId;
    setPanelFrame("thread");
    els.panel.hidden = false;
    rendered.get(rootId)?.classList.add("thread-open");
    els.panelInput.value = thread.drafts.get(rootId) || "";
    autosize(els.panelInput);
    // Replies still being sent from an earlier opening of this thread.
    for (const item of outbox.values()) if (item.threadRoot === rootId) els.panelPending.append(item.el);
    applyPanelMode();
    loadThread();
  }
  thread.opener = opener || null;
  // On a phone the keyboard would cover the replies someone came to read.
  if (toReply || !narrow.matches) els.panelInput.focus();
  else els.panelTitle.focus();
}

function closeThread({ restoreFocus = true } = {}) {
  if (thread.root === null) return;
  const li = rendered.get(thread.root);
  const opener = thread.opener;
  resetThread();
  els.panel.hidden = true;
  applyPanelMode();
  if (!restoreFocus) return;
  // Back where the thread was opened from; a hidden Reply button cannot take focus, so fall back.
  for (const target of [opener, li?.querySelector(".thread-summary"), els.input]) {
    if (!target || !target.isConnected) continue;
    target.focus();
    if (document.activeElement === target) break;
  }
}

/** The open thread's root was deleted: it takes no new replies. */
function rootGone() {
  els.panelGone.hidden = false;
  els.panelComposer.hidden = true;
}

function showThreadRoot(root) {
  const li = renderMessage(root, { inThread: true });
  if (thread.rootLi) thread.rootLi.replaceWith(li);
  else els.panelRoot.append(li);
  thread.rootLi = li;
  if (root.deleted) rootGone();
}

function showReplyNote() {
  els.panelNote.textContent = threadView.rendered.size || els.panelPending.childElementCount ? "" : "No replies yet.";
}

async function loadThread() {
  const { root, generation } = thread;
  els.panelNote.textContent = "Loading…";
  els.panelScroller.setAttribute("aria-busy", "true");
  try {
    const page = await api("GET", threadPath(root, `limit=${config.page_size}`));
    if (generation !== thread.generation) return;
    if (page.root.room !== config.room) {
      // Replies are sent to this room's socket: a thread of another room (a hand-made link) cannot take them here.
      closeThread({ restoreFocus: false });
      showError("That thread is in another room.");
      return;
    }
    showThreadRoot(page.root);
    for (const msg of page.items) upsert(threadView, msg);
    thread.nextCursor = page.next_cursor;
    thread.readSent = page.last_read_id;
    els.panelOlder.hidden = !thread.nextCursor;
    setFollowing(page.following);
    showReplyNote();
    scrollPanelToBottom();
    scheduleThreadRead();
  } catch (error) {
    if (generation !== thread.generation) return;
    els.panelNote.textContent = "";
    showError(`Could not load the thread: ${error.message}`, { inThread: true });
  } finally {
    if (generation === thread.generation) els.panelScroller.setAttribute("aria-busy", "false");
  }
}

async function loadOlderReplies() {
  const { root, generation } = thread;
  if (!thread.nextCursor) return;
  els.panelOlder.disabled = true;
  try {
    const query = `limit=${config.page_size}&cursor=${encodeURIComponent(thread.nextCursor)}`;
    const page = await api("GET", threadPath(root, query));
    if (generation !== thread.generation) return;
    const s = els.panelScroller;
    const fromBottom = s.scrollHeight - s.scrollTop;
    for (const msg of page.items) upsert(threadView, msg);
    s.scrollTop = s.scrollHeight - fromBottom;
    thread.nextCursor = page.next_cursor;
  } catch (error) {
    if (generation === thread.generation) showError(`Could not load older replies: ${error.message}`, { inThread: true });
  } finally {
    els.panelOlder.disabled = false;
    els.panelOlder.hidden = !thread.nextCursor;
  }
}

/** After a reconnect or a resync: the open thread's newest replies again, for edits, deletes and
 *  reactions made meanwhile (and replies a resync did not replay). */
async function refreshThread() {
  const { root, generation } = thread;
  if (root === null) return;
  if (!thread.rootLi) {
    loadThread();
    return;
  }
  try {
    const page = await api("GET", threadPath(root, `limit=${config.page_size}`));
    if (generation !== thread.generation) return;
    refreshOne(thread.rootLi, page.root);
    for (const msg of page.items) {
      const li = threadView.rendered.get(msg.id);
      if (li && !li.dataset.provisional) refreshOne(li, msg);
      else upsert(threadView, msg);
    }
    setFollowing(page.following);
    showReplyNote();
    scheduleThreadRead();
  } catch {
    // As refreshShown: the live stream is already running.
  }
}

/** While the panel is open and the page visible, move the thread's read marker to its newest reply. */
function scheduleThreadRead() {
  if (thread.root === null || document.visibilityState !== "visible") return;
  const root = thread.root;
  clearTimeout(thread.readTimer);
  thread.readTimer = setTimeout(async () => {
    if (thread.root !== root) return;
    const last = Math.max(0, ...threadView.rendered.keys());
    const before = thread.readSent;
    if (last <= before) return;
    thread.readSent = last;
    try {
      const result = await api("POST", `messages/${root}/thread/read`, { last_id: last });
      followedRead(root, result?.last_id ?? last);
    } catch {
      if (thread.root === root && thread.readSent === last) thread.readSent = before; // try again with the next reply
    }
  }, 300);
}

/** The panel's close button and Escape: whichever it shows. */
function closePanel() {
  if (list.mode !== null) closeList();
  else closeThread();
}

els.panelClose.addEventListener("click", () => closePanel());
els.panelOlder.addEventListener("click", loadOlderReplies);
els.panelFollow.addEventListener("click", async () => {
  const root = thread.root;
  els.panelFollow.disabled = true;
  try {
    const result = await api(thread.following ? "DELETE" : "PUT", `messages/${root}/thread/follow`);
    if (thread.root === root) setFollowing(result.following);
    scheduleFollowed();
  } catch (error) {
    if (thread.root === root) showError(error.message, { inThread: true });
  } finally {
    els.panelFollow.disabled = false;
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || els.panel.hidden || event.defaultPrevented) return;
  // The editor and the reaction picker close themselves first.
  if (event.target instanceof Element && event.target.closest(".msg-editor, .reaction-picker")) return;
  closePanel();
});

// --- incoming events -----------------------------------------------------

function onMessageNew(msg) {
  if (msg.room === config.room) stopTyping(msg.author.id);
  if (msg.thread_root) noteReply(msg);
  if (msg.room !== config.room) {
    otherLastId.set(msg.room, Math.max(otherLastId.get(msg.room) || 0, msg.id));
    // Replies are not in a room's unread count.
    if (msg.author.id !== ME && !msg.deleted && !msg.thread_root) bumpBadge(msg.room);
    return;
  }
  if (msg.thread_root) {
    onReply(msg);
    return;
  }
  const stick = nearBottom() || msg.author.id === ME;
  streamLastId = Math.max(streamLastId, msg.id);
  upsert(mainView, msg);
  if (msg.client_id && msg.author.id === ME) settle(msg.client_id);
  if (msg.author.id !== ME) {
    if (document.visibilityState !== "visible") {
      unseenWhileHidden += 1;
      document.title = `(${unseenWhileHidden}) ${baseTitle}`;
    }
    scheduleRead();
  }
  if (stick) scrollToBottom();
}

/** A reply takes the room's seq, so it moves the stream position, but it only ever shows in its thread's panel. */
function onReply(msg) {
  streamLastId = Math.max(streamLastId, msg.id);
  if (msg.client_id && msg.author.id === ME) settle(msg.client_id);
  if (thread.root !== msg.thread_root) return;
  const stick = panelNearBottom() || msg.author.id === ME;
  upsert(threadView, msg);
  if (msg.author.id === ME) setFollowing(true); // replying follows the thread (chat.services.threads)
  showReplyNote();
  if (stick) scrollPanelToBottom();
  scheduleThreadRead();
}

function onAck(ack) {
  const item = settle(ack.client_id);
  if (!item || ack.room !== config.room) return;
  const root = ack.thread_root || item.threadRoot;
  const view = root ? threadView : mainView;
  if (view.rendered.has(ack.id) || (root && root !== thread.root)) return;
  // Shown at once; replaced by the authoritative message.new when it arrives.
  upsert(
    view,
    {
      id: ack.id,
      room: ack.room,
      seq: ack.seq,
      author: { id: ME, username: config.user.username, display_name: config.user.display_name },
      body: item.body,
      created_at: ack.created_at,
      edited_at: null,
      deleted: false,
      client_id: ack.client_id,
      reactions: [],
      thread_root: root || null,
      thread: null,
    },
    { provisional: true },
  );
  if (root) {
    showReplyNote();
    scrollPanelToBottom();
  } else scrollToBottom();
}

/** The server dropped a subscription because the user can no longer read the room. */
function onAccessRevoked(room) {
  subscribed.delete(room);
  const others = config.other_rooms.indexOf(room);
  if (others >= 0) config.other_rooms.splice(others, 1);
  scheduleFollowed(); // that room's threads leave the list
  els.nav?.querySelector(`[data-room-id="${room}"]`)?.closest("li")?.remove();
  if (room === config.room) {
    els.input.disabled = true;
    showError("You can no longer read this room.");
  }
}

function onError(frame) {
  if (frame.code === "access_revoked" && typeof frame.ref === "number") {
    onAccessRevoked(frame.ref);
    return;
  }
  const ref = frame.ref === undefined || frame.ref === null ? "" : String(frame.ref);
  const item = outbox.get(ref);
  if (ref.startsWith("sub-")) {
    // A sidebar room that vanished (or was made unreadable) only loses its badge.
    if (frame.retryable) setTimeout(subscribeMissing, 1000 + Math.random() * 1000);
    else if (ref === subscribeRef(config.room)) showError(frame.message);
    return;
  }
  if (item) {
    if (frame.retryable) {
      // rate_limited says when (seconds); other retryable errors: soon.
      const wait = typeof frame.retry_after === "number" ? frame.retry_after * 1000 : 1000;
      const limited = frame.code === "rate_limited";
      setPendingState(item, limited ? `Sending too fast; retrying in ${Math.ceil(wait / 1000)} s` : "Retrying…");
      setTimeout(() => outbox.has(item.clientId) && transmit(item), wait + Math.random() * 1000);
      return;
    }
    setPendingState(item, `Not sent: ${frame.message}`, true);
    if (item.threadRoot) {
      showError(frame.message || "Something went wrong.", { inThread: true });
      return;
    }
  } else if (frame.retryable) {
    // Most likely a subscribe that could not complete: try the missing ones again.
    setTimeout(subscribeMissing, 1000 + Math.random() * 1000);
  }
  showError(frame.message || "Something went wrong.");
}

// Frames that carry their room's seq: the stream is exact up to the highest one seen.
const SEQ_FRAMES = new Set(["subscribed", "message.edited", "message.deleted", "message.pinned", "message.unpinned", "reaction"]);

/** Remember how far each room's event stream has come, to resume from there after a reconnect. */
function noteSeq(frame) {
  const [room, seq] =
    frame.type === "message.new" ? [frame.message?.room, frame.message?.seq] : SEQ_FRAMES.has(frame.type) ? [frame.room, frame.seq] : [];
  if (typeof room === "number" && typeof seq === "number" && seq > (roomSeq.get(room) || 0)) roomSeq.set(room, seq);
}

function handle(frame) {
  noteSeq(frame);
  switch (frame.type) {
    case "hello":
      attempt = 0;
      setStatus("online", "Connected");
      break;
    case "subscribed":
      subscribed.add(frame.room);
      if (frame.room === config.room) showOnline(frame.online_count);
      if (frame.room === config.room && connections > 1) refreshShown();
      break;
    case "message.new":
      onMessageNew(frame.message);
      break;
    case "message.edited":
      updateListedMessage(frame.message);
      if (frame.message.room === config.room) applyEdit(frame.message);
      break;
    case "message.deleted":
      // A reply's delete reaches the panel through copiesOf; its root's count comes with thread.updated.
      if (frame.room === config.room) applyDelete(frame.id);
      else forgetDeleted(frame.id); // a saved message of another room
      break;
    case "message.pinned":
      if (frame.room === config.room) {
        applyPinChange({ pin: { message: frame.message, pinned_by: frame.pinned_by, pinned_at: frame.pinned_at } });
      }
      break;
    case "message.unpinned":
      if (frame.room === config.room) applyPinChange({ id: frame.id });
      break;
    case "message.saved":
      applySavedChange({ entry: { message: frame.message, saved_at: frame.saved_at } });
      break;
    case "message.unsaved":
      applySavedChange({ id: frame.id });
      break;
    case "reaction":
      if (frame.room === config.room) applyReactions(frame.message, frame.reactions, frame.version);
      break;
    case "thread.updated":
      if (frame.room === config.room) applySummary(frame.root, frame.thread, frame.version);
      noteThreadUpdated(frame.root, frame.thread);
      break;
    case "mention":
      // Someone named in a reply now follows its thread (chat.background).
      if (frame.message?.thread_root) scheduleFollowed();
      onMention(frame);
      break;
    case "typing":
      onTyping(frame);
      break;
    case "presence":
      if (frame.room === config.room) showOnline(frame.online_count);
      break;
    case "message.ack":
      onAck(frame);
      break;
    case "resync":
      if (frame.room === config.room) resync();
      else otherLastId.delete(frame.room);
      roomSeq.delete(frame.room); // the subscribed frame that follows sets it again
      break;
    case "error":
      onError(frame);
      break;
    default:
      break; // read.ack, pong, unsubscribed, and anything newer
  }
}

// --- who is here, who is typing, mentions and notifications ---------------

const TYPING_SEND_EVERY_MS = 3_000;
const TYPING_SHOW_MS = 6_000;
/** People typing in this room now: user id -> {name, timer}. */
const typers = new Map();
let typingSentAt = 0;

function showOnline(count) {
  if (typeof count !== "number") return;
  els.online.textContent = `${count} online`;
  els.online.dataset.count = String(count);
  els.online.hidden = false;
}

function onTyping(frame) {
  const user = frame.user;
  if (frame.room !== config.room || !user || user.id === ME) return;
  clearTimeout(typers.get(user.id)?.timer);
  const timer = setTimeout(() => stopTyping(user.id), TYPING_SHOW_MS);
  typers.set(user.id, { name: user.display_name || user.username, timer });
  showTyping();
}

/** Someone's message arrived, or they stopped: they are no longer typing. */
function stopTyping(userId) {
  const typer = typers.get(userId);
  if (!typer) return;
  clearTimeout(typer.timer);
  typers.delete(userId);
  showTyping();
}

function showTyping() {
  const names = [...typers.values()].map((t) => t.name);
  els.typing.textContent =
    names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…`
      : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : "Several people are typing…";
}

// Typing is announced at most every few seconds while there is text (the server coalesces too).
els.input.addEventListener("input", () => {
  const now = Date.now();
  if (!els.input.value.trim() || !subscribed.has(config.room) || now - typingSentAt < TYPING_SEND_EVERY_MS) return;
  typingSentAt = now;
  sendFrame({ type: "typing", room: config.room });
});

/** You were @mentioned, or someone wrote to a DM you are in. */
async function onMention(frame) {
  const msg = frame.message;
  if (!msg || msg.author?.id === ME) return;
  const visibleHere = frame.room === config.room && document.visibilityState === "visible";
  if (!visibleHere) {
    let link = navLink(frame.room);
    if (!link && frame.dm) link = await addDmLink(frame.room);
    markMention(link);
  }
  if (document.visibilityState !== "visible" && !frame.quiet) notify(frame); // quiet: do not disturb
}

function navLink(roomId) {
  return els.nav?.querySelector(`a[data-room-id="${Number(roomId)}"]`) || null;
}

function markMention(link) {
  if (!link || link.querySelector(".mention-mark")) return;
  const mark = el("span", "mention-mark", "@");
  mark.title = "You were mentioned";
  link.querySelector(".badge")?.before(mark);
  els.roomsDot.hidden = false;
}

/** A DM someone else started after this page was rendered: list it, follow it for its badge. */
async function addDmLink(roomId) {
  try {
    const page = await api("GET", `projects/${encodeURIComponent(config.project)}/dms?limit=50`);
    const dm = page.items.find((item) => item.id === roomId);
    if (!dm || navLink(roomId) || !els.dmNav) return navLink(roomId);
    els.dmNav.querySelector(".nav-empty")?.remove();
    const link = el("a", "room-link dm-link");
    link.href = config.room_url.replace("__room__", encodeURIComponent(dm.slug));
    link.dataset.roomId = String(dm.id);
    const sigil = el("span", "room-sigil", "@");
    sigil.setAttribute("aria-hidden", "true");
    const title = dm.people.length ? dm.people.map((p) => p.display_name).join(", ") : `${config.user.display_name} (you)`;
    const badge = el("span", "badge", "");
    badge.hidden = true;
    link.append(sigil, el("span", "room-name", title), badge);
    const li = el("li");
    li.append(link);
    els.dmNav.prepend(li);
    for (let i = 0; i < (dm.unread || 0); i += 1) bumpBadge(dm.id);
    config.other_rooms.push(dm.id);
    sendFrame(subscribeFrame(dm.id));
    return link;
  } catch {
    return null; // the sidebar catches up on the next page load
  }
}

function notify(frame) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const msg = frame.message;
  const who = msg.author.display_name || msg.author.username;
  const where = navLink(frame.room)?.querySelector(".room-name")?.textContent.trim();
  const title = frame.dm ? who : `${who} mentioned you${where ? ` in #${where}` : ""}`;
  const note = new Notification(title, { body: (msg.body || "").slice(0, 200), tag: `chat-room-${frame.room}` });
  note.addEventListener("click", () => {
    window.focus();
    if (frame.room !== config.room && frame.room_slug) {
      location.href = config.room_url.replace("__room__", encodeURIComponent(frame.room_slug));
    }
    note.close();
  });
}

// Asked only when the person clicks, never on page load.
if ("Notification" in window && Notification.permission === "default") {
  els.notifyEnable.hidden = false;
  els.notifyEnable.addEventListener("click", async () => {
    await Notification.requestPermission();
    els.notifyEnable.hidden = Notification.permission !== "default";
  });
}

// --- the room list on small screens ----------------------------------------

function setNavOpen(open) {
  document.body.classList.toggle("nav-open", open);
  els.roomsOpen.setAttribute("aria-expanded", String(open));
  if (open) {
    els.roomsDot.hidden = true;
    navLink(config.room)?.focus();
  }
}

els.roomsOpen.addEventListener("click", (event) => {
  event.stopPropagation();
  setNavOpen(!document.body.classList.contains("nav-open"));
});
document.addEventListener("click", (event) => {
  if (document.body.classList.contains("nav-open") && !event.target.closest("#sidebar")) setNavOpen(false);
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && document.body.classList.contains("nav-open")) setNavOpen(false);
});

// --- the socket ----------------------------------------------------------

let ws = null;
let attempt = 0;
let reconnectTimer = null;
let stopped = false;
let lastFrameAt = Date.now();
let connections = 0;

function setStatus(state, text) {
  els.status.dataset.state = state;
  els.status.querySelector(".conn-text").textContent = text;
}

function sendFrame(frame) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(frame));
  return true;
}

function subscribeFrame(room) {
  const frame = { type: "subscribe", room, ref: subscribeRef(room) };
  // Once a room's stream has a seq, resume replays every event after it. Before
  // that the current room resumes after the newest rendered message (0 means
  // "everything", which is right for a room that was empty when rendered).
  const seq = roomSeq.get(room);
  const last = room === config.room ? streamLastId : otherLastId.get(room);
  if (seq !== undefined) frame.last_seq = seq;
  else if (last !== undefined) frame.last_id = last;
  return frame;
}

function subscribeRef(room) {
  return `sub-${room}`;
}

function subscribeMissing() {
  for (const room of [config.room, ...config.other_rooms]) {
    if (!subscribed.has(room)) sendFrame(subscribeFrame(room));
  }
}

function connect() {
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

// --- start ---------------------------------------------------------------

for (const li of els.list.querySelectorAll("li.msg")) {
  const id = Number(li.dataset.id);
  rendered.set(id, li);
  streamLastId = Math.max(streamLastId, id);
}
lastReadSent = streamLastId; // the server marked the rendered page read
upgradeRendered(els.list);
for (const node of els.list.querySelectorAll("time.msg-time, time.thread-time")) localizeTime(node);
for (const chip of els.list.querySelectorAll("button.reaction")) markMine(chip);
showOlderControls();
scrollToBottom();
autosize();
loadPins();
loadSaved();
loadThreads();
els.input.focus();
openFromHash();
if (navigator.onLine === false) setStatus("offline", "Offline");
else connect();
