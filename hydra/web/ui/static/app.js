// Hydra's pages: times in the browser's zone, the live run page, "go back" links.
// No framework; htmx (vendored beside this file) does the polling fragments.
(function () {
  "use strict";

  const pad = (n) => String(n).padStart(2, "0");

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach((el) => {
      if (el.dataset.local) return;
      const when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
      el.textContent = `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())} ` +
        `${pad(when.getHours())}:${pad(when.getMinutes())}:${pad(when.getSeconds())}`;
      el.title = `${el.title} (shown in ${zone})`;
      el.dataset.local = "1";
    });
  }

  function appendLog(log, piece, state) {
    if (piece.attempt !== state.attempt) {
      state.attempt = piece.attempt;
      const head = document.createElement("span");
      head.className = "log-attempt";
      head.textContent = `── attempt ${piece.attempt} ──\n`;
      log.appendChild(head);
    }
    const span = document.createElement("span");
    span.className = `log-${piece.kind}`;
    span.textContent = piece.text;
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(span);
    if (atEnd) log.scrollTop = log.scrollHeight;
  }

  function followRun(live) {
    const log = document.getElementById("log");
    const state = { attempt: 0 };
    const source = new EventSource(live.dataset.events);
    source.addEventListener("run", (event) => {
      live.innerHTML = JSON.parse(event.data).html;
      localTimes(live);
    });
    source.addEventListener("log", (event) => appendLog(log, JSON.parse(event.data), state));
    source.addEventListener("problem", (event) => {
      const note = document.createElement("p");
      note.className = "notice notice-error";
      note.textContent = JSON.parse(event.data).message;
      log.after(note);
    });
    source.addEventListener("end", () => {
      source.close();
      const dot = document.getElementById("log-live");
      if (dot) dot.remove();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    const live = document.querySelector("[data-events]");
    if (live && window.EventSource) followRun(live);
    document.querySelectorAll("a[data-back]").forEach((link) => {
      link.addEventListener("click", (event) => {
        if (history.length > 1) { event.preventDefault(); history.back(); }
      });
    });
  });
  document.addEventListener("htmx:afterSwap", (event) => localTimes(event.target.parentNode || document));
})();
