/**
 * The dashboard's stylesheet and its one small script, served from the package
 * itself (compiled into dist/ with the rest): no CDN, so it works offline and
 * behind any proxy.
 *
 * The script does three things: keeps the page live (an EventSource on
 * `<base>/live` that sends the page again whenever it changed; each element
 * marked data-live is swapped for its new version unless the user is typing or
 * has ticked boxes in it), "select all" on the instance list, and nothing else:
 * every action is a plain form POST that works without it.
 */

export const STYLESHEET = `
:root{--fg:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#fff;--panel:#f8fafc;--accent:#2563eb;
  --bad:#b91c1c;--ok:#15803d;--warn:#b45309}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;gap:18px;align-items:center;padding:10px 20px;border-bottom:1px solid var(--line);
  background:var(--panel)}
header .brand{font-weight:700}
header nav a{margin-right:14px;color:var(--fg);text-decoration:none}
header nav a.active{font-weight:600;border-bottom:2px solid var(--accent)}
header .meta{margin-left:auto;color:var(--muted);font-size:12px}
main{padding:16px 20px;max-width:1400px}
h1{font-size:20px;margin:4px 0 12px}
h2{font-size:15px;margin:22px 0 8px}
a{color:var(--accent)}
table{border-collapse:collapse;width:100%;margin:4px 0 8px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;background:#e2e8f0}
.s-runnable{background:#dbeafe}.s-running{background:#fef3c7}.s-awaiting{background:#e0e7ff}
.s-joining{background:#ede9fe}
.s-done{background:#dcfce7}.s-failed{background:#fee2e2;color:var(--bad)}
.s-cancelled{background:#f1f5f9;color:var(--muted)}
.muted{color:var(--muted)}
.flash{padding:8px 12px;border-radius:6px;margin:0 0 12px;background:#ecfdf5;border:1px solid #a7f3d0}
.flash.error{background:#fef2f2;border-color:#fecaca;color:var(--bad)}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:8px 28px}
.panel{border:1px solid var(--line);border-radius:8px;padding:10px 14px;background:#fff}
form.inline{display:inline}
form.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin-bottom:10px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:var(--muted)}
input,select,textarea,button{font:inherit}
input,select,textarea{padding:4px 6px;border:1px solid #cbd5e1;border-radius:5px}
button{padding:4px 12px;border:1px solid #94a3b8;border-radius:5px;background:#fff;cursor:pointer}
button.primary{background:var(--accent);border-color:var(--accent);color:#fff}
button.small{padding:0 8px;font-size:12px;margin-left:6px}
button.danger{border-color:var(--bad);color:var(--bad)}
.actions{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.actions form{border:1px solid var(--line);border-radius:8px;padding:10px;display:flex;flex-direction:column;gap:6px}
.json{font:12px/1.5 ui-monospace,SFMono-Regular,Menlo,monospace}
.json ul{list-style:none;margin:0;padding-left:18px}
.json summary{cursor:pointer;color:var(--muted)}
.j-str{color:#0f766e}.j-lit{color:#7c2d12}.j-null{color:var(--muted)}.j-key{color:#1e40af}
pre{white-space:pre-wrap;word-break:break-word;font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace;margin:4px 0}
ol.timeline{list-style:none;padding:0;margin:0;border-left:2px solid var(--line)}
ol.timeline li{position:relative;padding:4px 0 8px 16px}
ol.timeline li::before{content:"";position:absolute;left:-6px;top:9px;width:10px;height:10px;border-radius:50%;
  background:#94a3b8}
ol.timeline li.o-failed::before,ol.timeline li.o-error::before,
ol.timeline li.o-lease_expired::before{background:var(--bad)}
ol.timeline li.o-done::before{background:var(--ok)}
ol.timeline li.o-await::before,ol.timeline li.o-resumed::before{background:var(--accent)}
.tree ul{list-style:none;padding-left:18px;margin:2px 0}
.tree .self{font-weight:700}
.graph-box{overflow:auto;border:1px solid var(--line);border-radius:8px;padding:8px;background:#fff}
.legend span{margin-right:12px;font-size:12px}
.chart rect.ok{fill:#93c5fd}.chart rect.bad{fill:#f87171}
.pager{margin-top:8px}
`;

export const CLIENT_SCRIPT = `
(function () {
  "use strict";
  var body = document.body;
  var live = body.getAttribute("data-live");
  if (live && window.EventSource) {
    var source = new EventSource(live);
    // The server serves a bounded number of live pages: beyond them the page just stays as loaded.
    source.addEventListener("full", function () {
      source.close();
    });
    source.onmessage = function (event) {
      var doc = new DOMParser().parseFromString(JSON.parse(event.data), "text/html");
      var fresh = doc.querySelectorAll("[data-live-region]");
      for (var i = 0; i < fresh.length; i++) {
        var old = document.getElementById(fresh[i].id);
        if (!old || old.innerHTML === fresh[i].innerHTML) continue;
        // Never pull the page from under the user: skip a region being typed in or with ticked boxes.
        if (old.contains(document.activeElement) && document.activeElement !== body) continue;
        if (old.querySelector("input[type=checkbox]:checked")) continue;
        old.replaceWith(document.importNode(fresh[i], true));
      }
      body.setAttribute("data-updated", String(Date.now()));
    };
  }
  document.addEventListener("change", function (event) {
    var t = event.target;
    if (t && t.matches && t.matches("input[data-select-all]")) {
      var boxes = document.querySelectorAll("input[name=id]");
      for (var i = 0; i < boxes.length; i++) boxes[i].checked = t.checked;
    }
  });
})();
`;
