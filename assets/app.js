// FlowGuard dashboard: notifications banner (license expiry warnings for Owners and
// PlatformAdmins, from GET /api/v1/notifications). Loaded as a same-origin script (CSP
// script-src 'self'); uses the session cookie, shows nothing when not logged in.
"use strict";
(function () {
  var box = document.getElementById("notifications");
  if (!box) {
    return;
  }
  fetch("/api/v1/notifications", { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (r) { return r.ok ? r.json() : { items: [] }; })
    .then(function (body) {
      (body.items || []).forEach(function (n) {
        var p = document.createElement("p");
        p.className = "notice notice-" + (n.severity === "critical" ? "critical" : "warning");
        p.setAttribute("role", n.severity === "critical" ? "alert" : "status");
        p.textContent = n.message; // text only: never HTML
        box.appendChild(p);
      });
    })
    .catch(function () { /* offline or not logged in: no banner */ });
})();
