// The threads you follow in this project: the list, its unread badge, and when to refetch it.

import { config, els, followed, list, ME, rendered, thread } from "./state.js";
import { actionButton, bodyEl, el, personName, showError, timeEl } from "./dom.js";
import { api } from "./api.js";
import { renderList } from "./lists.js";
import { openThread } from "./threads.js";

/** A refetch waits a moment (the server writes follows just after it announces a reply) and comes at most this often. */
const FOLLOWED_DELAY_MS = 1000;
const FOLLOWED_INTERVAL_MS = 4000;

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
export function setFollowed(entries) {
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
export async function loadThreads() {
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
export function scheduleFollowed() {
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
export function noteReply(msg) {
  if (msg.author.id === ME || followed.byRoot.has(msg.thread_root) || rootIsMine(msg.thread_root)) scheduleFollowed();
}

/** A thread's summary changed (``thread.updated``), in any room of the project. */
export function noteThreadUpdated(rootId, summary) {
  const mine = summary?.participant_ids?.includes(ME);
  if (followed.byRoot.has(rootId) || mine || rootIsMine(rootId)) scheduleFollowed();
}

/** Your read marker in thread ``rootId`` moved to ``lastId``: its replies up to there are read. */
export function followedRead(rootId, lastId) {
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
export function renderThreadItem(entry) {
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
  li.append(meta, bodyEl(msg.body), el("p", "side-note muted", where.label), open);
  return li;
}

/** A link from another room's Threads list (``#thread-<root id>``) opens that thread here. */
export function openFromHash() {
  const match = /^#thread-(\d+)$/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, "", location.pathname + location.search);
  openThread(Number(match[1]), null);
}
