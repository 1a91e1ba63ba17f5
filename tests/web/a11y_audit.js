() => {
  const problems = [];
  const visible = (el) => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== "hidden" && s.display !== "none"; };
  const name = (el) => (el.getAttribute("aria-label") || el.textContent || el.value || "").trim();
  if (!document.documentElement.lang) problems.push("html has no lang");
  for (const sel of ["header", "main", "footer"]) if (!document.querySelector(sel)) problems.push("no <" + sel + ">");
  if (document.querySelectorAll("h1").length !== 1) problems.push("not exactly one h1");
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden") continue;
    const labelled = (el.labels && el.labels.length) || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
    if (!labelled) problems.push("unlabelled field " + (el.id || el.name));
  }
  for (const el of document.querySelectorAll("a[href], button")) {
    if (visible(el) && !name(el)) problems.push("nameless " + el.outerHTML.slice(0, 80));
  }
  const rgb = (c) => { const m = c.match(/[\d.]+/g).map(Number); return {r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1}; };
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const background = (el) => { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.a > 0.5) return c; } return {r: 255, g: 255, b: 255, a: 1}; };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  let checked = 0;
  while (walker.nextNode()) {
    const node = walker.currentNode; const el = node.parentElement;
    if (!node.textContent.trim() || !el || seen.has(el) || el.closest("svg") || !visible(el)) continue;
    if (el.closest(".skip") && document.activeElement !== el.closest(".skip")) continue;
    seen.add(el);
    const s = getComputedStyle(el); const fg = rgb(s.color); const bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(s.fontSize); const bold = parseInt(s.fontWeight) >= 700;
    const need = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    checked++;
    if (ratio < need) problems.push("contrast " + ratio.toFixed(2) + " < " + need + ": " + node.textContent.trim().slice(0, 30));
  }
  if (checked < 5) problems.push("too little text checked: " + checked);
  return problems;
}
