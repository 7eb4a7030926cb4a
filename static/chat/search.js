// Message search on the room page: the box in the header, its results (a drop-down, full width on
// phones), and the jump to a message a result links to (#msg-<id>; a reply links to #thread-<root>,
// which the room page's own script opens).
//
// A classic script on its own: it talks to the page only through the DOM. User text reaches the
// DOM through textContent; a snippet's only markup is <mark>, rebuilt here element by element.
(function () {
  "use strict";

  const PAGE_SIZE = 20;
  const OLDER_TRIES = 30; // "Load older messages" clicks while looking for a message, at most
  const OLDER_WAIT_MS = 5000;

  const root = document.getElementById("search");
  if (!root) return;
  const form = document.getElementById("search-form");
  const input = document.getElementById("search-input");
  const panel = document.getElementById("search-results");
  const list = document.getElementById("search-list");
  const status = document.getElementById("search-status");
  const more = document.getElementById("search-more");
  const close = document.getElementById("search-close");
  const api = root.dataset.api;
  const roomUrl = (slug) => root.dataset.roomUrl.replace("__room__", encodeURIComponent(slug));

  let query = "";
  let cursor = null;
  let busy = false;
  let generation = 0; // answers to an older query are dropped

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** The snippet's text and <mark>s as DOM nodes; anything else the parser finds is kept as text only. */
  function snippetNodes(html) {
    const parsed = new DOMParser().parseFromString(`<body>${html}</body>`, "text/html").body;
    const out = [];
    for (const node of parsed.childNodes) {
      if (node.nodeType === Node.ELEMENT_NODE && node.tagName === "MARK") out.push(el("mark", "", node.textContent));
      else out.push(document.createTextNode(node.textContent));
    }
    return out;
  }

  function when(iso) {
    const date = new Date(iso);
    const time = el("time", "search-time", date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" }));
    time.dateTime = iso;
    return time;
  }

  function hitUrl(hit) {
    const msg = hit.message;
    const anchor = msg.thread_root ? `#thread-${msg.thread_root}` : `#msg-${msg.id}`;
    return roomUrl(hit.room.slug) + anchor;
  }

  function renderHit(hit) {
    const li = el("li", "search-item");
    const link = el("a", "search-hit");
    link.href = hitUrl(hit);
    link.dataset.id = String(hit.message.id);
    const meta = el("span", "search-meta");
    const where = hit.room.kind === "dm" ? `@${hit.room.name}` : `#${hit.room.name}`;
    meta.append(
      el("span", "search-author", hit.message.author.display_name || hit.message.author.username),
      el("span", "search-where", hit.message.thread_root ? `${where} · thread` : where),
      when(hit.message.created_at),
    );
    const snippet = el("span", "search-snippet");
    snippet.append(...snippetNodes(hit.snippet));
    link.append(meta, snippet);
    li.append(link);
    return li;
  }

  function open() {
    panel.hidden = false;
  }

  function shut({ focusInput }) {
    panel.hidden = true;
    if (focusInput) input.focus();
  }

  async function fetchPage(reset) {
    if (busy && !reset) return;
    const mine = ++generation;
    busy = true;
    more.hidden = true;
    if (reset) {
      list.replaceChildren();
      cursor = null;
    }
    status.textContent = "Searching…";
    panel.setAttribute("aria-busy", "true");
    open();
    const params = new URLSearchParams({ q: query, limit: String(PAGE_SIZE) });
    if (cursor) params.set("cursor", cursor);
    try {
      const response = await fetch(`${api}?${params}`, { credentials: "same-origin", headers: { Accept: "application/json" } });
      const body = await response.json().catch(() => ({}));
      if (mine !== generation) return;
      if (!response.ok) {
        status.textContent = body.detail || `Search failed (${response.status}).`;
        return;
      }
      for (const hit of body.items) list.append(renderHit(hit));
      cursor = body.next_cursor;
      more.hidden = !cursor;
      const n = list.children.length;
      status.textContent = n ? `${n}${cursor ? "+" : ""} message${n === 1 && !cursor ? "" : "s"} found` : "No messages found.";
    } catch (error) {
      if (mine === generation) status.textContent = "Search failed: no connection.";
    } finally {
      if (mine === generation) {
        busy = false;
        panel.setAttribute("aria-busy", "false");
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    query = input.value.trim();
    if (!query) {
      shut({ focusInput: false });
      return;
    }
    fetchPage(true);
  });

  more.addEventListener("click", () => fetchPage(false));
  close.addEventListener("click", () => shut({ focusInput: true }));

  function links() {
    return [...list.querySelectorAll("a.search-hit")];
  }

  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !panel.hidden) {
      event.preventDefault();
      shut({ focusInput: true });
    } else if (event.key === "ArrowDown" && !panel.hidden && links().length) {
      event.preventDefault();
      links()[0].focus();
    }
  });

  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      shut({ focusInput: true });
      return;
    }
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const all = links();
    const at = all.indexOf(document.activeElement);
    if (at < 0) return;
    event.preventDefault();
    if (event.key === "ArrowUp") (at === 0 ? input : all[at - 1]).focus();
    else if (all[at + 1]) all[at + 1].focus();
    else if (!more.hidden) more.focus();
  });

  // A click outside the search closes its results (they stay for the back button's return).
  document.addEventListener("click", (event) => {
    if (!panel.hidden && !root.contains(event.target)) shut({ focusInput: false });
  });

  // --- Jumping to a message in this room ---------------------------------------------------------

  const messages = document.getElementById("messages");
  const older = document.getElementById("load-older");
  let jumped = null;

  function rendered(id) {
    return messages ? messages.querySelector(`li[data-id="${Number(id)}"]`) : null;
  }

  function flash(li) {
    li.scrollIntoView({ block: "center" });
    if (jumped) {
      clearTimeout(jumped.timer);
      jumped.li.classList.remove("jumped");
    }
    li.classList.add("jumped");
    jumped = { li, timer: setTimeout(() => li.classList.remove("jumped"), 2000) };
    li.tabIndex = -1;
    li.focus({ preventScroll: true });
  }

  /** Wait until the message list changes (older messages arrived) or a few seconds pass. */
  function listChanged() {
    return new Promise((resolve) => {
      const observer = new MutationObserver(() => finish(true));
      const timer = setTimeout(() => finish(false), OLDER_WAIT_MS);
      function finish(changed) {
        observer.disconnect();
        clearTimeout(timer);
        resolve(changed);
      }
      observer.observe(messages, { childList: true });
    });
  }

  /** Show message ``id`` of this room: loading older history as the reader would, a bounded number of times. */
  async function jumpTo(id) {
    for (let tries = 0; tries <= OLDER_TRIES; tries++) {
      const li = rendered(id);
      if (li) {
        flash(li);
        return true;
      }
      if (!older || older.hidden || older.disabled) break;
      const changed = listChanged();
      older.click();
      if (!(await changed)) break;
    }
    status.textContent = "That message is no longer in this room's history.";
    open();
    return false;
  }

  function jumpFromHash() {
    const match = /^#msg-(\d+)$/.exec(location.hash);
    if (!match || !messages) return;
    history.replaceState(null, "", location.pathname + location.search);
    jumpTo(Number(match[1]));
  }

  // A result in this very room: jump here rather than reload the page.
  list.addEventListener("click", (event) => {
    const link = event.target.closest("a.search-hit");
    if (!link || !messages) return;
    const url = new URL(link.href);
    if (url.pathname !== location.pathname) return;
    event.preventDefault();
    if (window.matchMedia("(max-width: 760px)").matches) shut({ focusInput: false });
    const reply = /^#thread-(\d+)$/.exec(url.hash);
    if (!reply) {
      jumpTo(Number(link.dataset.id));
      return;
    }
    // A reply: its root's thread button opens the thread; if the root is not shown, the page opens it.
    const summary = rendered(reply[1])?.querySelector("[data-action=thread]");
    if (summary) summary.click();
    else {
      location.hash = url.hash;
      location.reload();
    }
  });

  window.addEventListener("hashchange", jumpFromHash);
  jumpFromHash();
})();
