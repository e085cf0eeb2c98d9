// Recording with consent (issue 13, docs/signaling.md): the consultation's policy shown before
// entering the call and in it, the practitioner's Record / Stop button, each participant's
// consent request (the server's versioned text, in the page's language), a way to withdraw,
// and the indicator everyone sees while anything is recorded.
//
// Nothing here decides who is recorded: the server does, and says so in `recording_state`.

import { t, locale, onLanguageChange } from './i18n.js';

const POLICIES = ['standard', 'recordable', 'end_to_end'];

/**
 * @param {object} o
 * @param {(id: string) => HTMLElement} o.$ element lookup
 * @param {(msg: object) => boolean} o.send a protocol message
 * @param {() => object|null} o.you the participant we are
 * @param {(text: string) => void} o.say announce (status line)
 */
export function createRecording({ $, send, you, say }) {
  const st = {
    policy: null,
    /** The running recording's id, if any. */
    recording: null,
    /** Participant ids being recorded now. */
    recorded: [],
    /** The request we were shown and not answered yet: { recording, text_version, texts }. */
    request: null,
    /** The text version and language of the request we accepted (withdrawals name them). */
    answered: null,
  };

  const practitioner = () => (you() || {}).role === 'practitioner';
  const me = () => (you() || {}).id;
  const recordingMe = () => st.recorded.includes(me());

  function render() {
    const policyText = POLICIES.includes(st.policy) ? t(`recording.policy_${st.policy}`) : '';
    for (const id of ['policy-waiting', 'policy-call']) {
      $(id).textContent = policyText;
      $(id).hidden = !policyText;
    }
    const active = st.recorded.length > 0;
    const ind = $('recording-indicator');
    ind.hidden = !active;
    ind.textContent = recordingMe() ? t('recording.indicatorYou') : t('recording.indicatorNotYou');
    document.body.dataset.recording = active ? (recordingMe() ? 'me' : 'others') : 'off';
    const toggle = $('recording-toggle');
    toggle.hidden = !(practitioner() && st.policy === 'recordable');
    toggle.textContent = st.recording ? t('recording.stop') : t('recording.request');
    toggle.setAttribute('aria-pressed', String(!!st.recording));
    $('recording-withdraw').hidden = !(st.recording && recordingMe());
    const dialog = $('recording-consent');
    if (st.request) {
      const texts = st.request.texts || {};
      $('recording-consent-text').textContent = texts[locale()] || texts.en || '';
      dialog.hidden = false;
    } else {
      dialog.hidden = true;
    }
  }

  function answer(accept) {
    const req = st.request;
    if (!req) return;
    const texts = req.texts || {};
    const language = texts[locale()] ? locale() : 'en';
    if (
      send({
        type: 'recording_consent',
        recording: req.recording,
        accept,
        text_version: req.text_version,
        language,
      })
    ) {
      st.request = null;
      st.answered = accept ? { recording: req.recording, text_version: req.text_version, language } : null;
      say(accept ? t('recording.consentGiven') : t('recording.declined'));
      render();
    }
  }

  function withdraw() {
    if (!st.recording || !recordingMe()) return;
    const a = st.answered || { text_version: '', language: locale() };
    if (send({ type: 'recording_consent', recording: st.recording, accept: false, text_version: a.text_version, language: a.language })) {
      st.answered = null;
      say(t('recording.withdrawn'));
    }
  }

  function toggle() {
    if (st.recording) {
      send({ type: 'recording_stop' });
    } else {
      send({ type: 'recording_request', language: locale() });
    }
  }

  $('recording-accept').addEventListener('click', () => answer(true));
  $('recording-decline').addEventListener('click', () => answer(false));
  $('recording-withdraw').addEventListener('click', withdraw);
  $('recording-toggle').addEventListener('click', toggle);
  onLanguageChange(render);

  return {
    /** The policy from `joined`. */
    policy(p) {
      st.policy = p || 'standard';
      render();
    },
    requested(msg) {
      if (typeof msg.recording !== 'string') return;
      st.request = { recording: msg.recording, text_version: msg.text_version, texts: msg.texts || {} };
      render();
      $('recording-accept').focus();
    },
    state(msg) {
      const was = st.recording;
      st.recording = msg.recording || null;
      st.recorded = Array.isArray(msg.recorded) ? msg.recorded : [];
      if (!st.recording) {
        st.request = null;
        st.answered = null;
      } else if (st.request && st.request.recording !== st.recording) {
        st.request = null;
      }
      if (was && !st.recording) say(t('recording.stopped'));
      else if (!was && st.recording) say(t('recording.started'));
      render();
    },
    /** A refused request or answer: true when it was ours to explain. */
    refused(code) {
      const known = ['recording_not_allowed', 'recording_already_running', 'not_recording', 'consent_text_outdated'];
      if (!known.includes(code)) return false;
      return t(`recording.errors.${code}`);
    },
    /** For tests: what the page believes. */
    snapshot() {
      return { policy: st.policy, recording: st.recording, recorded: [...st.recorded], asked: !!st.request };
    },
  };
}
