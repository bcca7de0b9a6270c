/*
 * The Zendesk app's bootstrap page (docs/SPEC.md §9, docs/integrations.md).
 *
 * The backend serves this page in the ticket sidebar after verifying Zendesk's signed token
 * (POST /panel/launch/zendesk/). The page loads the ZAF SDK, then this script, and holds its
 * configuration in a JSON block (no inline script, so the page's CSP can stay strict):
 *
 *   <script type="application/json" id="twosv-zendesk-config">
 *     {"open_url": "/panel/...", "fields": {"<name>": "<value>"}, "messages": {...}}
 *   </script>
 *   <p id="twosv-zendesk-message"></p>
 *
 * It asks the ZAF client for the ticket requester's external id (the customer id twosv-panel
 * knows) and opens that customer's panel with a POST to `open_url`, sending `customer_id`
 * and the `fields` the backend gave it: through static/panel/frame-session.js when the page has
 * a panel session (its token travels in the X-Panel-Session header, the launch's way), else a
 * form POST. Nothing secret ever lands in a URL. ZAFClient.init() only works on a page whose
 * URL keeps the `origin` and `app_guid` parameters Zendesk added, so they are carried on to
 * `open_url`, and every page the backend serves after it must carry them on in turn.
 */
(function (root, factory) {
  "use strict";
  var api = factory();
  if (typeof module === "object" && module.exports) {
    module.exports = api; // tests (node) drive it with a stand-in for the ZAF client
  } else if (root && root.document) {
    api.start(root);
  }
})(typeof window !== "undefined" ? window : this, function () {
  "use strict";

  var CARRIED = ["origin", "app_guid"];
  var CUSTOMER_ID = /^[A-Za-z0-9._:-]{1,64}$/;
  var MESSAGES = {
    loading: "Looking up the requester…",
    no_client: "Open this app from a Zendesk ticket.",
    no_config: "The app could not start: reload the ticket.",
    no_external_id:
      "This requester has no external id: twosv-panel can't tell which customer it is.",
    bad_external_id: "The requester's external id is not a customer id twosv-panel knows.",
    error: "Zendesk did not answer: reload the ticket.",
  };

  /* The query string with only the parameters Zendesk needs to find its app again. */
  function carriedParams(search) {
    var from = new URLSearchParams(search || "");
    var kept = new URLSearchParams();
    CARRIED.forEach(function (name) {
      if (from.has(name)) {
        kept.set(name, from.get(name));
      }
    });
    return kept;
  }

  /* `url` with origin and app_guid (from `search`) added to its own query. */
  function withCarried(url, search) {
    var kept = carriedParams(search).toString();
    if (!kept) {
      return url;
    }
    return url + (url.indexOf("?") === -1 ? "?" : "&") + kept;
  }

  function readConfig(doc) {
    var element = doc.getElementById("twosv-zendesk-config");
    if (!element) {
      return null;
    }
    try {
      var config = JSON.parse(element.textContent);
      return config && typeof config.open_url === "string" ? config : null;
    } catch (error) {
      return null;
    }
  }

  function say(doc, config, key) {
    var element = doc.getElementById("twosv-zendesk-message");
    var messages = (config && config.messages) || {};
    if (element) {
      element.textContent = messages[key] || MESSAGES[key];
    }
    return key;
  }

  function openPanel(doc, config, customerId, search) {
    var fields = Object.assign({}, config.fields || {}, { customer_id: customerId });
    var frameSession = doc.defaultView && doc.defaultView.panelFrameSession;
    if (frameSession) {
      // The launch's panel session rides in a header (static/panel/frame-session.js): a
      // fetch that keeps it, then the panel's page in place of this one.
      frameSession.post(withCarried(config.open_url, search), fields);
      return;
    }
    var form = doc.createElement("form");
    form.setAttribute("method", "post");
    form.setAttribute("action", withCarried(config.open_url, search));
    Object.keys(fields).forEach(function (name) {
      var input = doc.createElement("input");
      input.setAttribute("type", "hidden");
      input.setAttribute("name", name);
      input.setAttribute("value", String(fields[name]));
      form.appendChild(input);
    });
    doc.body.appendChild(form);
    form.submit();
  }

  /* Run the bootstrap in `win`; resolves with what happened (for the tests). */
  function start(win) {
    var doc = win.document;
    var config = readConfig(doc);
    if (!config) {
      return Promise.resolve(say(doc, null, "no_config"));
    }
    var client = win.ZAFClient && win.ZAFClient.init();
    if (!client) {
      // init() is false when the URL lost origin/app_guid, or outside Zendesk.
      return Promise.resolve(say(doc, config, "no_client"));
    }
    say(doc, config, "loading");
    if (config.height) {
      client.invoke("resize", { width: "100%", height: config.height });
    }
    return client.get("ticket.requester.externalId").then(
      function (data) {
        var externalId = data && data["ticket.requester.externalId"];
        if (externalId === null || externalId === undefined || externalId === "") {
          return say(doc, config, "no_external_id");
        }
        externalId = String(externalId);
        if (!CUSTOMER_ID.test(externalId)) {
          return say(doc, config, "bad_external_id");
        }
        openPanel(doc, config, externalId, win.location.search);
        return "opened";
      },
      function () {
        return say(doc, config, "error");
      }
    );
  }

  return {
    CARRIED: CARRIED,
    carriedParams: carriedParams,
    withCarried: withCarried,
    start: start,
  };
});
