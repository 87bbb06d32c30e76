// The similar-incident page: calls the service's own JSON API, nothing else.
const $ = (id) => document.getElementById(id);

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value || localStorage.getItem("itsm-key") || "";
  if (key) { h["X-API-Key"] = key; localStorage.setItem("itsm-key", key); }
  return h;
}

async function call(method, url, body) {
  const res = await fetch(url, { method, headers: headers(),
                                 body: body ? JSON.stringify(body) : undefined });
  const data = await res.json();
  if (!res.ok) { throw new Error(data.error || JSON.stringify(data)); }
  return data;
}

function cell(text) { const td = document.createElement("td"); td.textContent = text ?? ""; return td; }

async function showIncident(number) {
  const inc = await call("GET", `/incidents/${encodeURIComponent(number)}`);
  const d = $("detail");
  d.innerHTML = "";
  const h = document.createElement("h2");
  h.textContent = `Incident ${inc.number}`;
  d.appendChild(h);
  for (const [k, v] of Object.entries(inc)) {
    if (v === null || k === "number" || k === "split") continue;
    const p = document.createElement("p");
    p.className = `field-${k}`;
    const b = document.createElement("b");
    b.textContent = k.replace(/_/g, " ") + ": ";
    p.appendChild(b);
    p.appendChild(document.createTextNode(v));
    d.appendChild(p);
  }
  d.style.display = "block";
}

function render(data) {
  const body = $("results").querySelector("tbody");
  body.innerHTML = "";
  for (const [i, r] of data.results.entries()) {
    const tr = document.createElement("tr");
    tr.className = "hit";
    tr.dataset.number = r.number;
    tr.append(cell(i + 1), cell(r.number), cell(r.score.toFixed(3)));
    const dup = cell("");
    if (r.likely_duplicate) {
      const s = document.createElement("span"); s.className = "badge"; s.textContent = "likely duplicate";
      dup.appendChild(s);
    }
    tr.append(dup, cell(r.summary || r.short_description || ""), cell(r.category || ""));
    tr.addEventListener("click", () => showIncident(r.number).catch(showError));
    body.appendChild(tr);
  }
  $("results").hidden = false;
}

function showError(e) { $("error").textContent = e.message; }

async function search(ev) {
  ev.preventDefault();
  $("error").textContent = "";
  const k = parseInt($("k").value || "10", 10);
  const mode = $("mode").value;
  try {
    let data;
    const number = $("number").value.trim();
    if (number) {
      data = await call("GET", `/incidents/${encodeURIComponent(number)}/similar?k=${k}&mode=${mode}`);
    } else {
      const req = { text: $("text").value, k, mode, resolved_only: $("resolved").checked };
      if ($("category").value) req.filters = { category: $("category").value };
      data = await call("POST", "/similar", req);
    }
    render(data);
  } catch (e) { showError(e); }
}

async function start() {
  try {
    const info = await call("GET", "/info");
    $("info").textContent = `${info.incidents} incidents · model ${info.model} · ` +
      `${info.dim}-d · duplicate threshold ` +
      (info.duplicates.threshold === null ? info.duplicates.chosen_on :
        `${info.duplicates.threshold.toFixed(3)} (precision ${info.duplicates.target_precision} on validation)`);
    for (const c of info.categories || []) {
      const o = document.createElement("option"); o.textContent = c; $("category").appendChild(o);
    }
  } catch (e) { $("info").textContent = ""; showError(e); }
}

$("search").addEventListener("submit", search);
start();
