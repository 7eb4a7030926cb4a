// Small DOM helpers: elements, times, error lines, scrolling.
//
// User text only ever reaches the DOM through textContent, never innerHTML.

import { els } from "./state.js";

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A message body: its own paragraph direction, so right-to-left text (or an override) cannot spill over. */
export function bodyEl(text) {
  const node = el("div", "msg-body", text);
  node.dir = "auto";
  return node;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function localizeTime(node) {
  const d = new Date(node.getAttribute("datetime"));
  if (Number.isNaN(d.getTime())) return;
  const today = d.toDateString() === new Date().toDateString();
  node.textContent = today ? timeFmt.format(d) : fullFmt.format(d);
  node.title = fullFmt.format(d);
}

export function showError(text, { inThread = false, inList = false } = {}) {
  const target = inList ? els.listError : inThread ? els.panelError : els.error;
  target.textContent = text;
  target.hidden = !text;
}

/** Errors about something in the side panel are shown there, where the person is looking. */
export function showErrorFor(node, text) {
  const inPanel = Boolean(node && els.panel.contains(node));
  showError(text, { inThread: inPanel, inList: inPanel && els.listScroller.contains(node) });
}

export function nearBottom() {
  const s = els.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
}

export function scrollToBottom() {
  els.scroller.scrollTop = els.scroller.scrollHeight;
}

export function actionButton(action, label, className = "btn-link") {
  const button = el("button", className, label);
  button.type = "button";
  button.dataset.action = action;
  return button;
}

export function personName(p) {
  return p.display_name || p.username;
}

/** The first character (a whole code point, as the template's ``first`` filter takes it), upper-cased. */
export function initial(name) {
  return ([...name][0] || "?").toUpperCase();
}

export function timeEl(className, iso) {
  const time = el("time", className);
  time.setAttribute("datetime", iso);
  localizeTime(time);
  return time;
}

export function autosize(input = els.input) {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}
