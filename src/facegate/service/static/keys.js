/* facegate console: API keys. */
(() => {
  'use strict';

  const { h, fmtTime, enc, api, toast, modal, loadCollections, field, checkedValues, pageHead, render } = window.facegateConsole;

  async function keysPage() {
    const data = await api('GET', '/v1/keys', { query: { include_revoked: 'true' } });
    const cols = await loadCollections();
    const rows = data.keys.map((k) => h('tr', { 'data-testid': 'key-row' },
      h('td', {}, h('strong', { text: k.name }), h('div', { class: 'small muted mono', text: `fg_${k.prefix}_…` })),
      h('td', {}, k.scopes.map((s) => h('span', { class: 'chip', text: s }))),
      h('td', { class: 'small', text: k.collections === null ? 'all' : k.collections.join(', ') || 'none' }),
      h('td', { class: 'small', text: fmtTime(k.created_at) }), h('td', { class: 'small', text: fmtTime(k.last_used_at) }),
      h('td', {}, k.active ? h('span', { class: 'chip ok', text: 'active' }) : h('span', { class: 'chip bad', text: k.revoked_at ? 'revoked' : 'expired' })),
      h('td', {}, k.active ? h('button', { class: 'sm ghost-danger', text: 'Revoke', onclick: () => modal({
        title: `Revoke ${k.name}?`, danger: true, confirmText: 'Revoke', body: h('p', { text: 'Requests with this key are refused from now on.' }),
        onConfirm: async () => { await api('DELETE', '/v1/keys/' + enc(k.name)); toast('Key revoked', 'ok'); render(); },
      }) }) : null)));
    const create = h('button', { class: 'primary', text: 'New API key', 'data-testid': 'new-key', onclick: () => {
      const name = h('input', { type: 'text', placeholder: 'e.g. branch-42-kiosk', 'data-testid': 'key-name' });
      const scopes = h('div', { class: 'checks' }, ['verify', 'identify', 'enroll', 'admin'].map((s) => h('label', { class: 'check' }, h('input', { type: 'checkbox', value: s, 'data-testid': 'key-scope-' + s }), h('span', { text: s }))));
      const colChecks = h('div', { class: 'checks' }, cols.map((c) => h('label', { class: 'check' }, h('input', { type: 'checkbox', value: c.name }), h('span', { text: c.name }))));
      const all = h('input', { type: 'checkbox', checked: false });
      modal({ title: 'New API key', confirmText: 'Create key', body: h('div', {}, field('Name', name), field('Scopes', scopes),
        field('Collections', h('div', {}, h('label', { class: 'check' }, all, h('span', { text: 'Every collection (including future ones)' })), colChecks))),
      onConfirm: async () => {
        const body = { name: name.value.trim(), scopes: checkedValues(scopes), collections: all.checked ? null : checkedValues(colChecks) };
        const res = await api('POST', '/v1/keys', { json: body });
        setTimeout(() => modal({ title: 'Key created', cancelText: null, confirmText: 'I have stored it', body: h('div', {},
          h('p', { text: 'Copy this key now. It is shown only once; only its hash is stored.' }), h('div', { class: 'secret', 'data-testid': 'new-secret', text: res.secret })) }).then(render), 0);
      } });
    } });
    return h('div', {}, pageHead('API keys', 'Each key has scopes and the collections it may see. Secrets are stored hashed and shown once.', [create]),
      h('div', { class: 'panel flush' }, h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Name', 'Scopes', 'Collections', 'Created', 'Last used', 'Status', ''].map((t) => h('th', { text: t })))), h('tbody', {}, rows)))));
  }

  Object.assign(window.facegateConsole.pages, { keys: keysPage });
})();
