// Sidebar badges and the room's read marker.

import { baseTitle, config, els, timeline } from "./state.js";
import { scheduleThreadRead } from "./threads.js";
import { reconnectIfIdle, sendFrame } from "./socket.js";

export function bumpBadge(roomId) {
  const link = els.nav?.querySelector(`a[data-room-id="${Number(roomId)}"]`);
  const badge = link?.querySelector(".badge");
  if (!badge) return;
  const n = Number(badge.dataset.unread || 0) + 1;
  badge.dataset.unread = String(n);
  badge.textContent = n >= 100 ? "99+" : String(n); // the server caps counts at 100
  badge.hidden = false;
  link.classList.add("has-unread");
}

export function scheduleRead() {
  if (document.visibilityState !== "visible" || timeline.streamLastId <= timeline.lastReadSent) return;
  clearTimeout(timeline.readTimer);
  timeline.readTimer = setTimeout(() => {
    if (
      timeline.streamLastId > timeline.lastReadSent &&
      sendFrame({ type: "read", room: config.room, last_id: timeline.streamLastId })
    ) {
      timeline.lastReadSent = timeline.streamLastId;
    }
  }, 300);
}

/** Back to a visible page: clear the title count, move the read markers, reconnect if idle. */
export function onVisibilityChange() {
  if (document.visibilityState !== "visible") return;
  timeline.unseenWhileHidden = 0;
  document.title = baseTitle;
  scheduleRead();
  scheduleThreadRead();
  reconnectIfIdle();
}
