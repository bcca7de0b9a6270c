/* The panel's only script: the entry page's link hand-over, lock countdowns that tick, and the
   delivery lookup's live status. Served from this site (CSP default-src 'self'); the panel pages
   work without it, just less live. */
(function () {
  "use strict";

  // The entry page (/panel/enter/#token=...): the link's token is in the URL's fragment, which
  // the browser never sends. Move it into the page's form, clear it from the address bar and the
  // history, and POST it with the page's CSRF token. A ?token= link (the older form) has its token
  // in the form already; it leaves the address bar the same way.
  function enter() {
    var form = document.querySelector('form[data-enter="auto"]');
    if (!form) {
      return;
    }
    var input = form.querySelector('input[name="token"]');
    var fragment = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    if (fragment.get("token")) {
      input.value = fragment.get("token");
    }
    if (window.location.hash || window.location.search) {
      window.history.replaceState(null, "", window.location.pathname);
    }
    if (!input.value) {
      document.getElementById("enter-missing").hidden = false;
      return;
    }
    form.submit();
  }

  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function clock(seconds) {
    var h = Math.floor(seconds / 3600);
    var m = Math.floor((seconds % 3600) / 60);
    var s = seconds % 60;
    return h + " h " + pad(m) + " min " + pad(s) + " s";
  }

  // Each countdown starts from the server's seconds_remaining and ticks on the local clock:
  // only the time elapsed since the page loaded counts, so a skewed agent clock doesn't matter.
  function startCountdowns() {
    var nodes = document.querySelectorAll("[data-countdown]");
    if (!nodes.length) {
      return;
    }
    var started = Date.now();
    var reloaded = false;
    function tick() {
      var elapsed = Math.floor((Date.now() - started) / 1000);
      var ended = false;
      nodes.forEach(function (node) {
        var left = Math.max(0, parseInt(node.getAttribute("data-countdown"), 10) - elapsed);
        node.setAttribute("data-left", String(left));
        node.textContent = left > 0 ? clock(left) : "ended";
        ended = ended || left === 0;
      });
      if (ended && !reloaded) {
        // The lock is over: the next step changes, so fetch the page again.
        reloaded = true;
        window.setTimeout(function () { window.location.reload(); }, 1500);
      }
    }
    tick();
    window.setInterval(tick, 1000);
  }

  // While a lookup is pending or running, fetch its status fragment until it finishes, then
  // reload the page for the verdict and the next step.
  function pollLookup() {
    var box = document.querySelector("[data-poll-url]");
    if (!box) {
      return;
    }
    var url = box.getAttribute("data-poll-url");
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("status " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          var template = document.createElement("template");
          template.innerHTML = html.trim();
          var fresh = template.content.firstElementChild;
          if (fresh) {
            box.replaceWith(fresh);
            box = fresh;
          }
          if (box.getAttribute("data-finished") === "1") {
            window.location.reload();
          } else {
            window.setTimeout(poll, 1500);
          }
        })
        .catch(function () {
          window.setTimeout(poll, 5000);
        });
    }
    window.setTimeout(poll, 1500);
  }

  document.addEventListener("DOMContentLoaded", function () {
    enter();
    startCountdowns();
    pollLookup();
  });
})();
