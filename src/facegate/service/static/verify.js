/* facegate console: 1:1 verification, photo against photo or against an enrolled subject. */
(() => {
  'use strict';

  const { h, clear, fmtNum, fmtFmr, enc, ApiError, api, showError, withBusy, loadCollections, field, reasonText,
    imagePicker, COLORS, gauge, pageHead, probeInput, collectionAndPurpose } = window.facegateConsole;

  function fmrSelect(testid) {
    return h('select', { 'data-testid': testid }, ['0.001', '0.0001', '0.00001'].map((f) => h('option', { value: f, selected: f === '0.0001', text: `FMR ${fmtFmr(f)}` })));
  }

  function decisionPanel(res, extra) {
    const match = res.decision === 'match';
    return h('div', { class: 'panel', 'data-testid': 'decision' },
      h('div', { class: 'row' }, h('span', { class: 'badge ' + (match ? 'ok' : 'bad'), 'data-testid': 'decision-badge', text: match ? '✓ MATCH' : '✕ NO MATCH' }),
        h('div', { class: 'spacer' }), h('span', { class: 'muted small', text: `purpose ${res.purpose}` })),
      gauge(res.score, res.threshold),
      h('dl', { class: 'kv' },
        h('dt', { text: 'Score' }), h('dd', { class: 'mono', 'data-testid': 'score', text: fmtNum(res.score, 4) }),
        h('dt', { text: 'Threshold' }), h('dd', { class: 'mono', text: `${fmtNum(res.threshold, 4)} (FMR ${fmtFmr(res.fmr)})` }),
        h('dt', { text: 'Model' }), h('dd', { class: 'small', text: res.model }),
        extra || null,
        h('dt', { text: 'Reasons' }), h('dd', {}, res.reasons.map((r) => h('span', { class: 'chip grey', text: reasonText(r) })))));
  }

  async function verifyPage(r) {
    const mode = r.query.get('mode') === 'subject' ? 'subject' : 'pair';
    const tabs = h('div', { class: 'tabs' },
      h('button', { class: mode === 'pair' ? 'on' : '', text: 'Photo vs photo', 'data-testid': 'tab-pair', onclick: () => { location.hash = '#/verify'; } }),
      h('button', { class: mode === 'subject' ? 'on' : '', text: 'Photo vs enrolled subject', 'data-testid': 'tab-subject', onclick: () => { location.hash = '#/verify?mode=subject'; } }));
    const known = [...new Set((await loadCollections()).flatMap((c) => c.purposes))];
    const purposeList = h('datalist', { id: 'verify-purposes' }, known.map((p) => h('option', { value: p })));
    const purposeInput = h('input', { type: 'text', list: 'verify-purposes', value: known.length === 1 ? known[0] : '',
      placeholder: known.length ? `e.g. ${known.slice(0, 3).join(', ')}` : 'why this comparison is made', 'data-testid': 'verify-purpose' });
    const out = h('div', { 'data-testid': 'verify-result' });
    const errSlot = h('div');
    if (mode === 'pair') {
      const a = imagePicker({ label: 'Photo A (e.g. selfie)', testid: 'verify-a', onImage: () => clear(out) });
      const b = imagePicker({ label: 'Photo B (e.g. ID document)', testid: 'verify-b', onImage: () => clear(out) });
      const fmr = fmrSelect('verify-fmr');
      const go = h('button', { class: 'primary', text: 'Compare', 'data-testid': 'verify-submit' });
      go.addEventListener('click', () => withBusy(go, async () => {
        clear(errSlot); clear(out);
        if (!a.blob || !b.blob) { showError(errSlot, new ApiError(0, { detail: 'Add both photos.' })); return; }
        if (!purposeInput.value.trim()) { showError(errSlot, new ApiError(0, { detail: 'Declare the purpose of this comparison.' })); return; }
        const form = new FormData();
        form.append('image_a', a.blob, 'a.jpg'); form.append('image_b', b.blob, 'b.jpg');
        form.append('purpose', purposeInput.value.trim()); form.append('fmr', fmr.value);
        if (a.face !== null) form.append('face_a', String(a.face));
        if (b.face !== null) form.append('face_b', String(b.face));
        try {
          const res = await api('POST', '/v1/verify', { form });
          const color = res.match ? COLORS.ok : COLORS.bad;
          a.draw([{ ...res.faces.image_a, color, label: 'A' }]); b.draw([{ ...res.faces.image_b, color, label: 'B' }]);
          out.append(decisionPanel(res));
        } catch (err) {
          const cands = err.problem && err.problem.candidates;
          if (err.code !== 'ambiguous_face' || !cands) { showError(errSlot, err, 'Verification failed'); return; }
          // No face is clearly the subject: let the user click the person meant, then compare again.
          const which = err.problem.image === 'b' ? 'B' : 'A';
          (which === 'B' ? b : a).choose(cands, () => { clear(errSlot); go.click(); });
          errSlot.append(h('div', { class: 'alert warn', 'data-testid': 'verify-choose-face',
            text: `Photo ${which} shows ${cands.length} faces and none is clearly the subject: click the person meant.` }));
        }
      }));
      return h('div', {}, pageHead('Verify', '1:1 — is this the same person? Nothing is stored; the decision is audited.'), tabs,
        h('div', { class: 'grid2' }, h('div', { class: 'panel' }, a.el), h('div', { class: 'panel' }, b.el)),
        h('div', { class: 'panel' }, purposeList, h('div', { class: 'grid3' }, field('Declared purpose', purposeInput), field('Decision threshold', fmr), h('div', { class: 'row end' }, go)), errSlot),
        out);
    }
    const cols = await loadCollections();
    if (!cols.length) return h('div', {}, pageHead('Verify'), tabs, h('div', { class: 'panel empty', text: 'No collection available to this key.' }));
    const target = collectionAndPurpose(cols, r.query.get('collection'), { collection: 'verify-collection', purpose: 'verify-subject-purpose' },
      (c) => { col = c; input.apply(c); });
    const { colSel, purposeSel } = target;
    let { col } = target;
    const sid = h('input', { type: 'text', placeholder: 'subject id', value: r.query.get('subject') || '', 'data-testid': 'verify-subject' });
    const input = probeInput(r, 'verify', 'verification', () => clear(out));
    const { liveId, picker: probe } = input;
    input.apply(col);
    const go = h('button', { class: 'primary', text: 'Verify', 'data-testid': 'verify-subject-submit' });
    go.addEventListener('click', () => withBusy(go, async () => {
      clear(errSlot); clear(out);
      if (input.refusal(col)) { showError(errSlot, input.refusal(col)); return; }
      if ((!liveId && !probe.blob) || !sid.value.trim()) { showError(errSlot, new ApiError(0, { detail: liveId ? 'Enter a subject id.' : 'Enter a subject id and add a photo.' })); return; }
      const form = new FormData();
      if (liveId) form.append('liveness_session', liveId); else form.append('image', probe.blob, 'probe.jpg');
      form.append('purpose', purposeSel.value);
      form.append('collection', col.name); form.append('subject', sid.value.trim());
      try {
        const res = await api('POST', '/v1/verify', { form });
        if (probe) probe.draw([{ ...res.faces.image, color: res.match ? COLORS.ok : COLORS.bad, label: res.match ? res.subject : 'no match' }]);
        out.append(decisionPanel(res, [h('dt', { text: 'Subject' }), h('dd', { class: 'mono', text: `${res.collection} / ${res.subject}` }),
          liveId ? [h('dt', { text: 'Probe' }), h('dd', { class: 'small', 'data-testid': 'verify-liveness', text: `live capture (liveness check ${liveId})` })] : null]));
      } catch (err) { showError(errSlot, err, 'Verification refused'); }
    }));
    return h('div', {}, pageHead('Verify', '1:1 against an enrolled subject whose consent covers the purpose.'), tabs,
      h('div', { class: 'grid2' },
        h('div', { class: 'panel' }, field('Collection', colSel), field('Subject id', sid), field('Declared purpose', purposeSel), errSlot, h('div', { class: 'row end' }, go)),
        h('div', { class: 'panel' }, input.view(`#/verify?mode=subject&collection=${enc(col.name)}`))),
      out);
  }

  Object.assign(window.facegateConsole.pages, { verify: verifyPage });
})();
