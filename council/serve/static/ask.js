(function () {
  "use strict";
  var form = document.getElementById("ask-form");
  var events = document.getElementById("events");
  var err = document.getElementById("ask-error");
  function show(id) { document.getElementById(id).hidden = false; }
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    err.hidden = true;
    events.textContent = "";
    document.getElementById("result").hidden = true;
    var body = { task: form.task.value, recipe: form.recipe.value, question: form.question.value, sources: [] };
    if (form.source.value.trim()) body.sources.push({ text: form.source.value });
    form.querySelector("button").disabled = true;
    fetch("/api/runs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
                          credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); })
      .then(function (res) {
        if (!res.ok) throw new Error(res.j.error ? res.j.error.message : "request failed");
        show("progress");
        window.councilFollow(res.j.run_id, events, function (ev) {
          var v = ev.verdict;
          document.getElementById("result-answer").textContent = (v.label ? v.label + ": " : "") + v.answer;
          document.getElementById("result-meta").textContent = "confidence " + v.confidence.toFixed(2) + " · agreement " +
            v.agreement.toFixed(2) + (v.degraded ? " · DEGRADED: " + v.degraded_reasons.join("; ") : "") +
            " · cost $" + ev.cost_usd.toFixed(6);
          document.getElementById("result-link").setAttribute("href", "/runs/" + encodeURIComponent(ev.run_id));
          show("result");
        }, function () { form.querySelector("button").disabled = false; });
      })
      .catch(function (x) {
        err.textContent = x.message;
        err.hidden = false;
        form.querySelector("button").disabled = false;
      });
  });
})();
