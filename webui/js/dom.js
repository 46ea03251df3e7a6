// Building DOM safely. Every string becomes a text node or a plain attribute value:
// nothing here ever parses HTML, so data from nodes and users cannot turn into markup.

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "selected", "indeterminate", "open"]);

/**
 * h("button", {class: "primary", onclick: fn, "aria-label": "Close"}, "text", childNode, [more])
 * Strings and numbers become text; null/undefined/false are skipped; arrays are flattened.
 */
export function h(tag, props = {}, ...children) {
  const el = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (PROPERTIES.has(key)) {
      el[key] = value;
    } else if (key.startsWith("on")) {
      throw new Error(`refusing a string event handler: ${key}`);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/**
 * Replace ``el``'s children with ``children`` while keeping keyboard focus: an element
 * carrying data-fk="…" that had focus gets it back in the new content. Views re-render
 * on every live update, and a keyboard user must not lose their place.
 */
export function replaceKeepingFocus(el, ...children) {
  const active = document.activeElement;
  const key = active && el.contains(active) ? active.dataset.fk : undefined;
  el.replaceChildren();
  append(el, children);
  if (key) {
    const again = el.querySelector(`[data-fk="${CSS.escape(key)}"]`);
    if (again) again.focus({ preventScroll: true });
  }
}

let counter = 0;
/** A unique id for label/aria wiring. */
export function uid(prefix = "f") {
  counter += 1;
  return `${prefix}-${counter}`;
}
