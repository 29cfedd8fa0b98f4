/* facegate console: 1:N identification in one collection for a declared purpose. */
(() => {
  'use strict';

  const { h, clear, fmtNum, fmtFmr, enc, ApiError, api, showError, withBusy, loadCollections, field, reasonText,
    COLORS, pageHead, probeInput, collectionAndPurpose } = window.facegateConsole;

  async function identifyPage(r) {
    const cols = await loadCollections();
    if (!cols.length) return h('div', {}, pageHead('Identify'), h('div', { class: 'panel empty', text: 'No collection available to this key.' }));
    const target = collectionAndPurpose(cols, r.query.get('collection'), { collection: 'identify-collection', purpose: 'identify-purpose' },
      (c) => { col = c; input.apply(c); });
    const { colSel, purposeSel } = target;
    let { col } = target;
    const topk = h('input', { type: 'number', min: 1, max: 50, value: '5', 'data-testid': 'identify-topk' });
    const out = h('div', { 'data-testid': 'identify-result' });
    const errSlot = h('div');
    const input = probeInput(r, 'identify', 'identification', () => clear(out));
    const { liveId, picker: probe } = input;
    input.apply(col);
    const go = h('button', { class: 'primary', text: 'Search', 'data-testid': 'identify-submit' });
    go.addEventListener('click', () => withBusy(go, async () => {
      clear(errSlot); clear(out);
      if (input.refusal(col)) { showError(errSlot, input.refusal(col)); return; }
      if (!liveId && !probe.blob) { showError(errSlot, new ApiError(0, { detail: 'Add a probe photo.' })); return; }
      const form = new FormData();
      if (liveId) form.append('liveness_session', liveId); else form.append('image', probe.blob, 'probe.jpg');
      form.append('purpose', purposeSel.value); form.append('top_k', topk.value || '5');
      if (probe && probe.face !== null) form.append('face', String(probe.face));
      try {
        const res = await api('POST', `/v1/collections/${enc(col.name)}/identify`, { form });
        const best = res.candidates[0];
        if (probe) probe.draw([{ ...res.face, color: best ? COLORS.ok : COLORS.bad, label: best ? `${best.subject} · ${fmtNum(best.score)}` : 'no match' }]);
        const lo = -0.2, hi = 1.0, pos = (v) => Math.max(0, Math.min(100, ((v - lo) / (hi - lo)) * 100));
        const list = res.candidates.map((cd) => {
          const bar = h('div', { class: 'minibar' }, h('span'), h('i'));
          bar.querySelector('span').style.width = pos(cd.score) + '%';
          bar.querySelector('i').style.left = pos(res.threshold) + '%';
          return h('div', { class: 'cand', 'data-testid': 'candidate' }, h('div', { class: 'rank', text: cd.rank }),
            h('div', {}, h('a', { class: 'mono', href: `#/collections/${enc(res.collection)}/subjects/${enc(cd.subject)}`, text: cd.subject }), cd.label ? h('div', { class: 'small muted', text: cd.label }) : null),
            bar, h('div', { class: 'mono', text: fmtNum(cd.score) }));
        });
        out.append(h('div', { class: 'panel', 'data-testid': 'decision' },
          h('div', { class: 'row' }, h('span', { class: 'badge ' + (res.match ? 'ok' : 'bad'), 'data-testid': 'decision-badge', text: res.match ? `✓ ${res.candidates.length} CANDIDATE${res.candidates.length > 1 ? 'S' : ''}` : '✕ NO MATCH' }),
            h('div', { class: 'spacer' }), h('span', { class: 'muted small', text: `searched ${res.searched_subjects} subject(s) consented for ${res.purpose} · threshold ${fmtNum(res.threshold)} @ FMR ${fmtFmr(res.fmr)}` })),
          list.length ? h('div', { style: null }, list) : h('div', { class: 'empty' }, h('div', { class: 'big', text: 'No enrolled subject matched' }),
            h('div', { text: res.reasons.map(reasonText).join('. ') + '.' }))));
      } catch (err) {
        const cands = err.problem && err.problem.candidates;
        if (err.code !== 'ambiguous_face' || !cands || !probe) { showError(errSlot, err, 'Search refused'); return; }
        // No face is clearly the subject: let the user click the person meant, then search again.
        probe.choose(cands, () => { clear(errSlot); go.click(); });
        errSlot.append(h('div', { class: 'alert warn', 'data-testid': 'identify-choose-face',
          text: `The probe photo shows ${cands.length} faces and none is clearly the subject: click the person to search for.` }));
      }
    }));
    return h('div', {}, pageHead('Identify', '1:N — search one collection for the person in a photo, for a declared purpose. Only subjects who consented to that purpose are searched; the probe is not stored.'),
      h('div', { class: 'grid2' },
        h('div', { class: 'panel' }, field('Collection', colSel), field('Declared purpose', purposeSel), field('Most candidates', topk), errSlot, h('div', { class: 'row end' }, go)),
        h('div', { class: 'panel' }, input.view(`#/identify?collection=${enc(col.name)}`))),
      out);
  }

  Object.assign(window.facegateConsole.pages, { identify: identifyPage });
})();
