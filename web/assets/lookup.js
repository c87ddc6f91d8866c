// Answers "which service tags hold this address?" in the browser, from index.bin (the same
// file the CLI reads: see common/history_index.py). No library, nothing sent anywhere.
"use strict";
(function () {
  const statusEl = document.getElementById("status");
  const table = document.getElementById("results");
  const tbody = table.querySelector("tbody");
  const input = document.getElementById("query");
  let index = null;

  function say(text, error) {
    statusEl.textContent = text;
    statusEl.className = error ? "error" : "";
  }

  function load(buffer) {
    const bytes = new Uint8Array(buffer);
    const magic = new TextDecoder().decode(bytes.subarray(0, 8));
    if (magic !== "STHIDX1\n") throw new Error("index.bin is not a servicetags history index");
    const size = new DataView(buffer).getUint32(8, true);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + size)));
    const start = (12 + size + 7) & ~7;
    const kinds = { I: Uint32Array, i: Int32Array, B: Uint8Array, Q: BigUint64Array };
    const a = {};
    for (const [name, code, offset, count] of header.arrays) {
      a[name] = new kinds[code](buffer, start + offset, count);
    }
    const fam = (v) => {
      const p = "v" + v + "_";
      const f = { version: v, bits: v === 4 ? 32 : 128, len: a[p + "len"], parent: a[p + "parent"],
                  first: a[p + "first"], segBlk: a[p + "seg_blk"] };
      if (v === 4) {
        f.net = (i) => BigInt(a.v4_net[i]);
        f.seg = (i) => BigInt(a.v4_seg[i]);
        f.segCount = a.v4_seg.length;
      } else {
        f.net = (i) => (a.v6_net_hi[i] << 64n) | a.v6_net_lo[i];
        f.seg = (i) => (a.v6_seg_hi[i] << 64n) | a.v6_seg_lo[i];
        f.segCount = a.v6_seg_lo.length;
      }
      f.count = f.len.length;
      return f;
    };
    return { header, a, v4: fam(4), v6: fam(6) };
  }

  function parse(text) {
    text = text.trim();
    const slash = text.indexOf("/");
    const addr = slash < 0 ? text : text.slice(0, slash);
    let version, value;
    if (addr.includes(":")) {
      version = 6;
      value = parse6(addr);
    } else {
      version = 4;
      const parts = addr.split(".");
      if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) < 256)) return null;
      value = parts.reduce((acc, p) => (acc << 8n) | BigInt(Number(p)), 0n);
    }
    if (value === null) return null;
    const bits = version === 4 ? 32 : 128;
    let length = bits;
    if (slash >= 0) {
      const l = text.slice(slash + 1);
      if (!/^\d{1,3}$/.test(l) || Number(l) > bits) return null;
      length = Number(l);
    }
    const host = (1n << BigInt(bits - length)) - 1n;
    return { version, net: value & ~host, length };
  }

  function parse6(addr) {
    if (addr.includes(".")) return null; // embedded IPv4 forms are not used by service tags
    const halves = addr.split("::");
    if (halves.length > 2) return null;
    const head = halves[0] ? halves[0].split(":") : [];
    const tail = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
    const missing = 8 - head.length - tail.length;
    if ((halves.length === 1 && missing !== 0) || (halves.length === 2 && missing < 1)) return null;
    const groups = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...tail];
    let value = 0n;
    for (const g of groups) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      value = (value << 16n) | BigInt(parseInt(g, 16));
    }
    return value;
  }

  function text(version, net, length) {
    if (version === 4) {
      const o = [24n, 16n, 8n, 0n].map((s) => String((net >> s) & 255n));
      return o.join(".") + "/" + length;
    }
    const g = [];
    for (let s = 112n; s >= 0n; s -= 16n) g.push(Number((net >> s) & 0xffffn));
    let best = -1, bestLen = 0;
    for (let i = 0; i < 8; ) {
      if (g[i] !== 0) { i++; continue; }
      let j = i;
      while (j < 8 && g[j] === 0) j++;
      if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
      i = j;
    }
    const hex = g.map((x) => x.toString(16));
    let out;
    if (best < 0) out = hex.join(":");
    else out = hex.slice(0, best).join(":") + "::" + hex.slice(best + bestLen).join(":");
    return out + "/" + length;
  }

  function containing(f, address) {
    let lo = 0, hi = f.segCount;
    while (lo < hi) {               // bisect_right over segment starts
      const mid = (lo + hi) >> 1;
      if (f.seg(mid) <= address) lo = mid + 1; else hi = mid;
    }
    const out = [];
    let b = lo - 1 >= 0 ? f.segBlk[lo - 1] : -1;
    while (b >= 0) { out.push(b); b = f.parent[b]; }
    return out;
  }

  function blockEnd(f, b) { return f.net(b) + (1n << BigInt(f.bits - f.len[b])) - 1n; }

  function overlapping(f, net, length) {
    const last = net + (1n << BigInt(f.bits - length)) - 1n;
    const found = containing(f, net).filter((b) => blockEnd(f, b) >= last);
    const seen = new Set(found);
    let lo = 0, hi = f.count;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (f.net(mid) < net) lo = mid + 1; else hi = mid; }
    for (let b = lo; b < f.count && f.net(b) <= last; b++) if (!seen.has(b)) found.push(b);
    return found;
  }

  function lookup(q) {
    const { header, a } = index;
    const f = q.version === 4 ? index.v4 : index.v6;
    const blocks = q.length === f.bits ? containing(f, q.net) : overlapping(f, q.net, q.length);
    const at = header.changes.length - 1;
    const hits = [];
    for (const b of blocks) {
      for (let e = f.first[b]; e < f.first[b + 1]; e++) {
        if (a.ep_from[e] <= at && at < a.ep_to[e]) {
          const [tag, region, service] = header.tags[a.ep_tag[e]];
          const [cn, date] = header.changes[a.ep_from[e]];
          const join = a.ep_join[e];
          hits.push({ tag, region, service, prefix: text(f.version, f.net(b), f.len[b]), cn, date,
                      report: join === 0xffffffff ? null : header.reports[join][0] });
        }
      }
    }
    return hits;
  }

  function reportPage(name) {
    const cloud = index.header.cloud;
    const rest = name.startsWith(cloud + "/") ? name.slice(cloud.length + 1) : name;
    return "reports/" + rest.replace(/\.json$/, "") + ".html";
  }

  function show(query) {
    tbody.textContent = "";
    const q = parse(query);
    if (!q) { table.hidden = true; say(query + " is not an IPv4 or IPv6 address or CIDR block", true); return; }
    const hits = lookup(q);
    const [cn, date] = index.header.changes[index.header.changes.length - 1];
    if (!hits.length) { table.hidden = true; say(query.trim() + " is in no service tag at change " + cn + "."); return; }
    for (const h of hits) {
      const tr = document.createElement("tr");
      tr.className = "hit";
      for (const value of [h.tag, h.region, h.service || "-", h.prefix]) {
        const td = document.createElement("td");
        td.textContent = value;
        tr.appendChild(td);
      }
      const since = document.createElement("td");
      since.textContent = h.date.slice(0, 10) + " (change " + h.cn + ")";
      if (h.report) {
        const link = document.createElement("a");
        link.href = reportPage(h.report);
        link.textContent = " report";
        since.appendChild(link);
      }
      tr.appendChild(since);
      tbody.appendChild(tr);
    }
    table.hidden = false;
    say(hits.length + " match" + (hits.length === 1 ? "" : "es") + " at change " + cn + " (" + date.slice(0, 10) + ").");
  }

  document.getElementById("lookup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (index) show(input.value);
  });

  fetch("index.bin").then((r) => {
    if (!r.ok) throw new Error("index.bin: HTTP " + r.status);
    return r.arrayBuffer();
  }).then((buffer) => {
    index = load(buffer);
    const changes = index.header.changes;
    if (!changes.length) { say("The history is empty.", true); return; }
    const [cn, date] = changes[changes.length - 1];
    say("Index loaded: " + index.header.tags.length + " tags, change " + cn + " (" + date.slice(0, 10) + ").");
    document.body.dataset.ready = "1";
    const q = new URLSearchParams(location.search).get("q");
    if (q) { input.value = q; show(q); }
  }).catch((err) => say(String(err.message || err), true));
})();
