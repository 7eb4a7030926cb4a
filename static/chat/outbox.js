// Sending: the outbox of unacknowledged messages, their pending elements, retry and discard.

import { config, els, outbox } from "./state.js";
import { bodyEl, el, scrollToBottom } from "./dom.js";
import { scrollPanelToBottom, showReplyNote } from "./threads.js";
import { sendFrame } from "./socket.js";

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // Plain-http origins other than localhost have no randomUUID.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function renderPending(item) {
  const li = el("li", "msg mine pending");
  li.dataset.clientId = item.clientId;
  const meta = el("div", "msg-meta");
  meta.append(el("span", "msg-author", config.user.display_name || config.user.username), " ", el("span", "msg-state", "Sending…"));
  li.append(meta, bodyEl(item.body));
  return li;
}

export function setPendingState(item, text, failed = false) {
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

export function transmit(item) {
  if (item.failed) return;
  const frame = { type: "message.send", room: config.room, body: item.body, client_id: item.clientId };
  if (item.threadRoot) frame.thread_root = item.threadRoot;
  const sent = sendFrame(frame);
  setPendingState(item, sent ? "Sending…" : "Waiting for connection…");
}

/** Queue ``body`` for the room, or as a reply in thread ``threadRoot``; one outbox for both. */
export function send(body, threadRoot = null) {
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
export function settle(clientId) {
  const item = outbox.get(clientId);
  if (!item) return null;
  outbox.delete(clientId);
  item.el.remove();
  return item;
}

export function onPendingClick(event) {
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
