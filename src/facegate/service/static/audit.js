/* facegate console: the audit log (filters, erased subjects, the hash-chain check). */
(() => {
  'use strict';

  const { state, h, clear, fmtTime, fmtNum, globalAdmin, api, showError, withBusy, loadCollections, field, pageHead,
    render } = window.facegateConsole;

  // Suggestions for the audit action filter (the gallery's action names).
  const AUDIT_ACTIONS = ['enroll', 'enroll.batch', 'enroll.import', 'identify', 'verify', 'verify.images', 'subject.erase',
    'consent.grant', 'consent.withdraw', 'dedup.run', 'dedup.report', 'dedup.review', 'collection.create', 'collection.update',
    'collection.delete', 'purge.run', 'key.create', 'key.revoke', 'liveness.decision', 'liveness.session_created',
    'liveness.rejected', 'liveness.used', 'liveness.use_refused'];

  async function auditPage(r) {
    const q = r.query;
    const cols = await loadCollections();
    const colSel = h('select', { 'data-testid': 'audit-collection' }, state.me.collections === null ? h('option', { value: '', text: 'All collections' }) : null,
      cols.map((c) => h('option', { value: c.name, selected: q.get('collection') === c.name, text: c.name })));
    const subj = h('input', { type: 'text', value: q.get('subject') || '', placeholder: 'subject id', 'data-testid': 'audit-subject' });
    const action = h('input', { type: 'text', list: 'audit-actions', value: q.get('action') || '', placeholder: 'any action', 'data-testid': 'audit-action' });
    const actionList = h('datalist', { id: 'audit-actions' }, AUDIT_ACTIONS.map((a) => h('option', { value: a })));
    const since = h('input', { type: 'date', value: q.get('since') || '', 'data-testid': 'audit-since' });
    const until = h('input', { type: 'date', value: q.get('until') || '', 'data-testid': 'audit-until' });
    const apply = h('button', { class: 'primary', text: 'Apply', 'data-testid': 'audit-apply', onclick: () => {
      const p = new URLSearchParams();
      if (colSel.value) p.set('collection', colSel.value);
      if (subj.value.trim()) p.set('subject', subj.value.trim());
      if (action.value.trim()) p.set('action', action.value.trim());
      if (since.value) p.set('since', since.value);
      if (until.value) p.set('until', until.value);
      location.hash = '#/audit' + (p.toString() ? '?' + p : '');
      render();
    } });
    const tbody = h('tbody');
    const errSlot = h('div');
    const more = h('button', { class: 'sm hidden', text: 'Load older', 'data-testid': 'audit-more' });
    let before = null;
    const query = () => ({
      collection: colSel.value || null, subject: subj.value.trim() || null, action: action.value.trim() || null,
      since: since.value ? new Date(since.value + 'T00:00:00').toISOString() : null,
      until: until.value ? new Date(until.value + 'T23:59:59').toISOString() : null, limit: 50, before_seq: before,
    });
    // The audit log keeps an erased subject's events (only the subject's data goes): rows before
    // its erasure name it with an "erased" tag. Erasures are looked up once, the newest 1000 under
    // this page's collection filter.
    const erasedAt = new Map();
    const who = (col, sid) => `${col}\u0000${sid}`;
    async function loadErasures() {
      const data = await api('GET', '/v1/audit', { query: { collection: colSel.value || null, action: 'subject.erase', limit: 1000 } });
      data.events.forEach((e) => e.subjects.forEach((sid) => { if (!erasedAt.has(who(e.collection, sid))) erasedAt.set(who(e.collection, sid), e.seq); }));
    }
    const none = () => h('span', { class: 'muted', text: '—' });
    function subjectsCell(e) {
      if (!e.subjects.length) return h('td', {}, none());
      return h('td', { class: 'small' }, e.subjects.map((sid, i) => {
        const gone = erasedAt.get(who(e.collection, sid));
        return [i ? ', ' : '', h('span', { class: 'nowrap', 'data-testid': 'audit-row-subject' }, h('span', { class: 'mono', text: sid }),
          gone && gone > e.seq ? h('span', { class: 'tag-erased', 'data-testid': 'audit-erased', title: `Erased later (event #${gone}); the audit log keeps its events, without its data.`, text: 'erased' }) : null)];
      }));
    }
    const decisionClass = (d) => (/no_match|rejected|refused|denied/.test(d) ? 'bad' : /match$|accepted|granted|ok|enrolled/.test(d) ? 'ok' : 'grey');
    async function load() {
      try {
        const data = await api('GET', '/v1/audit', { query: query() });
        if (!data.events.length && before === null) tbody.append(h('tr', {}, h('td', { colspan: 8, class: 'empty', text: 'No audit events match these filters.' })));
        data.events.forEach((e) => {
          const details = h('tr', { class: 'hidden' }, h('td', { colspan: 8 }, h('pre', { class: 'mono small', text: JSON.stringify({ details: e.details, mac: e.mac }, null, 2) })));
          tbody.append(h('tr', { class: 'click', 'data-testid': 'audit-row', onclick: () => details.classList.toggle('hidden') },
            h('td', { class: 'mono', text: e.seq }), h('td', { class: 'small', text: fmtTime(e.ts) }), h('td', { class: 'small', text: e.actor }),
            h('td', {}, h('span', { class: 'chip grey', text: e.action })), h('td', {}, e.collection || none()),
            subjectsCell(e), h('td', {}, e.purpose || none()),
            h('td', { class: 'nowrap' }, e.decision ? h('span', { class: 'chip ' + decisionClass(e.decision), text: e.decision }) : none(),
              e.score !== null && e.score !== undefined ? h('span', { class: 'small muted mono', text: ' ' + fmtNum(e.score) }) : null)), details);
        });
        before = data.next_before_seq;
        more.classList.toggle('hidden', !before);
      } catch (err) { showError(errSlot, err); }
    }
    // The list and the chain check describe the same log: checking the chain reloads the list.
    async function reload() {
      clear(tbody); clear(errSlot); before = null; erasedAt.clear();
      try { await loadErasures(); } catch (err) { showError(errSlot, err); return; }
      await load();
    }
    more.addEventListener('click', () => withBusy(more, load));
    await reload();
    const chain = h('div');
    const checkBtn = globalAdmin() ? h('button', { text: 'Verify hash chain', 'data-testid': 'audit-verify', onclick: async () => {
      try {
        const rep = await api('GET', '/v1/audit/verify');
        await reload();
        const witnessed = rep.witnessed_seq !== null && rep.witnessed_seq !== undefined;
        const witness = witnessed ? `The witness file vouches for events up to #${rep.witnessed_seq}.` : rep.ok ? 'No witness checkpoint yet.' : '';
        clear(chain).append(rep.ok
          ? h('div', { class: 'alert ok', 'data-testid': 'audit-chain' }, h('strong', { text: 'Chain intact: ' }),
            `${rep.events} events, head #${rep.head_seq}. `, h('span', { 'data-testid': 'audit-witnessed', text: witness }))
          : h('div', { class: 'alert error', 'data-testid': 'audit-chain' }, h('strong', { text: 'Audit log tampered with: ' }),
            rep.problem || 'the hash chain does not verify', rep.first_bad_seq ? ` (first bad event #${rep.first_bad_seq}). ` : '. ',
            h('span', { 'data-testid': 'audit-witnessed', text: witness })));
      } catch (err) {
        showError(chain, err, err.code === 'audit_tampered' ? 'Audit log tampered with' : 'Audit check failed');
      }
    } }) : null;
    return h('div', {}, pageHead('Audit log', 'Append-only and hash-chained: who did what, to which subjects, for which purpose. Never images or templates.', [checkBtn]),
      chain,
      h('div', { class: 'panel' }, actionList, h('div', { class: 'filters' }, field('Collection', colSel), field('Subject', subj), field('Action', action), field('From', since), field('To', until), h('div', { class: 'row' }, apply))),
      errSlot,
      h('div', { class: 'panel flush' }, h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['#', 'Time', 'Actor', 'Action', 'Collection', 'Subjects', 'Purpose', 'Decision'].map((t) => h('th', { text: t })))), tbody)),
        h('div', { class: 'pager' }, more)));
  }

  Object.assign(window.facegateConsole.pages, { audit: auditPage });
})();
