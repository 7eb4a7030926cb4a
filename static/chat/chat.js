// The room page client: one WebSocket per tab, live messages, resume after a
// reconnect, idempotent sends, history paging, edit and delete, reactions,
// threads, pins, saved messages and the threads you follow (one side panel, or a
// full-screen overlay on small screens).
//
// User text only ever reaches the DOM through textContent, never innerHTML.
//
// This module is the entry point: it wires the page's elements to the modules
// that do the work, each named for its subject, then starts.

import { els, rendered, thread, timeline } from "./state.js";
import { autosize, localizeTime, scrollToBottom } from "./dom.js";
import { markMine } from "./reactions.js";
import { loadMoreSaved, loadPins, loadSaved } from "./pins.js";
import { onListClick, openList } from "./lists.js";
import { loadThreads, openFromHash } from "./followed.js";
import { applyPanelMode, closePanel, loadOlderReplies, narrow, onEscape, toggleFollow } from "./threads.js";
import { loadOlder, showOlderControls } from "./history.js";
import { onPendingClick } from "./outbox.js";
import { wireComposer } from "./composer.js";
import { onMessageClick } from "./actions.js";
import { onVisibilityChange } from "./unread.js";
import { connect, setStatus, watchConnection } from "./socket.js";

// --- wiring ----------------------------------------------------------------

els.pinsOpen.addEventListener("click", () => openList("pins", els.pinsOpen));
els.savedOpen.addEventListener("click", () => openList("saved", els.savedOpen));
els.threadsOpen.addEventListener("click", () => openList("threads", els.threadsOpen));
els.listMore.addEventListener("click", loadMoreSaved);
els.sideList.addEventListener("click", onListClick);

document.addEventListener("visibilitychange", onVisibilityChange);

els.pending.addEventListener("click", onPendingClick);
els.panelPending.addEventListener("click", onPendingClick);

wireComposer(els.composer, els.input, () => null);
wireComposer(els.panelComposer, els.panelInput, () => thread.root);

for (const list of [els.list, els.panelRoot, els.panelList]) list.addEventListener("click", onMessageClick);

els.older.addEventListener("click", loadOlder);

narrow.addEventListener("change", applyPanelMode);
els.panelClose.addEventListener("click", () => closePanel());
els.panelOlder.addEventListener("click", loadOlderReplies);
els.panelFollow.addEventListener("click", toggleFollow);
document.addEventListener("keydown", onEscape);

watchConnection();

// --- start ---------------------------------------------------------------

for (const li of els.list.querySelectorAll("li.msg")) {
  const id = Number(li.dataset.id);
  rendered.set(id, li);
  timeline.streamLastId = Math.max(timeline.streamLastId, id);
}
timeline.lastReadSent = timeline.streamLastId; // the server marked the rendered page read
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
