// The review page: renders the pairs from the JSON block with textContent only (never
// innerHTML with data), pages each grid, and keeps the reviewer's keep/drop marks.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("cp-data").textContent);
  const PAGE = 48;
  const marks = new Map(); // key -> "keep" | "drop"

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function fmt(x, digits) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
  function pct(x) { return x === null || x === undefined ? "n/a" : (100 * x).toFixed(1) + "%"; }
  function int(x) { return Number(x).toLocaleString("en-US"); }

  function facts() {
    const run = data.run;
    const table = document.getElementById("facts");
    document.getElementById("source").textContent =
      run.source + (run.shards > 1 ? " (" + run.shards + " shards)" : "");
    const rows = [
      ["method", run.method], ["encoder", run.encoder],
      ["rows", int(run.rows)],
      ["scored", int(run.scored) + " (" + pct(run.rows ? run.scored / run.rows : null) + ")"],
    ];
    for (const [status, count] of run.not_scored) rows.push(["not scored", int(count) + " × " + status]);
    rows.push(["estimated noise", pct(run.estimated_noise_rate)]);
    rows.push(["threshold", String(run.thresh)]);
    for (const [t, kept] of run.kept_at) {
      rows.push(["filter --thresh " + t, "keeps " + int(kept) + " (" + pct(run.rows ? kept / run.rows : null) + ")"]);
    }
    for (const [name, value] of rows) {
      const tr = el("tr");
      tr.append(el("th", null, name), el("td", "num", value));
      table.append(tr);
    }
    const det = run.detection;
    if (det) {
      document.getElementById("metrics").textContent =
        "against " + run.truth + ": AUROC " + fmt(det.auroc, 3) + " · F1 " + fmt(det.f1, 3) +
        " (precision " + fmt(det.precision, 3) + ", recall " + fmt(det.recall, 3) + ") at threshold " +
        run.thresh + " · true noise " + pct(det.true_noise_rate);
    }
  }

  function setMark(key, value) {
    if (marks.get(key) === value) marks.delete(key); else marks.set(key, value);
    for (const card of document.querySelectorAll(".card")) {
      if (card.dataset.key !== key) continue;
      const mark = marks.get(key) || "";
      card.classList.toggle("keep", mark === "keep");
      card.classList.toggle("drop", mark === "drop");
      for (const b of card.querySelectorAll(".actions button")) b.classList.toggle("on", b.dataset.mark === mark);
    }
    updateCounts();
  }

  function keysMarked(value) { return [...marks].filter(([, v]) => v === value).map(([k]) => k); }

  function updateCounts() {
    const drop = keysMarked("drop").length, keep = keysMarked("keep").length;
    document.getElementById("mark-count").textContent = "marked: " + drop + " drop, " + keep + " keep";
    document.getElementById("dl-drop").disabled = drop === 0;
    document.getElementById("dl-keep").disabled = keep === 0;
    document.getElementById("clear").disabled = drop + keep === 0;
  }

  function download(value) {
    const keys = keysMarked(value);
    const blob = new Blob([keys.join("\n") + "\n"], { type: "text/plain" });
    const link = el("a");
    link.href = URL.createObjectURL(blob);
    link.download = value + "-keys.txt";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  function card(pair) {
    const node = el("div", "card");
    node.dataset.key = pair.key;
    if (pair.thumb) {
      const img = el("img", "thumb");
      img.alt = pair.caption || "";
      img.src = pair.thumb;
      node.append(img);
    } else {
      node.append(el("div", "placeholder", "no image: " + (pair.problem || pair.status || "unknown")));
    }
    const body = el("div", "body");
    const score = el("div", "score");
    const p = pair.p_clean;
    const level = p === null ? "" : p < data.run.thresh ? "low" : p < Math.min(1, data.run.thresh + 0.2) ? "mid" : "high";
    score.append(el("span", "pclean " + level, p === null ? "not scored" : fmt(p, 3)));
    score.append(el("span", "small", "soft " + fmt(pair.soft_label, 2) + " · sim " + fmt(pair.similarity, 3)));
    if (pair.truth !== null) score.append(el("span", "truth " + (pair.truth ? "clean" : "noisy"), pair.truth ? "clean" : "noisy"));
    body.append(score, el("div", "caption", pair.caption === null ? "(no caption)" : pair.caption));
    if (pair.rematch_key !== null) {
      const text = "rematch → " + (pair.rematch_caption === null ? "key " + pair.rematch_key : "“" + pair.rematch_caption + "”") +
        "  (score " + fmt(pair.rematch_score, 3) + ")";
      body.append(el("div", "rematch", text));
    }
    body.append(el("div", "small", "key " + pair.key + (pair.status && pair.status !== "ok" ? " · " + pair.status : "")));
    const actions = el("div", "actions");
    for (const value of ["keep", "drop"]) {
      const button = el("button", value, value);
      button.type = "button";
      button.dataset.mark = value;
      button.addEventListener("click", () => setMark(pair.key, value));
      actions.append(button);
    }
    body.append(actions);
    node.append(body);
    const mark = marks.get(pair.key);
    if (mark) { node.classList.add(mark); actions.querySelector("." + mark).classList.add("on"); }
    return node;
  }

  function section(part) {
    const box = el("section");
    box.id = part.id;
    box.append(el("h2", null, part.title + " (" + part.rows.length + ")"), el("p", "note", part.note));
    const grid = el("div", "grid");
    box.append(grid);
    if (!part.rows.length) grid.append(el("div", "empty", "none"));
    const more = el("button", "more");
    more.type = "button";
    let shown = 0;
    function next() {
      const end = Math.min(part.rows.length, shown + PAGE);
      for (; shown < end; shown++) grid.append(card(data.pairs[part.rows[shown]]));
      const left = part.rows.length - shown;
      more.hidden = left === 0;
      more.textContent = "show " + Math.min(PAGE, left) + " more (" + left + " left)";
    }
    more.addEventListener("click", next);
    next();
    box.append(more);
    return box;
  }

  facts();
  const sections = document.getElementById("sections");
  for (const part of data.sections) sections.append(section(part));
  document.getElementById("dl-drop").addEventListener("click", () => download("drop"));
  document.getElementById("dl-keep").addEventListener("click", () => download("keep"));
  document.getElementById("clear").addEventListener("click", () => { for (const k of [...marks.keys()]) setMark(k, marks.get(k)); });
  updateCounts();
  document.body.dataset.ready = "1";
})();
