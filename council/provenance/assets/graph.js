/* council provenance graph viewer: SVG drawing, pan, zoom, click for details. No dependencies.
   All text is set with textContent (never as markup). */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]); }
    if (parent) parent.appendChild(e);
    return e;
  }

  function html(tag, text, parent, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }

  function rows(table, pairs) {
    pairs.forEach(function (p) {
      var tr = html("tr", null, table);
      html("th", p[0], tr);
      html("td", p[1], tr);
    });
  }

  function setup(root) {
    var data = JSON.parse(root.querySelector(".cg-data").textContent);
    var canvas = root.querySelector(".cg-canvas");
    var details = root.querySelector(".cg-details");
    var byId = {};
    data.nodes.forEach(function (n) { byId[n.id] = n; });

    var svg = el("svg", { "class": "cg-svg", "data-nodes": String(data.nodes.length), "data-edges": String(data.edges.length) }, canvas);
    var defs = el("defs", {}, svg);
    var marker = el("marker", { id: "cg-arrow-" + Math.random().toString(36).slice(2), viewBox: "0 0 10 10", refX: "16", refY: "5",
      markerWidth: "6", markerHeight: "6", orient: "auto-start-reverse" }, defs);
    el("path", { d: "M 0 0 L 10 5 L 0 10 z", "class": "cg-arrowhead" }, marker);
    var view = el("g", { "class": "cg-view" }, svg);
    var edgeLayer = el("g", { "class": "cg-edges" }, view);
    var nodeLayer = el("g", { "class": "cg-nodes" }, view);

    var edgeEls = [];
    data.edges.forEach(function (e) {
      var a = byId[e.source], b = byId[e.target];
      if (!a || !b) return;
      var line = el("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, "class": "cg-edge", "marker-end": "url(#" + marker.id + ")" }, edgeLayer);
      line.appendChild(document.createElementNS(NS, "title")).textContent = e.relation;
      edgeEls.push({ el: line, e: e });
    });
    var nodeEls = {};
    data.nodes.forEach(function (n) {
      var g = el("g", { "class": "cg-node", "data-id": n.id, "data-kind": n.kind, transform: "translate(" + n.x + "," + n.y + ")" }, nodeLayer);
      el("circle", { r: "7", fill: n.color, "class": "node" }, g);
      var t = el("text", { x: "10", y: "4", "class": "cg-label" }, g);
      t.textContent = n.label;
      g.appendChild(document.createElementNS(NS, "title")).textContent = n.kind + ": " + n.label;
      g.addEventListener("click", function (ev) { ev.stopPropagation(); select(n); });
      nodeEls[n.id] = g;
    });

    var legend = root.querySelector(".cg-legend");
    Object.keys(data.colors).forEach(function (kind) {
      var item = html("span", null, legend, "cg-key");
      var dot = html("span", null, item, "cg-dot");
      dot.style.background = data.colors[kind];
      item.appendChild(document.createTextNode(kind));
    });

    function select(n) {
      Object.keys(nodeEls).forEach(function (id) { nodeEls[id].classList.remove("cg-hi", "cg-selected"); });
      var hi = {};
      (n.trace.length ? n.trace : [n.id]).forEach(function (id) { hi[id] = true; });
      Object.keys(hi).forEach(function (id) { if (nodeEls[id]) nodeEls[id].classList.add("cg-hi"); });
      nodeEls[n.id].classList.add("cg-selected");
      edgeEls.forEach(function (x) {
        x.el.classList.toggle("cg-hi", !!(n.trace.length && hi[x.e.source] && hi[x.e.target]));
      });
      details.textContent = "";
      html("h3", n.kind, details);
      html("p", n.label, details, "cg-node-label");
      var t = html("table", null, details, "cg-table");
      rows(t, [["node", n.id]].concat(n.details));
      n.sections.forEach(function (s) {
        html("h4", s[0], details);
        rows(html("table", null, details, "cg-table cg-section"), s[1]);
      });
    }

    var xs = data.nodes.map(function (n) { return n.x; }), ys = data.nodes.map(function (n) { return n.y; });
    var box = { x0: Math.min.apply(null, xs.concat([0])) - 40, y0: Math.min.apply(null, ys.concat([0])) - 30,
                x1: Math.max.apply(null, xs.concat([0])) + 260, y1: Math.max.apply(null, ys.concat([0])) + 30 };
    var st = { k: 1, tx: 0, ty: 0 };
    function apply() { view.setAttribute("transform", "translate(" + st.tx + "," + st.ty + ") scale(" + st.k + ")"); }
    function fit() {
      var w = canvas.clientWidth || 800, h = canvas.clientHeight || 600;
      st.k = Math.min(w / (box.x1 - box.x0), h / (box.y1 - box.y0), 2);
      st.tx = -box.x0 * st.k; st.ty = -box.y0 * st.k;
      apply();
    }
    function zoom(f, cx, cy) {
      var k = Math.max(0.05, Math.min(8, st.k * f));
      st.tx = cx - (cx - st.tx) * (k / st.k); st.ty = cy - (cy - st.ty) * (k / st.k); st.k = k;
      apply();
    }
    svg.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var r = svg.getBoundingClientRect();
      zoom(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX - r.left, ev.clientY - r.top);
    }, { passive: false });
    var drag = null;
    svg.addEventListener("pointerdown", function (ev) {
      if (ev.target.closest && ev.target.closest(".cg-node")) return;
      drag = { x: ev.clientX, y: ev.clientY, tx: st.tx, ty: st.ty };
      svg.classList.add("cg-dragging");
    });
    window.addEventListener("pointermove", function (ev) {
      if (!drag) return;
      st.tx = drag.tx + ev.clientX - drag.x; st.ty = drag.ty + ev.clientY - drag.y;
      apply();
    });
    window.addEventListener("pointerup", function () { drag = null; svg.classList.remove("cg-dragging"); });
    root.querySelector(".cg-toolbar").addEventListener("click", function (ev) {
      var act = ev.target.getAttribute && ev.target.getAttribute("data-act");
      var w = canvas.clientWidth / 2, h = canvas.clientHeight / 2;
      if (act === "in") zoom(1.3, w, h);
      else if (act === "out") zoom(1 / 1.3, w, h);
      else if (act === "fit") fit();
    });
    fit();
    root.setAttribute("data-ready", "1");
  }

  function init() {
    var roots = document.querySelectorAll(".council-graph:not([data-ready])");
    for (var i = 0; i < roots.length; i++) setup(roots[i]);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
