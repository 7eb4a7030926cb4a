// Message elements: rendering, ordered insertion, and applying edits and deletes
// to every copy shown (main list and thread panel).

import { canModerate, copiesOf, ME, thread } from "./state.js";
import { actionButton, bodyEl, el, localizeTime } from "./dom.js";
import { applyReactions, reactionBar } from "./reactions.js";
import { applySummary, threadSummary, threadVersion } from "./thread-summary.js";
import { forgetDeleted, markPinSaved } from "./pins.js";
import { rootGone } from "./threads.js";

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
export function renderMessage(msg, { inThread = false } = {}) {
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
    li.append(bodyEl(msg.body));
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
export function upsert(view, msg, { provisional = false } = {}) {
  const existing = view.rendered.get(msg.id);
  if (existing && !existing.dataset.provisional) return false;
  const li = renderMessage(msg, { inThread: view.inThread });
  if (provisional) li.dataset.provisional = "1";
  if (existing) existing.replaceWith(li);
  else insertInOrder(li, msg.id, view.list);
  view.rendered.set(msg.id, li);
  return !existing;
}

export function applyEdit(msg) {
  for (const li of copiesOf(msg.id)) {
    if (li.classList.contains("deleted")) continue;
    li.querySelector(".msg-body").textContent = msg.body;
    if (!li.querySelector(".msg-edited")) {
      li.querySelector(".msg-meta").append(" ", el("span", "msg-edited", "(edited)"));
    }
  }
  if (msg.reactions) applyReactions(msg.id, msg.reactions);
  // An edit event's summary has no version: it only fills in a root no thread.updated has reached yet.
  if (msg.thread_root === null && msg.thread !== undefined && !threadVersion.has(msg.id)) applySummary(msg.id, msg.thread);
}

export function applyDelete(id) {
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
