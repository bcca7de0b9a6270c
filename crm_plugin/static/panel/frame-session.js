/*
 * The framed panel's session, carried by the page (docs/SPEC.md §9; crm_plugin/panel/launch.py,
 * crm_plugin/panel/frame_session.py).
 *
 * A panel launched by a CRM runs in a frame of another site, where browsers block third-party
 * cookies. Its page holds the panel session's token in <meta name="panel-session">. This script
 * (only on such a page; a panel entered by a link keeps its cookie and is left alone):
 *
 * - adds the token as the X-Panel-Session header to every same-origin fetch the page makes
 *   (panel.js's polls included), never to another origin;
 * - turns the page's same-origin form submissions and link clicks into fetches with the header
 *   (mode "same-origin": a redirect elsewhere fails rather than carry the token away), follows
 *   same-origin redirects with it, then replaces the document with the answer's HTML and the
 *   address with the answer's URL; so no token lands in a URL or a cookie;
 * - opens the page named by [data-panel-open] (the launch page) the same way.
 *
 * window.panelFrameSession = {post(url, fields), get(url), reload()} for the other scripts
 * (static/zendesk/bootstrap.js posts the requester's id with it; a script that would reload the
 * page calls reload(): a plain reload carries no header).
 */
(function () {
  "use strict";

  var HEADER = "X-Panel-Session";
  var meta = document.querySelector('meta[name="panel-session"]');
  var api = window.panelFrameSession;

  if (!api) {
    if (!meta || !meta.content) {
      return; // not a framed panel
    }
    api = window.panelFrameSession = create(meta.content);
  } else if (meta && meta.content) {
    api.token = meta.content;
  }
  api.bind();

  function sameOrigin(url) {
    try {
      return new URL(url, document.baseURI).origin === window.location.origin;
    } catch (error) {
      return false;
    }
  }

  function create(token) {
    var nativeFetch = window.fetch.bind(window);
    var busy = false;
    var self = { token: token };

    // Every same-origin fetch carries the header (and can't be redirected off this origin).
    window.fetch = function (input, init) {
      var request = new Request(input, init);
      if (!sameOrigin(request.url)) {
        return nativeFetch(request);
      }
      var headers = new Headers(request.headers);
      headers.set(HEADER, self.token);
      return nativeFetch(new Request(request, { headers: headers, mode: "same-origin" }));
    };

    // Zendesk's origin and app_guid stay in the address (ZAFClient.init() needs them there).
    function carried(url) {
      var next = new URL(url, document.baseURI);
      var now = new URLSearchParams(window.location.search);
      ["origin", "app_guid"].forEach(function (name) {
        if (now.has(name) && !next.searchParams.has(name)) {
          next.searchParams.set(name, now.get(name));
        }
      });
      return next.href;
    }

    // What a navigation does: the old page's timers (panel.js's polls) stop, its listeners go
    // (document.open() drops them), the new page's scripts run.
    function replaceDocument(html, url) {
      var last = window.setTimeout(function () {}, 0);
      for (var id = 0; id <= last; id += 1) {
        window.clearTimeout(id);
        window.clearInterval(id);
      }
      if (sameOrigin(url)) {
        window.history.replaceState(null, "", carried(url));
      }
      document.open();
      document.write(html);
      document.close();
    }

    function failed() {
      busy = false;
      document.documentElement.removeAttribute("aria-busy");
      var main = document.getElementById("panel") || document.body;
      var note = document.createElement("p");
      note.className = "panel-frame-error";
      note.setAttribute("role", "alert");
      note.textContent = "The panel could not reach the server. Try again.";
      main.insertBefore(note, main.firstChild);
    }

    // Go to `url` with the header, as the browser would navigate, and show what comes back.
    function navigate(method, url, body) {
      if (busy) {
        return Promise.resolve(false);
      }
      busy = true;
      document.documentElement.setAttribute("aria-busy", "true");
      var init = { method: method, headers: { Accept: "text/html" }, redirect: "follow" };
      if (body !== undefined) {
        init.body = body;
      }
      return window
        .fetch(url, init)
        .then(function (response) {
          return response.text().then(function (html) {
            busy = false;
            replaceDocument(html, response.url || url);
            return true;
          });
        })
        .catch(function () {
          failed();
          return false;
        });
    }

    function onSubmit(event) {
      var form = event.target;
      if (event.defaultPrevented || !(form instanceof HTMLFormElement)) {
        return;
      }
      var submitter = event.submitter || null;
      var action =
        submitter && submitter.hasAttribute("formaction") ? submitter.formAction : form.action;
      var method = (
        (submitter && submitter.getAttribute("formmethod")) ||
        form.getAttribute("method") ||
        "get"
      ).toUpperCase();
      var target = (submitter && submitter.getAttribute("formtarget")) || form.target;
      if (!sameOrigin(action) || (target && target !== "_self") || method === "DIALOG") {
        return;
      }
      event.preventDefault();
      var params = new URLSearchParams();
      new FormData(form, submitter).forEach(function (value, name) {
        if (typeof value === "string") {
          params.append(name, value);
        }
      });
      if (method === "GET") {
        var url = new URL(action, document.baseURI);
        url.search = params.toString();
        navigate("GET", url.href);
      } else {
        navigate("POST", action, params);
      }
    }

    function onClick(event) {
      if (event.defaultPrevented || event.button !== 0) {
        return;
      }
      if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
        return;
      }
      var link = event.target instanceof Element ? event.target.closest("a[href]") : null;
      if (!link || link.hasAttribute("download") || (link.target && link.target !== "_self")) {
        return;
      }
      var url = new URL(link.href, document.baseURI);
      if (!sameOrigin(url.href) || url.pathname.indexOf("/panel/") !== 0) {
        return;
      }
      if (url.hash && url.pathname === window.location.pathname && url.search === window.location.search) {
        return; // a jump within the page
      }
      event.preventDefault();
      navigate("GET", url.href);
    }

    function onReady() {
      var opener = document.querySelector("[data-panel-open]");
      if (opener) {
        navigate("GET", opener.getAttribute("data-panel-open"));
      }
    }

    // Bound again on every document this script runs in: document.open() drops listeners.
    self.bind = function () {
      window.removeEventListener("submit", onSubmit);
      window.removeEventListener("click", onClick);
      window.addEventListener("submit", onSubmit);
      window.addEventListener("click", onClick);
      if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", onReady, { once: true });
      } else {
        onReady();
      }
    };
    self.post = function (url, fields) {
      var params = new URLSearchParams();
      Object.keys(fields || {}).forEach(function (name) {
        params.append(name, String(fields[name]));
      });
      return navigate("POST", url, params);
    };
    self.get = function (url) {
      return navigate("GET", url);
    };
    self.reload = function () {
      return navigate("GET", window.location.href);
    };
    return self;
  }
})();
