/* facegate console: enrolment (consent, the photo check, the result). */
(() => {
  'use strict';

  const { state, h, clear, fmtNum, enc, can, ApiError, subjectRef, api, showError, withBusy, loadCollections, field,
    collectionSelect, purposeChecks, checkedValues, needsLiveness, livenessRequiredNote, REASON_TEXT, reasonText,
    imagePicker, COLORS, legend, pageHead, livenessProbeCard } = window.facegateConsole;

  async function enrolPage(r) {
    const cols = await loadCollections();
    if (!cols.length) return h('div', {}, pageHead('Enrol'), h('div', { class: 'panel empty' }, h('div', { class: 'big', text: 'No collection to enrol into' }), h('div', { text: 'Create a collection first.' })));
    let col = cols.find((c) => c.name === r.query.get('collection')) || cols[0];
    const colSel = collectionSelect(cols, col.name, 'enrol-collection');
    const subject = h('input', { type: 'text', placeholder: 'e.g. customer number', value: r.query.get('subject') || '', 'data-testid': 'enrol-subject' });
    const label = h('input', { type: 'text', placeholder: 'optional', 'data-testid': 'enrol-label' });
    const subjectInfo = h('span', { class: 'hint status', 'data-testid': 'enrol-subject-info' });
    const purposesSlot = h('div');
    const expiry = h('input', { type: 'date', 'data-testid': 'enrol-expiry' });
    const evidence = h('input', { type: 'text', placeholder: 'signed form id or document sha256', 'data-testid': 'enrol-evidence' });
    const attest = h('input', { type: 'checkbox', 'data-testid': 'enrol-attest' });
    const consentPanel = h('div', {},
      h('h3', { text: 'Consent' }),
      field('Purposes the subject agreed to', purposesSlot),
      h('div', { class: 'grid2' }, field('Consent expires (optional)', expiry), field('Evidence reference', evidence)),
      h('label', { class: 'check' }, attest, h('span', { text: 'The subject gave informed consent to these purposes, and the evidence is kept.' })));
    let existing = null;
    let checks = null;
    const renderPurposes = () => { checks = purposeChecks(col.purposes, col.purposes.length === 1 ? col.purposes : [], 'enrol-purpose'); clear(purposesSlot).append(checks); };
    renderPurposes();
    // The duplicate search is an identification, so it needs a declared purpose; none: no search.
    const dedupSel = h('select', { 'data-testid': 'enrol-dedup' });
    const renderDedup = () => clear(dedupSel).append(h('option', { value: '', text: 'No duplicate search' }),
      ...col.purposes.map((p) => h('option', { value: p, text: `Among subjects consenting to ${p}` })));
    renderDedup();
    colSel.addEventListener('change', () => { col = cols.find((c) => c.name === colSel.value); renderPurposes(); renderDedup(); lookup(); applyLive(); });

    async function lookup() {
      existing = null;
      const sid = subject.value.trim();
      if (!sid) { subjectInfo.textContent = ''; return; }
      try {
        const ref = subjectRef(col.name, sid);
        existing = await api('GET', ref.path, { query: ref.query });
        subjectInfo.textContent = `Existing subject · ${existing.templates.length} template(s) · active consent: ${existing.active_purposes.join(', ') || 'none'}. Consent below is optional (adds purposes).`;
      } catch (e) {
        subjectInfo.textContent = e.status === 404 ? 'New subject: consent is required.' : '';
      }
    }
    subject.addEventListener('change', lookup);
    if (subject.value) lookup();

    const verdict = h('div', { 'data-testid': 'quality-verdict' });
    const result = h('div', { 'data-testid': 'enrol-result' });
    const liveId = r.query.get('liveness');  // a passed liveness check: its best frame is enrolled
    // What the photo check found: null (no photo yet / checking), or why the photo cannot be
    // enrolled ('' when it can). Enrol stays disabled while the check says the photo is unusable.
    let photoProblem = null;
    const setPhotoProblem = (why) => { photoProblem = why; gate(); };
    const picker = liveId ? null : imagePicker({ label: 'Enrolment photo', testid: 'enrol-picker', onImage: async (blob) => {
      clear(result); clear(verdict); clear(errSlot);
      setPhotoProblem(null);
      if (!blob) return;
      verdict.append(h('div', { class: 'muted small', text: 'Checking quality…' }));
      const form = new FormData(); form.append('image', blob, blob.name || 'photo.jpg'); form.append('collection', col.name);
      try {
        const d = await api('POST', '/v1/detect', { form });
        if (picker.blob === blob) drawDetect(d);
      } catch (err) {
        if (picker.blob !== blob) return;
        showError(verdict, err, 'Photo check');
        setPhotoProblem(err.status === 0 || err.status === 429 || err.status >= 500 ? '' : 'This file cannot be enrolled: choose another photo.');
      }
    } });

    // Collection requires a liveness check for enrolment: no photo upload, steer to #/liveness.
    const liveNote = livenessRequiredNote('enrol-liveness-required');
    const photoWrap = liveId ? null : h('div', {}, picker.el, legend());
    const needsLive = () => !liveId && needsLiveness(col, 'enroll');
    function applyLive() {
      const on = liveId ? liveNote.update(null, 'enroll') : liveNote.update(col, 'enroll');
      if (photoWrap) photoWrap.classList.toggle('hidden', on);
      if (on) { clear(verdict); clear(result); }
    }

    const qualityAlert = (f, what) => (f.quality_ok
      ? h('div', { class: 'alert ok', text: `${what}Good quality: eye distance ${fmtNum(f.quality.inter_eye_px, 0)} px, sharpness ${fmtNum(f.quality.sharpness, 0)}, yaw ${fmtNum(f.quality.yaw_deg, 0)}°.` })
      : h('div', { class: 'alert warn' }, `${what}This photo will likely be rejected: `, f.quality_reasons.map(reasonText).join('; ') + '.'));

    function drawDetect(d) {
      const faces = d.faces.map((f, i) => ({ ...f, color: i === d.subject ? (f.quality_ok ? COLORS.ok : COLORS.bad) : COLORS.grey, label: i === d.subject ? (f.quality_ok ? 'good quality' : 'fails quality gate') : null }));
      picker.draw(faces);
      clear(verdict);
      if (d.subject === null && d.reasons.includes('ambiguous_face') && d.faces.length) {
        // No face is clearly the subject: the operator clicks the person being enrolled.
        picker.choose(d.faces.map((f) => ({ face: f.index, box: f.box, landmarks: f.landmarks })), (i) => {
          clear(verdict).append(qualityAlert(d.faces[i], `Face ${i} chosen. `));
        });
        verdict.append(h('div', { class: 'alert warn', 'data-testid': 'enrol-choose-face',
          text: `This photo shows ${d.count} faces and none is clearly the subject: click the person being enrolled.` }));
      } else if (d.subject === null) {
        verdict.append(h('div', { class: 'alert error', 'data-testid': 'enrol-no-face', text: 'No face found in this photo.' }));
        setPhotoProblem('A photo without a face cannot be enrolled: choose another photo.');
        return;
      } else {
        verdict.append(qualityAlert(d.faces[d.subject], ''));
        if (d.count > 1) verdict.append(h('div', { class: 'small muted', text: `${d.count} faces found; the most prominent (outlined) is enrolled.` }));
      }
      setPhotoProblem('');
    }

    const errSlot = h('div');
    consentPanel.addEventListener('change', () => clear(errSlot));
    subject.addEventListener('input', () => clear(errSlot));
    const submit = h('button', { class: 'primary', text: 'Enrol', 'data-testid': 'enrol-submit' });
    const gateNote = h('span', { class: 'small muted', 'data-testid': 'enrol-gate' });
    function gate() {
      const why = liveId ? '' : photoProblem || '';
      submit.disabled = !!why;
      gateNote.textContent = why;
    }
    submit.addEventListener('click', () => withBusy(submit, async () => {
      clear(errSlot); clear(result);
      const sid = subject.value.trim();
      const ps = checkedValues(checks);
      const problems = [];
      if (!sid) problems.push('Enter the subject id.');
      if (needsLive()) problems.push(`Collection ${col.name} requires a liveness check for enrolment: start one first.`);
      else if (!liveId && !picker.blob) problems.push('Add a photo.');
      if (!existing && !ps.length) problems.push('Choose the purposes the subject consented to.');
      if (ps.length && !attest.checked) problems.push('Confirm the subject gave consent.');
      if (problems.length) { showError(errSlot, new ApiError(0, { detail: problems.join(' ') })); return; }
      await send(sid, ps, null);
    }));

    /** Enrol the form's photo; ``force``: an admin's reason to accept a face_mismatch. */
    async function send(sid, ps, force) {
      const form = new FormData();
      if (liveId) form.append('liveness_session', liveId); else form.append('images', picker.blob, picker.blob.name || 'photo.jpg');
      if (picker && picker.face !== null) form.append('faces', String(picker.face));
      if (ps.length) form.append('purposes', ps.join(','));
      if (expiry.value) form.append('expires_at', new Date(expiry.value + 'T23:59:59').toISOString());
      if (evidence.value.trim()) form.append('evidence_ref', evidence.value.trim());
      if (label.value.trim()) form.append('label', label.value.trim());
      if (dedupSel.value) form.append('dedup_purpose', dedupSel.value);
      if (force) form.append('force_mismatch', force);
      try {
        const out = await api('POST', `/v1/collections/${enc(col.name)}/subjects/${enc(sid)}/faces`, { form });
        showEnrolResult(out, ps);
        state.collections = null;
      } catch (err) { showError(errSlot, err, 'Enrolment refused'); }
    }

    function resetForm() {
      subject.value = ''; label.value = ''; evidence.value = ''; expiry.value = ''; attest.checked = false;
      if (liveId) { location.hash = `#/enrol?collection=${enc(col.name)}`; return; }  // a liveness check is used once
      renderPurposes(); picker.reset(); clear(result); clear(verdict); clear(errSlot); setPhotoProblem(null);
      existing = null; subjectInfo.textContent = ''; submit.classList.remove('hidden');
      subject.focus();
    }

    function mismatchPanel(out, ps) {
      if (!can('admin')) {
        return h('p', { class: 'small muted', 'data-testid': 'force-admin-only', text: 'Only an admin key can accept a face that does not match, with a stated reason.' });
      }
      const reason = h('input', { type: 'text', maxlength: 256, placeholder: 'e.g. re-enrolment after facial surgery, ticket 4711', 'data-testid': 'force-reason' });
      const force = h('button', { class: 'ghost-danger', text: 'Force with this reason', 'data-testid': 'force-submit' });
      const err = h('div');
      reason.addEventListener('input', () => clear(err));
      force.addEventListener('click', () => withBusy(force, async () => {
        if (!reason.value.trim()) { showError(err, new ApiError(0, { detail: 'State why this face belongs to the subject; the reason is audited.' })); return; }
        await send(out.subject, ps, reason.value.trim());
      }));
      return h('div', { class: 'panel', 'data-testid': 'force-panel' }, h('h3', { text: 'Force with a reason (admin)' }),
        h('p', { class: 'small muted', text: 'Enrol this face for the subject anyway. The reason and the scores are recorded in the audit log.' }),
        field('Reason', reason), err, h('div', { class: 'row end' }, force));
    }

    // Why a photo was not enrolled, as one sentence: our wording for a known reason, else the server's.
    function rejection(img, out) {
      const why = REASON_TEXT[img.reason] || img.message || img.reason.replace(/_/g, ' ');
      const next = img.reason === 'ambiguous_face' ? ' Click the person being enrolled on the photo, then enrol again.'
        : out.created || existing ? '' : ` Nothing was stored: ${out.subject} was not created.`;
      return `${why}.${next}`;
    }

    function showEnrolResult(out, ps) {
      subjectInfo.textContent = '';
      const img = out.images[0];
      const mark = img && (img.accepted ? 'enrolled' : img.reason === 'face_mismatch' ? 'another person' : 'rejected');  // the why is in the alert
      if (img && img.face && picker) picker.draw([{ ...img.face, color: img.accepted ? COLORS.ok : COLORS.bad, label: mark }]);
      // The subject exists if it did before, or this enrolment created it.
      const exists = !!(existing || out.created || (img && img.accepted));
      clear(result).append(h('div', {},
        img && img.accepted
          ? h('div', { class: 'alert ok', 'data-testid': 'enrol-accepted' }, h('strong', { text: `${out.subject} enrolled` }), ` in ${out.collection}${out.created ? ' (new subject)' : ''}. Template #${img.template_id}.`)
          : h('div', { class: 'alert error', 'data-testid': 'enrol-rejected' }, h('strong', { text: 'Photo rejected: ' }), img ? rejection(img, out) : 'no image.'),
        img && img.reason === 'face_mismatch' ? mismatchPanel(out, ps) : null,
        out.duplicates.length ? h('div', { class: 'alert warn', 'data-testid': 'duplicate-warning' }, h('strong', { text: 'Possible duplicate identity: ' }),
          'this face also matches ', out.duplicates.map((d, i) => [i ? ', ' : '', h('a', { href: `#/collections/${enc(out.collection)}/subjects/${enc(d.subject)}`, text: d.subject }), ` (score ${fmtNum(d.score)})`]), '. Review before relying on this enrolment.')
          : out.flagged_for_review ? h('div', { class: 'alert warn', 'data-testid': 'review-flag' }, h('strong', { text: 'Flagged for review: ' }),
            'this face may belong to another enrolled subject; someone with the identify scope can see which.') : null,
        h('div', { class: 'row' }, exists ? h('a', { class: 'btn', href: `#/collections/${enc(out.collection)}/subjects/${enc(out.subject)}`, 'data-testid': 'enrol-open-subject', text: 'Open subject' }) : null,
          h('button', { class: img && img.accepted ? 'primary' : '', text: 'Enrol another', 'data-testid': 'enrol-another', onclick: resetForm }))));
      // Consent belongs to one person: once a face is enrolled the form is not reused until it is reset.
      submit.classList.toggle('hidden', !!(img && img.accepted));
    }

    applyLive();
    return h('div', {},
      pageHead('Enrol a subject', 'Record consent, check the photo\'s quality, then store an encrypted template. The photo itself is not kept.'),
      h('div', { class: 'grid2' },
        h('div', { class: 'panel' },
          h('h3', { text: 'Subject' }),
          field('Collection', colSel),
          field('Subject id', subject, 'Your own reference (customer number…), not a name.', subjectInfo),
          field('Label', label, 'Optional. Avoid personal data you do not need.'),
          field('Duplicate search', dedupSel, 'Look for this face among subjects consenting to a purpose (an audited search). Leave off to skip it.'),
          consentPanel, errSlot, h('div', { class: 'row end' }, gateNote, submit)),
        h('div', { class: 'panel' }, h('h3', { text: liveId ? 'Live capture' : 'Photo' }),
          liveId ? livenessProbeCard(liveId, `#/enrol?collection=${enc(col.name)}`) : [liveNote.el, photoWrap], verdict, result)));
  }

  Object.assign(window.facegateConsole.pages, { enrol: enrolPage });
})();
