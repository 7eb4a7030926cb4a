// The composers: the room's and the thread panel's.

import { config, els } from "./state.js";
import { autosize, showError } from "./dom.js";
import { send } from "./outbox.js";

/** The main composer and the thread's: the same checks, the same outbox. */
export function wireComposer(form, input, threadRootOf) {
  const inThread = form === els.panelComposer;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = input.value;
    if (!body.trim()) return;
    if (body.length > config.max_length) {
      showError(`A message can be at most ${config.max_length} characters.`, { inThread });
      return;
    }
    showError("", { inThread });
    send(body, threadRootOf());
    input.value = "";
    autosize(input);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener("input", () => autosize(input));
}
