/* kgcode single page: code a note (POST /predict), look a code up (GET /codes, /map, neighbourhood).
   Everything is fetched from this service; nothing from outside. State for tests and screenshots is
   mirrored into data attributes: body[data-model], body[data-state], #graph[data-nodes],
   #graph[data-stabilized] and window.kgcodeView. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var network = null;
  window.kgcodeView = { nodes: 0, edges: 0, stabilized: false, code: null };

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { e.textContent = text; }
    return e;
  }

  function getJSON(url, options) {
    return fetch(url, options).then(function (r) {
      return r.json().catch(function () { return { detail: "HTTP " + r.status }; }).then(function (body) {
        if (!r.ok) {
          var err = new Error(body.detail || ("HTTP " + r.status));
          err.status = r.status; err.body = body; throw err;
        }
        return body;
      });
    });
  }

  function showError(id, message) {
    var box = $(id);
    box.textContent = message || "";
    box.hidden = !message;
  }

  // ------------------------------------------------------------------ health
  function health() {
    return getJSON("/health").then(function (h) {
      var kg = h.kg || {};
      var loaded = h.model && h.model.loaded;
      document.body.dataset.model = loaded ? "loaded" : "none";
      $("status").textContent = "KG: " + (kg.nodes || 0).toLocaleString() + " nodes \u00b7 " +
        (loaded ? "model loaded" : "no model loaded");
      if (!loaded) {
        $("predict-btn").disabled = true;
        var msg = $("model-msg");
        msg.className = "msg nomodel";
        msg.textContent = "no model loaded: start the service with --model DIR to code notes. " +
          "Code lookup below works without one.";
      }
      return loaded;
    }).catch(function (e) {
      $("status").textContent = "service unreachable: " + e.message;
      return false;
    });
  }

  // ------------------------------------------------------------------ prediction
  function renderNote(text, highlights) {
    var view = $("note-view");
    view.textContent = "";
    var pos = 0;
    highlights.forEach(function (h) {
      if (h.start > pos) { view.appendChild(document.createTextNode(text.slice(pos, h.start))); }
      var mark = el("mark", { "data-codes": h.codes.join(" "), title: "evidence for " + h.codes.join(", ") },
        text.slice(h.start, h.end));
      view.appendChild(mark);
      pos = h.end;
    });
    if (pos < text.length) { view.appendChild(document.createTextNode(text.slice(pos))); }
  }

  function selectCode(code) {
    Array.prototype.forEach.call(document.querySelectorAll("#codes li"), function (li) {
      li.classList.toggle("active", li.dataset.code === code);
    });
    Array.prototype.forEach.call(document.querySelectorAll("#note-view mark"), function (m) {
      var has = m.dataset.codes.split(" ").indexOf(code) >= 0;
      m.classList.toggle("active", has);
      m.classList.toggle("dim", !has);
    });
    var first = document.querySelector("#note-view mark.active");
    if (first && first.scrollIntoView) { first.scrollIntoView({ block: "nearest" }); }
    $("code-input").value = code;
    return lookup(code);
  }

  function predict(text) {
    showError("predict-error", "");
    document.body.dataset.state = "predicting";
    var topK = parseInt($("top-k").value, 10) || 10;
    return getJSON("/predict", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: text, top_k: topK })
    }).then(function (res) {
      var list = $("codes");
      list.textContent = "";
      res.codes.forEach(function (c) {
        var li = el("li", { "data-code": c.code });
        li.appendChild(el("span", { "class": "code" }, c.code));
        li.appendChild(document.createTextNode(" " + c.title));
        li.appendChild(el("span", { "class": "score" }, c.score.toFixed(3)));
        li.addEventListener("click", function () { selectCode(c.code); });
        list.appendChild(li);
      });
      if (!res.codes.length) { list.appendChild(el("li", {}, "no code above the threshold")); }
      renderNote(text, res.highlights);
      $("results").hidden = false;
      document.body.dataset.state = "predicted";
      if (res.codes.length) { return selectCode(res.codes[0].code); }
    }).catch(function (e) {
      document.body.dataset.state = "error";
      showError("predict-error", e.message);
    });
  }

  // ------------------------------------------------------------------ lookup
  function codeLink(item) {
    var a = el("a", { "class": "code-link", "data-code": item.id }, item.id);
    a.addEventListener("click", function () { $("code-input").value = item.id; lookup(item.id); });
    var span = el("span");
    span.appendChild(a);
    if (item.title) { span.appendChild(document.createTextNode(" " + item.title)); }
    return span;
  }

  function renderRecord(r) {
    $("code-title").textContent = r.id + "  " + r.title;
    var dl = el("dl");
    function row(name, value) {
      if (value === null || value === undefined || (Array.isArray(value) && !value.length) || value === "") { return; }
      dl.appendChild(el("dt", {}, name));
      var dd = el("dd");
      if (Array.isArray(value)) {
        value.forEach(function (v, i) {
          if (i) { dd.appendChild(document.createTextNode("; ")); }
          dd.appendChild(typeof v === "string" ? document.createTextNode(v) : codeLink(v));
        });
      } else { dd.textContent = String(value); }
      dl.appendChild(dd);
    }
    row("system", r.system); row("kind", r.kind); row("billable", r.billable ? "yes" : "no");
    row("synonyms", (r.synonyms || []).slice(0, 8));
    row("parents", r.parents); row("children", (r.children || []).slice(0, 20));
    ["excludes1", "excludes2", "code_first", "use_additional", "code_also"].forEach(function (k) { row(k, r[k]); });
    $("record").textContent = "";
    $("record").appendChild(dl);
  }

  function renderMap(id, promise) {
    var ul = $(id);
    ul.textContent = "";
    return promise.then(function (m) {
      if (!m.targets.length) { ul.appendChild(el("li", { "class": "msg" }, m.note || "none")); }
      m.targets.forEach(function (t) {
        var li = el("li", { "data-target": t.target });
        li.appendChild(el("span", { "class": "code" }, t.target));
        li.appendChild(document.createTextNode(" " + (t.target_title || "") + " "));
        li.appendChild(el("span", { "class": "score" }, t.kind + " " + t.score.toFixed(2)));
        li.title = t.explanation || "";
        ul.appendChild(li);
      });
    }).catch(function (e) { ul.appendChild(el("li", { "class": "msg" }, e.message)); });
  }

  function drawGraph(view) {
    var box = $("graph");
    box.dataset.stabilized = "0";
    window.kgcodeView = { nodes: view.vis.nodes.length, edges: view.vis.edges.length, stabilized: false,
                          code: view.centers[0] };
    box.dataset.nodes = String(view.vis.nodes.length);
    box.dataset.edges = String(view.vis.edges.length);
    $("cut-note").textContent = view.vis.nodes.length + " nodes, " + view.vis.edges.length + " edges" +
      (view.cut && view.cut.applied ? " \u00b7 cut: " + view.cut.summary : "");
    if (typeof vis === "undefined") { $("cut-note").textContent += " (vis-network not loaded)"; return; }
    if (network) { network.destroy(); }
    network = new vis.Network(box, { nodes: new vis.DataSet(view.vis.nodes), edges: new vis.DataSet(view.vis.edges) },
                              view.vis.options);
    network.once("stabilizationIterationsDone", function () {
      network.setOptions({ physics: { enabled: false } });
      network.fit({ animation: false });
      window.kgcodeView.stabilized = true;
      box.dataset.stabilized = "1";
      document.body.dataset.graph = "drawn";
    });
    network.on("doubleClick", function (p) {
      if (p.nodes && p.nodes.length) { $("code-input").value = p.nodes[0]; lookup(p.nodes[0]); }
    });
  }

  function lookup(code) {
    code = (code || "").trim();
    if (!code) { return Promise.resolve(); }
    showError("lookup-error", "");
    document.body.dataset.lookup = "loading";
    var enc = encodeURIComponent(code);
    var hops = parseInt($("hops").value, 10);
    if (isNaN(hops)) { hops = 1; }
    return getJSON("/codes/" + enc).then(function (r) {
      $("code-view").hidden = false;
      renderRecord(r);
      var id = encodeURIComponent(r.id);
      $("view-link").href = "/codes/" + id + "/neighborhood.html?hops=" + hops;
      return Promise.all([
        renderMap("map-snomed", getJSON("/map/" + id + "?to=SNOMEDCT")),
        renderMap("map-icd9", getJSON("/map/" + id + "?to=ICD9CM")),
        getJSON("/codes/" + id + "/neighborhood?hops=" + hops + "&max_nodes=150").then(drawGraph)
      ]);
    }).then(function () {
      document.body.dataset.lookup = "done";
    }).catch(function (e) {
      document.body.dataset.lookup = "error";
      var msg = e.message;
      if (e.body && e.body.suggestions && e.body.suggestions.length) {
        msg += " (try " + e.body.suggestions.join(", ") + ")";
      }
      showError("lookup-error", msg);
    });
  }

  // ------------------------------------------------------------------ wiring
  $("predict-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = $("note").value;
    if (text.trim()) { predict(text); }
  });
  $("lookup-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    lookup($("code-input").value);
  });

  // ?note=...&code=...&hops=...: fill in and run (links, tests, screenshots).
  var params = new URLSearchParams(window.location.search);
  if (params.get("hops")) { $("hops").value = params.get("hops"); }
  health().then(function (loaded) {
    var note = params.get("note");
    var code = params.get("code");
    if (note) { $("note").value = note; }
    if (note && loaded) { return predict(note); }
    if (code) { $("code-input").value = code; return lookup(code); }
  });
})();
