/* facegate console: bulk enrolment into a collection (a manifest and a zip of its photos, run as a job). */
(() => {
  'use strict';

  const { h, clear, fmtTime, enc, can, ApiError, api, toast, showError, withBusy, field, pageHead, download, JOB_ACTIVE,
    JOB_TEXT, jobProgress, watchJob } = window.facegateConsole;

  const OUTCOME_CLASS = { accepted: 'ok', rejected: 'bad', skipped: 'warn', pending: 'grey' };
  const REPORT_ROWS = 200;  // shown on the page; the downloads have every row

  /** The manifest's bad lines as the server listed them: nothing was enrolled. */
  function manifestErrors(rows) {
    return h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'manifest-errors' },
      h('thead', {}, h('tr', {}, ['Line', 'Field', 'Problem'].map((t) => h('th', { text: t })))),
      h('tbody', {}, rows.map((e) => h('tr', { 'data-testid': 'manifest-error' },
        h('td', { class: 'mono', text: e.line }), h('td', { class: 'mono small', text: e.field || '—' }), h('td', { text: e.message }))))));
  }

  function subjectLink(col, sid) {
    return h('a', { class: 'mono', href: `#/collections/${enc(col)}/subjects/${enc(sid)}`, text: sid });
  }

  function reportTable(col, rows) {
    const shown = rows.slice(0, REPORT_ROWS);
    return h('div', {},
      h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'batch-report' },
        h('thead', {}, h('tr', {}, ['Line', 'Subject', 'Image', 'Outcome', 'Why / matches'].map((t) => h('th', { text: t })))),
        h('tbody', {}, shown.map((r) => h('tr', { 'data-testid': 'batch-report-row' },
          h('td', { class: 'mono', text: r.line }),
          h('td', {}, r.outcome === 'accepted' ? subjectLink(col, r.subject) : h('span', { class: 'mono', text: r.subject })),
          h('td', { class: 'mono small', text: r.image }),
          h('td', {}, h('span', { class: 'chip ' + (OUTCOME_CLASS[r.outcome] || 'grey'), text: r.outcome })),
          h('td', { class: 'small' }, r.message || r.reason || '',
            r.duplicates.length ? h('div', {}, 'possible duplicate of ', r.duplicates.map((d, i) => [i ? ', ' : '', subjectLink(col, d.subject), ` (${Number(d.score).toFixed(3)})`]))
              : r.flagged ? h('div', { class: 'muted', text: 'flagged for review' }) : null)))))),
      rows.length > shown.length ? h('p', { class: 'small muted', text: `The first ${shown.length} of ${rows.length} rows; the downloads have them all.` }) : null);
  }

  /** One batch: progress while it runs (cancel), then its counts and its per-row report. */
  function jobPanel(col, base, first, onJob) {
    const progress = jobProgress('batch-progress', 'rows');
    const errSlot = h('div');
    const summary = h('div', { 'data-testid': 'batch-summary' });
    const report = h('div');
    const cancel = h('button', { class: 'ghost-danger', text: 'Cancel batch', 'data-testid': 'batch-cancel' });
    const path = `${base}/${enc(first.id)}`;
    const file = (fmt) => h('button', { class: 'sm', text: `Download report (${fmt.toUpperCase()})`, 'data-testid': `batch-report-${fmt}`,
      onclick: (e) => withBusy(e.currentTarget, () => download(`${path}/report`, { format: fmt }, `batch-${first.id}.${fmt}`).catch((err) => showError(errSlot, err, 'Report'))) });
    cancel.addEventListener('click', () => withBusy(cancel, async () => {
      try { show(await api('DELETE', path)); toast('Cancelling: rows already enrolled stay enrolled', 'ok'); } catch (err) { showError(errSlot, err, 'Not cancelled'); }
    }));

    async function finished(job) {
      const res = job.result || {};
      // The rows processed, counted when the job ended (its last progress report may be older).
      if (job.result) progress.update({ ...job, done: ['accepted', 'rejected', 'skipped'].reduce((n, k) => n + (res[k] || 0), 0) });
      clear(summary).append(job.status === 'failed'
        ? h('div', { class: 'alert error' }, h('strong', { text: 'The batch failed: ' }), (job.error && job.error.message) || 'see the server log', '. Rows already enrolled stay enrolled.')
        : h('div', { class: 'row job-summary' }, ['accepted', 'rejected', 'skipped', 'flagged'].map((k) => h('span', { class: 'stat-inline', 'data-testid': `batch-count-${k}` },
          h('strong', { text: String(res[k] ?? 0) }), ` ${k}`))));
      clear(report).append(h('div', { class: 'row report-files' }, file('csv'), file('json')));
      try { report.append(reportTable(col, await api('GET', `${path}/report`, { query: { format: 'json' } }))); } catch (err) { showError(errSlot, err, 'Report'); }
    }

    function show(job) {
      progress.update(job);
      onJob(job);
      cancel.classList.toggle('hidden', !JOB_ACTIVE.includes(job.status) || job.cancel_requested);
    }

    const el = h('div', { class: 'panel', 'data-testid': 'batch-job' },
      h('div', { class: 'row' }, h('h2', { text: `Batch ${first.params.manifest_name || ''}`.trim() }), h('div', { class: 'spacer' }),
        h('span', { class: 'small muted', text: `started ${fmtTime(first.created_at)} by ${first.actor}` })),
      progress.el, h('div', { class: 'row end' }, cancel), errSlot, summary, report);
    show(first);
    watchJob(() => api('GET', path), show).then((job) => { if (!JOB_ACTIVE.includes(job.status)) finished(job); })
      .catch((err) => showError(errSlot, err, 'Progress'));
    return el;
  }

  function historyRow(col, b, current) {
    return h('tr', { class: b.id === current ? 'click on' : 'click', 'data-testid': 'batch-row', 'data-id': b.id,
      onclick: () => { location.hash = `#/collections/${enc(col)}/batches/${enc(b.id)}`; } },
    h('td', { class: 'small', text: fmtTime(b.created_at) }), h('td', { class: 'mono small', text: b.params.manifest_name || '—' }),
    h('td', { text: `${b.done} / ${b.total}` }), h('td', {}, h('span', { class: 'chip grey', text: JOB_TEXT[b.status] || b.status })),
    h('td', { class: 'small muted', text: b.actor }));
  }

  function history(col, batches, current) {
    if (!batches.length) return h('div', { class: 'empty', text: 'No batch yet.' });
    return h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Started', 'Manifest', 'Rows', 'Status', 'By'].map((t) => h('th', { text: t })))),
      h('tbody', {}, batches.map((b) => historyRow(col, b, current)))));
  }

  async function batchesPage(r) {
    const name = r.parts[1];
    const jobId = r.parts[3] || null;
    const base = `/v1/collections/${enc(name)}/batches`;
    const [c, list, job] = await Promise.all([api('GET', '/v1/collections/' + enc(name)), api('GET', base, { query: { limit: 20 } }),
      jobId ? api('GET', `${base}/${enc(jobId)}`) : null]);
    const manifest = h('input', { type: 'file', accept: '.csv,.jsonl,.json,text/csv', 'data-testid': 'batch-manifest' });
    const images = h('input', { type: 'file', accept: '.zip,application/zip', 'data-testid': 'batch-images' });
    const dedup = h('select', { 'data-testid': 'batch-dedup' }, h('option', { value: '', text: 'No duplicate search' }),
      c.purposes.map((p) => h('option', { value: p, text: `Among subjects consenting to ${p}` })));
    const errSlot = h('div', { 'data-testid': 'batch-refused' });
    const past = history(name, list.batches, jobId);
    // The batch shown keeps its line in the list current.
    const listed = (b) => { const tr = past.querySelector(`tr[data-id="${b.id}"]`); if (tr) tr.replaceWith(historyRow(name, b, jobId)); };
    const start = h('button', { class: 'primary', text: 'Check and start', 'data-testid': 'batch-start' });
    start.addEventListener('click', () => withBusy(start, async () => {
      clear(errSlot);
      if (!manifest.files[0] || !images.files[0]) { showError(errSlot, new ApiError(0, { detail: 'Choose the manifest and the zip of photos.' })); return; }
      const form = new FormData();
      form.append('manifest', manifest.files[0], manifest.files[0].name);
      form.append('images', images.files[0], images.files[0].name);
      if (dedup.value) form.append('dedup_purpose', dedup.value);
      try {
        const started = await api('POST', base, { form });
        location.hash = `#/collections/${enc(name)}/batches/${enc(started.id)}`;
      } catch (err) {
        showError(errSlot, err, 'Not started');
        const rows = (err.problem && err.problem.errors) || [];
        if (rows.length) errSlot.append(manifestErrors(rows));
      }
    }));
    return h('div', {},
      pageHead('Bulk enrolment', `Enrol many consenting subjects into ${name} from a manifest and a zip of their photos. The whole manifest is checked first; nothing is enrolled if a line is wrong.`,
        [h('a', { class: 'btn', href: `#/collections/${enc(name)}`, text: '← Back to collection' })],
        [h('a', { href: '#/collections', text: 'Collections' }), ' / ', h('a', { href: '#/collections/' + enc(name), text: name }), ' / ']),
      h('div', { class: 'panel' }, h('h2', { text: 'New batch' }),
        h('p', { class: 'muted small' }, 'One line per photo: ', h('code', { text: 'subject,image,purposes,evidence' }),
          ' (and optionally ', h('code', { text: 'label,expires' }), '), as CSV or JSON Lines. ', h('code', { text: 'image' }),
          ' names a file in the zip; ', h('code', { text: 'evidence' }), ' references each subject\'s signed consent.'),
        h('div', { class: 'grid3' }, field('Manifest (CSV or JSON Lines)', manifest), field('Photos (zip)', images),
          field('Duplicate search', dedup, can('identify') ? 'Matches are named in the report.' : 'Matches are flagged; naming them needs the identify scope.')),
        errSlot, h('div', { class: 'row end' }, start)),
      job ? jobPanel(name, base, job, listed) : null,
      h('div', { class: 'panel flush' }, h('h2', { text: 'Batches' }), past));
  }

  Object.assign(window.facegateConsole.pages, { 'collections/batches': batchesPage });
})();
