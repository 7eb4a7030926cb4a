// Incoming frames: one handler per event type.

import {
  baseTitle,
  config,
  els,
  mainView,
  ME,
  otherLastId,
  outbox,
  subscribed,
  thread,
  threadView,
  timeline,
} from "./state.js";
import { nearBottom, scrollToBottom, showError } from "./dom.js";
import { applyDelete, applyEdit, upsert } from "./messages.js";
import { applyReactions } from "./reactions.js";
import { applySummary } from "./thread-summary.js";
import { applyPinChange, applySavedChange, forgetDeleted, updateListedMessage } from "./pins.js";
import { noteReply, noteThreadUpdated, scheduleFollowed } from "./followed.js";
import { panelNearBottom, scheduleThreadRead, scrollPanelToBottom, setFollowing, showReplyNote } from "./threads.js";
import { refreshShown, resync } from "./history.js";
import { setPendingState, settle, transmit } from "./outbox.js";
import { bumpBadge, scheduleRead } from "./unread.js";
import { isReconnect, onHello, subscribeMissing, subscribeRef } from "./socket.js";

function onMessageNew(msg) {
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
  timeline.streamLastId = Math.max(timeline.streamLastId, msg.id);
  upsert(mainView, msg);
  if (msg.client_id && msg.author.id === ME) settle(msg.client_id);
  if (msg.author.id !== ME) {
    if (document.visibilityState !== "visible") {
      timeline.unseenWhileHidden += 1;
      document.title = `(${timeline.unseenWhileHidden}) ${baseTitle}`;
    }
    scheduleRead();
  }
  if (stick) scrollToBottom();
}

/** A reply takes the room's seq, so it moves the stream position, but it only ever shows in its thread's panel. */
function onReply(msg) {
  timeline.streamLastId = Math.max(timeline.streamLastId, msg.id);
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

export function handle(frame) {
  switch (frame.type) {
    case "hello":
      onHello();
      break;
    case "subscribed":
      subscribed.add(frame.room);
      if (frame.room === config.room && isReconnect()) refreshShown();
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
      break;
    case "message.ack":
      onAck(frame);
      break;
    case "resync":
      if (frame.room === config.room) resync();
      else otherLastId.delete(frame.room);
      break;
    case "error":
      onError(frame);
      break;
    default:
      break; // read.ack, pong, unsubscribed, and anything newer
  }
}
