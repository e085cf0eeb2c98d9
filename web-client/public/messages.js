// Human sentences for what the server tells us, in the page's language: every one comes from
// the message catalogues (locales/*.js, through i18n.js). The exported names are the ones the
// pages have always used; their values are looked up when read, so a language switch applies to
// everything said afterwards.

import { t, formatNumber } from './i18n.js';

/** An object whose property `k` is `t(prefix + '.' + k)`, looked up when read. */
function section(prefix, keys) {
  const o = {};
  for (const k of keys) Object.defineProperty(o, k, { enumerable: true, get: () => t(`${prefix}.${k}`) });
  return o;
}

export const ROLE_LABEL = section('role', ['practitioner', 'patient', 'guest']);

export const END_SCREENS = Object.fromEntries(
  ['ended', 'ended_by_you', 'left', 'removed', 'rejected'].map((k) => [k, section(`end.${k}`, ['heading', 'text'])]),
);

export const ERRORS = section('errors', [
  'noToken',
  'badToken',
  'expiredToken',
  'wrongConsultation',
  'full',
  'revokedToken',
  'notYetValid',
  'cancelled',
  'notSignedIn',
  'notYours',
  'unavailable',
  'movedToAnotherDevice',
  'replaced',
  'badJoin',
  'tooLarge',
  'lost',
  'noWebRTC',
]);

/** The sentence shown when the server closes the socket with a fatal code (4401 etc.). */
export function fatalCloseMessage(code, reason = '') {
  switch (code) {
    case 4401:
      // The reason is machine-readable (docs/signaling.md).
      switch (reason) {
        case 'expired':
          return ERRORS.expiredToken;
        case 'revoked':
          return ERRORS.revokedToken;
        case 'not_yet_valid':
          return ERRORS.notYetValid;
        case 'cancelled':
          return ERRORS.cancelled;
        case 'not_signed_in':
          return ERRORS.notSignedIn;
        default:
          return ERRORS.badToken;
      }
    case 4000:
      return reason === 'moved_to_another_device' ? ERRORS.movedToAnotherDevice : ERRORS.replaced;
    case 1013:
      return ERRORS.unavailable;
    case 4403:
      return reason === 'not_found' ? ERRORS.notYours : ERRORS.wrongConsultation;
    case 4409:
      return ERRORS.full;
    case 4400:
      return ERRORS.badJoin;
    case 1009:
      return ERRORS.tooLarge;
    default:
      return null;
  }
}

/** Sentence for getUserMedia failures. */
export function mediaErrorMessage(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return t('media.denied');
    case 'NotFoundError':
    case 'OverconstrainedError':
      return t('media.missing');
    case 'NotReadableError':
      return t('media.busy');
    default:
      return t('media.other');
  }
}

// ---------------------------------------------------------------- shared documents

export const DOCUMENTS = {
  tooLarge: (limit) => (limit ? t('documents.tooLargeLimit', { limit: formatBytes(limit) }) : t('documents.tooLarge')),
  ...section('documents', ['typeNotAllowed', 'forbidden', 'unauthorized', 'network', 'uploadFailed']),
  uploading: (name) => t('documents.uploading', { name }),
  uploaded: (name) => t('documents.uploaded', { name }),
  downloading: (name) => t('documents.downloading', { name }),
  downloaded: (name) => t('documents.downloaded', { name }),
  deleted: (name) => t('documents.deleted', { name }),
  roleLabel: (role) => t(`role.${['practitioner', 'patient', 'guest'].includes(role) ? role : 'participant'}`),
};
// (`section` spreads getters into values at definition: redefine them as getters.)
for (const k of ['typeNotAllowed', 'forbidden', 'unauthorized', 'network', 'uploadFailed']) {
  Object.defineProperty(DOCUMENTS, k, { enumerable: true, get: () => t(`documents.${k}`) });
}

/** "1.5 MiB", "820 KiB", "12 bytes", with the page's digits and separators. */
export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 1024) return `${formatNumber(n)} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${formatNumber(v, { maximumFractionDigits: 1 })} ${units[i]}`;
}

/** The sentence for a refused documents request: `status` and its `{code, message}` body. The
 * server's own text is never shown (its limit, a number, is read from it). */
export function documentErrorMessage(status, body) {
  const message = body && typeof body.message === 'string' ? body.message : '';
  switch (status) {
    case 413: {
      const m = /limit of (\d+) bytes/.exec(message);
      return DOCUMENTS.tooLarge(m ? Number(m[1]) : null);
    }
    case 415:
      return DOCUMENTS.typeNotAllowed;
    case 401:
      return DOCUMENTS.unauthorized;
    case 403:
      return DOCUMENTS.forbidden;
    case 0:
      return DOCUMENTS.uploadFailed;
    default:
      return t('documents.refused');
  }
}

// Reachability and reconnection (issue 11).
// tapToStartAudio: shown when the browser refused to start sound without a tap (autoplay
// policy); mediaRestarting: announced while the media connection is re-established.
export const RECONNECT = {};
for (const k of ['tapToStartAudio', 'mediaRestarting']) {
  Object.defineProperty(RECONNECT, k, { enumerable: true, get: () => t(`reconnect.${k}`) });
}
// ---------------------------------------------------------------- chat and notices

const CHAT_ERRORS = ['chat_empty', 'chat_too_long', 'chat_rate_limited', 'not_admitted', 'forbidden'];

export const CHAT = {
  ...{},
  errors: section('chat', CHAT_ERRORS),
};
for (const k of ['you', 'sendFailed', 'noticeSent']) {
  Object.defineProperty(CHAT, k, { enumerable: true, get: () => t(`chat.${k}`) });
}

/** The sentence for a signalling `error` by its stable code (docs/signaling.md). */
export const SERVER_ERRORS = section('server', ['bad_sdp', 'media_failed', 'forbidden', 'not_admitted', 'unknown_participant', 'other']);

export function serverErrorMessage(code) {
  return Object.hasOwn(SERVER_ERRORS, code) ? SERVER_ERRORS[code] : SERVER_ERRORS.other;
}

// ---------------------------------------------------------------- devices

export const DEVICES = {
  unnamed: {
    videoinput: (n) => t('devices.videoinput', { n }),
    audioinput: (n) => t('devices.audioinput', { n }),
    audiooutput: (n) => t('devices.audiooutput', { n }),
  },
  failed: (name) =>
    name === 'NotAllowedError' || name === 'SecurityError'
      ? t('devices.denied')
      : name === 'NotReadableError'
        ? t('devices.busy')
        : t('devices.failed'),
};
for (const k of ['none', 'cameraChanged', 'microphoneChanged', 'speakerChanged', 'testSound']) {
  Object.defineProperty(DEVICES, k, { enumerable: true, get: () => t(`devices.${k}`) });
}

// ---------------------------------------------------------------- the call

export const CALL = {
  screenOf: (name) => t('call.screenOf', { name }),
  screenEnded: (name) => t('call.screenEnded', { name }),
  confirmRemove: (name) => t('call.confirmRemove', { name }),
};
for (const k of ['micOn', 'micMuted', 'cameraOn', 'cameraOff', 'screenStarted', 'screenStopped', 'screenBusy', 'screenFailed', 'confirmEnd']) {
  Object.defineProperty(CALL, k, { enumerable: true, get: () => t(`call.${k}`) });
}
Object.defineProperty(CALL, 'screenShared', { enumerable: true, get: () => t('join.screenShared') });
