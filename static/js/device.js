/* Device page: copy buttons, the parameters panel opened in place, options applied as you type.
 * Everything here is an enhancement: without JavaScript the panel is a plain GET form.
 * The server computes every value (the JSON endpoint's code); this file never signs anything. */
(function () {
  "use strict";

  var status = document.getElementById("copy-status");
  var slot = document.getElementById("mqtt-params-slot");
  var openForm = document.getElementById("params-open-form");
  var openButton = document.getElementById("params-button");

  function announce(text) {
    if (!status) return;
    status.textContent = "";
    window.setTimeout(function () { status.textContent = text; }, 30);
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      try {
        if (document.execCommand("copy")) { resolve(); } else { reject(new Error("copy refused")); }
      } catch (error) {
        reject(error);
      } finally {
        area.remove();
      }
    });
  }

  function feedback(button, text, ok) {
    if (!button.dataset.label) button.dataset.label = button.textContent;
    button.textContent = text;
    button.classList.toggle("copied", ok);
    announce(text);
    window.clearTimeout(button._copyTimer);
    button._copyTimer = window.setTimeout(function () {
      button.textContent = button.dataset.label;
      button.classList.remove("copied");
    }, 1600);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) return;
    var target = document.getElementById(button.dataset.copyTarget);
    if (!target) return;
    var copied = status ? status.dataset.copied : "Copied";
    var failed = status ? status.dataset.failed : "Could not copy";
    copyText(target.textContent).then(
      function () { feedback(button, copied, true); },
      function () { feedback(button, failed, false); }
    );
  });

  function panel() { return document.getElementById("mqtt-params"); }

  function setOpen(open) {
    var section = panel();
    if (section) section.hidden = !open;
    if (openButton) openButton.setAttribute("aria-expanded", String(open));
  }

  function parse(html) {
    return new DOMParser().parseFromString(html, "text/html");
  }

  function wireOptions() {
    var form = document.getElementById("params-options");
    if (!form || form.dataset.wired) return;
    form.dataset.wired = "1";
    var timer = null;
    var sequence = 0;

    function refresh() {
      var query = new URLSearchParams(new FormData(form)).toString();
      var mine = ++sequence;
      form.setAttribute("aria-busy", "true");
      fetch(window.location.pathname + "?" + query + "&fragment=panel", { credentials: "same-origin" })
        .then(function (response) { return response.text(); })
        .then(function (html) {
          if (mine !== sequence) return;
          var doc = parse(html);
          var fresh = doc.getElementById("params-results");
          if (!fresh) { form.submit(); return; }  // e.g. logged out meanwhile: let the server say so
          document.getElementById("params-results").innerHTML = fresh.innerHTML;
          doc.querySelectorAll("[data-error-for]").forEach(function (source) {
            var name = source.dataset.errorFor;
            var target = form.querySelector('[data-error-for="' + name + '"]');
            var message = source.textContent.trim();
            if (target && target.textContent.trim() !== message) target.textContent = message;
            form.querySelectorAll('[name="' + name + '"]').forEach(function (input) {
              if (message) { input.setAttribute("aria-invalid", "true"); } else { input.removeAttribute("aria-invalid"); }
            });
          });
          window.history.replaceState(null, "", "?" + query + "#mqtt-params");
        })
        .catch(function () { form.submit(); })
        .finally(function () { if (mine === sequence) form.removeAttribute("aria-busy"); });
    }

    form.addEventListener("input", function (event) {
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, event.target.type === "text" ? 200 : 0);
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      window.clearTimeout(timer);
      refresh();
    });
  }

  function wireClose() {
    var close = document.getElementById("params-close");
    if (!close || close.dataset.wired) return;
    close.dataset.wired = "1";
    close.addEventListener("click", function (event) {
      event.preventDefault();
      setOpen(false);
      window.history.replaceState(null, "", window.location.pathname);
      if (openButton) openButton.focus();
    });
  }

  if (openForm && slot) {
    openForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var section = panel();
      if (section) {
        var open = section.hidden;
        setOpen(open);
        if (open) section.focus();
        return;
      }
      fetch(slot.dataset.panelUrl, { credentials: "same-origin" })
        .then(function (response) { return response.text(); })
        .then(function (html) {
          var fresh = parse(html).getElementById("mqtt-params");
          if (!fresh) { openForm.submit(); return; }
          slot.replaceChildren(document.importNode(fresh, true));
          wireOptions();
          wireClose();
          setOpen(true);
          window.history.replaceState(null, "", "?panel=1#mqtt-params");
          panel().focus();
        })
        .catch(function () { openForm.submit(); });
    });
  }
  wireOptions();
  wireClose();
})();
