// The main timeline's history: older pages, and catching up after a reconnect or a resync.

import { config, els, mainView, rendered, timeline } from "./state.js";
import { scrollToBottom, showError } from "./dom.js";
import { api } from "./api.js";
import { applyDelete, applyEdit, upsert } from "./messages.js";
import { applyReactions } from "./reactions.js";
import { applySummary } from "./thread-summary.js";
import { loadPins, loadSaved } from "./pins.js";
import { loadThreads, scheduleFollowed } from "./followed.js";
import { refreshThread } from "./threads.js";
import { scheduleRead } from "./unread.js";

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

export function showOlderControls() {
  els.older.hidden = timeline.nextCursor === null;
  els.historyStart.hidden = timeline.nextCursor !== null;
}

export async function loadOlder() {
  els.older.disabled = true;
  try {
    if (timeline.nextCursor === undefined) {
      // The first time, ask the API for the newest page: its cursor leads to
      // the messages older than it, without this page knowing the cursor format.
      const first = await api("GET", roomMessagesPath(`limit=${config.page_size}`));
      mergeOlder(first.items);
      timeline.nextCursor = first.next_cursor;
    }
    // Pages made only of messages already shown (they arrived live) are skipped.
    for (let rounds = 0; timeline.nextCursor && rounds < 20; rounds += 1) {
      const page = await api("GET", roomMessagesPath(`cursor=${encodeURIComponent(timeline.nextCursor)}`));
      timeline.nextCursor = page.next_cursor;
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

/** A fetched message over what ``li`` shows: a delete, an edit, or else its reactions. */
export function refreshOne(li, msg) {
  if (msg.deleted) applyDelete(msg.id);
  else if (msg.edited_at && li.querySelector(".msg-body").textContent !== msg.body) applyEdit(msg);
  else applyReactions(msg.id, msg.reactions);
}

/** After a reconnect: resume replays new messages only, so fetch the newest
 *  page once to pick up edits and deletes made while this tab was away. */
export async function refreshShown() {
  refreshThread();
  // Resume replays no pins or saves (docs/PROTOCOL.md): read both lists again, and the followed threads.
  loadPins();
  loadSaved();
  loadThreads();
  try {
    const page = await api("GET", roomMessagesPath(`limit=${config.page_size}`));
    for (const msg of page.items) {
      const li = rendered.get(msg.id);
      if (!li) continue;
      refreshOne(li, msg);
      // thread.updated events missed while away are not replayed: this read is newer than any applied before.
      applySummary(msg.id, msg.thread);
    }
  } catch {
    // Not worth an error message: the live stream is already running.
  }
}

/** Too much was missed to replay: take the newest page over HTTP and drop what is older. */
export async function resync() {
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
      timeline.streamLastId = Math.max(timeline.streamLastId, msg.id);
    }
    timeline.nextCursor = page.next_cursor;
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
