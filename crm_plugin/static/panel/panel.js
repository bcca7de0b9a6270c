/* The panel's only script: the entry page's link hand-over, lock countdowns that tick, times in
   the agent's local time, the last action's result announced, the delivery lookup's live
   status, and the method's timeline refreshed while it is open. Served from this site (CSP
   default-src 'self'); the panel pages work without it, just less live. */
(function () {
  "use strict";

  // A panel launched by a CRM carries its session in a header, not a cookie
  // (frame-session.js): a plain reload would arrive without it and be refused.
  function reloadPage() {
    if (window.panelFrameSession) {
      window.panelFrameSession.reload();
    } else {
      window.location.reload();
    }
  }

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
        window.setTimeout(reloadPage, 1500);
      }
    }
    tick();
    window.setInterval(tick, 1000);
  }

  // Times come as <time datetime="..." title="... UTC">... UTC</time>: show them in the agent's
  // local time (UTC stays on hover); data-relative adds how long ago ("just now", never "0 min").
  function ago(seconds) {
    if (seconds < 60) {
      return "just now";
    }
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) {
      return minutes + " min ago";
    }
    var hours = Math.floor(minutes / 60);
    if (hours < 48) {
      return hours + " h ago";
    }
    return Math.floor(hours / 24) + " days ago";
  }

  function localiseTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(function (node) {
      var moment = new Date(node.getAttribute("datetime"));
      if (isNaN(moment.getTime())) {
        return;
      }
      var now = new Date();
      var sameDay = moment.toDateString() === now.toDateString();
      var options = { hour: "2-digit", minute: "2-digit" };
      if (!sameDay) {
        options.day = "numeric";
        options.month = "short";
        if (moment.getFullYear() !== now.getFullYear()) {
          options.year = "numeric";
        }
      }
      var text = moment.toLocaleString([], options);
      if (node.getAttribute("data-relative") === "1" && moment <= now) {
        text += " (" + ago(Math.floor((now - moment) / 1000)) + ")";
      }
      node.textContent = text;
    });
  }

  // The result of the last action is in the live region at the top of the page. Content that is
  // there when the page loads isn't announced, so put it back a moment later: screen readers read
  // it out then. A result kept across a reload (the lookup's answer) is added the same way.
  var ANNOUNCE_KEY = "twosv-panel-announce";

  function announce() {
    var live = document.getElementById("live");
    if (!live) {
      return;
    }
    var kept = null;
    try {
      kept = window.sessionStorage.getItem(ANNOUNCE_KEY);
      window.sessionStorage.removeItem(ANNOUNCE_KEY);
    } catch (error) {
      kept = null;
    }
    var results = Array.prototype.slice.call(live.children);
    if (kept) {
      var note = document.createElement("p");
      note.className = "flash flash-info";
      note.setAttribute("data-result", "");
      note.textContent = kept;
      results.push(note);
    }
    if (!results.length) {
      return;
    }
    live.replaceChildren();
    window.setTimeout(function () {
      results.forEach(function (node) { live.appendChild(node); });
    }, 150);
  }

  function keepForAnnouncement(text) {
    try {
      window.sessionStorage.setItem(ANNOUNCE_KEY, text);
    } catch (error) {
      // No storage (a locked-down profile): the page still shows the answer.
    }
  }

  // While a lookup is pending or running, fetch its status fragment until it finishes, then
  // reload the page for the verdict and the next step. The polls slow down (1.5 s, then up to
  // 10 s apart) and stop once the lookup would be stale (data-stale-in, in seconds): the page
  // then reloads once and offers "Ask again".
  function pollLookup() {
    var box = document.querySelector("[data-poll-url]");
    if (!box) {
      return;
    }
    var url = box.getAttribute("data-poll-url");
    var staleIn = parseInt(box.getAttribute("data-stale-in") || "120", 10);
    var deadline = Date.now() + (staleIn + 2) * 1000;
    var delay = 1500;
    var finished = false;
    function finish() {
      finished = true;
      var said = box.getAttribute("data-announce");
      if (said) {
        keepForAnnouncement(said);
      }
      reloadPage();
    }
    function next(lastTry) {
      if (lastTry) {
        var note = box.querySelector(".poll-note");
        if (note) {
          note.hidden = false;
        }
        return;
      }
      var wait = Math.min(delay, Math.max(0, deadline - Date.now()));
      delay = Math.min(delay * 1.5, 10000);
      window.setTimeout(poll, wait);
    }
    function poll() {
      var lastTry = Date.now() >= deadline;
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
            localiseTimes(fresh);
            box.replaceWith(fresh);
            box = fresh;
          }
          if (box.getAttribute("data-finished") === "1") {
            finish();
          } else {
            next(lastTry);
          }
        })
        .catch(function () {
          if (!finished) {
            delay = Math.max(delay, 5000);
            next(lastTry);
          }
        });
    }
    window.setTimeout(poll, delay);
  }

  // The subject method's timeline (<details id="timeline">): loaded when the section opens, then
  // fetched again every 3 s while it stays open and the page is shown, for 5 minutes at most
  // (each fetch is an audited read); "Update again" starts another 5 minutes. Items that weren't
  // there before are marked and said in the section's live region. Whether the section was open
  // is kept for the page's next load (every action reloads it) in sessionStorage.
  var TIMELINE_EVERY = 3000;
  var TIMELINE_FOR = 5 * 60 * 1000;
  var TIMELINE_OPEN_KEY = "twosv-panel-timeline-open";

  function watchTimeline() {
    var section = document.getElementById("timeline");
    if (!section || !section.getAttribute("data-timeline-url")) {
      return;
    }
    var url = section.getAttribute("data-timeline-url");
    var openKey = TIMELINE_OPEN_KEY + ":" + section.getAttribute("data-timeline-key");
    var live = section.querySelector(".tl-live");
    var paused = section.querySelector(".tl-paused");
    var timer = null;
    var deadline = 0;
    var busy = false;
    var seen = null; // the keys of the items shown, once loaded

    function keys(root) {
      return Array.prototype.map.call(root.querySelectorAll("[data-key]"), function (node) {
        return node.getAttribute("data-key");
      });
    }

    function stop() {
      if (timer !== null) {
        window.clearTimeout(timer);
        timer = null;
      }
    }

    function watching() {
      return section.open && !document.hidden && Date.now() < deadline;
    }

    function show(fresh) {
      var box = section.querySelector("#timeline-items");
      var found = keys(fresh);
      if (seen !== null) {
        var added = [];
        fresh.querySelectorAll("[data-key]").forEach(function (node) {
          if (seen.indexOf(node.getAttribute("data-key")) === -1) {
            node.classList.add("tl-new");
            added.push(node);
          }
        });
        if (added.length && live) {
          var first = added[0].querySelector(".tl-detail");
          live.textContent = added.length === 1 && first
            ? "New in the timeline: " + first.textContent.trim()
            : added.length + " new items in the timeline.";
        }
      }
      seen = found;
      localiseTimes(fresh);
      box.replaceWith(fresh);
    }

    function refresh() {
      timer = null;
      if (busy || !section.open || document.hidden) {
        return;
      }
      busy = true;
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
          if (fresh && fresh.id === "timeline-items") {
            show(fresh);
          }
        })
        .catch(function () {
          // Offline, throttled or signed out: try again at the next turn, until the deadline.
        })
        .then(function () {
          busy = false;
          if (watching()) {
            timer = window.setTimeout(refresh, TIMELINE_EVERY);
          } else if (section.open && !document.hidden && paused) {
            paused.hidden = false;
          }
        });
    }

    function start() {
      stop();
      deadline = Date.now() + TIMELINE_FOR;
      if (paused) {
        paused.hidden = true;
      }
      refresh();
    }

    section.addEventListener("toggle", function () {
      try {
        if (section.open) {
          window.sessionStorage.setItem(openKey, "1");
        } else {
          window.sessionStorage.removeItem(openKey);
        }
      } catch (error) {
        // No storage: the section just starts closed on the next load.
      }
      if (section.open) {
        start();
      } else {
        stop();
      }
    });
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) {
        stop();
      } else if (section.open && timer === null && !busy) {
        start();
      }
    });
    var resume = section.querySelector("[data-timeline-resume]");
    if (resume) {
      resume.addEventListener("click", start);
    }
    var wasOpen = false;
    try {
      wasOpen = window.sessionStorage.getItem(openKey) === "1";
    } catch (error) {
      wasOpen = false;
    }
    if (wasOpen) {
      section.open = true; // fires "toggle", which starts the polls
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    enter();
    localiseTimes(document);
    announce();
    startCountdowns();
    pollLookup();
    watchTimeline();
  });
})();
