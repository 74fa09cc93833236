// The web UI's one script: live pages without reloading, and a running
// task's output followed as it grows. Every page works without it.
// Text from the cluster is only ever set with textContent or taken from
// HTML the master escaped.
"use strict";

// Script errors and anything the Content-Security-Policy blocked, for
// whoever wants to know the page is clean (the browser tests read it).
window.wasmosErrors = [];
window.addEventListener("error", (e) => window.wasmosErrors.push(String(e.message)));
document.addEventListener("securitypolicyviolation", (e) =>
  window.wasmosErrors.push(`blocked by the CSP: ${e.violatedDirective} ${e.blockedURI}`),
);

// Replaces <main> with the same page's fresh one every `data-live` ms.
function live() {
  const main = document.querySelector("main[data-live]");
  const every = main ? Number(main.dataset.live) : 0;
  if (!every) return;
  setInterval(async () => {
    if (document.hidden || document.activeElement?.closest("form")) return;
    try {
      const response = await fetch(location.href, { credentials: "same-origin" });
      if (!response.ok || response.redirected) return;
      const fresh = new DOMParser()
        .parseFromString(await response.text(), "text/html")
        .querySelector("main");
      const now = document.querySelector("main");
      if (fresh && now) now.replaceWith(fresh);
    } catch (_) {
      // The master may be restarting: try again at the next tick.
    }
  }, every);
}

// Appends what a task wrote since the offset the page was rendered at.
function follow(pre) {
  let offset = Number(pre.dataset.offset || 0);
  if (pre.dataset.complete === "true") return;
  const tick = async () => {
    try {
      const response = await fetch(`${pre.dataset.follow}&offset=${offset}`, {
        credentials: "same-origin",
      });
      if (!response.ok) return setTimeout(tick, 5000);
      const read = await response.json();
      if (read.text) {
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(document.createTextNode(read.text));
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
      offset = read.next_offset;
      pre.dataset.offset = String(offset);
      if (read.complete) {
        pre.dataset.complete = "true";
        return;
      }
      setTimeout(tick, read.text ? 200 : 1000);
    } catch (_) {
      setTimeout(tick, 5000);
    }
  };
  setTimeout(tick, 500);
}

document.addEventListener("DOMContentLoaded", () => {
  live();
  document.querySelectorAll("pre[data-follow]").forEach(follow);
});
