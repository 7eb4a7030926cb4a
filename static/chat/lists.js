// The side panel's lists (pinned, saved, followed threads): rendering, jumping
// to a message, opening and closing.

import {
  canModerate,
  config,
  els,
  followed,
  list,
  listItems,
  lists,
  ME,
  pins,
  rendered,
  saved,
  thread,
} from "./state.js";
import { actionButton, bodyEl, el, personName, showError, timeEl } from "./dom.js";
import { loadPins, loadSaved, setPinned, setSaved } from "./pins.js";
import { loadThreads, renderThreadItem } from "./followed.js";
import { applyPanelMode, closeThread, narrow, openThread } from "./threads.js";

const PANEL_TITLES = { thread: "Thread", pins: "Pinned messages", saved: "Saved messages", threads: "Threads" };
const roomWhere = els.panelWhere.textContent;

function newestFirst(key) {
  return (a, b) => Date.parse(b[key]) - Date.parse(a[key]) || b.message.id - a.message.id;
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
  li.append(meta, bodyEl(msg.body), note, actions, status);
  return li;
}

/** Show the open list's items, newest first, moving only the elements that changed (focus stays put). */
export function renderList() {
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
export function setPanelFrame(mode) {
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
export function openList(mode, opener) {
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

export function closeList({ restoreFocus = true } = {}) {
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

/** Clicks in the open list: open a thread, jump, unpin or unsave. */
export async function onListClick(event) {
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
}
