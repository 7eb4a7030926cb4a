// What a message's buttons do: edit, delete, and the click dispatch for the main list and thread panel.

import { pins, saved } from "./state.js";
import { el, showErrorFor } from "./dom.js";
import { api } from "./api.js";
import { applyDelete, applyEdit } from "./messages.js";
import { openPicker, toggleReaction } from "./reactions.js";
import { setPinned, setSaved } from "./pins.js";
import { openThread } from "./threads.js";

function openEditor(li) {
  if (li.querySelector(".msg-editor")) return;
  const body = li.querySelector(".msg-body");
  const form = el("form", "msg-editor");
  const area = el("textarea");
  area.value = body.textContent;
  area.rows = Math.min(8, area.value.split("\n").length + 1);
  area.setAttribute("aria-label", "Edit message");
  const save = el("button", "btn btn-small", "Save");
  save.type = "submit";
  const cancel = el("button", "btn btn-ghost btn-small", "Cancel");
  cancel.type = "button";
  const problem = el("span", "editor-error");
  form.append(area, save, cancel, problem);
  body.hidden = true;
  body.after(form);
  area.focus();

  const close = () => {
    form.remove();
    body.hidden = false;
  };
  cancel.addEventListener("click", close);
  area.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!area.value.trim()) {
      problem.textContent = "A message cannot be empty; delete it instead.";
      return;
    }
    save.disabled = true;
    try {
      const msg = await api("PATCH", `messages/${li.dataset.id}`, { body: area.value });
      close();
      if (msg && msg.id) applyEdit(msg);
    } catch (error) {
      problem.textContent = error.message;
      save.disabled = false;
    }
  });
}

async function deleteMessage(li, button) {
  // Two clicks: the first arms the button for a few seconds.
  if (!button.dataset.armed) {
    button.dataset.armed = "1";
    button.textContent = "Really delete?";
    setTimeout(() => {
      delete button.dataset.armed;
      button.textContent = "Delete";
    }, 4000);
    return;
  }
  button.disabled = true;
  try {
    await api("DELETE", `messages/${li.dataset.id}`);
    applyDelete(Number(li.dataset.id));
  } catch (error) {
    button.disabled = false;
    showErrorFor(li, error.message);
  }
}

/** Clicks on a message, in the main list or in the thread panel. */
export function onMessageClick(event) {
  const li = event.target.closest("li.msg");
  const chip = event.target.closest("button.reaction");
  if (chip && li) {
    toggleReaction(li, chip.dataset.emoji, !chip.classList.contains("mine"));
    return;
  }
  const button = event.target.closest("button[data-action]");
  if (!button || !li) return;
  if (button.dataset.action === "react") openPicker(li, button);
  if (button.dataset.action === "edit") openEditor(li);
  if (button.dataset.action === "delete") deleteMessage(li, button);
  if (button.dataset.action === "pin") setPinned(Number(li.dataset.id), !pins.has(Number(li.dataset.id)), button);
  if (button.dataset.action === "save") setSaved(Number(li.dataset.id), !saved.has(Number(li.dataset.id)), button);
  if (button.dataset.action === "reply" || button.dataset.action === "thread") openThread(Number(li.dataset.id), button);
}
