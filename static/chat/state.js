// The page's shared state: its configuration, the elements it drives, and what
// every part of the client reads and updates (messages shown, pending sends,
// the open thread, pins, saved messages, followed threads, the side panel).

export const config = JSON.parse(document.getElementById("chat-config").textContent);

export const ME = config.user.id;
const MODERATOR_ROLES = new Set(["owner", "admin"]);
export const canModerate = MODERATOR_ROLES.has(config.my_role);

const $ = (id) => document.getElementById(id);
export const els = {
  scroller: $("scroller"),
  list: $("messages"),
  pending: $("pending"),
  older: $("load-older"),
  historyStart: $("history-start"),
  composer: $("composer"),
  input: $("composer-input"),
  error: $("composer-error"),
  status: $("conn-status"),
  nav: $("room-nav"),
  room: $("room"),
  panel: $("thread-panel"),
  panelScroller: $("thread-scroller"),
  panelRoot: $("thread-root"),
  panelList: $("thread-replies"),
  panelPending: $("thread-pending"),
  panelOlder: $("thread-older"),
  panelNote: $("thread-loading"),
  panelClose: $("thread-close"),
  panelFollow: $("thread-follow"),
  panelComposer: $("thread-composer"),
  panelInput: $("thread-input"),
  panelError: $("thread-error"),
  panelTitle: $("thread-title"),
  panelGone: $("thread-gone"),
  panelWhere: $("thread-where"),
  listScroller: $("list-scroller"),
  listNote: $("list-note"),
  sideList: $("side-list"),
  listMore: $("list-more"),
  listError: $("list-error"),
  pinsOpen: $("pins-open"),
  pinCount: $("pin-count"),
  savedOpen: $("saved-open"),
  threadsOpen: $("threads-open"),
  threadsUnread: $("threads-unread"),
};

/** Confirmed messages of the current room: id -> <li>. */
export const rendered = new Map();
/** The main timeline's stream position, older-page cursor and read marker. */
export const timeline = {
  /** Newest id received through the room's ordered stream (page render or message.new).
   *  Acks do not move it: an ack can overtake older messages still in flight. */
  streamLastId: 0,
  /** Cursor for the next older page: undefined = not asked yet, null = no older messages. */
  nextCursor: config.has_older ? undefined : null,
  lastReadSent: 0,
  readTimer: null,
  unseenWhileHidden: 0,
};
/** Newest message id seen in each other room, to resume their badges. */
export const otherLastId = new Map();
/** Unacknowledged sends, in send order: client_id -> {clientId, body, threadRoot, el, failed}. */
export const outbox = new Map();
export const subscribed = new Set();
export const baseTitle = document.title;

/** Where messages are shown: the room's main timeline, and the open thread's replies. */
export const mainView = { list: els.list, rendered, inThread: false };
export const threadView = { list: els.panelList, rendered: new Map(), inThread: true };
/** The open thread: root id (null when closed), its root's element, paging, follow and read state. */
export const thread = {
  root: null,
  rootLi: null,
  nextCursor: null,
  following: false,
  readSent: 0,
  readTimer: null,
  opener: null,
  /** Bumped whenever the panel is emptied, so answers for an earlier opening are dropped. */
  generation: 0,
  /** Unsent text per root, kept while another thread is open. */
  drafts: new Map(),
};

/** The room's pins: message id -> {message, pinned_by, pinned_at}. */
export const pins = new Map();
/** Your saved messages known here (the first page, live changes, pages loaded since): id -> {message, saved_at}. */
export const saved = new Map();
/** Load state of each: whether an answer arrived, whether a request is in flight, and the saved list's next page. */
export const lists = { pinsLoaded: false, pinsLoading: false, savedLoaded: false, savedLoading: false, savedCursor: null };
/** The threads you follow in this project, in the server's order (newest reply first): {message: root, unread,
 *  last_read_id} each; by root id; load state; the pending refetch; and read markers moved here since. */
export const followed = {
  entries: [],
  byRoot: new Map(),
  loaded: false,
  loading: false,
  again: false,
  timer: null,
  fetchedAt: 0,
  readUpTo: new Map(),
};
/** What the side panel lists (null while it is closed or shows a thread), and the button that opened it. */
export const list = { mode: null, opener: null };
/** The panel's items: message id -> {entry, li}; an item is rebuilt when its entry object changes. */
export const listItems = new Map();

/** Every element showing message ``id``: a thread's root is in the main list and at the top of its panel. */
export function copiesOf(id) {
  const found = [];
  for (const li of [rendered.get(id), threadView.rendered.get(id), thread.root === id ? thread.rootLi : null]) {
    if (li) found.push(li);
  }
  return found;
}
