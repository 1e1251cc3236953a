// Live regions: every few seconds, fetch this page again and swap in the new content of
// each element marked data-live (matched by id). Paused while the tab is hidden; a region
// holding the keyboard focus is left alone so nobody loses their place. Without
// JavaScript the page still works: reload it.
(function () {
  "use strict";
  var seconds = Number(document.body.getAttribute("data-live-seconds")) || 5;
  var timer = null;
  var busy = false;

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    document.querySelectorAll("[data-live][id]").forEach(function (region) {
      var next = fresh.getElementById(region.id);
      if (!next || region.contains(document.activeElement)) {
        return;
      }
      if (region.innerHTML !== next.innerHTML) {
        region.innerHTML = next.innerHTML;
      }
    });
    var body = fresh.body.getAttribute("data-live-seconds");
    if (body && Number(body) !== seconds) {
      seconds = Number(body);
      schedule();
    }
  }

  function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) {
        if (response.redirected || !response.ok) {
          stop();  // signed out, or the page is gone: a reload shows why
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html) {
          swap(html);
        }
      })
      .catch(function () { /* the server is away: try again next time */ })
      .then(function () { busy = false; });
  }

  function stop() {
    if (timer !== null) {
      window.clearInterval(timer);
      timer = null;
    }
  }

  function schedule() {
    stop();
    if (!document.hidden) {
      timer = window.setInterval(refresh, seconds * 1000);
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      stop();
    } else {
      refresh();
      schedule();
    }
  });
  schedule();
})();
