/* Device page, "Connection checks": start a check through the JSON API and show its result in
 * place (polling GET /api/v1/checks/{id}), then refresh the history below.
 * An enhancement only: without JavaScript the form posts to the console and redirects back.
 * Every text shown comes from the server (translated there); nothing here is inserted as HTML. */
(function () {
  "use strict";

  var section = document.getElementById("checks");
  var form = document.getElementById("check-form");
  var box = document.getElementById("check-result");
  var history = document.getElementById("check-history");
  if (!section || !form || !box || !window.fetch) return;
  var button = document.getElementById("check-button");
  var text = section.dataset;
  var OPTION_NAMES = ["securemode", "signmethod", "timestamp", "clientId", "exclusive"];
  var POLL_MS = 300;
  var STUCK_MS = 10000;

  function csrfToken() {
    var field = form.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function el(tag, className, content) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined && content !== null) node.textContent = String(content);
    return node;
  }

  function show(status, lines) {
    box.hidden = false;
    box.dataset.status = status;
    box.replaceChildren.apply(box, lines);
  }

  function showCheck(check) {
    if (check.status === "queued" || check.status === "running") {
      var waiting = check.status === "queued" && Date.now() - startedAt > STUCK_MS;
      show(check.status, [el("p", "check-message",
        waiting ? text.textStuck : (check.status === "queued" ? text.textQueued : text.textRunning))]);
      return;
    }
    var facts = [];
    if (check.connackCode !== null && check.connackCode !== undefined) {
      facts.push(text.textCode + ": " + check.connackCode);
    }
    var steps = check.latencies || {};
    var parts = ["tcp", "tls", "connack", "puback", "total"].filter(function (k) {
      return steps[k] !== undefined;
    }).map(function (k) { return k + " " + Math.round(steps[k]); });
    if (parts.length) facts.push(text.textLatency + ": " + parts.join(" · "));
    var lines = [el("p", "check-message",
      (check.status === "succeeded" ? text.textSucceeded : text.textFailed) + " — " + check.reason)];
    if (check.hint) lines.push(el("p", "check-hint", check.hint));
    // The detail is the raw technical cause (library or broker wording, not translated): labelled so.
    if (check.detail) lines.push(el("p", "check-hint muted", text.textDetail + " " + check.detail));
    if (facts.length) lines.push(el("p", "check-facts mono", facts.join("  ·  ")));
    show(check.status, lines);
  }

  function badgeClass(status) {
    return status === "succeeded" ? "badge-online" : status === "failed" ? "badge-disabled" : "badge-inactive";
  }

  function renderHistory(checks) {
    if (!history) return;
    var body = history.tBodies[0];
    var rows = checks.slice(0, 10).map(function (check) {
      var row = el("tr");
      row.dataset.checkId = check.id;
      row.dataset.status = check.status;
      // Written as the server writes the rows it renders (Y-m-d H:i:s in the portal's time zone,
      // which the API's ISO time carries), so refreshed rows match the others.
      var time = el("time", null, String(check.queuedAt || "").slice(0, 19).replace("T", " "));
      time.setAttribute("datetime", check.queuedAt);
      var cell = el("td");
      cell.appendChild(time);
      row.appendChild(cell);
      var status = el("td");
      status.appendChild(el("span", "badge " + badgeClass(check.status),
        check.status === "succeeded" ? text.textSucceeded : check.status === "failed" ? text.textFailed :
          check.status === "queued" ? text.textStatusQueued : text.textStatusRunning));
      row.appendChild(status);
      var result = el("td", null, check.reason || "—");
      if (check.detail) result.appendChild(el("span", "muted", " (" + check.detail + ")"));
      row.appendChild(result);
      row.appendChild(el("td", "num", check.connackCode === null ? "" : check.connackCode));
      row.appendChild(el("td", "num", check.latencyMs === null ? "" : Math.round(check.latencyMs)));
      var options = check.options || {};
      row.appendChild(el("td", "mono", (options.protocol || "3.1.1") +
        (options.securemode ? " · securemode=" + options.securemode : "")));
      row.appendChild(el("td", null, check.requestedBy || "—"));
      return row;
    });
    if (rows.length) body.replaceChildren.apply(body, rows);
  }

  function refreshHistory() {
    return fetch(text.apiUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data) renderHistory(data.checks); })
      .catch(function () {});
  }

  var startedAt = 0;

  function poll(id) {
    fetch(text.checkUrl + id, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (check) {
        if (check.error) throw new Error(check.error.message);
        showCheck(check);
        if (check.status === "queued" || check.status === "running") {
          window.setTimeout(function () { poll(id); }, POLL_MS);
        } else {
          button.disabled = false;
          refreshHistory();
        }
      })
      .catch(function (error) {
        button.disabled = false;
        show("failed", [el("p", "check-message", text.textError + " " + error.message)]);
      });
  }

  function start(force) {
    var body = { protocol: form.elements.protocol.value };
    // Test what the parameters panel shows: its live options when it is open, else the
    // options the page was asked for (hidden fields), else the defaults.
    OPTION_NAMES.forEach(function (name) {
      if (form.elements[name] && form.elements[name].value) body[name] = form.elements[name].value;
    });
    var panel = document.getElementById("params-options");
    if (panel) {
      OPTION_NAMES.forEach(function (name) {
        var field = panel.elements[name];
        if (!field) return;
        var value = field.type === "checkbox" ? (field.checked ? "true" : "false") : field.value;
        if (value) body[name] = value; else delete body[name];
      });
    }
    if (force) body.force = true;
    button.disabled = true;
    return fetch(text.apiUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().then(function (data) { return { status: response.status, data: data }; });
    }).then(function (answer) {
      if (answer.status === 409 && answer.data.error && answer.data.error.code === "device_online") {
        button.disabled = false;
        if (window.confirm(answer.data.error.message)) return start(true);
        show("failed", [el("p", "check-message", answer.data.error.message)]);
        return null;
      }
      if (answer.status !== 202) {
        throw new Error(answer.data.error ? answer.data.error.message : String(answer.status));
      }
      startedAt = Date.now();
      showCheck(answer.data);
      refreshHistory();
      poll(answer.data.id);
      return null;
    }).catch(function (error) {
      button.disabled = false;
      show("failed", [el("p", "check-message", text.textError + " " + error.message)]);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var force = form.elements.force ? form.elements.force.checked : false;
    if (section.dataset.online === "true" && !force) {
      if (!window.confirm(button.dataset.confirm)) return;
      force = true;
    }
    start(force);
  });
})();
