// The thread panel: opening and closing it, its replies, paging, following and its read marker.

import { config, els, list, outbox, rendered, thread, threadView } from "./state.js";
import { autosize, showError } from "./dom.js";
import { api } from "./api.js";
import { renderMessage, upsert } from "./messages.js";
import { closeList, setPanelFrame } from "./lists.js";
import { followedRead, scheduleFollowed } from "./followed.js";
import { refreshOne } from "./history.js";

export const narrow = window.matchMedia("(max-width: 760px)");

function threadPath(root, query) {
  return `messages/${root}/thread?${query}`;
}

export function panelNearBottom() {
  const s = els.panelScroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
}

export function scrollPanelToBottom() {
  els.panelScroller.scrollTop = els.panelScroller.scrollHeight;
}

/** On a small screen the panel covers the page: a modal dialog, with the room behind it inert. */
export function applyPanelMode() {
  const modal = !els.panel.hidden && narrow.matches;
  els.panel.setAttribute("role", modal ? "dialog" : "complementary");
  if (modal) els.panel.setAttribute("aria-modal", "true");
  else els.panel.removeAttribute("aria-modal");
  els.room.inert = modal;
}

export function setFollowing(on) {
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
export function openThread(rootId, opener) {
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

export function closeThread({ restoreFocus = true } = {}) {
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
export function rootGone() {
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

export function showReplyNote() {
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

export async function loadOlderReplies() {
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
export async function refreshThread() {
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
export function scheduleThreadRead() {
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
export function closePanel() {
  if (list.mode !== null) closeList();
  else closeThread();
}

/** The Follow button of the open thread. */
export async function toggleFollow() {
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
}

/** Escape closes the panel, after the editor and the reaction picker had their turn. */
export function onEscape(event) {
  if (event.key !== "Escape" || els.panel.hidden || event.defaultPrevented) return;
  // The editor and the reaction picker close themselves first.
  if (event.target instanceof Element && event.target.closest(".msg-editor, .reaction-picker")) return;
  closePanel();
}
