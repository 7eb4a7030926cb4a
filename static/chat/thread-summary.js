// The "N replies · Last reply" line under a thread's root in the main list.

import { rendered } from "./state.js";
import { el, initial, localizeTime, personName } from "./dom.js";

/** Newest thread summary version applied per root id (thread.updated events may arrive out of order). */
export const threadVersion = new Map();

/** A root's "3 replies · Last reply 14:02" line; the same markup as templates/chat/_thread_summary.html. */
export function threadSummary(summary) {
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
export function applySummary(rootId, summary, version) {
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
