/* facegate console: what every screen uses (helpers, the API client, the image picker, icons).
   Loaded first; each screen's script then registers its pages, and app.js (the shell) renders. */
(() => {
  'use strict';

  const fg = window.facegateConsole = { pages: {}, shell: null };

  // ------------------------------------------------------------------------------------------
  // small helpers
  // ------------------------------------------------------------------------------------------

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
      if (res.status === 401 && state.me && path !== '/v1/me') { fg.shell.signOut('Your API key is no longer accepted. Sign in again.'); }
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

  /** Fetch a file the API serves (a report) with this key and hand it to the browser as a download. */
  async function download(path, query, filename) {
    const url = path + (query ? '?' + new URLSearchParams(query) : '');
    let res;
    try {
      res = await fetch(url, { headers: { Authorization: 'Bearer ' + state.key }, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      throw new ApiError(0, { detail: 'Cannot reach the facegate service. Is it running?', code: 'network' });
    }
    if (!res.ok) {
      let problem = null;
      try { problem = await res.json(); } catch { problem = null; }
      throw new ApiError(res.status, problem);
    }
    const link = h('a', { href: URL.createObjectURL(await res.blob()), download: filename, class: 'hidden' });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
  const JOB_ACTIVE = ['queued', 'running'];
  const JOB_TEXT = { queued: 'queued', running: 'running', succeeded: 'finished', failed: 'failed', cancelled: 'cancelled' };
  const fmtDuration = (s) => (s < 90 ? `${Math.max(1, Math.round(s))} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);

  /** A registry job's progress: status, a bar, done of total, and the rate and time left as
   *  measured by this page between polls (the job reports counts, not times). */
  function jobProgress(testid, unit) {
    const chip = h('span', { class: 'chip grey', 'data-testid': `${testid}-status` });
    const fill = h('span');
    const counts = h('span', { class: 'mono', 'data-testid': `${testid}-counts` });
    const speed = h('span', { class: 'small muted', 'data-testid': `${testid}-rate` });
    const el = h('div', { class: 'job', 'data-testid': testid },
      h('div', { class: 'row' }, chip, counts, h('div', { class: 'spacer' }), speed), h('div', { class: 'job-bar' }, fill));
    let first = null;
    return {
      el,
      update(job) {
        const now = performance.now();
        const active = JOB_ACTIVE.includes(job.status);
        chip.textContent = job.cancel_requested && active ? 'cancelling' : JOB_TEXT[job.status] || job.status;
        chip.className = 'chip ' + (job.status === 'succeeded' ? 'ok' : job.status === 'failed' ? 'bad' : job.status === 'cancelled' ? 'warn' : 'grey');
        el.dataset.status = job.status;
        counts.textContent = `${job.done.toLocaleString()} of ${job.total.toLocaleString()} ${unit}`;
        fill.style.width = (job.total ? Math.min(100, (100 * job.done) / job.total) : active ? 0 : 100) + '%';
        if (job.status === 'running' && (!first || job.done < first.done)) first = { t: now, done: job.done };  // again after a resume
        const rate = first && now > first.t ? ((job.done - first.done) * 1000) / (now - first.t) : 0;
        speed.textContent = !active ? '' : rate > 0
          ? `${rate >= 10 ? Math.round(rate) : rate.toFixed(1)} ${unit}/s · about ${fmtDuration((job.total - job.done) / rate)} left`
          : job.status === 'queued' ? 'waiting to start' : 'measuring the rate…';
      },
    };
  }

  /** Poll ``load`` (→ a job) every ``everyMs`` while the job is active and this page is still
   *  shown; ``onJob`` gets each state. Returns the last state seen. */
  async function watchJob(load, onJob, everyMs = 1000) {
    const page = location.hash;
    for (;;) {
      const job = await load();
      if (location.hash !== page) return job;
      onJob(job);
      if (!JOB_ACTIVE.includes(job.status)) return job;
      await sleep(everyMs);
    }
  }

  /** What a verify or identify page searches: a collection (``selected`` first) and a declared
   *  purpose among its purposes, two selects kept in step; ``onChange(col)`` when the collection changes. */
  function collectionAndPurpose(cols, selected, testids, onChange) {
    const target = { col: cols.find((c) => c.name === selected) || cols[0] };
    target.colSel = collectionSelect(cols, target.col.name, testids.collection);
    target.purposeSel = h('select', { 'data-testid': testids.purpose });
    const fill = () => clear(target.purposeSel).append(...target.col.purposes.map((p) => h('option', { value: p, text: p })));
    target.colSel.addEventListener('change', () => { target.col = cols.find((c) => c.name === target.colSel.value); fill(); onChange(target.col); });
    fill();
    return target;
  }

  /** The probe of a verify or identify page: a photo picker, or the passed liveness check the
   *  URL names (its best frame is the probe); the picker gives way to the liveness notice while
   *  the collection requires a check for ``op``. ``word``: the operation in the refusal. */
  function probeInput(r, op, word, onImage) {
    const liveId = r.query.get('liveness');
    const picker = liveId ? null : imagePicker({ label: 'Probe photo', testid: `${op}-probe`, onImage });
    const note = livenessRequiredNote(`${op}-liveness-required`);
    return {
      liveId,
      picker,
      /** Show the notice or the picker for collection ``col``. */
      apply(col) { const on = note.update(liveId ? null : col, op); if (picker) picker.el.classList.toggle('hidden', on); },
      /** Why ``col`` refuses this probe now (null: it does not). */
      refusal(col) { return !liveId && needsLiveness(col, op) ? new ApiError(0, { detail: `Collection ${col.name} requires a liveness check for ${word}: start one first.` }) : null; },
      /** The probe panel's content: the liveness card (with a link back to ``photoHref``), or notice and picker. */
      view(photoHref) { return liveId ? livenessProbeCard(liveId, photoHref) : [note.el, picker.el]; },
    };
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
  // icons and page parts
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

  function pageHead(title, sub, actions, crumbs) {
    return h('div', { class: 'page-head' },
      h('div', {}, crumbs ? h('div', { class: 'crumbs' }, crumbs) : null, h('h1', { text: title }), sub ? h('div', { class: 'sub', text: sub }) : null),
      h('div', { class: 'row' }, actions || []));
  }

  function livenessProbeCard(id, otherHref) {
    return h('div', { class: 'drop has-live', 'data-testid': 'liveness-probe' },
      h('div', { class: 'big', text: 'Live capture' }),
      h('div', {}, 'The best frame of liveness check ', h('span', { class: 'mono', text: id }), ' is used, once.'),
      h('a', { class: 'btn sm', href: otherHref, text: 'Use a photo instead' }));
  }

  // Re-render the current page (the shell's renderer, set by app.js).
  const render = () => fg.shell.render();

  Object.assign(fg, {
    state, h, clear, fmtTime, fmtNum, fmtFmr, enc, can, globalAdmin, ApiError, subjectRef, api, toast, errorBox,
    showError, withBusy, modal, loadCollections, field, collectionSelect, purposeChecks, checkedValues, needsLiveness,
    liveText, livenessChecks, livenessRequiredNote, consentStatus, REASON_TEXT, reasonText, imagePicker, COLORS, legend, gauge,
    strokeSvg, icon, logo, pageHead, livenessProbeCard, render, download, sleep, JOB_ACTIVE, JOB_TEXT, jobProgress,
    watchJob, probeInput, collectionAndPurpose,
  });
})();
