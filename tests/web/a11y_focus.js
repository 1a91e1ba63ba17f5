() => { const el = document.activeElement; if (!el || el === document.body) return null;
  const s = getComputedStyle(el);
  return {tag: el.tagName, id: el.id, text: (el.textContent || "").trim().slice(0, 30),
          outline: s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2, style: s.outlineStyle + " " + s.outlineWidth,
          index: Array.from(document.querySelectorAll("a[href], button, input:not([type=hidden]), select, textarea, summary")).indexOf(el)}; }
