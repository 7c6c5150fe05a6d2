/* AIoT platform UI helpers: browser time zone into forms, confirmations, live log tail. No dependencies. */
(function () {
  "use strict";

  function browserTimeZone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { return "UTC"; }
  }

  /* Inputs marked data-browser-tz get the browser's IANA time zone unless the user (or server) already chose. */
  function fillTimeZones(root) {
    var zone = browserTimeZone();
    root.querySelectorAll("[data-browser-tz]").forEach(function (el) {
      if (!el.value || el.dataset.tzDefault === el.value) { el.value = zone; }
    });
    root.querySelectorAll("[data-browser-tz-label]").forEach(function (el) { el.textContent = zone; });
  }

  /* A location select with data-location-zones (location id -> IANA zone) sets its form's time zone field to the
     chosen location's zone, unless the user typed a zone there: schedules run in the location's local time. */
  document.addEventListener("input", function (event) {
    if (event.target.matches && event.target.matches("[data-browser-tz]")) { event.target.dataset.userSet = "1"; }
  });
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (!select.dataset || !select.dataset.locationZones || !select.form) { return; }
    var zones;
    try { zones = JSON.parse(select.dataset.locationZones); } catch (e) { return; }
    var field = select.form.querySelector("[data-browser-tz]");
    if (field && !field.dataset.userSet && zones[select.value]) { field.value = zones[select.value]; }
  });

  /* Forms or buttons with data-confirm ask before doing something that cannot be undone. */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = (event.submitter && event.submitter.dataset.confirm) || form.dataset.confirm;
    if (message && !window.confirm(message)) { event.preventDefault(); }
  }, true);

  /* A server-side error next to a field goes away once the user changes that field. */
  function clearFieldError(event) {
    var field = event.target.closest && event.target.closest(".field.invalid");
    if (!field) { return; }
    field.classList.remove("invalid");
    field.querySelectorAll("ul.field-error").forEach(function (el) { el.remove(); });
    field.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
  }
  document.addEventListener("change", clearFieldError);
  document.addEventListener("input", clearFieldError);

  /* Live tail: <tbody data-sse-src="/api/v1/logs/stream?..."> gets one row per server-sent record. */
  var streams = [];
  function cell(text, cls) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) { td.className = cls; }
    return td;
  }
  function startTails(root) {
    streams = streams.filter(function (entry) {
      if (document.body.contains(entry.body)) { return true; }
      entry.source.close();
      return false;
    });
    root.querySelectorAll("[data-sse-src]").forEach(function (body) {
      if (body.dataset.sseStarted) { return; }
      body.dataset.sseStarted = "1";
      var status = document.getElementById(body.dataset.sseStatus || "");
      var source = new EventSource(body.dataset.sseSrc);
      streams.push({ source: source, body: body });
      source.onopen = function () { if (status) { status.textContent = "live"; status.className = "state s-running"; } };
      source.onerror = function () {
        if (status) { status.textContent = "reconnecting"; status.className = "state s-pending"; }
      };
      // The server sends named events (`event: log`): `onmessage` alone would never fire.
      var showRecord = function (message) {
        var record;
        try { record = JSON.parse(message.data); } catch (e) { return; }
        var row = document.createElement("tr");
        var level = String(record.level || "").toLowerCase();
        row.appendChild(cell(record.ts || record.time || "", ""));
        row.appendChild(cell(record.level || "", "lvl-" + level));
        row.appendChild(cell(record.service || "", ""));
        row.appendChild(cell(record.workload_id || record.workload || "", ""));
        row.appendChild(cell(record.message || record.msg || "", "msg"));
        body.insertBefore(row, body.firstChild);
        while (body.children.length > 500) { body.removeChild(body.lastChild); }
        var empty = document.getElementById(body.dataset.sseEmpty || "");
        if (empty) { empty.remove(); }
      };
      source.addEventListener("log", showRecord);
      source.onmessage = showRecord;
    });
  }
  window.addEventListener("pagehide", function () { streams.forEach(function (s) { s.source.close(); }); });

  function init(root) { fillTimeZones(root); startTails(root); }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSwap", function (event) { init(event.target); });
})();
