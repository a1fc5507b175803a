// corral dashboard: live updates from the event stream. On a change the page fetches its own
// <main> again (X-Fragment: 1) and swaps it in: no reload, one rendering path (the server's).
(function () {
  "use strict";
  var live = document.getElementById("live");
  var main = document.getElementById("main");
  if (!live || !main || !window.EventSource) { return; }
  var page = document.body.dataset.page;
  var relevant = {
    pools: ["pool", "ticket", "resync"], tickets: ["ticket", "resync"],
    vms: ["vm", "ticket", "resync"], vm: ["vm", "resync"], tasks: ["task", "resync"],
    locks: ["task", "vm", "resync"]
  }[page] || [];
  var pending = null, busy = false, again = false;

  function refresh() {
    pending = null;
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 200) { return r.text(); }
        if (r.status === 401 || r.redirected) { window.location.reload(); }
        return null;
      })
      .then(function (html) {
        if (html !== null && document.activeElement && main.contains(document.activeElement)
            && document.activeElement.tagName !== "A") {
          return;  // do not pull a form from under the keyboard
        }
        if (html !== null) {
          // a keyboard user keeps their place: the focused link is found again in the new content
          var focused = document.activeElement, href = null;
          if (focused && focused.tagName === "A" && main.contains(focused)) {
            href = focused.getAttribute("href");
          }
          main.innerHTML = html;
          main.dataset.updated = String(Date.now());
          if (href !== null) {
            var same = main.querySelector('a[href="' + href.replace(/["\\]/g, "\\$&") + '"]');
            if (same) { same.focus(); }
          }
        }
      })
      .catch(function () { /* the next event retries */ })
      .then(function () { busy = false; if (again) { again = false; schedule(); } });
  }

  function schedule() { if (pending === null) { pending = window.setTimeout(refresh, 150); } }

  var source = new EventSource("/ui/events");
  source.onopen = function () { live.textContent = "live"; live.className = "live on"; };
  source.onerror = function () { live.textContent = "reconnecting…"; live.className = "live"; };
  relevant.forEach(function (kind) { source.addEventListener(kind, schedule); });
  source.addEventListener("dropped", function () { source.close(); window.setTimeout(function () { window.location.reload(); }, 2000); });
})();
