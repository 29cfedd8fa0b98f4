/* facegate console: de-duplication of a collection (the arithmetic first, the run as a job, clusters to review). */
(() => {
  'use strict';

  const { h, clear, fmtNum, fmtFmr, enc, can, ApiError, api, toast, errorBox, showError, withBusy, modal, field, pageHead, download,
    JOB_ACTIVE, jobProgress, watchJob } = window.facegateConsole;

  const FMRS = ['0.00001', '0.0001', '0.001'];  // calibrated; the strictest is the default, as the API's
  const count = (n) => Number(n).toLocaleString();
  const expect = (x) => (x >= 10 ? Math.round(x).toLocaleString() : x >= 0.01 ? Number(x).toFixed(2) : Number(x).toExponential(1));

  /** The arithmetic of a planned run, in words, and whether the API would start it. */
  function planView(p) {
    const who = p.mode === 'incremental' ? `${count(p.queried)} new subject(s) against ${count(p.subjects)}` : `${count(p.subjects)} subjects`;
    const sums = h('dl', { class: 'kv', 'data-testid': 'dedup-arithmetic' },
      h('dt', { text: 'Taking part' }), h('dd', { text: `${who} whose consent covers ${p.purpose}` }),
      h('dt', { text: 'Pairs compared' }), h('dd', { class: 'mono', 'data-testid': 'dedup-pairs', text: count(p.pairs_compared) }),
      h('dt', { text: 'Decision threshold' }), h('dd', { class: 'mono', text: `${fmtNum(p.threshold, 4)} (FMR ${fmtFmr(p.fmr)}, ${p.model_id})` }),
      h('dt', { text: 'False pairs to expect' }), h('dd', { class: 'mono', 'data-testid': 'dedup-expected', text: `${count(p.pairs_compared)} × ${fmtFmr(p.fmr)} = ${expect(p.expected_false_pairs)}` }),
      h('dt', { text: 'Limit' }), h('dd', { class: 'mono', text: expect(p.max_expected_false_pairs) }));
    const stricter = FMRS.slice().reverse().find((f) => Number(f) <= p.fmr_needed);  // the loosest that is enough
    const verdict = p.within_limit
      ? h('div', { class: 'alert ok', 'data-testid': 'dedup-within' }, 'Within the limit: ', p.expected_false_pairs < 0.5
        ? 'a pair of different people reaching the threshold is unlikely; the clusters should be real duplicates.'
        : `besides the real duplicates, a reviewer can expect about ${expect(p.expected_false_pairs)} pair(s) of different people to clear by hand.`)
      : h('div', { class: 'alert error', 'data-testid': 'dedup-refused' }, h('strong', { text: 'Refused: ' }),
        `${count(p.pairs_compared)} pairs at FMR ${fmtFmr(p.fmr)} are expected to give ${expect(p.expected_false_pairs)} false pairs, over the limit of ${expect(p.max_expected_false_pairs)}. `,
        stricter ? `Choose FMR ${fmtFmr(stricter)}, or raise the limit knowing that each false pair is a review.`
          : `No calibrated FMR is that strict (it would take ${Number(p.fmr_needed).toExponential(1)}): raise the limit knowing that each false pair is a review.`);
    return h('div', {}, sums, verdict);
  }

  function subjectLink(col, sid) {
    return h('a', { class: 'mono', href: `#/collections/${enc(col)}/subjects/${enc(sid)}`, text: sid });
  }

  /** One cluster: its subjects and the pairs that join them, and the review that takes it off the list. */
  function clusterCard(col, base, c, onReviewed) {
    const note = h('input', { type: 'text', maxlength: 500, placeholder: 'what was checked, e.g. passport copies compared', 'data-testid': 'cluster-note' });
    const errSlot = h('div');
    const review = (decision, label) => {
      const b = h('button', { class: decision === 'same' ? 'primary sm' : 'sm', text: label, 'data-testid': `cluster-${decision}` });
      b.addEventListener('click', () => withBusy(b, async () => {
        clear(errSlot);
        if (!note.value.trim()) { showError(errSlot, new ApiError(0, { detail: 'Write what was checked: the note is recorded in the audit log.' })); return; }
        try {
          await api('POST', `${base}/clusters/${enc(c.key)}/review`, { json: { decision, note: note.value.trim() } });
          toast(`Cluster marked: ${label.toLowerCase()}`, 'ok');
          onReviewed(card);
        } catch (err) { showError(errSlot, err, 'Not recorded'); }
      }));
      return b;
    };
    const card = h('div', { class: 'panel cluster', 'data-testid': 'cluster', 'data-key': c.key },
      h('div', { class: 'row' }, h('strong', { text: `${c.size} subjects` }), h('span', { class: 'small muted mono', text: `cluster ${c.key.slice(0, 12)}` }),
        h('div', { class: 'spacer' }), h('span', { class: 'small muted', text: 'best score ' }), h('span', { class: 'mono', text: fmtNum(c.max_score) })),
      h('div', { class: 'row cluster-subjects' }, c.subjects.map((s) => subjectLink(col, s))),
      h('table', { class: 'pairs' }, h('tbody', {}, c.pairs.map((p) => h('tr', { 'data-testid': 'cluster-pair' },
        h('td', {}, subjectLink(col, p.a)), h('td', { class: 'muted', text: '↔' }), h('td', {}, subjectLink(col, p.b)),
        h('td', { class: 'mono', text: fmtNum(p.score) }))))),
      field('Review note', note), errSlot,
      h('div', { class: 'row end' }, review('different', 'Different people'), review('same', 'Same person')));
    return card;
  }

  async function clustersPanel(col, base, slot) {
    let rep;
    try {
      rep = await api('GET', `${base}/clusters`);
    } catch (err) {
      clear(slot).append(h('h2', { text: 'Clusters' }),
        err.code === 'dedup_run_not_found' ? h('div', { class: 'empty', 'data-testid': 'clusters-none', text: 'No completed run yet.' }) : errorBox(err));
      return;
    }
    const list = h('div', { 'data-testid': 'clusters' });
    const left = h('span', { 'data-testid': 'clusters-left' });
    const tally = () => {
      const n = list.querySelectorAll('[data-testid=cluster]').length;
      left.textContent = n ? `${n} cluster(s) to review` : 'Nothing left to review';
    };
    const reviewed = (card) => { card.remove(); tally(); };
    list.append(...rep.clusters.map((c) => clusterCard(col, base, c, reviewed)));
    tally();
    const csv = h('button', { class: 'sm', text: 'Download pairs (CSV)', 'data-testid': 'clusters-csv' });
    csv.addEventListener('click', () => withBusy(csv, () => download(`${base}/clusters`, { format: 'csv' }, `dedup-${rep.run.id}.csv`).catch((err) => showError(slot, err))));
    clear(slot).append(
      h('div', { class: 'row' }, h('h2', { text: `Clusters of run ${rep.run.id}` }), h('div', { class: 'spacer' }), csv),
      h('p', { class: 'small muted' }, `${rep.run.mode === 'incremental' ? 'Incremental' : 'Full'} run for ${rep.run.purpose} at FMR ${fmtFmr(rep.run.fmr)}: ${count(rep.run.pairs_compared)} pairs compared, ${count(rep.pairs)} at or above the threshold. `,
        left, rep.reviewed_hidden ? `; ${rep.reviewed_hidden} reviewed earlier, not shown.` : '.'),
      list);
  }

  async function duplicatesPage(r) {
    const name = r.parts[1];
    const jobId = r.parts[3] || null;  // #/collections/C/duplicates/JOB: that run's progress
    const base = `/v1/collections/${enc(name)}/dedup`;
    const c = await api('GET', '/v1/collections/' + enc(name));
    const purpose = h('select', { 'data-testid': 'dedup-purpose' }, c.purposes.map((p) => h('option', { value: p, text: p })));
    const fmr = h('select', { 'data-testid': 'dedup-fmr' }, FMRS.map((f) => h('option', { value: f, text: `${fmtFmr(f)} (1 in ${count(1 / f)})` })));
    const incremental = h('input', { type: 'checkbox', 'data-testid': 'dedup-incremental' });
    const limit = h('input', { type: 'number', min: 0, step: 'any', value: '100', 'data-testid': 'dedup-limit' });
    const planSlot = h('div', { 'data-testid': 'dedup-plan' });
    const startErr = h('div');
    const start = can('admin') ? h('button', { class: 'primary', text: 'Start run…', disabled: true, 'data-testid': 'dedup-start' }) : null;
    let plan = null;
    const body = () => ({ purpose: purpose.value, fmr: Number(fmr.value), incremental: incremental.checked, max_expected_false_pairs: Number(limit.value || 0) });

    async function replan() {
      clear(startErr);
      plan = null;
      if (start) start.disabled = true;
      try {
        plan = await api('POST', `${base}/plan`, { json: body() });
        clear(planSlot).append(planView(plan));
        if (start) start.disabled = !plan.within_limit;
      } catch (err) { showError(planSlot, err, 'No plan'); }
    }
    [purpose, fmr, incremental, limit].forEach((el) => el.addEventListener('change', replan));

    if (start) {
      start.addEventListener('click', () => modal({
        title: 'Start the de-duplication run?', confirmText: 'Start run',
        body: h('div', {}, h('p', { text: `Every subject consenting to ${plan.purpose} is searched against the others (an audited identification of everyone). Expected: ${count(plan.pairs_compared)} pairs compared, about ${expect(plan.expected_false_pairs)} false pair(s) to review.` })),
        onConfirm: async () => {
          const out = await api('POST', `${base}/jobs`, { json: body() });
          location.hash = `#/collections/${enc(name)}/duplicates/${enc(out.job.id)}`;
        },
      }));
    }

    const clustersSlot = h('div', { class: 'panel', 'data-testid': 'clusters-panel' }, h('div', { class: 'muted', text: 'Loading clusters…' }));
    let jobPanel = null;
    if (jobId) {
      const progress = jobProgress('dedup-progress', 'subjects');
      const errSlot = h('div');
      const path = `${base}/jobs/${enc(jobId)}`;
      const cancel = can('admin') ? h('button', { class: 'ghost-danger', text: 'Cancel run', 'data-testid': 'dedup-cancel' }) : null;
      const show = (job) => { progress.update(job); if (cancel) cancel.classList.toggle('hidden', !JOB_ACTIVE.includes(job.status) || job.cancel_requested); };
      if (cancel) {
        cancel.addEventListener('click', () => withBusy(cancel, async () => {
          try { show(await api('DELETE', path)); } catch (err) { showError(errSlot, err, 'Not cancelled'); }
        }));
      }
      jobPanel = h('div', { class: 'panel', 'data-testid': 'dedup-job' }, h('h2', { text: 'Run' }), progress.el, h('div', { class: 'row end' }, cancel), errSlot);
      watchJob(() => api('GET', path), show)
        .then((job) => {
          if (job.status === 'failed') errSlot.append(h('div', { class: 'alert error', text: `The run failed: ${(job.error && job.error.message) || 'see the server log'}.` }));
          if (!JOB_ACTIVE.includes(job.status)) clustersPanel(name, base, clustersSlot);
        })
        .catch((err) => showError(errSlot, err, 'Progress'));
    } else {
      clustersPanel(name, base, clustersSlot);
    }
    replan();
    return h('div', {},
      pageHead('Duplicates', `Find subjects of ${name} registered more than once: every consenting subject is compared with the others, and the pairs at or above the threshold are grouped for review.`,
        [h('a', { class: 'btn', href: `#/collections/${enc(name)}`, text: '← Back to collection' })],
        [h('a', { href: '#/collections', text: 'Collections' }), ' / ', h('a', { href: '#/collections/' + enc(name), text: name }), ' / ']),
      h('div', { class: 'panel' }, h('h2', { text: 'Before a run: the arithmetic' }),
        h('div', { class: 'grid2' },
          h('div', {}, field('Declared purpose', purpose, 'Only subjects whose consent covers it take part.'),
            field('False-match rate', fmr, 'Stricter: fewer false pairs, a few real duplicates may be missed.'),
            h('label', { class: 'check' }, incremental, h('span', { text: 'Only subjects new or changed since the last run, against everyone' })),
            field('Most false pairs to accept', limit, 'A run expected to report more is refused.')),
          h('div', {}, planSlot)),
        startErr, start ? h('div', { class: 'row end' }, start) : h('p', { class: 'small muted', text: 'Starting a run needs an admin key for this collection.' })),
      jobPanel, clustersSlot);
  }

  Object.assign(window.facegateConsole.pages, { 'collections/duplicates': duplicatesPage });
})();
