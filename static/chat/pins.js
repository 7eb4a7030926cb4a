// Pins and saved messages: their state, the pin marker and the Pin/Save labels
// on message elements, loading, and live changes.

import { config, copiesOf, els, followed, list, lists, pins, rendered, saved, thread, threadView } from "./state.js";
import { el, personName, showError, showErrorFor } from "./dom.js";
import { api } from "./api.js";
import { renderList } from "./lists.js";
import { setFollowed } from "./followed.js";

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
export function markPinSaved(li) {
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

export function applyPinChange(change) {
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

export function applySavedChange(change) {
  savedChange(change);
  savedLog.record(change);
  for (const li of copiesOf(change.entry ? change.entry.message.id : change.id)) markPinSaved(li);
  if (list.mode === "saved") renderList();
}

/** The room's pins, all of them (a room has at most PINS_MAX); on open and after each reconnect. */
export async function loadPins() {
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
export async function loadSaved() {
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

export async function loadMoreSaved() {
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

export async function setPinned(id, on, button) {
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

export async function setSaved(id, on, button) {
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
export function updateListedMessage(msg) {
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
export function forgetDeleted(id) {
  if (pins.has(id)) applyPinChange({ id });
  if (saved.has(id)) applySavedChange({ id });
  if (followed.byRoot.has(id)) setFollowed(followed.entries.filter((e) => e.message.id !== id));
}
