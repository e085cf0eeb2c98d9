// Human sentences for what the server tells us. Kept apart from the app so tests and
// translators find them in one place.

export const ROLE_LABEL = {
  practitioner: 'practitioner',
  patient: 'patient',
  guest: 'guest',
};

export const END_SCREENS = {
  ended: {
    heading: 'The consultation has ended',
    text: 'This consultation has ended. Thank you, you can close this page now.',
  },
  ended_by_you: {
    heading: 'The consultation has ended',
    text: 'You ended the consultation for everyone. You can close this page now.',
  },
  left: {
    heading: 'You left the consultation',
    text: 'You have left the consultation. You can close this page now.',
  },
  removed: {
    heading: 'You were removed from the consultation',
    text: 'The practitioner removed you from this consultation. Please contact your practice if you think this is a mistake.',
  },
  rejected: {
    heading: 'You could not be admitted',
    text: 'The practitioner did not admit you to this consultation. Please contact your practice if you think this is a mistake.',
  },
};

export const ERRORS = {
  noToken:
    'This page needs your personal consultation link. Please open the link from your invitation again.',
  badToken:
    'This consultation link is not valid. Please check that you opened the complete link, or ask your practice for a new one.',
  expiredToken: 'This consultation link has expired. Please ask your practice for a new link.',
  wrongConsultation: 'This link belongs to a different consultation. Please open the link from your invitation again.',
  full: 'This consultation is full. Please contact your practice.',
  revokedToken: 'This consultation link is no longer valid. Please ask your practice for a new one.',
  notYetValid:
    'This consultation has not opened yet. Please come back shortly before your appointment.',
  cancelled: 'This consultation was cancelled by your practice.',
  notSignedIn: 'Your sign-in has ended. Please sign in again and start the consultation from your workspace.',
  notYours: 'This consultation is not among yours. Please start it from your workspace.',
  unavailable: 'The service cannot check your link right now. Please try again in a minute.',
  movedToAnotherDevice:
    'Your consultation continues on another device: the practitioner admitted it, so this window was disconnected.',
  replaced: 'This consultation was opened again in another window, so this one was disconnected.',
  badJoin: 'The server did not understand this page. Please reload it with your invitation link, or update your browser.',
  tooLarge: 'The connection was closed because a message was too large. Please rejoin with your invitation link.',
  lost: 'The connection to the consultation was lost. Please open your invitation link again to rejoin.',
  noWebRTC: 'This browser cannot make video calls. Please use a recent version of Firefox, Chrome, Edge or Safari.',
};

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
      return 'Your browser did not allow the camera and microphone. You can still join, but others will not see or hear you. Allow access in your browser settings and reload to fix this.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No camera or microphone was found. You can still join, but others will not see or hear you.';
    case 'NotReadableError':
      return 'Your camera or microphone is in use by another application. Close it and reload this page, or join without them.';
    default:
      return 'Your camera and microphone could not be started. You can still join, but others will not see or hear you.';
  }
}

// ---------------------------------------------------------------- shared documents

export const DOCUMENTS = {
  tooLarge: (limit) =>
    limit
      ? `This file is too large to share. The limit is ${formatBytes(limit)}.`
      : 'This file is too large to share.',
  typeNotAllowed:
    'This type of file is not allowed. You can share PDF, PNG, JPEG, WebP, plain text and DICOM files.',
  forbidden: 'You may not use the documents of this consultation.',
  unauthorized: 'Your consultation link is no longer valid for documents. Please open your invitation link again.',
  network: 'The documents could not be reached. Please check your connection and try again.',
  uploadFailed: 'The upload did not finish. Please check your connection and try again.',
  uploading: (name) => `Uploading ${name}…`,
  uploaded: (name) => `${name} uploaded.`,
  downloading: (name) => `Downloading ${name}…`,
  downloaded: (name) => `${name} downloaded.`,
  deleted: (name) => `${name} deleted.`,
  roleLabel: (role) => ({ practitioner: 'practitioner', patient: 'patient', guest: 'guest' })[role] || 'participant',
};

/** "1.5 MiB", "820 KiB", "12 bytes". */
export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 1024) return `${n} bytes`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

/** The sentence for a refused documents request: `status` and its `{code, message}` body. */
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
      return message ? `Not allowed: ${message}.` : DOCUMENTS.forbidden;
    case 0:
      return DOCUMENTS.uploadFailed;
    default:
      return message ? `The server refused: ${message}.` : `The server refused the request (HTTP ${status}).`;
  }
}

// Reachability and reconnection (issue 11).
export const RECONNECT = {
  /** Shown when the browser refused to start sound without a tap (autoplay policy). */
  tapToStartAudio: 'Tap to start audio',
  /** Announced while the media connection is being re-established on the same call. */
  mediaRestarting: 'The connection changed; restoring audio and video…',
};
