// airlock portal: keyboard shortcuts, countdowns, live review queue, replay player.
// Served from 'self' only (the CSP forbids inline script). Never builds HTML from
// recorded content: server fragments are rendered (and escaped) by Jinja.
(function () {
  "use strict";

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  // -- countdowns ------------------------------------------------------------------
  function fmt(secs) {
    if (secs <= 0) return "expired";
    var h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = Math.floor(secs % 60);
    if (h) return h + "h " + (m < 10 ? "0" : "") + m + "m";
    return m + ":" + (s < 10 ? "0" : "") + s;
  }
  function tick() {
    var now = Date.now();
    $$("[data-expires]").forEach(function (el) {
      var left = (Date.parse(el.getAttribute("data-expires")) - now) / 1000;
      el.textContent = fmt(left);
      el.classList.toggle("late", left < 60);
    });
  }

  // -- live queue -------------------------------------------------------------------
  function pollQueue() {
    var box = $("#queue-lists");
    if (!box) return;
    var url = box.getAttribute("data-poll-url");
    var every = parseFloat(box.getAttribute("data-poll-seconds") || "2") * 1000;
    var live = $("#live");
    function go() {
      fetch(url + "?state=" + encodeURIComponent(box.getAttribute("data-state") || ""), {
        credentials: "same-origin", headers: { "Accept": "application/json" }
      }).then(function (resp) {
        if (live) live.classList.remove("off");
        if (resp.status === 204) return null;
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      }).then(function (data) {
        if (!data) return;
        var selected = document.activeElement && document.activeElement.getAttribute("data-review");
        box.innerHTML = data.html;  // server-rendered by Jinja with autoescape
        box.setAttribute("data-state", data.state);
        showMine(data.mine);
        var view = box.getAttribute("data-view");
        var pc = $("#pending-count");
        if (pc) pc.textContent = String(view === "all" ? data.pending : data.mine);
        var nm = $("#n-mine"), na = $("#n-all");
        if (nm) nm.textContent = String(data.mine);
        if (na) na.textContent = String(data.pending);
        if (selected) { var again = $('[data-review="' + selected.replace(/[^0-9]/g, "") + '"]'); if (again) again.focus(); }
        tick();
      }).catch(function () {
        if (live) live.classList.add("off");
      }).then(function () { setTimeout(go, every); });
    }
    setTimeout(go, every);
  }

  // -- an open review: someone else decided, the buttons go away and say who ----------
  function pollReview() {
    var box = $("#decision-area");
    if (!box) return;
    var url = box.getAttribute("data-poll-url");
    var every = parseFloat(box.getAttribute("data-poll-seconds") || "2") * 1000;
    function go() {
      fetch(url + "?state=" + encodeURIComponent(box.getAttribute("data-state") || ""), {
        credentials: "same-origin", headers: { "Accept": "application/json" }
      }).then(function (resp) {
        if (resp.status === 204) return null;
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      }).then(function (data) {
        if (!data) return;
        var typing = box.contains(document.activeElement) && /TEXTAREA|INPUT/.test(document.activeElement.tagName);
        // Keep a half-written reason unless the review was decided meanwhile.
        if (typing && data.status === "pending") return;
        box.innerHTML = data.html;  // server-rendered by Jinja with autoescape
        box.setAttribute("data-state", data.state);
        var st = $("h1 .status");
        if (st && data.status) { st.textContent = data.status; st.className = "status st-" + data.status; }
        if (data.status !== "pending") { var dl = $("#deadlines"); if (dl) dl.hidden = true; }
        tick();
      }).catch(function () {}).then(function () { setTimeout(go, every); });
    }
    setTimeout(go, every);
  }

  // -- the badge and the title: how many reviews need me, on every page --------------
  var baseTitle = document.title.replace(/^\(\d+\) /, "");
  function showMine(n) {
    var badge = $("#nav-pending");
    if (badge) { badge.textContent = String(n); badge.hidden = !n; }
    document.title = (n ? "(" + n + ") " : "") + baseTitle;
  }
  function pollBadge() {
    var badge = $("#nav-pending");
    if (!badge) return;
    var url = badge.getAttribute("data-poll-url");
    var every = parseFloat(badge.getAttribute("data-poll-seconds") || "2") * 1000;
    var state = "";
    showMine(parseInt(badge.textContent, 10) || 0);
    function go() {
      fetch(url + "?state=" + encodeURIComponent(state), {
        credentials: "same-origin", headers: { "Accept": "application/json" }
      }).then(function (resp) {
        if (resp.status === 204) return null;
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      }).then(function (data) {
        if (!data) return;
        state = data.state;
        showMine(data.mine);
        $$("[data-live-count]").forEach(function (el) {
          var v = data.counts && data.counts[el.getAttribute("data-live-count")];
          if (v !== undefined) el.textContent = String(v);
        });
        var card = $("#dash-pending-list");
        if (card) {
          fetch(card.getAttribute("data-url"), { credentials: "same-origin" }).then(function (r) {
            return r.ok ? r.text() : null;
          }).then(function (html) {
            if (html !== null) { card.innerHTML = html; tick(); }  // server-rendered by Jinja with autoescape
          }).catch(function () {});
        }
      }).catch(function () {}).then(function () { setTimeout(go, every); });
    }
    setTimeout(go, every);
  }

  // -- keyboard ---------------------------------------------------------------------
  var pendingG = false, gTimer = null;
  function rows() { return $$("[data-row]"); }
  function move(step) {
    var list = rows();
    if (!list.length) return;
    var i = list.indexOf(document.activeElement);
    if (i < 0) i = list.findIndex(function (r) { return r.classList.contains("sel"); });
    var next = list[Math.max(0, Math.min(list.length - 1, i + step))] || list[0];
    list.forEach(function (r) { r.classList.remove("sel"); });
    next.classList.add("sel");
    next.focus();
    next.scrollIntoView({ block: "nearest" });
  }
  function typing(target) {
    var tag = (target.tagName || "").toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }
  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var help = $("#kbd-help");
    if (e.key === "Escape" && help && !help.hidden) { help.hidden = true; return; }
    if (typing(e.target)) return;
    if (pendingG) {
      pendingG = false;
      var link = $('[data-key="g ' + e.key + '"]');
      if (link) { e.preventDefault(); window.location.href = link.href; }
      return;
    }
    switch (e.key) {
      case "g": pendingG = true; clearTimeout(gTimer); gTimer = setTimeout(function () { pendingG = false; }, 1200); break;
      case "j": e.preventDefault(); move(1); break;
      case "k": e.preventDefault(); move(-1); break;
      case "Enter":
        var el = document.activeElement;
        if (el && el.hasAttribute("data-row") && el.tagName !== "A") {
          var a = el.querySelector("a[href]"); if (a) { e.preventDefault(); window.location.href = a.href; }
        }
        break;
      case "/": var s = $("[data-search]"); if (s) { e.preventDefault(); s.focus(); } break;
      case "a": var ap = $("[data-shortcut=approve]"); if (ap) { e.preventDefault(); ap.focus(); } break;
      case "x": var rj = $("[data-shortcut=reject]"); if (rj) { e.preventDefault(); rj.focus(); } break;
      case "?": if (help) { help.hidden = !help.hidden; } break;
    }
  }

  // -- confirmations ----------------------------------------------------------------
  function confirmations() {
    document.addEventListener("submit", function (e) {
      var msg = e.target.getAttribute("data-confirm") || (e.submitter && e.submitter.getAttribute("data-confirm"));
      if (msg && !window.confirm(msg)) e.preventDefault();
    }, true);
  }

  // -- connection form: show the fields of the chosen type --------------------------
  function typeFields() {
    var sel = $("#conn-type");
    if (!sel) return;
    function show() {
      $$("[data-types]").forEach(function (el) {
        var on = el.getAttribute("data-types").split(" ").indexOf(sel.value) >= 0;
        el.hidden = !on;
        $$("input,textarea,select", el).forEach(function (i) { i.disabled = !on; });
      });
    }
    sel.addEventListener("change", show);
    show();
  }

  // -- terminal replay ---------------------------------------------------------------
  function player() {
    var el = $("#player");
    if (!el || !window.AsciinemaPlayer) return;
    window.airlockPlayer = window.AsciinemaPlayer.create(el.getAttribute("data-cast"), el, {
      fit: "width", autoPlay: el.getAttribute("data-autoplay") === "1", idleTimeLimit: 2,
      speed: parseFloat(el.getAttribute("data-speed") || "1"), theme: "asciinema", terminalFontSize: "13px"
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    pollQueue();
    pollReview();
    pollBadge();
    confirmations();
    typeFields();
    player();
    document.addEventListener("keydown", onKey);
  });
})();
