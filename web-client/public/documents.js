// Shared documents in the call screen: the list, uploads with a progress bar, downloads and
// deletions over the documents HTTP API (signaling/src/documents.rs). The join token is sent
// only as `Authorization: Bearer` — never in a URL — and is asked for through `getToken` each
// time, so this module keeps no copy of it.

import { DOCUMENTS, documentErrorMessage, formatBytes } from './messages.js';
import { t } from './i18n.js';

/**
 * @param {object} opts
 * @param {HTMLElement} opts.root the "Documents" region
 * @param {() => string|null} opts.getToken
 * @param {() => string} opts.consultation
 * @param {() => {id: string, role: string}|null} opts.you
 * @param {() => string|null} [opts.getCsrf] without a token (a practitioner's login session:
 *   the cookie authenticates), the session's CSRF token for uploads and deletions
 */
export function createDocuments({ root, getToken, consultation, you, getCsrf = () => null }) {
  const list = root.querySelector('.documents-list');
  const empty = root.querySelector('.documents-empty');
  const input = root.querySelector('input[type="file"]');
  const progress = root.querySelector('progress');
  const status = root.querySelector('.documents-status');
  const error = root.querySelector('.documents-error');

  /** Documents by id. */
  const docs = new Map();
  /** Changes announced over signalling while a list request is in flight (merged into its answer). */
  let pending = null;
  let uploading = null;

  const base = () => `/api/consultations/${encodeURIComponent(consultation())}/documents`;
  const auth = () => {
    const t = getToken();
    if (t) return { Authorization: `Bearer ${t}` };
    const csrf = getCsrf();
    return csrf ? { 'X-CSRF-Token': csrf } : {};
  };

  function say(text) {
    status.textContent = text;
  }
  function fail(text) {
    error.textContent = text;
  }

  async function errorFrom(res) {
    let body = null;
    try {
      body = await res.json();
    } catch {
      /* not JSON */
    }
    return documentErrorMessage(res.status, body);
  }

  function mayDelete(doc) {
    const me = you();
    if (!me) return false;
    return me.role === 'practitioner' || doc.uploader === me.id;
  }

  function render() {
    const sorted = [...docs.values()].sort((a, b) => a.uploaded_at - b.uploaded_at || (a.id < b.id ? -1 : 1));
    list.replaceChildren(...sorted.map(row));
    empty.hidden = sorted.length > 0;
  }

  function row(doc) {
    const li = document.createElement('li');
    li.dataset.document = doc.id;
    const name = document.createElement('span');
    name.className = 'doc-name';
    name.textContent = doc.filename;
    const meta = document.createElement('span');
    meta.className = 'doc-meta';
    const when = new Date(doc.uploaded_at);
    const time = document.createElement('time');
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    meta.append(`${formatBytes(doc.size)} · ${DOCUMENTS.roleLabel(doc.uploader_role)} · `, time);
    const download = document.createElement('button');
    download.type = 'button';
    download.textContent = t('documents.download');
    download.setAttribute('aria-label', t('documents.downloadName', { name: doc.filename }));
    download.addEventListener('click', () => downloadDoc(doc, download));
    li.append(name, meta, download);
    if (mayDelete(doc)) {
      const del = document.createElement('button');
      del.type = 'button';
      del.className = 'danger-outline';
      del.textContent = t('documents.delete');
      del.setAttribute('aria-label', t('documents.deleteName', { name: doc.filename }));
      del.addEventListener('click', () => deleteDoc(doc, del));
      li.append(del);
    }
    return li;
  }

  async function downloadDoc(doc, button) {
    fail('');
    button.disabled = true;
    say(DOCUMENTS.downloading(doc.filename));
    try {
      const res = await fetch(`${base()}/${encodeURIComponent(doc.id)}`, { headers: auth() });
      if (!res.ok) {
        fail(await errorFrom(res));
        say('');
        return;
      }
      const blob = await res.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = doc.filename;
      a.hidden = true;
      document.body.append(a);
      a.click();
      a.remove();
      // The browser has taken the blob by the next task; free it a little later.
      setTimeout(() => URL.revokeObjectURL(url), 30_000);
      say(DOCUMENTS.downloaded(doc.filename));
    } catch {
      fail(DOCUMENTS.network);
      say('');
    } finally {
      button.disabled = false;
    }
  }

  async function deleteDoc(doc, button) {
    fail('');
    button.disabled = true;
    try {
      const res = await fetch(`${base()}/${encodeURIComponent(doc.id)}`, {
        method: 'DELETE',
        headers: auth(),
      });
      if (res.ok || res.status === 404) {
        removed(doc);
        say(DOCUMENTS.deleted(doc.filename));
      } else {
        fail(await errorFrom(res));
        button.disabled = false;
      }
    } catch {
      fail(DOCUMENTS.network);
      button.disabled = false;
    }
  }

  function upload(file) {
    fail('');
    if (uploading) return;
    const form = new FormData();
    form.append('file', file, file.name);
    const xhr = new XMLHttpRequest();
    uploading = xhr;
    input.disabled = true;
    progress.value = 0;
    progress.max = 100;
    progress.hidden = false;
    say(DOCUMENTS.uploading(file.name));
    const onProgress = (e) => {
      if (e.lengthComputable && e.total > 0) {
        progress.value = Math.round((e.loaded / e.total) * 100);
      }
    };
    xhr.upload.addEventListener('progress', onProgress);
    xhr.upload.addEventListener('load', onProgress);
    const done = () => {
      uploading = null;
      input.disabled = false;
      input.value = '';
    };
    xhr.addEventListener('load', () => {
      done();
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* not JSON */
      }
      if (xhr.status === 201 && body && body.id) {
        added(body);
        say(DOCUMENTS.uploaded(body.filename));
      } else {
        progress.hidden = true;
        say('');
        fail(documentErrorMessage(xhr.status, body));
      }
    });
    const broken = () => {
      if (uploading !== xhr) return; // stopped on purpose
      done();
      progress.hidden = true;
      say('');
      fail(DOCUMENTS.uploadFailed);
    };
    xhr.addEventListener('error', broken);
    xhr.addEventListener('abort', broken);
    xhr.open('POST', base());
    for (const [k, v] of Object.entries(auth())) xhr.setRequestHeader(k, v);
    xhr.send(form);
  }

  function added(doc) {
    if (!doc || typeof doc.id !== 'string') return;
    if (pending) {
      pending.deleted.delete(doc.id);
      pending.added.set(doc.id, doc);
    }
    docs.set(doc.id, doc);
    render();
  }

  function removed(doc) {
    if (!doc || typeof doc.id !== 'string') return;
    if (pending) {
      pending.added.delete(doc.id);
      pending.deleted.add(doc.id);
    }
    docs.delete(doc.id);
    render();
  }

  /** The list from the server (after admission and every reconnection). */
  async function load() {
    const mine = { added: new Map(), deleted: new Set() };
    pending = mine;
    try {
      const res = await fetch(base(), { headers: auth() });
      if (!res.ok) {
        fail(await errorFrom(res));
        return;
      }
      const fresh = await res.json();
      if (pending !== mine) return; // a newer load superseded this one
      docs.clear();
      for (const d of Array.isArray(fresh) ? fresh : []) if (!mine.deleted.has(d.id)) docs.set(d.id, d);
      for (const [id, d] of mine.added) docs.set(id, d);
      render();
    } catch {
      fail(DOCUMENTS.network);
    } finally {
      if (pending === mine) pending = null;
    }
  }

  input.addEventListener('change', () => {
    const file = input.files && input.files[0];
    if (file) upload(file);
  });
  render();

  return {
    load,
    added,
    removed,
    /** Re-render (e.g. once our participant id is known, for the Delete buttons). */
    render,
    /** Stop everything (end of the call). */
    stop() {
      const xhr = uploading;
      uploading = null;
      if (xhr) xhr.abort();
      fail('');
      say('');
      progress.hidden = true;
      docs.clear();
      render();
    },
  };
}
