(function () {
  "use strict";
  var sec = document.getElementById("batch");
  if (!sec) return;
  var id = sec.getAttribute("data-batch");
  function tick() {
    fetch("/api/batches/" + encodeURIComponent(id) + "?limit=1", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (b) {
        document.getElementById("batch-progress").value = b.done;
        document.getElementById("batch-progress").max = b.total;
        document.getElementById("batch-done").textContent = b.done;
        document.getElementById("batch-total").textContent = b.total;
        document.getElementById("batch-spent").textContent = b.spent_usd.toFixed(6);
        var counts = document.getElementById("batch-counts");
        counts.textContent = "";
        Object.keys(b.counts).forEach(function (k) {
          var s = document.createElement("span");
          s.className = "badge";
          s.textContent = k + " " + b.counts[k];
          counts.appendChild(s);
          counts.appendChild(document.createTextNode(" "));
        });
        if (b.done < b.total) window.setTimeout(tick, 1000);
      })
      .catch(function () { window.setTimeout(tick, 3000); });
  }
  tick();
})();
