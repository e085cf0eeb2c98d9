// Languages of the web client: message catalogues (locales/en.js, fr.js, de.js), the choice
// (this device's earlier choice, else the browser's languages, i.e. what it sends as
// Accept-Language, else English), `lang` on <html>, and a switcher on every page.
//
// Markup names its strings with `data-i18n="key"` (text) and `data-i18n-attr="attr:key;…"`
// (attributes). Code asks `t('key', {name})`: whole sentences with named placeholders, never
// sentences glued together from translated pieces. Dates and numbers go through Intl with
// `locale()`.

import en from './locales/en.js';
import fr from './locales/fr.js';
import de from './locales/de.js';

export const CATALOGUES = { en, fr, de };
export const LANGUAGE_NAMES = { en: 'English', fr: 'Français', de: 'Deutsch' };
const STORE_KEY = 'teleconsult.lang';

function pick() {
  try {
    const stored = localStorage.getItem(STORE_KEY);
    if (stored && CATALOGUES[stored]) return stored;
  } catch {
    /* storage unavailable */
  }
  // No `navigator` outside a browser (Node 20 runs the client's modules in unit tests).
  const nav = typeof navigator === 'undefined' ? {} : navigator;
  const wanted = nav.languages && nav.languages.length ? nav.languages : [nav.language || 'en'];
  for (const tag of wanted) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (CATALOGUES[base]) return base;
  }
  return 'en';
}

let current = pick();
const listeners = new Set();

/** The language in use (`en`, `fr`, `de`). */
export function locale() {
  return current;
}

function lookup(catalogue, key) {
  let v = catalogue;
  for (const part of key.split('.')) {
    if (v == null || typeof v !== 'object') return undefined;
    v = v[part];
  }
  return v;
}

/** The string `key` in the current language (English if missing), placeholders filled. */
export function t(key, params = {}) {
  let v = lookup(CATALOGUES[current], key);
  if (typeof v !== 'string') v = lookup(en, key);
  if (typeof v !== 'string') return key;
  return v.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** Translate the marked elements under `root`. */
export function translatePage(root = document) {
  document.documentElement.lang = current;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of el.dataset.i18nAttr.split(';')) {
      const [attr, key] = pair.split(':').map((s) => s.trim());
      if (attr && key) el.setAttribute(attr, t(key));
    }
  }
  const title = document.querySelector('title[data-i18n-title]');
  if (title) document.title = t(title.dataset.i18nTitle);
}

/** Call `fn` after every language change (pages re-render what they built in code). */
export function onLanguageChange(fn) {
  listeners.add(fn);
}

export function setLanguage(lang) {
  if (!CATALOGUES[lang] || lang === current) return;
  current = lang;
  try {
    localStorage.setItem(STORE_KEY, lang);
  } catch {
    /* storage unavailable: this page only */
  }
  translatePage();
  for (const fn of listeners) fn(lang);
}

/** A language picker in the page's top bar (or `container`). */
export function mountLanguageSwitcher(container = document.querySelector('.topbar')) {
  if (!container || document.getElementById('lang-select')) return;
  const wrap = document.createElement('span');
  wrap.className = 'lang-switch';
  const label = document.createElement('label');
  label.htmlFor = 'lang-select';
  label.className = 'visually-hidden';
  label.dataset.i18n = 'language';
  label.textContent = t('language');
  const select = document.createElement('select');
  select.id = 'lang-select';
  for (const [code, name] of Object.entries(LANGUAGE_NAMES)) {
    const o = document.createElement('option');
    o.value = code;
    o.lang = code;
    o.textContent = name;
    o.selected = code === current;
    select.append(o);
  }
  select.addEventListener('change', () => setLanguage(select.value));
  wrap.append(label, select);
  container.append(wrap);
}

/** Formatters in the current language. */
export function formatTime(ms) {
  return new Intl.DateTimeFormat(current, { hour: '2-digit', minute: '2-digit' }).format(new Date(ms));
}

export function formatDateTime(ms) {
  return new Intl.DateTimeFormat(current, { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(ms));
}

export function formatNumber(n, options) {
  return new Intl.NumberFormat(current, options).format(n);
}

// Every page using this module is translated as soon as it loads (modules run after parsing).
// In a page: translate it and offer the switcher at once (not in Node's unit tests).
if (typeof document !== 'undefined') {
  translatePage();
  mountLanguageSwitcher();
}
