// Refreshes the live part of the staff performance page: fetches the
// server-rendered fragment (numbers and SVG charts) every few seconds.
(function () {
  "use strict";
  var live = document.getElementById("perf-live");
  if (!live) { return; }
  var url = live.getAttribute("data-url");
  var every = Math.max(1, Number(live.getAttribute("data-interval")) || 5) * 1000;

  function tick() {
    if (document.hidden) { window.setTimeout(tick, every); return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) { live.innerHTML = html; } })
      .catch(function () { /* keep the last numbers; try again next tick */ })
      .then(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
})();
