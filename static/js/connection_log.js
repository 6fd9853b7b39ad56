/* Device page, "Connection log": ask the JSON API every second for the events newer than the
 * newest shown (since) and those whose count grew after the newest time shown (changedAfter),
 * and put them on top (a folded row whose count grew moves up).
 * An enhancement only: a plain reload shows the current log without JavaScript.
 * Every text comes from the server (translated there); nothing is inserted as HTML. */
(function () {
  "use strict";

  var section = document.getElementById("connection-log");
  var rows = document.getElementById("connection-log-rows");
  var empty = document.getElementById("connection-log-empty");
  if (!section || !rows || !window.fetch) return;
  var text = section.dataset;
  var POLL_MS = 1000;
  var FULL_EVERY = 15; // now and then the whole log, in case two folded rows changed at once
  var MAX_ROWS = 100;
  var polls = 0;

  function el(tag, className, content) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined && content !== null) node.textContent = String(content);
    return node;
  }

  function fill(template, values) {
    return template.replace(/%\((\w+)\)s/g, function (_m, name) {
      return values[name] === undefined ? "" : values[name];
    });
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function when(iso) {
    var date = new Date(iso);
    var node = el("time", null,
      date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds()));
    node.setAttribute("datetime", iso);
    return node;
  }

  function row(event) {
    var tr = el("tr", "connlog-" + event.kind);
    tr.dataset.eventId = event.id;
    tr.dataset.kind = event.kind;
    var cell = el("td");
    cell.appendChild(when(event.at));
    tr.appendChild(cell);
    cell = el("td");
    cell.appendChild(el("span", "badge connlog-badge-" + event.kind, text["text" + event.kind.charAt(0).toUpperCase() + event.kind.slice(1)] || event.kind));
    tr.appendChild(cell);
    tr.appendChild(el("td", "connlog-count", event.count));
    cell = el("td");
    var reason = el("p", "connlog-reason");
    reason.appendChild(el("span", "mono", event.code));
    reason.appendChild(document.createTextNode(" — " + event.reason));
    cell.appendChild(reason);
    if (event.hint) cell.appendChild(el("p", "connlog-hint hint", event.hint));
    if (event.sessionSeconds !== null && event.sessionSeconds !== undefined) {
      cell.appendChild(el("p", "connlog-session hint", fill(text.textSession, {seconds: event.sessionSeconds})));
    }
    if (event.takenOverBy) {
      cell.appendChild(el("p", "connlog-taker hint", fill(text.textTaker, {
        client_id: event.takenOverBy.clientId, peer: event.takenOverBy.peer})));
    }
    tr.appendChild(cell);
    tr.appendChild(el("td", "mono", event.clientId || "—"));
    tr.appendChild(el("td", "mono", event.peer || "—"));
    var broker = event.broker === "emqx" ? "EMQX" : event.broker;
    tr.appendChild(el("td", null, [broker, event.transport, event.protocol ? "MQTT " + event.protocol : ""]
      .filter(Boolean).join(" · ")));
    tr.appendChild(el("td", null, event.connack === null ? "—" : event.connack));
    return tr;
  }

  // The newest event id and the newest time shown: the API answers what changed after them.
  function newest() {
    var id = 0, at = "", latest = -Infinity;
    rows.querySelectorAll("tr[data-event-id]").forEach(function (tr) {
      id = Math.max(id, Number(tr.dataset.eventId));
      var time = tr.querySelector("time");
      var value = time ? Date.parse(time.getAttribute("datetime")) : NaN;
      if (value > latest) { latest = value; at = time.getAttribute("datetime"); }
    });
    return {id: id ? String(id) : "", at: at};
  }

  function show(events) {
    for (var i = events.length - 1; i >= 0; i--) {
      var old = rows.querySelector('tr[data-event-id="' + events[i].id + '"]');
      if (old) old.remove();
      rows.insertBefore(row(events[i]), rows.firstChild);
    }
    while (rows.children.length > MAX_ROWS) rows.lastChild.remove();
    if (empty) empty.hidden = rows.children.length > 0;
  }

  function poll() {
    polls += 1;
    var shown = newest();
    var since = polls % FULL_EVERY === 0 ? "" : shown.id;
    var url = section.dataset.apiUrl + (since ? "?since=" + encodeURIComponent(since) +
      (shown.at ? "&changedAfter=" + encodeURIComponent(shown.at) : "") : "");
    fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) { return response.ok ? response.json() : {events: []}; })
      .then(function (body) {
        if (!since) rows.replaceChildren();
        show(body.events || []);
      })
      .catch(function () { /* the next poll tries again */ })
      .then(function () { window.setTimeout(poll, POLL_MS); });
  }

  window.setTimeout(poll, POLL_MS);
})();
