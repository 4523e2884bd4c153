// The filter box and the keys of the network browser (no library; works from file:// and GitHub Pages).
(function () {
  "use strict";

  // "17", "3 7 12" or "10-20" pick channels by number; any other word must appear in the item's text.
  function matcher(query) {
    var numbers = [], words = [];
    query.toLowerCase().split(/[\s,;]+/).forEach(function (term) {
      if (!term) { return; }
      var range = /^(\d+)(?:-(\d+))?$/.exec(term);
      if (range) {
        numbers.push([Number(range[1]), Number(range[2] === undefined ? range[1] : range[2])]);
      } else {
        words.push(term);
      }
    });
    return function (item) {
      var text = (item.getAttribute("data-search") || "").toLowerCase();
      var channel = item.getAttribute("data-channel");
      var numbersOk = numbers.length === 0 || numbers.some(function (range) {
        if (channel === null) { return text.indexOf(String(range[0])) >= 0; }
        var value = Number(channel);
        return value >= Math.min(range[0], range[1]) && value <= Math.max(range[0], range[1]);
      });
      return numbersOk && words.every(function (word) { return text.indexOf(word) >= 0; });
    };
  }

  function setUpFilter() {
    var box = document.querySelector("[data-filter-box]");
    if (!box) { return; }
    var items = Array.prototype.slice.call(document.querySelectorAll("[data-filter-item]"));
    var count = document.querySelector("[data-filter-count]");
    var noun = box.getAttribute("data-noun") || "items";
    function apply(remember) {
      var test = matcher(box.value), shown = 0;
      items.forEach(function (item) {
        var keep = test(item);
        item.hidden = !keep;
        if (keep) { shown += 1; }
      });
      if (count) { count.textContent = shown + " of " + items.length + " " + noun + " shown"; }
      if (remember) {
        // Keep the filter in the address, so that Back from a channel page shows the same cards.
        try { history.replaceState(null, "", "#q=" + encodeURIComponent(box.value)); } catch (error) { /* file:// in some browsers */ }
      }
    }
    var hash = /^#q=(.*)$/.exec(window.location.hash);
    if (hash) {
      try { box.value = decodeURIComponent(hash[1]); } catch (error) { box.value = ""; }
    }
    box.addEventListener("input", function () { apply(true); });
    apply(false);
  }

  function setUpKeys() {
    document.addEventListener("keydown", function (event) {
      var target = event.target;
      var typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA");
      if (event.key === "/" && !typing) {
        var box = document.querySelector("[data-filter-box]");
        if (box) { event.preventDefault(); box.focus(); }
        return;
      }
      if (typing || event.altKey || event.ctrlKey || event.metaKey) { return; }
      var rel = event.key === "ArrowLeft" ? "prev" : event.key === "ArrowRight" ? "next" : null;
      var link = rel && document.querySelector("a[rel='" + rel + "']");
      if (link) { window.location.href = link.getAttribute("href"); }
    });
  }

  setUpFilter();
  setUpKeys();
}());
