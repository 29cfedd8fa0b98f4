/* facegate console: a dependency-free single page app over the /v1 REST API. */
(() => {
  'use strict';

  // ------------------------------------------------------------------------------------------
  // small helpers
  // ------------------------------------------------------------------------------------------

  const KEY_STORE = 'facegate.key';
  const state = { key: null, me: null, collections: null };

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'value') el.value = v;
      else if (k === 'checked' || k === 'disabled' || k === 'selected' || k === 'required') el[k] = !!v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const clear = (el) => { while (el.firstChild) el.removeChild(el.firstChild); return el; };
  const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : '—');
  const fmtNum = (x, d = 3) => (x === null || x === undefined ? '—' : Number(x).toFixed(d));
  const fmtBytes = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} kB` : `${(n / 1048576).toFixed(1)} MB`);
  const fmtFmr = (f) => (f ? Number(f).toExponential(0).replace('e-', 'e−') : '—');
  // One path segment, encoded as the typed client encodes it (every '.' too); an id that is all
  // dots ('.', '..') cannot travel in a path at all: see subjectRef.
  const enc = (s) => encodeURIComponent(s).replace(/\./g, '%2E');
  const can = (scope) => !!state.me && (state.me.scopes.includes('admin') || state.me.scopes.includes(scope));
  const globalAdmin = () => can('admin') && state.me.collections === null;

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
      this.code = this.problem.code || `http_${status}`;
    }
  }

  // A '.' or '..' path segment, even percent-encoded, is folded away by the browser's URL parser
  // (the request would reach the parent resource): such an id travels in a query instead.
  const DOT_SEGMENT = /^(\.|%2e){1,2}$/i;
  /** The API path and query that address one subject. */
  const subjectRef = (col, sid) => (DOT_SEGMENT.test(sid)
    ? { path: `/v1/collections/${enc(col)}/subject`, query: { id: sid } }
    : { path: `/v1/collections/${enc(col)}/subjects/${enc(sid)}`, query: {} });

  async function api(method, path, { json, form, query } = {}) {
    if (path.split('/').some((p) => DOT_SEGMENT.test(p))) {
      throw new ApiError(0, { detail: 'This id cannot be sent in a URL path.', code: 'dot_segment' });
    }
    let url = path;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== null && v !== undefined && v !== '') q.set(k, v);
      const s = q.toString();
      if (s) url += '?' + s;
    }
    const headers = { Accept: 'application/json' };
    if (state.key) headers.Authorization = 'Bearer ' + state.key;
    let body;
    if (json !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(json); }
    if (form !== undefined) body = form;
    let res;
    try {
      res = await fetch(url, { method, headers, body, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      throw new ApiError(0, { detail: 'Cannot reach the facegate service. Is it running?', code: 'network' });
    }
    let data = null;
    const text = await res.text();
    if (text) { try { data = JSON.parse(text); } catch { data = { detail: text.slice(0, 300) }; } }
    if (!res.ok) {
      const err = new ApiError(res.status, data);
      if (res.status === 401 && state.me && path !== '/v1/me') { signOut('Your API key is no longer accepted. Sign in again.'); }
      throw err;
    }
    return data;
  }

  function toast(message, kind = '') {
    const el = h('div', { class: 'toast ' + kind, text: message });
    document.getElementById('toasts').append(el);
    setTimeout(() => el.remove(), 4200);
  }

  function errorBox(err, prefix) {
    const problem = err && err.problem ? err.problem : {};
    let msg = err && err.message ? err.message : String(err);
    if (err && err.status === 429) msg = 'Too many requests for this key right now; wait a moment and retry.';
    return h('div', { class: 'alert error', role: 'alert', 'data-testid': 'error' },
      prefix ? h('strong', {}, prefix + ': ') : null, msg,
      problem.code ? h('span', { class: 'code', text: problem.code }) : null);
  }

  function showError(slot, err, prefix) { clear(slot).append(errorBox(err, prefix)); }

  async function withBusy(button, fn) {
    const label = button.textContent;
    button.disabled = true; button.classList.add('busy');
    try { return await fn(); } finally { button.disabled = false; button.classList.remove('busy'); button.textContent = label; }
  }

  function modal({ title, body, confirmText = 'OK', cancelText = 'Cancel', danger = false, requireText = null, onConfirm = null }) {
    return new Promise((resolve) => {
      const input = requireText ? h('input', { type: 'text', autocomplete: 'off', 'data-testid': 'confirm-input', 'aria-label': 'Type to confirm' }) : null;
      const errSlot = h('div');
      const ok = h('button', { class: danger ? 'danger' : 'primary', 'data-testid': 'confirm-ok', text: confirmText });
      const cancel = cancelText ? h('button', { text: cancelText, 'data-testid': 'confirm-cancel' }) : null;
      const box = h('div', { class: 'modal', role: 'dialog', 'aria-modal': 'true', 'aria-label': title },
        h('h2', { text: title }), body,
        input ? h('label', { class: 'field' }, h('span', {}, 'Type ', h('code', { text: requireText }), ' to confirm'), input) : null,
        errSlot, h('div', { class: 'actions' }, cancel, ok));
      const overlay = h('div', { class: 'overlay' }, box);
      const close = (v) => { overlay.remove(); document.removeEventListener('keydown', onKey); resolve(v); };
      const onKey = (e) => { if (e.key === 'Escape' && cancelText) close(false); };
      document.addEventListener('keydown', onKey);
      if (input) { ok.disabled = true; input.addEventListener('input', () => { ok.disabled = input.value.trim() !== requireText; }); }
      ok.addEventListener('click', async () => {
        if (!onConfirm) return close(true);
        try { await withBusy(ok, onConfirm); close(true); } catch (e) { showError(errSlot, e); }
      });
      if (cancel) cancel.addEventListener('click', () => close(false));
      overlay.addEventListener('click', (e) => { if (e.target === overlay && cancelText) close(false); });
      document.body.append(overlay);
      (input || ok).focus();
    });
  }

  async function loadCollections(force = false) {
    if (!state.collections || force) state.collections = (await api('GET', '/v1/collections')).collections;
    return state.collections;
  }

  function field(label, control, hint, status) {
    return h('label', { class: 'field' }, h('span', {}, label), control, hint ? h('span', { class: 'hint', text: hint }) : null, status || null);
  }

  function collectionSelect(cols, selected, testid) {
    const sel = h('select', { 'data-testid': testid || 'collection-select' },
      cols.map((c) => h('option', { value: c.name, selected: c.name === selected, text: c.name })));
    return sel;
  }

  function purposeChecks(purposes, checked = [], testid = 'purpose') {
    return h('div', { class: 'checks' }, purposes.map((p) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', value: p, checked: checked.includes(p), 'data-testid': `${testid}-${p}` }), h('span', { text: p }))));
  }
  const checkedValues = (el) => [...el.querySelectorAll('input[type=checkbox]:checked')].map((i) => i.value);

  // A collection can require a passed liveness check for some operations (liveness_required).
  const LIVE_OPS = [['enroll', 'enrolment'], ['verify', 'verification'], ['identify', 'identification']];
  const needsLiveness = (c, op) => !!c && (c.liveness_required || []).includes(op);
  const liveText = (c) => LIVE_OPS.filter(([k]) => needsLiveness(c, k)).map(([, t]) => t).join(', ') || 'not required';
  function livenessChecks(selected = [], testid = 'col-live') {
    return h('div', { class: 'checks' }, LIVE_OPS.map(([k, t]) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', value: k, checked: selected.includes(k), 'data-testid': `${testid}-${k}` }), h('span', { text: t }))));
  }
  // The notice an enrol / verify / identify page shows instead of the photo upload when the
  // collection requires a liveness check for it: the server would refuse a photo (liveness_required).
  function livenessRequiredNote(testid) {
    const msg = h('span');
    const link = h('a', { class: 'btn primary', 'data-testid': testid + '-start', text: 'Start a liveness check' });
    const el = h('div', { class: 'alert warn hidden', 'data-testid': testid }, h('strong', { text: 'Liveness check required. ' }), msg,
      h('div', { class: 'row' }, link));
    return {
      el,
      update(c, op) {
        const on = needsLiveness(c, op);
        el.classList.toggle('hidden', !on);
        if (on) {
          const word = LIVE_OPS.find(([k]) => k === op)[1];
          msg.textContent = `Collection ${c.name} requires a liveness check for ${word}, so photo upload is disabled. Run the check with the person in front of the camera, then use it here.`;
          link.href = `#/liveness?collection=${enc(c.name)}`;
        }
        return on;
      },
    };
  }

  function consentStatus(c) {
    if (c.withdrawn_at) return h('span', { class: 'chip bad', text: 'withdrawn' });
    if (c.active) return h('span', { class: 'chip ok', text: 'active' });
    if (c.expires_at && new Date(c.expires_at) <= new Date()) return h('span', { class: 'chip warn', text: 'expired' });
    return h('span', { class: 'chip grey', text: 'not yet active' });
  }

  const REASON_TEXT = {
    no_face: 'No face found', ambiguous_face: 'No face is clearly the subject', too_many_faces: 'Too many faces',
    face_too_small: 'Face too small (move closer / higher resolution)', too_blurry: 'Too blurry', pose_out_of_range: 'Head turned too far',
    bad_exposure: 'Too dark or too bright', low_detector_score: 'Face not clearly visible', duplicate_image: 'Same photo already enrolled',
    template_limit: 'Subject has the maximum number of templates',
    face_mismatch: 'Not the same person as the subject\'s enrolled photos', face_index_out_of_range: 'The chosen face is not in this photo',
    face_box_not_found: 'No face at the chosen place', score_at_or_above_threshold: 'Score at or above the threshold',
    score_below_threshold: 'Score below the threshold', candidates_at_or_above_threshold: 'Candidates at or above the threshold',
    no_candidate_above_threshold: 'No enrolled subject scored above the threshold',
    no_subject_consented_for_purpose: 'No subject has an active consent for this purpose',
  };
  const reasonText = (r) => {
    const [where, code] = r.includes(':') ? r.split(':') : [null, r];
    const t = REASON_TEXT[code] || code.replace(/_/g, ' ');
    return where ? `${where.replace('image_', 'photo ').replace('image', 'probe')}: ${t}` : t;
  };

  // ------------------------------------------------------------------------------------------
  // image picker: file / drag-and-drop / webcam, with face boxes drawn on a canvas
  // ------------------------------------------------------------------------------------------

  function imagePicker({ label = 'Photo', testid = 'picker', onImage = null, webcam = true, maxW = 520, maxH = 400 } = {}) {
    let blob = null, img = null, scale = 1, stream = null, overlay = null;
    let choosing = null, chosen = null; // candidate faces the user may click, and the face clicked (its index)
    const fileInput = h('input', { type: 'file', accept: 'image/*', 'data-testid': `${testid}-file` });
    const canvas = h('canvas', { class: 'hidden', 'data-testid': `${testid}-canvas` });
    const video = h('video', { class: 'hidden', autoplay: true, playsinline: true, muted: true });
    const hint = h('div', {}, h('div', { class: 'big', text: label }), h('div', { text: 'Drop a photo here, or' }));
    const chooseBtn = h('button', { type: 'button', text: 'Choose file', onclick: () => fileInput.click() });
    const camBtn = webcam ? h('button', { type: 'button', text: 'Use webcam', 'data-testid': `${testid}-webcam`, onclick: startCam }) : null;
    const captureBtn = h('button', { type: 'button', class: 'primary hidden', text: 'Capture', 'data-testid': `${testid}-capture`, onclick: capture });
    const stopBtn = h('button', { type: 'button', class: 'hidden', text: 'Cancel', onclick: stopCam });
    const clearBtn = h('button', { type: 'button', class: 'sm hidden', text: 'Replace', onclick: reset });
    const tools = h('div', { class: 'tools' }, chooseBtn, camBtn, captureBtn, stopBtn, clearBtn);
    // A file the browser cannot draw stays named in the drop zone: the check's verdict is about it.
    const fileCard = h('div', { class: 'file-card hidden', 'data-testid': `${testid}-file-card` });
    const root = h('div', { class: 'drop', 'data-testid': testid }, hint, canvas, fileCard, video, tools, fileInput);
    const note = h('div', { class: 'small muted' });

    fileInput.addEventListener('change', () => { if (fileInput.files[0]) setBlob(fileInput.files[0]); });
    canvas.addEventListener('click', (e) => {
      if (!choosing) return;
      const r = canvas.getBoundingClientRect();
      const px = (e.clientX - r.left) * (canvas.width / r.width) / scale;
      const py = (e.clientY - r.top) * (canvas.height / r.height) / scale;
      // The smallest box under the pointer: a face in front of a larger one stays clickable.
      const hit = choosing.candidates
        .filter(({ box: [x, y, w, hh] }) => px >= x && px <= x + w && py >= y && py <= y + hh)
        .sort((p, q) => p.box[2] * p.box[3] - q.box[2] * q.box[3])[0];
      if (!hit) return;
      chosen = hit.face;
      const done = choosing.onPick;
      showChoice();
      done(hit.face);
    });
    root.addEventListener('dragover', (e) => { e.preventDefault(); root.classList.add('over'); });
    root.addEventListener('dragleave', () => root.classList.remove('over'));
    root.addEventListener('drop', (e) => {
      e.preventDefault(); root.classList.remove('over');
      const f = e.dataTransfer.files && e.dataTransfer.files[0];
      if (f) setBlob(f);
    });

    function showChoice() {
      const list = choosing ? choosing.candidates : [];
      overlay = list.map((c) => ({ ...c, color: c.face === chosen ? COLORS.ok : COLORS.warn, label: `face ${c.face}` }));
      canvas.classList.toggle('choosing', chosen === null && list.length > 0);
      if (chosen !== null) choosing = null;
      redraw();
    }

    // Which of hint / canvas / file card the drop zone shows, and its buttons to match.
    function show(what) {
      hint.classList.toggle('hidden', what !== 'hint');
      canvas.classList.toggle('hidden', what !== 'canvas');
      fileCard.classList.toggle('hidden', what !== 'file');
      root.classList.toggle('has-image', what === 'canvas');
      root.classList.toggle('has-file', what === 'file');
      chooseBtn.classList.toggle('hidden', what !== 'hint'); if (camBtn) camBtn.classList.toggle('hidden', what !== 'hint');
      clearBtn.classList.toggle('hidden', what === 'hint');
    }

    function setBlob(b) {
      stopCam();
      blob = b; img = null; overlay = null; choosing = null; chosen = null; canvas.classList.remove('choosing');
      note.textContent = ''; clear(fileCard);
      const url = URL.createObjectURL(b);
      const im = new Image();
      im.onload = () => {
        if (blob !== b) return;  // replaced meanwhile
        img = im;
        const w = im.naturalWidth, hgt = im.naturalHeight;
        scale = Math.min(1, maxW / w, maxH / hgt);
        canvas.width = Math.round(w * scale); canvas.height = Math.round(hgt * scale);
        redraw();
        show('canvas');
        URL.revokeObjectURL(url);
        if (onImage) onImage(blob);
      };
      // No preview: the server still checks the file, and its verdict is the one message shown.
      im.onerror = () => {
        URL.revokeObjectURL(url);
        if (blob !== b) return;
        clear(fileCard).append(h('div', { class: 'big mono', text: b.name || 'file' }),
          h('div', { text: `${fmtBytes(b.size)} · no preview` }));
        show('file');
        if (onImage) onImage(blob);
      };
      im.src = url;
    }

    function reset() {
      blob = null; img = null; overlay = null; choosing = null; chosen = null; fileInput.value = '';
      canvas.classList.remove('choosing'); clear(fileCard);
      show('hint');
      note.textContent = '';
      if (onImage) onImage(null);
    }

    async function startCam() {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        note.textContent = 'The webcam needs a secure context (https or localhost) and a browser that allows it.';
        return;
      }
      try {
        stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
      } catch (e) {
        note.textContent = 'Could not open the webcam: ' + (e.message || e.name);
        return;
      }
      video.srcObject = stream;
      video.classList.remove('hidden'); hint.classList.add('hidden'); canvas.classList.add('hidden'); fileCard.classList.add('hidden');
      chooseBtn.classList.add('hidden'); camBtn.classList.add('hidden'); clearBtn.classList.add('hidden');
      captureBtn.classList.remove('hidden'); stopBtn.classList.remove('hidden');
      root.classList.add('has-image');
    }

    function stopCam() {
      if (stream) stream.getTracks().forEach((t) => t.stop());
      stream = null; video.srcObject = null; video.classList.add('hidden');
      captureBtn.classList.add('hidden'); stopBtn.classList.add('hidden');
      show(img ? 'canvas' : blob ? 'file' : 'hint');
    }

    function capture() {
      const c = document.createElement('canvas');
      c.width = video.videoWidth || 640; c.height = video.videoHeight || 480;
      c.getContext('2d').drawImage(video, 0, 0, c.width, c.height);
      c.toBlob((b) => { if (b) setBlob(new File([b], 'webcam.jpg', { type: 'image/jpeg' })); }, 'image/jpeg', 0.92);
    }

    function redraw() {
      if (!img) return;
      const ctx = canvas.getContext('2d');
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      if (!overlay) return;
      overlay.forEach((f) => drawFace(ctx, f));
    }

    function drawFace(ctx, f) {
      const [x, y, w, hh] = f.box.map((v) => v * scale);
      const color = f.color || '#2f5bea';
      ctx.lineWidth = Math.max(2, Math.round(canvas.width / 260));
      ctx.strokeStyle = color;
      ctx.strokeRect(x, y, w, hh);
      (f.landmarks || []).forEach(([lx, ly]) => {
        ctx.beginPath(); ctx.fillStyle = '#ffffff'; ctx.arc(lx * scale, ly * scale, ctx.lineWidth + 1.5, 0, Math.PI * 2); ctx.fill();
        ctx.beginPath(); ctx.fillStyle = color; ctx.arc(lx * scale, ly * scale, ctx.lineWidth, 0, Math.PI * 2); ctx.fill();
      });
      if (f.label) {
        ctx.font = '600 13px system-ui, sans-serif';
        const tw = ctx.measureText(f.label).width + 12;
        const ty = y > 24 ? y - 22 : y + hh + 2;
        ctx.fillStyle = color; ctx.fillRect(x - ctx.lineWidth / 2, ty, tw, 20);
        ctx.fillStyle = '#fff'; ctx.fillText(f.label, x + 5, ty + 14);
      }
    }

    return {
      el: h('div', {}, root, note),
      get blob() { return blob; },
      set(b) { setBlob(b); },
      reset,
      /** faces: [{box, landmarks, color, label}] in source pixels */
      draw(faces) { overlay = faces; redraw(); },
      /** Let the user click one of candidates [{face, box, landmarks}]; onPick(face index). */
      choose(candidates, onPick) { choosing = { candidates, onPick }; chosen = null; showChoice(); },
      /** The face index the user clicked for this photo, or null. */
      get face() { return chosen; },
    };
  }

  const COLORS = { ok: '#1f8f55', bad: '#c8333b', warn: '#d98a00', neutral: '#2f5bea', grey: '#8a93a8' };

  function legend() {
    return h('div', { class: 'legend' },
      h('span', {}, h('i', { class: 'l-ok' }), 'passes the quality gate'),
      h('span', {}, h('i', { class: 'l-bad' }), 'rejected / fails the gate'),
      h('span', {}, h('i', { class: 'l-grey' }), 'other faces'));
  }

  function gauge(score, threshold) {
    // Map cosine -0.2..1 to 0..100% so the interesting part is readable.
    const lo = -0.2, hi = 1.0;
    const pos = (v) => Math.max(0, Math.min(100, ((v - lo) / (hi - lo)) * 100));
    const thr = h('div', { class: 'thr' }, h('span', { class: 'tag', text: `threshold ${fmtNum(threshold)}` }));
    const mark = h('div', { class: 'mark' }, h('span', { class: 'tag', text: `score ${fmtNum(score)}` }));
    const bar = h('div', { class: 'bar' }, thr, mark);
    bar.style.setProperty('--t', pos(threshold) + '%');
    thr.style.left = pos(threshold) + '%';
    mark.style.left = pos(score) + '%';
    return h('div', { class: 'gauge', 'data-testid': 'gauge' }, bar,
      h('div', { class: 'labels' }, h('span', { text: 'different people' }), h('span', { text: 'same person' })));
  }

  // ------------------------------------------------------------------------------------------
  // shell, routing, sign-in
  // ------------------------------------------------------------------------------------------

  // Stroke icons (24x24 viewBox), drawn inline: no icon font, nothing fetched.
  const ICONS = {
    collections: ['M4 6h16', 'M4 12h16', 'M4 18h16', 'M4 4h16v16H4z'],
    enrol: ['M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8z', 'M2 21c0-4 3-6 7-6s7 2 7 6', 'M19 8v6', 'M16 11h6'],
    verify: ['M7 7h13', 'M16 3l4 4-4 4', 'M17 17H4', 'M8 13l-4 4 4 4'],
    identify: ['M11 18a7 7 0 1 0 0-14 7 7 0 0 0 0 14z', 'M21 21l-5-5'],
    audit: ['M9 6h11', 'M9 12h11', 'M9 18h11', 'M4 6h1', 'M4 12h1', 'M4 18h1'],
    keys: ['M8 16a4 4 0 1 0 0-8 4 4 0 0 0 0 8z', 'M12 12h9', 'M18 12v3', 'M21 12v2'],
    liveness: ['M12 15a4 4 0 1 0 0-8 4 4 0 0 0 0 8z', 'M4 12a8 8 0 0 1 2.3-5.6', 'M20 12a8 8 0 0 0-2.3-5.6', 'M8 20.5h8'],
    logo: ['M12 13a4.5 4.5 0 1 0 0-9 4.5 4.5 0 0 0 0 9z', 'M4.5 21c1.5-3.5 4.3-5 7.5-5s6 1.5 7.5 5'],
  };
  // A 24×24 stroked line drawing from SVG path strings.
  function strokeSvg(paths, size, strokeWidth) {
    const NS = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24'); svg.setAttribute('width', size); svg.setAttribute('height', size);
    svg.setAttribute('fill', 'none'); svg.setAttribute('stroke', 'currentColor'); svg.setAttribute('stroke-width', strokeWidth);
    svg.setAttribute('stroke-linecap', 'round'); svg.setAttribute('stroke-linejoin', 'round'); svg.setAttribute('aria-hidden', 'true');
    for (const d of paths) { const p = document.createElementNS(NS, 'path'); p.setAttribute('d', d); svg.append(p); }
    return svg;
  }
  const icon = (name, size = 18) => strokeSvg(ICONS[name] || [], size, '2');
  const logo = () => h('div', { class: 'logo' }, icon('logo', 18));

  const NAV = [
    { href: '#/collections', label: 'Collections', ico: 'collections', show: () => true },
    { href: '#/enrol', label: 'Enrol', ico: 'enrol', show: () => can('enroll') },
    { href: '#/verify', label: 'Verify', ico: 'verify', show: () => can('verify') },
    { href: '#/identify', label: 'Identify', ico: 'identify', show: () => can('identify') },
    { href: '#/liveness', label: 'Liveness check', ico: 'liveness', show: () => can('verify') || can('enroll') || can('identify') },
    { sep: true },
    { href: '#/audit', label: 'Audit log', ico: 'audit', show: () => can('admin') },
    { href: '#/keys', label: 'API keys', ico: 'keys', show: () => globalAdmin() },
  ];

  function route() {
    const raw = location.hash.replace(/^#/, '') || '/collections';
    const [path, qs] = raw.split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return { parts, query: new URLSearchParams(qs || '') };
  }

  function shell(content) {
    const r = route();
    const items = NAV.filter((n) => n.sep || n.show());
    while (items.length && items[items.length - 1].sep) items.pop();
    const nav = h('nav', { class: 'nav', 'aria-label': 'Main' }, items.map((n) => n.sep ? h('div', { class: 'sep' }) :
      h('a', { href: n.href, class: ('#/' + r.parts[0]) === n.href ? 'active' : '', 'data-testid': 'nav-' + n.href.slice(2) },
        h('span', { class: 'ico' }, icon(n.ico)), n.label)));
    const me = state.me;
    const who = h('div', { class: 'who' },
      h('div', { class: 'muted small', text: 'Signed in as' }),
      h('div', { class: 'name', 'data-testid': 'whoami', text: me.name || me.key_id }),
      h('div', { class: 'scopes' }, me.scopes.map((s) => h('span', { text: s }))),
      h('div', { class: 'small muted', text: me.collections === null ? 'All collections' : `Collections: ${me.collections.join(', ') || 'none'}` }),
      h('div', { class: 'row', style: null }, h('button', { class: 'sm', text: 'Sign out', 'data-testid': 'signout', onclick: () => signOut() })));
    const side = h('aside', { class: 'sidebar' },
      h('div', { class: 'brand' }, logo(), h('div', {}, 'facegate', h('small', { text: 'consent-first face verification' }))),
      nav, who);
    return h('div', { class: 'shell' }, side, h('main', { class: 'main', id: 'main' }, content));
  }

  function pageHead(title, sub, actions, crumbs) {
    return h('div', { class: 'page-head' },
      h('div', {}, crumbs ? h('div', { class: 'crumbs' }, crumbs) : null, h('h1', { text: title }), sub ? h('div', { class: 'sub', text: sub }) : null),
      h('div', { class: 'row' }, actions || []));
  }

  function signInPage(message) {
    const input = h('input', { type: 'password', id: 'apikey', autocomplete: 'off', placeholder: 'fg_…', 'data-testid': 'apikey', required: true });
    const remember = h('input', { type: 'checkbox', 'data-testid': 'remember' });
    const errSlot = h('div');
    if (message) errSlot.append(h('div', { class: 'alert warn', text: message }));
    const btn = h('button', { class: 'primary', type: 'submit', text: 'Sign in', 'data-testid': 'signin' });
    const form = h('form', { onsubmit: async (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) { showError(errSlot, new ApiError(0, { detail: 'Paste an API key first.' })); return; }
      await withBusy(btn, async () => {
        state.key = key;
        try {
          state.me = await api('GET', '/v1/me');
        } catch (err) {
          state.key = null; state.me = null;
          showError(errSlot, err.status === 401 ? new ApiError(401, { detail: 'That API key was not accepted (unknown, revoked or expired).', code: err.code }) : err);
          return;
        }
        (remember.checked ? localStorage : sessionStorage).setItem(KEY_STORE, key);
        state.collections = null;
        if (!location.hash || location.hash === '#/' || location.hash === '#/signin') location.hash = '#/collections';
        render();
      });
    } },
    field('API key', input),
    h('label', { class: 'check' }, remember, h('span', { text: 'Keep me signed in on this device' })),
    errSlot, btn);
    return h('div', { class: 'signin' }, h('div', { class: 'card' },
      h('div', { class: 'brand' }, logo(), h('div', {}, 'facegate', h('small', { text: 'console' }))),
      h('p', { class: 'lead', text: 'Sign in with an API key to manage collections, enrol consenting subjects, and verify or identify faces.' }),
      form,
      h('div', { class: 'foot' }, 'No key yet? The first ', h('code', { text: 'facegate serve' }), ' prints an admin key; more with ',
        h('code', { text: 'facegate keys create' }), '. API reference: ', h('a', { href: '/docs', text: '/docs' }), '.')));
  }

  function signOut(message) {
    state.key = null; state.me = null; state.collections = null;
    sessionStorage.removeItem(KEY_STORE); localStorage.removeItem(KEY_STORE);
    const app = document.getElementById('app');
    clear(app).append(signInPage(message));
    document.getElementById('apikey').focus();
  }

  function errorPage(err) {
    const title = err.status === 404 ? 'Not found' : err.status === 403 ? 'Not allowed' : err.status === 0 ? 'Service unreachable' : 'Something went wrong';
    const hint = err.status === 404 ? 'It does not exist, or this API key is not granted it.'
      : err.status === 403 ? 'This API key does not have the scope for this page.' : null;
    return h('div', { 'data-testid': 'error-page' }, pageHead(title, hint), errorBox(err),
      h('a', { class: 'btn', href: '#/collections', text: '← Back to collections' }));
  }

  let renderSeq = 0;
  async function render() {
    const app = document.getElementById('app');
    if (!state.me) {
      const stored = sessionStorage.getItem(KEY_STORE) || localStorage.getItem(KEY_STORE);
      if (stored) {
        state.key = stored;
        try { state.me = await api('GET', '/v1/me'); } catch (e) { state.key = null; state.me = null; sessionStorage.removeItem(KEY_STORE); localStorage.removeItem(KEY_STORE); }
      }
      if (!state.me) { clear(app).append(signInPage()); return; }
    }
    const seq = ++renderSeq;
    const content = h('div', { 'data-testid': 'page' }, h('div', { class: 'muted', text: 'Loading…' }));
    clear(app).append(shell(content));
    const r = route();
    const page = PAGES[r.parts[0]] || PAGES.collections;
    try {
      const el = await page(r);
      if (seq === renderSeq) clear(content).append(el);
    } catch (err) {
      if (seq === renderSeq) clear(content).append(errorPage(err));
    }
  }

  // ------------------------------------------------------------------------------------------
  // pages
  // ------------------------------------------------------------------------------------------

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
    let col = cols.find((c) => c.name === r.query.get('collection')) || cols[0];
    if (!col) return h('div', {}, pageHead('Verify'), tabs, h('div', { class: 'panel empty', text: 'No collection available to this key.' }));
    const colSel = collectionSelect(cols, col.name, 'verify-collection');
    const purposeSel = h('select', { 'data-testid': 'verify-subject-purpose' });
    const fillPurposes = () => { clear(purposeSel).append(...col.purposes.map((p) => h('option', { value: p, text: p }))); };
    fillPurposes();
    const sid = h('input', { type: 'text', placeholder: 'subject id', value: r.query.get('subject') || '', 'data-testid': 'verify-subject' });
    const liveId = r.query.get('liveness');  // a passed liveness check: its best frame is the probe
    const probe = liveId ? null : imagePicker({ label: 'Probe photo', testid: 'verify-probe', onImage: () => clear(out) });
    const liveNote = livenessRequiredNote('verify-liveness-required');
    const needsLive = () => !liveId && needsLiveness(col, 'verify');
    const applyLive = () => { const on = liveNote.update(liveId ? null : col, 'verify'); if (probe) probe.el.classList.toggle('hidden', on); };
    colSel.addEventListener('change', () => { col = cols.find((c) => c.name === colSel.value); fillPurposes(); applyLive(); });
    applyLive();
    const go = h('button', { class: 'primary', text: 'Verify', 'data-testid': 'verify-subject-submit' });
    go.addEventListener('click', () => withBusy(go, async () => {
      clear(errSlot); clear(out);
      if (needsLive()) { showError(errSlot, new ApiError(0, { detail: `Collection ${col.name} requires a liveness check for verification: start one first.` })); return; }
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
        h('div', { class: 'panel' }, liveId ? livenessProbeCard(liveId, `#/verify?mode=subject&collection=${enc(col.name)}`) : [liveNote.el, probe.el])),
      out);
  }

  async function identifyPage(r) {
    const cols = await loadCollections();
    if (!cols.length) return h('div', {}, pageHead('Identify'), h('div', { class: 'panel empty', text: 'No collection available to this key.' }));
    let col = cols.find((c) => c.name === r.query.get('collection')) || cols[0];
    const colSel = collectionSelect(cols, col.name, 'identify-collection');
    const purposeSel = h('select', { 'data-testid': 'identify-purpose' });
    const fillPurposes = () => { clear(purposeSel).append(...col.purposes.map((p) => h('option', { value: p, text: p }))); };
    fillPurposes();
    const topk = h('input', { type: 'number', min: 1, max: 50, value: '5', 'data-testid': 'identify-topk' });
    const out = h('div', { 'data-testid': 'identify-result' });
    const errSlot = h('div');
    const liveId = r.query.get('liveness');  // a passed liveness check: its best frame is the probe
    const probe = liveId ? null : imagePicker({ label: 'Probe photo', testid: 'identify-probe', onImage: () => clear(out) });
    const liveNote = livenessRequiredNote('identify-liveness-required');
    const needsLive = () => !liveId && needsLiveness(col, 'identify');
    const applyLive = () => { const on = liveNote.update(liveId ? null : col, 'identify'); if (probe) probe.el.classList.toggle('hidden', on); };
    colSel.addEventListener('change', () => { col = cols.find((c) => c.name === colSel.value); fillPurposes(); applyLive(); });
    applyLive();
    const go = h('button', { class: 'primary', text: 'Search', 'data-testid': 'identify-submit' });
    go.addEventListener('click', () => withBusy(go, async () => {
      clear(errSlot); clear(out);
      if (needsLive()) { showError(errSlot, new ApiError(0, { detail: `Collection ${col.name} requires a liveness check for identification: start one first.` })); return; }
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
        h('div', { class: 'panel' }, liveId ? livenessProbeCard(liveId, `#/identify?collection=${enc(col.name)}`) : [liveNote.el, probe.el])),
      out);
  }

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

  // ------------------------------------------------------------------------------------------
  // liveness: guided webcam capture for a server-issued challenge (docs/liveness.md)
  // ------------------------------------------------------------------------------------------

  const LIVENESS_REASON_TEXT = {
    too_few_frames: 'Too few frames were captured', bad_timestamps: 'Capture times were out of order',
    frame_gap: 'The camera stalled (a gap of more than 1 s between frames)', capture_rate_too_low: 'Too few frames per second were captured (a slow camera or connection): try again', capture_too_long: 'The capture took too long',
    inconsistent_frames: 'The frames came from cameras of different sizes', frame_replayed: 'A frame was already submitted in another check',
    timestamp_before_session: 'Frames were captured before the check started', timestamp_after_expiry: 'Frames were captured after the check expired',
    capture_span_too_long: 'The frames span more time than the check has existed', no_face: 'No face was seen',
    face_lost: 'The face left the picture for too long', multiple_faces: 'More than one face was in the picture',
    identity_mismatch: 'The face changed to someone else during the capture', no_neutral_start: 'The capture did not start facing the camera',
    challenge_not_met: 'A requested movement was not seen', challenge_order: 'The movements were made in another order',
    challenge_timeout: 'A movement started too late', unexpected_movement: 'A movement that was not asked for was seen',
    static_frames: 'The picture did not change (a still image?)', planar_motion: 'The face moved like a flat picture, not a head',
    abrupt_motion: 'A movement jumped between poses without passing in between', picture_cut: 'The picture was swapped for another one mid-way (the light on the face changed at once)', face_too_small: 'The face is too small: come closer to the camera',
    too_blurry: 'The best frame is too blurred: more light, hold the camera steady', check_error: 'The check could not be completed',
  };
  const livenessReason = (code) => LIVENESS_REASON_TEXT[code] || code.replace(/_/g, ' ');

  // Short prompts and arrows for the preview. The preview is mirrored (like a mirror), so the
  // person's own left is on the screen's left.
  const MOVES = {
    hold: { title: 'Look at the camera and hold still', arrow: null },
    turn_left: { title: 'Turn your head to your left', back: 'then back to the camera', arrow: 'left' },
    turn_right: { title: 'Turn your head to your right', back: 'then back to the camera', arrow: 'right' },
    look_up: { title: 'Tilt your head up', back: 'then back to the camera', arrow: 'up' },
    look_down: { title: 'Tilt your head down', back: 'then back to the camera', arrow: 'down' },
    move_closer: { title: 'Move closer to the camera', back: 'then stay there', arrow: 'closer' },
  };
  const STATUS_TEXT = { met: 'done', late: 'too late', out_of_order: 'out of order', missing: 'not seen' };
  const ARROWS = {
    left: ['M19 12H5', 'M11 6l-6 6 6 6'], right: ['M5 12h14', 'M13 6l6 6-6 6'],
    up: ['M12 19V5', 'M6 11l6-6 6 6'], down: ['M12 5v14', 'M6 13l6 6 6-6'],
    closer: ['M4 9V4h5', 'M20 9V4h-5', 'M4 15v5h5', 'M20 15v5h-5'],
  };
  const arrowIcon = (kind, size = 44) => strokeSvg(ARROWS[kind] || [], size, '2.4');

  function cameraError(e) {
    const name = e && e.name;
    if (name === 'NotAllowedError' || name === 'SecurityError') {
      return 'Camera access was refused. Allow the camera for this site (the camera icon in the address bar), then start again.';
    }
    if (name === 'NotFoundError' || name === 'OverconstrainedError' || name === 'DevicesNotFoundError') {
      return 'No camera was found. Connect a camera (or enable it), then start again.';
    }
    if (name === 'NotReadableError' || name === 'TrackStartError') return 'The camera is in use by another application or could not be started.';
    return 'The camera could not be opened' + (e && e.message ? `: ${e.message}` : '.');
  }

  const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

  async function livenessPage(r) {
    const colQ = r && r.query.get('collection') ? `&collection=${enc(r.query.get('collection'))}` : '';
    const HOLD_MS = 1200;  // the server's baseline is the first 0.5 s: start facing the camera
    const MOVE_MS = 2600;  // per movement: out and back
    const video = h('video', { autoplay: true, playsinline: true, muted: true, 'data-testid': 'liveness-video' });
    const promptIcon = h('div', { class: 'lv-arrow' });
    const promptTitle = h('div', { class: 'lv-title', 'data-testid': 'liveness-prompt' });
    const promptSub = h('div', { class: 'lv-sub' });
    const prompt = h('div', { class: 'lv-prompt hidden' }, promptIcon, h('div', {}, promptTitle, promptSub));
    const timeBar = h('div', { class: 'lv-time' }, h('span'));
    const placeholder = h('div', { class: 'lv-placeholder' }, h('div', { class: 'big', text: 'Camera off' }),
      h('div', { text: 'The camera turns on when the check starts and off as soon as the frames are captured.' }));
    const stage = h('div', { class: 'lv-stage', 'data-testid': 'liveness-stage' }, placeholder, video, h('div', { class: 'lv-oval' }), prompt, timeBar);
    const steps = h('ol', { class: 'lv-steps', 'data-testid': 'liveness-steps' });
    const status = h('div', { class: 'small muted', 'data-testid': 'liveness-status' });
    const errSlot = h('div');
    const out = h('div', { 'data-testid': 'liveness-result' });
    const start = h('button', { class: 'primary', text: 'Start liveness check', 'data-testid': 'liveness-start' });
    let stream = null, cancelled = false;
    video.classList.add('hidden');

    function stopCamera() {
      if (stream) stream.getTracks().forEach((t) => t.stop());
      stream = null; video.srcObject = null;
      video.classList.add('hidden'); placeholder.classList.remove('hidden');
      prompt.classList.add('hidden'); stage.classList.remove('live');
    }
    window.addEventListener('hashchange', () => { cancelled = true; stopCamera(); }, { once: true });

    // `outcome` (after the decision): 'done' or 'failed' per step, from the server's verdict.
    function renderSteps(list, current, outcome) {
      clear(steps).append(...list.map((s, i) => {
        const state = outcome ? outcome[i] : i < current ? 'done' : i === current ? 'on' : '';
        return h('li', { class: state, 'data-testid': 'liveness-step', 'data-state': state || 'todo' },
          h('span', { class: 'n', text: state === 'done' ? '✓' : state === 'failed' ? '✕' : String(i + 1) }), h('span', { text: s.label }));
      }));
    }

    async function openCamera() {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        throw new ApiError(0, { detail: 'This browser cannot use a camera on this page (it needs https or localhost, and a browser that allows camera access).', code: 'camera_unavailable' });
      }
      try {
        stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: 'user' }, audio: false });
      } catch (e) {
        throw new ApiError(0, { detail: cameraError(e), code: 'camera_' + String((e && e.name) || 'error').replace(/Error$/, '').toLowerCase() });
      }
      video.srcObject = stream;
      video.classList.remove('hidden'); placeholder.classList.add('hidden'); stage.classList.add('live');
      await video.play().catch(() => {});
      const t0 = Date.now();
      while (video.readyState < 2 || !video.videoWidth) {  // the first frame
        if (Date.now() - t0 > 10000) throw new ApiError(0, { detail: 'The camera opened but sends no picture.', code: 'camera_no_frames' });
        await sleep(30);
      }
    }

    // Capture frames (unmirrored, at most `fps`, only frames the camera actually delivered) while
    // the prompts run; returns [{blob, t}] with capture times in ms since the Unix epoch.
    async function capture(session, plan) {
      const fps = Math.min(15, Math.max(2, session.upload.recommended_fps || 10));
      const maxFrames = session.upload.max_frames || 120;
      const frames = [];
      const pending = [];
      const canvas = document.createElement('canvas');
      const scale = Math.min(1, 640 / video.videoWidth);
      canvas.width = Math.round(video.videoWidth * scale); canvas.height = Math.round(video.videoHeight * scale);
      const ctx = canvas.getContext('2d');
      let presented = 0, taken = -1, lastT = 0;
      const hasRvfc = typeof video.requestVideoFrameCallback === 'function';
      if (hasRvfc) { const onFrame = (_now, meta) => { presented = meta.presentedFrames; if (stream) video.requestVideoFrameCallback(onFrame); }; video.requestVideoFrameCallback(onFrame); }
      const grab = () => {
        if (frames.length + pending.length >= maxFrames) return;
        if (hasRvfc && presented === taken) return;  // no new camera frame since the last one
        let t = Date.now();
        if (t <= lastT) t = lastT + 1;
        lastT = t; taken = presented;
        ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
        pending.push(new Promise((res) => canvas.toBlob((b) => res(b ? { blob: b, t } : null), 'image/jpeg', 0.9)));
      };
      const total = plan.reduce((a, s) => a + s.ms, 0);
      const began = performance.now();
      const timer = setInterval(grab, Math.round(1000 / fps));
      grab();
      try {
        let at = 0;
        for (let i = 0; i < plan.length; i++) {
          const step = plan[i];
          renderSteps(plan, i);
          const m = MOVES[step.kind];
          clear(promptIcon).append(m.arrow ? arrowIcon(m.arrow) : h('span', { class: 'lv-dot' }));
          promptIcon.className = 'lv-arrow ' + (m.arrow || 'hold');
          promptTitle.textContent = m.title;
          promptSub.textContent = step.kind === 'hold' ? 'Getting your starting position' : `${m.back} · ${i} of ${plan.length - 1}`;
          prompt.classList.remove('hidden');
          status.textContent = step.kind === 'hold' ? 'Recording…' : step.prompt;
          at += step.ms;
          while (performance.now() - began < at) {
            if (cancelled) throw new ApiError(0, { detail: 'The check was cancelled.', code: 'cancelled' });
            timeBar.firstChild.style.width = Math.min(100, ((performance.now() - began) / total) * 100) + '%';
            await sleep(50);
          }
        }
      } finally {
        clearInterval(timer);
      }
      for (const f of await Promise.all(pending)) if (f) frames.push(f);
      return frames;
    }

    async function upload(session, frames) {
      const form = new FormData();
      form.append('nonce', session.nonce);
      form.append('timestamps', JSON.stringify(frames.map((f) => f.t)));
      frames.forEach((f, i) => form.append('frames', f.blob, `frame-${String(i).padStart(3, '0')}.jpg`));
      return api('POST', `/v1/liveness/sessions/${enc(session.id)}/frames`, { form });
    }

    function showDecision(session, res) {
      const live = !!res.live;
      const rows = (res.challenges || []).map((c) => h('tr', { 'data-testid': 'liveness-challenge' },
        h('td', {}, (MOVES[c.challenge] || { title: c.challenge }).title),
        h('td', {}, h('span', { class: 'chip ' + (c.status === 'met' ? 'ok' : 'bad'), text: STATUS_TEXT[c.status] || c.status })),
        h('td', { class: 'small muted mono', text: c.start_s === null || c.start_s === undefined ? '—' : `${fmtNum(c.start_s, 1)} s` })));
      const actions = live ? h('div', { class: 'row' },
        can('verify') ? h('a', { class: 'btn primary', href: `#/verify?mode=subject&liveness=${enc(res.session_id)}${colQ}`, 'data-testid': 'liveness-use-verify', text: 'Verify against an enrolled subject' }) : null,
        can('enroll') ? h('a', { class: 'btn', href: `#/enrol?liveness=${enc(res.session_id)}${colQ}`, 'data-testid': 'liveness-use-enrol', text: 'Enrol with this capture' }) : null,
        can('identify') ? h('a', { class: 'btn', href: `#/identify?liveness=${enc(res.session_id)}${colQ}`, 'data-testid': 'liveness-use-identify', text: 'Identify with this capture' }) : null) : null;
      clear(out).append(h('div', { class: 'panel', 'data-testid': 'liveness-decision' },
        h('div', { class: 'row' },
          h('span', { class: 'badge ' + (live ? 'ok' : 'bad'), 'data-testid': 'liveness-badge', text: live ? '✓ LIVE' : '✕ NOT LIVE' }),
          h('div', { class: 'spacer' }),
          h('span', { class: 'muted small', text: `${res.frames} frames · ${res.face_frames} with a face · ${fmtNum(res.duration_s, 1)} s` })),
        live ? h('p', { class: 'muted', text: 'A live person performed the requested movements. Its best frame can be used once, within 2 minutes, for a verification or an enrolment; nothing else was kept.' })
          : h('div', { class: 'lv-reasons' }, h('h3', { text: 'Why' }),
            h('ul', { 'data-testid': 'liveness-reasons' }, (res.reasons || []).map((r) => h('li', { 'data-reason': r }, livenessReason(r), h('span', { class: 'code', text: r })))),
            h('p', { class: 'muted small', text: 'Start a new check to try again: each check asks for new random movements.' })),
        rows.length ? h('table', { class: 'lv-table' }, h('thead', {}, h('tr', {}, ['Requested movement', 'Result', 'Started at'].map((t) => h('th', { text: t })))), h('tbody', {}, rows)) : null,
        h('dl', { class: 'kv' }, h('dt', { text: 'Session' }), h('dd', { class: 'mono small', 'data-testid': 'liveness-session-id', text: res.session_id }),
          h('dt', { text: 'Model' }), h('dd', { class: 'small', text: res.model })),
        actions));
    }

    start.addEventListener('click', () => withBusy(start, async () => {
      clear(errSlot); clear(out); cancelled = false;
      start.textContent = 'Starting…';
      try {
        status.textContent = 'Opening the camera…';
        await openCamera();
        const session = await api('POST', '/v1/liveness/sessions');
        start.textContent = 'Recording…';
        const per = Math.min(MOVE_MS, Math.floor((1000 * (session.upload.max_frames - 4) / (session.upload.recommended_fps || 10) - HOLD_MS) / session.challenges.length));
        const plan = [{ kind: 'hold', ms: HOLD_MS, label: 'Hold still' },
          ...session.challenges.map((c, i) => ({ kind: c, ms: per, prompt: session.prompts[i], label: (MOVES[c] || { title: c }).title.replace('Turn your head', 'Turn').replace('Tilt your head', 'Tilt') }))];
        const frames = await capture(session, plan);
        stopCamera();
        renderSteps([...plan, { label: 'Check' }], plan.length);
        status.textContent = `Checking ${frames.length} frames…`;
        start.textContent = 'Checking…';
        const res = await upload(session, frames);
        const met = (res.challenges || []).map((c) => (c.status === 'met' ? 'done' : 'failed'));
        renderSteps([...plan, { label: 'Check' }], plan.length + 1, ['done', ...plan.slice(1).map((_, i) => met[i] || 'failed'), res.live ? 'done' : 'failed']);
        status.textContent = '';
        showDecision(session, res);
      } catch (err) {
        stopCamera();
        status.textContent = '';
        showError(errSlot, err, err.code && err.code.startsWith('camera') ? 'Camera' : 'Liveness check');
      }
    }));

    renderSteps([{ label: 'Hold still' }, { label: 'Movements (2–4)' }, { label: 'Check' }], -1);
    return h('div', {},
      pageHead('Liveness check', 'Prove a live person is in front of the camera: follow 2–4 random head movements. Use the passed check for a verification or an enrolment.'),
      h('div', { class: 'grid2 lv-grid' },
        h('div', { class: 'panel' }, stage),
        h('div', { class: 'panel' },
          h('h3', { text: 'How it works' }),
          h('ol', { class: 'lv-howto' },
            h('li', { text: 'Sit in good light, face the camera, only you in the picture.' }),
            h('li', { text: 'Start: hold still for a moment, then follow each prompt — one movement at a time, then back to facing the camera.' }),
            h('li', { text: 'The frames are sent once to this facegate server, checked and dropped. Only the decision is kept (audit log).' })),
          steps, status, errSlot, h('div', { class: 'row end' }, start))),
      out);
  }

  function livenessProbeCard(id, otherHref) {
    return h('div', { class: 'drop has-live', 'data-testid': 'liveness-probe' },
      h('div', { class: 'big', text: 'Live capture' }),
      h('div', {}, 'The best frame of liveness check ', h('span', { class: 'mono', text: id }), ' is used, once.'),
      h('a', { class: 'btn sm', href: otherHref, text: 'Use a photo instead' }));
  }

  // Suggestions for the audit action filter (the gallery's action names).
  const AUDIT_ACTIONS = ['enroll', 'identify', 'verify', 'verify.images', 'subject.erase', 'consent.grant', 'consent.withdraw',
    'collection.create', 'collection.update', 'collection.delete', 'purge.run', 'key.create', 'key.revoke', 'liveness.decision', 'liveness.session_created', 'liveness.rejected'];

  const PAGES = {
    collections: (r) => (r.parts.length >= 4 && r.parts[2] === 'subjects' ? subjectPage(r) : r.parts.length >= 2 ? collectionPage(r) : collectionsPage(r)),
    enrol: enrolPage,
    verify: verifyPage,
    identify: identifyPage,
    liveness: livenessPage,
    audit: auditPage,
    keys: keysPage,
  };

  window.addEventListener('hashchange', () => { if (state.me) render(); });
  document.addEventListener('DOMContentLoaded', render);
  if (document.readyState !== 'loading') render();
})();
