(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) return;
  window.councilFollow(live.getAttribute("data-run"), live.querySelector(".events"), null, function () {
    window.setTimeout(function () { window.location.reload(); }, 300);
  });
})();
