/* The panel's only script: lock countdowns that tick, and the delivery lookup's live status.
   Served from this site (CSP default-src 'self'); the page works without it, just less live. */
(function () {
  "use strict";

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
    startCountdowns();
    pollLookup();
  });
})();
