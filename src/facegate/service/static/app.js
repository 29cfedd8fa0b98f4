/* facegate console: the shell (navigation, routing, sign-in) and the liveness check screen.
   Loaded last: it renders once every screen's script has registered its pages. */
(() => {
  'use strict';

  const { state, h, clear, fmtNum, enc, can, globalAdmin, ApiError, api, errorBox, showError, withBusy, field,
    strokeSvg, icon, logo, pageHead, sleep } = window.facegateConsole;

  // ------------------------------------------------------------------------------------------
  // shell, routing, sign-in
  // ------------------------------------------------------------------------------------------

  const KEY_STORE = 'facegate.key';

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

  const PAGES = window.facegateConsole.pages;
  PAGES.liveness = livenessPage;
  window.facegateConsole.shell = { render, signOut };

  window.addEventListener('hashchange', () => { if (state.me) render(); });
  document.addEventListener('DOMContentLoaded', render);
  if (document.readyState !== 'loading') render();
})();
