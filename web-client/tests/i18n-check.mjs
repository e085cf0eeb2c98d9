// What the language tests share: the English catalogue flattened, and the English strings left
// on a page that should be in another language (text nodes, aria-labels and the title, checked
// against the English catalogue: exact strings, and sentences with placeholders as patterns).
import en from '../public/locales/en.js';

export function flatten(o, prefix = '', out = new Map()) {
  for (const [k, v] of Object.entries(o)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (typeof v === 'string') out.set(key, v);
    else flatten(v, key, out);
  }
  return out;
}

export const EN = flatten(en);

/** English strings a page in `target` must not show (those the target spells the same are fine). */
function englishOnly(target) {
  const same = new Set(flatten(target).values());
  const exact = new Set();
  const patterns = [];
  for (const v of EN.values()) {
    if (same.has(v)) continue;
    if (v.includes('{')) {
      const parts = v.split(/\{\w+\}/).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
      // A pattern needs some fixed English words to mean anything.
      if (parts.join('').replace(/[\s·().,:]/g, '').length >= 4) patterns.push(new RegExp(`^${parts.join('.+')}$`));
    } else {
      exact.add(v);
    }
  }
  return { exact, patterns };
}

/**
 * The English strings on `page` (in the language `target`). `data`: strings that are the
 * consultation's own data, not interface (a patient label that happens to be an English word,
 * such as the demo consultation's "Patient"), shown as they were typed.
 */
export async function englishLeft(page, target, { data = [] } = {}) {
  const texts = await page.evaluate(() => {
    const out = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const s = n.textContent.trim();
      if (s) out.push(s);
    }
    for (const el of document.querySelectorAll('[aria-label]')) out.push(el.getAttribute('aria-label'));
    for (const el of document.querySelectorAll('[alt]')) out.push(el.getAttribute('alt'));
    out.push(document.title);
    return out;
  });
  const { exact, patterns } = englishOnly(target);
  const own = new Set(data);
  return texts.filter((s) => !own.has(s) && (exact.has(s) || patterns.some((p) => p.test(s))));
}
