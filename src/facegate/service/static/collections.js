/* facegate console: the collections, a collection and its subjects, a subject and its consents. */
(() => {
  'use strict';

  const { state, h, clear, fmtTime, fmtNum, fmtFmr, enc, can, ApiError, subjectRef, api, toast, errorBox, showError,
    withBusy, modal, loadCollections, field, purposeChecks, checkedValues, liveText, livenessChecks, consentStatus,
    pageHead, render } = window.facegateConsole;

  async function collectionsPage() {
    const cols = await loadCollections(true);
    const newBtn = can('admin') ? h('button', { class: 'primary', text: 'New collection', 'data-testid': 'new-collection', onclick: createCollectionDialog }) : null;
    const rows = cols.map((c) => h('tr', { class: 'click', 'data-testid': 'collection-row', onclick: () => { location.hash = '#/collections/' + enc(c.name); } },
      h('td', {}, h('a', { href: '#/collections/' + enc(c.name), text: c.name }), c.description ? h('div', { class: 'small muted', text: c.description }) : null),
      h('td', {}, c.purposes.map((p) => h('span', { class: 'chip', text: p })),
        (c.liveness_required || []).length ? h('div', { class: 'small muted', 'data-testid': 'collection-liveness', text: `liveness check: ${liveText(c)}` }) : null),
      h('td', { text: c.subjects ?? '—' }), h('td', { text: c.templates ?? '—' }),
      h('td', {}, h('span', { class: 'mono', text: fmtNum(c.threshold) }), h('span', { class: 'small muted', text: ` @ FMR ${fmtFmr(c.fmr)}` })),
      h('td', { text: `${c.retention_days} d` }),
      h('td', { class: 'small muted', text: c.model_id })));
    const table = cols.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Collection', 'Purposes', 'Subjects', 'Templates', 'Threshold', 'Retention', 'Model'].map((t) => h('th', { text: t })))),
      h('tbody', {}, rows))) :
      h('div', { class: 'empty' }, h('div', { class: 'big', text: 'No collections yet' }),
        h('div', { text: can('admin') ? 'A collection holds consenting subjects for declared purposes. Create the first one.' : 'This key is not granted any collection.' }));
    return h('div', {}, pageHead('Collections', 'Groups of enrolled subjects, each pinned to one model, with its allowed purposes and retention.', [newBtn]),
      h('div', { class: 'panel flush' }, table));
  }

  function createCollectionDialog() {
    const name = h('input', { type: 'text', placeholder: 'e.g. customers', 'data-testid': 'col-name' });
    const purposes = h('input', { type: 'text', placeholder: 'kyc, access', 'data-testid': 'col-purposes' });
    const fmr = h('select', { 'data-testid': 'col-fmr' }, ['0.001', '0.0001', '0.00001'].map((f) => h('option', { value: f, selected: f === '0.0001', text: `${fmtFmr(f)} (1 in ${Math.round(1 / f).toLocaleString()})` })));
    const retention = h('input', { type: 'number', min: 1, value: '1095', 'data-testid': 'col-retention' });
    const desc = h('input', { type: 'text', placeholder: 'optional', 'data-testid': 'col-desc' });
    const live = livenessChecks([], 'col-live');
    const body = h('div', {},
      field('Name', name, 'Letters, digits, _ . -'),
      field('Allowed purposes', purposes, 'Comma separated; every identify/verify must declare one of these.'),
      h('div', { class: 'grid2' }, field('Target false-match rate', fmr), field('Retention (days since last seen)', retention)),
      field('Description', desc),
      field('Require a liveness check for', live, 'A photo upload is then refused: the person must pass a live camera check (liveness_required).'));
    modal({ title: 'New collection', body, confirmText: 'Create collection', onConfirm: async () => {
      const ps = purposes.value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
      if (!name.value.trim() || !ps.length) throw new ApiError(0, { detail: 'A name and at least one purpose are required.' });
      await api('POST', '/v1/collections', { json: { name: name.value.trim(), purposes: ps, fmr: Number(fmr.value), retention_days: Number(retention.value || 1095), description: desc.value.trim() || null, liveness_required: checkedValues(live) } });
      toast(`Collection ${name.value.trim()} created`, 'ok');
      state.collections = null;
      location.hash = '#/collections/' + enc(name.value.trim());
      render();
    } });
  }

  async function collectionPage(r) {
    const name = r.parts[1];
    const c = await api('GET', '/v1/collections/' + enc(name));
    const limit = 25;
    let offset = Number(r.query.get('offset') || 0);
    const purposeFilter = r.query.get('purpose') || '';
    const listSlot = h('div', {}, h('div', { class: 'empty', text: 'Loading subjects…' }));
    const stats = h('div', { class: 'stats' },
      [['Subjects', c.subjects ?? '—'], ['Templates', c.templates ?? '—'], ['Threshold', fmtNum(c.threshold)], ['Target FMR', fmtFmr(c.fmr)],
        ['Retention', `${c.retention_days} days`], ['Expected FPIR', c.expected_fpir === null ? '—' : (c.expected_fpir * 100).toFixed(2) + '%'],
        ['Liveness check', liveText(c), 'words']]
        .map(([k, v, words]) => h('div', { class: 'stat', 'data-testid': k === 'Liveness check' ? 'col-liveness' : null }, h('div', { class: 'k', text: k }), h('div', { class: words ? 'v words' : 'v', text: String(v) }))));
    let livePanel = null;
    if (can('admin')) {
      const live = livenessChecks(c.liveness_required || [], 'set-live');
      const save = h('button', { class: 'sm', text: 'Save', 'data-testid': 'set-live-save' });
      save.addEventListener('click', () => withBusy(save, async () => {
        const up = await api('PATCH', '/v1/collections/' + enc(name), { json: { liveness_required: checkedValues(live) } });
        state.collections = null;
        toast(`Liveness check for ${name}: ${liveText(up)}`, 'ok');
        render();
      }));
      livePanel = h('div', { class: 'panel' }, h('h2', { text: 'Liveness' }),
        h('p', { class: 'muted small', text: 'Require a liveness check for these operations: a photo upload is then refused and the person must pass a live camera check. Changes are audited.' }),
        h('div', { class: 'row' }, live, h('div', { class: 'spacer' }), save));
    }
    const actions = [
      can('enroll') ? h('a', { class: 'btn primary', href: `#/enrol?collection=${enc(name)}`, 'data-testid': 'enrol-here', text: 'Enrol subject' }) : null,
      can('identify') ? h('a', { class: 'btn', href: `#/identify?collection=${enc(name)}`, text: 'Identify' }) : null,
      can('enroll') ? h('a', { class: 'btn', href: `#/collections/${enc(name)}/batches`, 'data-testid': 'open-batches', text: 'Bulk enrolment' }) : null,
      can('identify') ? h('a', { class: 'btn', href: `#/collections/${enc(name)}/duplicates`, 'data-testid': 'open-duplicates', text: 'Duplicates' }) : null,
    ];
    const filter = h('select', { 'data-testid': 'purpose-filter', onchange: () => { location.hash = `#/collections/${enc(name)}${filter.value ? '?purpose=' + enc(filter.value) : ''}`; } },
      h('option', { value: '', text: 'All subjects' }), c.purposes.map((p) => h('option', { value: p, selected: p === purposeFilter, text: `Consented for ${p}` })));

    async function loadSubjects() {
      if (!can('enroll')) { clear(listSlot).append(h('div', { class: 'empty', text: 'Listing subjects needs the enroll scope.' })); return; }
      try {
        const data = await api('GET', `/v1/collections/${enc(name)}/subjects`, { query: { limit, offset, purpose: purposeFilter || null } });
        const rows = data.subjects.map((s) => h('tr', { class: 'click', 'data-testid': 'subject-row', onclick: () => { location.hash = `#/collections/${enc(name)}/subjects/${enc(s.external_id)}`; } },
          h('td', {}, h('a', { href: `#/collections/${enc(name)}/subjects/${enc(s.external_id)}`, class: 'mono', text: s.external_id })),
          h('td', { text: s.label || '—' }),
          h('td', {}, s.active_purposes.length ? s.active_purposes.map((p) => h('span', { class: 'chip ok', text: p })) : h('span', { class: 'chip bad', text: 'no active consent' })),
          h('td', { text: s.templates.length }),
          h('td', { class: 'small', text: fmtTime(s.last_seen_at) })));
        const pager = h('div', { class: 'pager' },
          h('span', { class: 'small muted', text: data.subjects.length ? `${offset + 1}–${offset + data.subjects.length}${data.total !== null ? ' of ' + data.total : ''}` : '' }),
          h('button', { class: 'sm', text: '← Previous', disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - limit); loadSubjects(); } }),
          h('button', { class: 'sm', text: 'Next →', disabled: data.total !== null ? offset + data.subjects.length >= data.total : data.subjects.length < limit, onclick: () => { offset += limit; loadSubjects(); } }));
        clear(listSlot).append(data.subjects.length ? h('div', {}, h('div', { class: 'table-wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, ['Subject id', 'Label', 'Active consent', 'Templates', 'Last seen'].map((t) => h('th', { text: t })))),
          h('tbody', {}, rows))), pager) :
          h('div', { class: 'empty' }, h('div', { class: 'big', text: purposeFilter ? `No subject consented for ${purposeFilter}` : 'No subjects yet' }),
            h('div', { text: 'Enrol a subject with their consent to start.' })));
      } catch (err) { clear(listSlot).append(errorBox(err)); }
    }
    loadSubjects();

    const danger = can('admin') ? h('div', { class: 'panel danger-zone' }, h('h2', { text: 'Delete collection' }),
      h('p', { class: 'muted', text: 'Erases every subject, template and consent in this collection. Only audit tombstones remain. This cannot be undone.' }),
      h('button', { class: 'ghost-danger', text: 'Delete collection…', 'data-testid': 'delete-collection', onclick: () => modal({
        title: `Delete ${name}?`, danger: true, requireText: name, confirmText: 'Delete and erase all',
        body: h('p', { text: `All ${c.subjects ?? ''} subjects of ${name} will be erased.` }),
        onConfirm: async () => { await api('DELETE', '/v1/collections/' + enc(name)); toast(`Collection ${name} deleted`, 'ok'); state.collections = null; location.hash = '#/collections'; },
      }) })) : null;

    return h('div', {},
      pageHead(name, c.description || `Purposes: ${c.purposes.join(', ')} · model ${c.model_id}`, actions, [h('a', { href: '#/collections', text: 'Collections' }), ' / ']),
      stats,
      h('div', { class: 'panel flush' }, h('div', { class: 'panel-head' }, h('h2', { text: 'Subjects' }), h('div', { class: 'spacer' }), filter), listSlot),
      livePanel, danger);
  }

  async function subjectPage(r) {
    const [, name, , sid] = r.parts;
    const ref = subjectRef(name, sid);
    const [c, s] = await Promise.all([api('GET', '/v1/collections/' + enc(name)), api('GET', ref.path, { query: ref.query })]);
    const base = `/v1/collections/${enc(name)}/subjects/${enc(sid)}`;
    const consentRows = s.consents.map((k) => h('tr', { 'data-testid': 'consent-row' },
      h('td', {}, h('span', { class: 'chip', text: k.purpose })), h('td', {}, consentStatus(k)),
      h('td', { class: 'small', text: fmtTime(k.granted_at) }), h('td', { class: 'small', text: k.expires_at ? fmtTime(k.expires_at) : 'no expiry' }),
      h('td', { class: 'small mono', text: k.evidence_ref || '—' }),
      h('td', {}, k.active ? h('button', { class: 'sm ghost-danger', text: 'Withdraw', 'data-testid': `withdraw-${k.purpose}`, onclick: () => modal({
        title: `Withdraw consent for ${k.purpose}?`, danger: true, confirmText: 'Withdraw',
        body: h('p', { text: `${sid} will no longer be returned by identification or verification for ${k.purpose}, effective immediately.` }),
        onConfirm: async () => { await api('DELETE', `${base}/consents/${enc(k.purpose)}`); toast('Consent withdrawn', 'ok'); render(); },
      }) }) : null)));
    const grantChecks = purposeChecks(c.purposes, [], 'grant');
    const grantExpiry = h('input', { type: 'date', 'data-testid': 'grant-expiry' });
    const grantEvidence = h('input', { type: 'text', placeholder: 'form id or document hash', 'data-testid': 'grant-evidence' });
    const grantErr = h('div');
    const grantBtn = h('button', { class: 'primary', text: 'Record consent', 'data-testid': 'grant-consent' });
    grantBtn.addEventListener('click', () => withBusy(grantBtn, async () => {
      const ps = checkedValues(grantChecks);
      if (!ps.length) { showError(grantErr, new ApiError(0, { detail: 'Choose at least one purpose.' })); return; }
      try {
        await api('POST', `${base}/consents`, { json: { purposes: ps, expires_at: grantExpiry.value ? new Date(grantExpiry.value + 'T23:59:59').toISOString() : null, evidence_ref: grantEvidence.value.trim() || null } });
        toast('Consent recorded', 'ok'); render();
      } catch (err) { showError(grantErr, err); }
    }));
    const tplRows = s.templates.map((t) => h('tr', {},
      h('td', { class: 'mono', text: '#' + t.id }), h('td', { class: 'small', text: fmtTime(t.created_at) }),
      h('td', { class: 'small', text: `eyes ${fmtNum(t.quality.inter_eye_px, 0)} px · sharpness ${fmtNum(t.quality.sharpness, 0)} · yaw ${fmtNum(t.quality.yaw_deg, 0)}°` }),
      h('td', { class: 'small muted', text: t.model_id })));

    return h('div', {},
      pageHead(sid, s.label ? `Label: ${s.label}` : 'No label stored',
        [can('verify') ? h('a', { class: 'btn', href: `#/verify?mode=subject&collection=${enc(name)}&subject=${enc(sid)}`, text: 'Verify a photo' }) : null,
          h('a', { class: 'btn', href: `#/enrol?collection=${enc(name)}&subject=${enc(sid)}`, text: 'Add photos' })],
        [h('a', { href: '#/collections', text: 'Collections' }), ' / ', h('a', { href: '#/collections/' + enc(name), text: name }), ' / ']),
      h('div', { class: 'stats' }, [['Active purposes', s.active_purposes.join(', ') || 'none'], ['Templates', s.templates.length], ['Created', fmtTime(s.created_at), 1], ['Last seen', fmtTime(s.last_seen_at), 1]]
        .map(([k, v, small]) => h('div', { class: 'stat' }, h('div', { class: 'k', text: k }), h('div', { class: small ? 'v date' : 'v', text: String(v) })))),
      h('div', { class: 'panel flush' }, h('h2', { text: 'Consents' }),
        s.consents.length ? h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, ['Purpose', 'Status', 'Granted', 'Expires', 'Evidence', ''].map((t) => h('th', { text: t })))), h('tbody', {}, consentRows)))
          : h('div', { class: 'empty', text: 'No consent recorded.' })),
      h('div', { class: 'panel' }, h('h2', { text: 'Record a consent' }),
        h('p', { class: 'muted small', text: 'Only record what the person agreed to; keep the signed form yourself and reference it here.' }),
        field('Purposes', grantChecks), h('div', { class: 'grid2' }, field('Expires (optional)', grantExpiry), field('Evidence reference', grantEvidence)), grantErr, grantBtn),
      h('div', { class: 'panel flush' }, h('h2', { text: 'Templates' }),
        tplRows.length ? h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, ['Id', 'Enrolled', 'Quality', 'Model'].map((t) => h('th', { text: t })))), h('tbody', {}, tplRows)))
          : h('div', { class: 'empty', text: 'No templates.' }),
        h('p', { class: 'muted small', style: null }, ' ')),
      h('div', { class: 'panel danger-zone' }, h('h2', { text: 'Erase subject' }),
        h('p', { class: 'muted', text: 'Right to erasure: deletes templates, consents and the subject\'s encryption key at once. The next search cannot return this subject. Only an audit tombstone remains.' }),
        h('button', { class: 'ghost-danger', text: 'Erase subject…', 'data-testid': 'erase-subject', onclick: () => modal({
          title: `Erase ${sid}?`, danger: true, requireText: sid, confirmText: 'Erase permanently',
          body: h('p', { text: 'This cannot be undone.' }),
          onConfirm: async () => { await api('DELETE', ref.path, { query: { ...ref.query, reason: 'request' } }); toast(`${sid} erased`, 'ok'); location.hash = '#/collections/' + enc(name); },
        }) })));
  }

  // #/collections, #/collections/C, #/collections/C/subjects/S, and a collection's own screens
  // (#/collections/C/batches, #/collections/C/duplicates) registered by their scripts.
  const pages = window.facegateConsole.pages;
  pages.collections = (r) => {
    if (r.parts.length >= 4 && r.parts[2] === 'subjects') return subjectPage(r);
    const screen = r.parts.length >= 3 ? pages[`collections/${r.parts[2]}`] : null;
    if (screen) return screen(r);
    return r.parts.length >= 2 ? collectionPage(r) : collectionsPage(r);
  };
})();
