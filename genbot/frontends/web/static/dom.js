// DOM helpers. Everything the page shows from the server goes through textContent: model output,
// prompts, corpus names and error messages are text, never markup.

/** An element with attributes, properties and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

/** The element with this id (an error naming it if the page lacks it). */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`missing element #${id}`);
  return node;
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

/** Show a message in a status line ("error" styles it as one). */
export function say(node, message, kind = "") {
  node.textContent = message;
  node.dataset.kind = kind;
}

/** A number as text with at most `digits` decimals. */
export function num(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString("en", { maximumFractionDigits: digits });
}

/** Colour for a value in [-1, 1]: blue below zero, red above, transparent at zero. */
export function diverging(v) {
  const x = Math.max(-1, Math.min(1, v));
  return x >= 0 ? `rgba(220, 60, 40, ${(0.85 * x).toFixed(3)})` : `rgba(40, 110, 230, ${(-0.85 * x).toFixed(3)})`;
}

/** Colour for a probability in [0, 1]: red when unlikely, green when likely. */
export function likelihood(p) {
  const x = Math.max(0, Math.min(1, p));
  const hue = Math.round(120 * x);
  return `hsla(${hue}, 75%, 50%, 0.45)`;
}

/**
 * Render `text` into `node` one span per character, each coloured by `colour(i)` with a tooltip
 * `title(i)`; characters with no value (index beyond `count`) stay plain.
 */
export function colourText(node, text, count, colour, title) {
  const chars = Array.from(text);
  const frag = document.createDocumentFragment();
  chars.forEach((ch, i) => {
    if (i >= count) {
      frag.append(ch);
      return;
    }
    const span = document.createElement("span");
    span.className = "ch";
    span.textContent = ch;
    span.style.backgroundColor = colour(i);
    span.title = title(i);
    span.dataset.i = String(i);
    frag.append(span);
  });
  node.replaceChildren(frag);
}
