/* Shared by the ask form and a running run's page: follow /api/runs/ID/events and list them (textContent only). */
window.councilFollow = function (runId, list, onVerdict, onDone) {
  "use strict";
  var source = new EventSource("/api/runs/" + encodeURIComponent(runId) + "/events");
  var types = ["run_started", "call", "member_answered", "member_failed", "review", "round", "escalation",
               "clusters", "adjudication", "verdict", "done", "error"];
  types.forEach(function (t) {
    source.addEventListener(t, function (msg) {
      var ev = JSON.parse(msg.data);
      var li = document.createElement("li");
      li.className = "ev-" + ev.type;
      li.textContent = ev.message;
      list.appendChild(li);
      if (ev.type === "verdict" && onVerdict) onVerdict(ev);
      if (ev.type === "done" || ev.type === "error") {
        source.close();
        if (onDone) onDone(ev);
      }
    });
  });
  return source;
};
