// Reactions: the bar under a message, the quick picker, and adding or removing one.

import { copiesOf, ME } from "./state.js";
import { el, showErrorFor } from "./dom.js";
import { api } from "./api.js";

const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀", "✅", "🚀"];
/** Newest summary version applied per message id (reaction events may arrive out of order). */
const reactionVersion = new Map();

function reactionChip(r) {
  const users = r.user_ids || [];
  const chip = el("button", "reaction");
  chip.type = "button";
  chip.dataset.emoji = r.emoji;
  chip.dataset.users = users.join(",");
  const names = (r.users || []).map((u) => u.display_name || u.username);
  chip.title = names.join(", ") + (r.count > names.length ? ` and ${r.count} in all` : "");
  chip.append(r.emoji, " ", el("span", "reaction-count", String(r.count)));
  markMine(chip);
  return chip;
}

export function markMine(chip) {
  const mine = chip.dataset.users.split(",").includes(String(ME));
  chip.classList.toggle("mine", mine);
  chip.setAttribute("aria-pressed", mine ? "true" : "false");
}

function addButton() {
  const add = el("button", "reaction-add", "+");
  add.type = "button";
  add.dataset.action = "react";
  add.setAttribute("aria-label", "Add a reaction");
  add.title = "Add a reaction";
  return add;
}

/** The reaction bar under a message; the same markup as templates/chat/_reactions.html. */
export function reactionBar(reactions) {
  const bar = el("div", "msg-reactions");
  for (const r of reactions || []) bar.append(reactionChip(r));
  bar.append(addButton());
  return bar;
}

export function applyReactions(messageId, reactions, version) {
  if (version !== undefined) {
    if (version < (reactionVersion.get(messageId) || 0)) return;
    reactionVersion.set(messageId, version);
  }
  for (const li of copiesOf(messageId)) {
    if (li.classList.contains("deleted")) continue;
    const bar = li.querySelector(".msg-reactions");
    const fresh = reactionBar(reactions);
    if (bar) bar.replaceWith(fresh);
    else li.querySelector(".msg-body").after(fresh);
  }
}

export async function toggleReaction(li, emoji, on) {
  const id = Number(li.dataset.id);
  try {
    const path = `messages/${id}/reactions`;
    const result = on
      ? await api("POST", path, { emoji })
      : await api("DELETE", `${path}/${encodeURIComponent(emoji)}`);
    applyReactions(id, result.reactions);
  } catch (error) {
    showErrorFor(li, error.message);
  }
}

export function openPicker(li, button) {
  li.querySelector(".reaction-picker")?.remove();
  const picker = el("div", "reaction-picker");
  picker.setAttribute("role", "menu");
  for (const emoji of QUICK_REACTIONS) {
    const choice = el("button", "reaction-choice", emoji);
    choice.type = "button";
    choice.setAttribute("role", "menuitem");
    choice.addEventListener("click", () => {
      picker.remove();
      toggleReaction(li, emoji, true);
    });
    picker.append(choice);
  }
  picker.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      picker.remove();
      button.focus();
    }
  });
  button.after(picker);
  picker.querySelector("button").focus();
}
