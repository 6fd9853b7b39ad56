/* Device page, "Messages": while a trace runs, ask the trace API every second for the messages
 * newer than the last one shown and append them (so a message shows within 2 s). An enhancement
 * only: the forms work without JavaScript and a reload shows the whole trace.
 * Every text comes from the server (translated there); nothing is inserted as HTML. */
(function () {
  "use strict";

  var section = document.getElementById("messages");
  if (!section || !section.dataset.apiUrl || !window.fetch) return;
  var rows = document.getElementById("trace-rows");
  var empty = document.getElementById("trace-empty");
  var text = section.dataset;
  var POLL_MS = 1000;

  function el(tag, className, content) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined && content !== null) node.textContent = String(content);
    return node;
  }

  function pretty(payload, encoding) {
    if (encoding !== "utf8") return payload;
    var start = payload.trim().charAt(0);
    if (start !== "{" && start !== "[") return payload;
    try { return JSON.stringify(JSON.parse(payload), null, 2); } catch (e) { return payload; }
  }

  function lastId() {
    var last = rows.lastElementChild;
    return last ? last.getAttribute("data-id") : "";
  }

  function add(message) {
    var tr = el("tr");
    tr.setAttribute("data-id", message.id);
    var when = el("time", null, message.at.slice(11, 19));
    when.setAttribute("datetime", message.at);
    var cell = el("td"); cell.appendChild(when); tr.appendChild(cell);
    var direction = el("td", null, message.direction === "from_device" ? text.textFrom : text.textTo);
    if (message.refused) direction.appendChild(el("span", "muted", " (" + text.textRefused + ")"));
    tr.appendChild(direction);
    tr.appendChild(el("td", "mono", message.topic));
    tr.appendChild(el("td", null, message.qos));
    tr.appendChild(el("td", null, message.size));
    var payload = el("td");
    payload.appendChild(el("pre", "payload", pretty(message.payload, message.encoding)));
    if (message.encoding === "hex") payload.appendChild(el("span", "muted", "hex"));
    if (message.truncated) payload.appendChild(el("span", "muted", " (" + text.textTruncated + ")"));
    tr.appendChild(payload);
    rows.appendChild(tr);
  }

  function poll() {
    var after = lastId();
    fetch(text.apiUrl + (after ? "?after=" + encodeURIComponent(after) : ""),
          { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (trace) {
        if (!trace) return;
        trace.messages.forEach(add);
        if (rows.children.length && empty) empty.hidden = true;
        if (trace.running) {
          window.setTimeout(poll, POLL_MS);
        } else {
          var status = document.getElementById("trace-status");
          if (status) status.textContent = text.textEnded;
        }
      })
      .catch(function () { window.setTimeout(poll, POLL_MS * 3); });
  }

  if (text.running === "true") window.setTimeout(poll, POLL_MS);
})();
