// The Strata console's pages: plain DOM, no framework, no build step. The console's CSP
// allows scripts and styles from this origin only, so nothing here is inline: styles come
// from classes in app.css and SVG attributes. Every value from the server goes into the
// page as text (textContent, setAttribute), never parsed as HTML. The server never sends
// a token; a capability is shown by its cap_id.
'use strict';

(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const SERVICE_NAME = /^[a-z][a-z0-9-]{0,62}$/;
  const CAP_ID = /^[0-9a-f]{32}$/;
  const STATES = ['Declared', 'Starting', 'Healthy', 'Crashed', 'Restarting', 'Stopped', 'Quarantined'];
  const LOG_LINES_KEPT = 1000;
  const AUDIT_LINES_KEPT = 500;
  const SEEN_STATES_KEPT = 20;

  // ---- Building DOM -------------------------------------------------------------------

  // el('p', {class: 'x', 'data-y': 1, text: 'hi', onclick: f}, child, ...): attributes are
  // set with setAttribute, `text` as textContent, `on*` as listeners; string children
  // become text nodes.
  function el(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }
  function svg(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }
  function build(node, attrs, children) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'text') node.textContent = String(value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  // A state name as a class: only the supervisor's known states, anything else `unknown`.
  function stateClass(state) {
    return 'state-' + (STATES.includes(state) ? state : 'unknown');
  }

  // ---- Formatting ---------------------------------------------------------------------

  function duration(seconds) {
    if (typeof seconds !== 'number' || !isFinite(seconds)) return '–';
    const s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${sec}s`;
    return `${sec}s`;
  }
  function bytes(n) {
    if (typeof n !== 'number' || !isFinite(n)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }
  function cpu(seconds) {
    return typeof seconds === 'number' && isFinite(seconds) ? `${seconds.toFixed(1)} s` : '–';
  }
  function rate(r) {
    if (typeof r !== 'number' || !isFinite(r)) return '–';
    return `${r < 10 ? r.toFixed(1) : Math.round(r)} req/s`;
  }
  // Unix seconds as "in 9m 58s" / "3m 2s ago".
  function relative(unix) {
    if (typeof unix !== 'number' || !isFinite(unix)) return '–';
    const delta = unix - Date.now() / 1000;
    return delta >= 0 ? `in ${duration(delta)}` : `${duration(-delta)} ago`;
  }
  function isoTime(unix) {
    if (typeof unix !== 'number' || !isFinite(unix)) return '';
    const d = new Date(unix * 1000);
    return isNaN(d.getTime()) ? '' : d.toISOString().replace('.000Z', 'Z');
  }
  function timeEl(unix) {
    return el('time', { datetime: isoTime(unix), title: isoTime(unix), text: relative(unix) });
  }
  function shortId(id) {
    return typeof id === 'string' ? id.slice(0, 8) : '?';
  }
  function list(values) {
    return Array.isArray(values) && values.length ? values.map(String).join(', ') : 'none';
  }
  // Any JSON value as nested definition lists (for status details and cluster objects).
  function kv(value, depth = 0) {
    if (value === null || value === undefined) return el('span', { class: 'muted', text: '–' });
    if (Array.isArray(value)) {
      if (!value.length) return el('span', { class: 'muted', text: 'none' });
      if (value.every((v) => v === null || typeof v !== 'object')) return document.createTextNode(value.join(', '));
      return el('ul', { class: 'kv-list' }, value.map((v) => el('li', {}, kv(v, depth + 1))));
    }
    if (typeof value === 'object') {
      if (depth > 6) return document.createTextNode(JSON.stringify(value));
      const dl = el('dl', { class: 'kv' });
      for (const [k, v] of Object.entries(value)) dl.append(el('dt', { text: k }), el('dd', {}, kv(v, depth + 1)));
      return dl;
    }
    return document.createTextNode(String(value));
  }

  // ---- Errors (#error) ----------------------------------------------------------------

  // One message per source (a page's poll, an action); a source's success clears its own.
  const errors = new Map();
  function setError(source, message) {
    if (message) errors.set(source, message);
    else errors.delete(source);
    const box = document.getElementById('error');
    box.textContent = '';
    for (const m of errors.values()) box.append(el('p', { text: m }));
    box.hidden = errors.size === 0;
  }

  // ---- The console's API --------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }
  async function errorOf(res) {
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON: the 401/403 text pages */ }
    const err = body && body.error;
    if (err && typeof err.message === 'string') {
      const code = typeof err.code === 'string' ? err.code : '';
      return new ApiError(res.status, code, code ? `${code}: ${err.message}` : err.message);
    }
    if (res.status === 401) {
      return new ApiError(401, 'UNAUTHENTICATED', 'No console session: open the URL `strata-ctl console` printed.');
    }
    return new ApiError(res.status, '', `The console answered HTTP ${res.status}.`);
  }
  async function api(path, options) {
    let res;
    try {
      res = await fetch(path, Object.assign({ credentials: 'same-origin', cache: 'no-store' }, options));
    } catch (_) {
      throw new ApiError(0, 'UNAVAILABLE', 'The console server cannot be reached (has `strata-ctl console` stopped?).');
    }
    if (!res.ok) throw await errorOf(res);
    return res.json();
  }
  let sessionPromise = null;
  function session() {
    if (!sessionPromise) sessionPromise = api('/api/session').catch((e) => { sessionPromise = null; throw e; });
    return sessionPromise;
  }
  // A state-changing request: POST with the session's CSRF token, no body.
  async function post(path) {
    const s = await session();
    return api(path, { method: 'POST', headers: { 'X-CSRF-Token': String(s.csrf) } });
  }
  // Why an event stream was refused: the same URL fetched once, its error read, the body
  // of a stream that does open abandoned at once.
  async function streamError(url) {
    const abort = new AbortController();
    try {
      const res = await fetch(url, { credentials: 'same-origin', cache: 'no-store', signal: abort.signal });
      if (res.ok) { abort.abort(); return null; }
      return (await errorOf(res)).message;
    } catch (_) {
      return 'The console server cannot be reached (has `strata-ctl console` stopped?).';
    }
  }

  // ---- Pages: routing and lifetime ----------------------------------------------------

  // What a page started (timers, event streams), undone when another page replaces it.
  function makeContext(main) {
    const ctx = {
      alive: true,
      cleanups: [],
      ready() { if (ctx.alive) main.dataset.ready = 'true'; },
      // Run `fn` now and `ms` after each run ends; its error goes to #error under
      // `source`, its success clears that. Returns a function that runs it again now.
      poll(ms, source, fn) {
        let timer = null, running = false, again = false;
        const tick = async () => {
          clearTimeout(timer);
          timer = null;
          if (!ctx.alive) return;
          if (running) { again = true; return; }
          running = true;
          try {
            await fn();
            if (ctx.alive) setError(source, null);
          } catch (e) {
            if (ctx.alive) setError(source, e.message);
          }
          running = false;
          if (!ctx.alive) return;
          if (again) { again = false; tick(); } else timer = setTimeout(tick, ms);
        };
        ctx.cleanups.push(() => clearTimeout(timer));
        tick();
        return tick;
      },
      // An EventSource whose `data:` lines are JSON objects, closed with the page.
      // `status` hears 'live', 'reconnecting' or the reason it was refused.
      stream(url, onObject, status) {
        const es = new EventSource(url);
        es.onopen = () => { if (ctx.alive) status('live'); };
        es.onmessage = (ev) => {
          if (!ctx.alive) return;
          let obj;
          try { obj = JSON.parse(ev.data); } catch (_) { return; }
          if (obj && typeof obj === 'object') onObject(obj);
        };
        // One listener for both kinds of `error`: the server's own `event: error` (a
        // MessageEvent with data: its message is shown and the stream closed) and the
        // EventSource's (the connection failed or was refused).
        es.addEventListener('error', async (ev) => {
          if (!ctx.alive) return;
          if (typeof MessageEvent !== 'undefined' && ev instanceof MessageEvent && typeof ev.data === 'string') {
            es.close();
            let message = 'The stream ended with an error.';
            try {
              const body = JSON.parse(ev.data);
              if (body && body.error && typeof body.error.message === 'string') message = body.error.message;
            } catch (_) { /* not JSON: the generic message */ }
            status(message);
            return;
          }
          if (es.readyState !== EventSource.CLOSED) { status('reconnecting'); return; }
          const why = await streamError(url);
          if (ctx.alive) status(why || 'ended');
        });
        ctx.cleanups.push(() => es.close());
        return es;
      },
    };
    ctx.cleanups.push(() => { ctx.alive = false; });
    return ctx;
  }

  const pages = { node: nodePage, service: servicePage, caps: capsPage, audit: auditPage, cluster: clusterPage };
  let current = null;

  function route(moved) {
    const parts = (location.hash || '#/node').replace(/^#\/?/, '').split('/');
    let page = parts[0] || 'node';
    let arg = null;
    if (page === 'service') {
      try { arg = decodeURIComponent(parts[1] || ''); } catch (_) { arg = ''; }
    }
    if (!Object.prototype.hasOwnProperty.call(pages, page)) page = 'node';
    if (current) for (const undo of current.cleanups) undo();
    errors.clear();
    setError('', null);
    const main = document.getElementById('page');
    main.textContent = '';
    delete main.dataset.ready;
    main.dataset.page = page;
    for (const a of document.querySelectorAll('nav a[data-page]')) {
      const here = a.dataset.page === (page === 'service' ? 'node' : page);
      if (here) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    current = makeContext(main);
    pages[page](main, current, arg);
    if (moved) main.focus({ preventScroll: true });
  }

  // ---- Node: the dependency graph -----------------------------------------------------

  const BOX_W = 230, BOX_H = 104, GAP_X = 70, GAP_Y = 24, PAD = 12, TOP = 28, LANE_Y = 18;
  // Per service, the states seen in order (consecutive repeats collapsed), kept across
  // page changes, so a test or a person sees a restart that fell between two frames.
  const seenStates = new Map();
  function noteState(name, state) {
    const seen = seenStates.get(name) || [];
    if (seen[seen.length - 1] !== state) seen.push(state);
    if (seen.length > SEEN_STATES_KEPT) seen.splice(0, seen.length - SEEN_STATES_KEPT);
    seenStates.set(name, seen);
    return seen.join(' ');
  }

  // Columns by dependency depth (a service without dependencies is in column 0, any
  // other one column right of its deepest dependency); rows in the supervisor's order.
  function layout(services) {
    const byName = new Map(services.map((s) => [s.name, s]));
    const depth = new Map();
    const visiting = new Set();
    const depthOf = (name) => {
      if (depth.has(name)) return depth.get(name);
      if (visiting.has(name)) return 0; // a cycle (the supervisor refuses them): drawn flat
      visiting.add(name);
      let d = 0;
      for (const dep of byName.get(name).depends_on || []) {
        if (byName.has(dep)) d = Math.max(d, depthOf(dep) + 1);
      }
      visiting.delete(name);
      depth.set(name, d);
      return d;
    };
    const columns = [];
    for (const s of services) (columns[depthOf(s.name)] = columns[depthOf(s.name)] || []).push(s.name);
    const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
    const pos = new Map();
    columns.forEach((names, col) => {
      const offset = ((rows - names.length) * (BOX_H + GAP_Y)) / 2;
      names.forEach((name, row) => {
        pos.set(name, { x: PAD + col * (BOX_W + GAP_X), y: TOP + offset + row * (BOX_H + GAP_Y) });
      });
    });
    return {
      pos,
      width: PAD * 2 + columns.length * BOX_W + Math.max(0, columns.length - 1) * GAP_X,
      height: TOP + PAD + rows * BOX_H + (rows - 1) * GAP_Y,
    };
  }

  function nodeLines(s) {
    const pid = s.pid === null || s.pid === undefined ? 'no process' : `pid ${s.pid}`;
    const third = s.waiting ? String(s.waiting) : `restarts ${s.restarts ?? 0} · RSS ${bytes(s.rss_bytes)}`;
    return [
      `${pid} · up ${s.uptime_s === null || s.uptime_s === undefined ? '–' : duration(s.uptime_s)}`,
      third.length > 34 ? third.slice(0, 33) + '…' : third,
      `CPU ${cpu(s.cpu_seconds)} · ${rate(s.request_rate)}`,
    ];
  }

  function nodePage(main, ctx) {
    const title = el('h1', { text: 'Services' });
    const summary = el('p', { class: 'summary', 'aria-live': 'polite' });
    const holder = el('div', { class: 'graph-holder' });
    const legend = el('ul', { class: 'legend', 'aria-label': 'State colours' },
      STATES.map((st) => el('li', { class: stateClass(st) }, el('span', { class: 'swatch', 'aria-hidden': 'true' }), st)));
    main.append(title, summary, holder, legend,
      el('p', { class: 'muted', text: 'Arrows point from a dependency to its dependents. Select a service for its status, log and capabilities.' }));
    let shape = null; // the services and their dependencies the drawing was made for
    const drawn = new Map(); // name -> {g, a, state, lines, title}

    function draw(services) {
      const { pos, width, height } = layout(services);
      const graph = svg('svg', {
        id: 'graph', viewBox: `0 0 ${width} ${height}`, width, height,
        role: 'group', 'aria-label': 'Service dependency graph',
      });
      graph.append(svg('defs', {}, svg('marker', {
        id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: 'auto-start-reverse',
      }, svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))));
      let longEdges = 0;
      for (const s of services) {
        const to = pos.get(s.name);
        for (const dep of s.depends_on || []) {
          const from = pos.get(dep);
          if (!from) continue;
          const x1 = from.x + BOX_W, y1 = from.y + BOX_H / 2, x2 = to.x - 2, y2 = to.y + BOX_H / 2;
          let d;
          if (x2 < x1) { // same column (only in a cycle): straight down
            d = `M${from.x + BOX_W / 2},${from.y + BOX_H} L${to.x + BOX_W / 2},${to.y}`;
          } else if (x2 - x1 > GAP_X) { // skips a column: over the top, not through a box
            const lane = LANE_Y - 6 * (longEdges++ % 3), q = GAP_X / 2;
            d = `M${x1},${y1} C${x1 + q},${y1} ${x1 + q},${lane} ${x1 + GAP_X},${lane} L${x2 - GAP_X},${lane} C${x2 - q},${lane} ${x2 - q},${y2} ${x2},${y2}`;
          } else {
            const mid = (x1 + x2) / 2;
            d = `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
          }
          graph.append(svg('path', { class: 'dep', 'data-from': dep, 'data-to': s.name, 'marker-end': 'url(#arrow)', d }));
        }
      }
      drawn.clear();
      for (const s of services) {
        const p = pos.get(s.name);
        const tip = svg('title');
        const state = svg('text', { x: 12, y: 44, class: 'state-label' });
        const lines = [62, 78, 94].map((y) => svg('text', { x: 12, y, class: 'detail' }));
        const g = svg('g', { class: 'svc', 'data-service': s.name, transform: `translate(${p.x},${p.y})` },
          tip,
          svg('rect', { width: BOX_W, height: BOX_H, rx: 8, ry: 8 }),
          svg('text', { x: 12, y: 24, class: 'name', text: s.name }),
          state, lines);
        const a = svg('a', { href: `#/service/${encodeURIComponent(s.name)}`, class: 'svc-link' }, g);
        graph.append(a);
        drawn.set(s.name, { g, a, state, lines, tip });
      }
      holder.textContent = '';
      holder.append(graph);
    }

    function update(data) {
      const services = (Array.isArray(data.services) ? data.services : [])
        .filter((s) => s && typeof s.name === 'string');
      const newShape = JSON.stringify(services.map((s) => [s.name, s.depends_on || []]));
      if (newShape !== shape) { shape = newShape; draw(services); }
      const counts = {};
      for (const s of services) {
        const d = drawn.get(s.name);
        const st = String(s.state);
        counts[st] = (counts[st] || 0) + 1;
        d.g.setAttribute('class', `svc ${stateClass(st)}`);
        d.g.setAttribute('data-state', st);
        d.g.setAttribute('data-seen-states', noteState(s.name, st));
        d.g.setAttribute('data-pid', s.pid ?? '');
        d.state.textContent = st;
        const text = nodeLines(s);
        text.forEach((t, i) => { d.lines[i].textContent = t; });
        d.a.setAttribute('aria-label', `${s.name}: ${st}; ${text.join('; ')}`);
        d.tip.textContent = `${s.name}: ${st}\n${text.join('\n')}\ndepends on: ${list(s.depends_on)}\nrouted capabilities: ${s.capabilities ?? 0}`;
      }
      summary.textContent = `${services.length} services on ${data.node_id ?? 'this node'}: ` +
        Object.entries(counts).map(([st, n]) => `${n} ${st}`).join(', ');
    }

    ctx.poll(500, 'node', async () => {
      const data = await api('/api/node');
      if (!ctx.alive) return;
      update(data);
      ctx.ready();
    });
  }

  // ---- Service: status, controls, routed capabilities, log ----------------------------

  function servicePage(main, ctx, name) {
    if (!SERVICE_NAME.test(name || '')) {
      main.append(el('p', { text: 'That is not a service name.' }), el('a', { href: '#/node', text: 'Back to the node' }));
      setError('page', 'Not a service name: open a service from the graph.');
      return;
    }
    const base = `/api/services/${encodeURIComponent(name)}`;
    const badge = el('span', { class: 'badge' });
    const result = el('p', { id: 'action-result', class: 'muted', 'aria-live': 'polite' });
    const buttons = ['start', 'stop', 'restart'].map((action) => el('button', {
      type: 'button', 'data-action': action, text: action[0].toUpperCase() + action.slice(1),
      onclick: () => act(action),
    }));
    const status = el('div', { class: 'status' });
    const routed = el('ul', { id: 'routed', class: 'routed' });
    const log = el('pre', { id: 'log', tabindex: 0, 'aria-label': `${name} log` });
    const logState = el('span', { class: 'muted stream-state', 'aria-live': 'polite', text: 'connecting…' });
    const section = el('section', { id: 'service', 'data-service': name, 'data-state': '', 'aria-labelledby': 'service-title' },
      el('h1', { id: 'service-title' }, name, ' ', badge),
      el('div', { class: 'actions', role: 'group', 'aria-label': 'Control' }, buttons), result,
      el('div', { class: 'service-body' },
        el('div', {}, el('h2', { text: 'Status' }), status),
        el('div', {}, el('h2', { text: 'Routed capabilities' }), routed, el('h2', {}, 'Log ', logState), log)));
    main.append(el('p', { class: 'crumbs' }, el('a', { href: '#/node', text: '← Node' })), section);

    async function act(action) {
      for (const b of buttons) b.disabled = true;
      result.textContent = `${action}: waiting for the supervisor…`;
      setError('action', null);
      try {
        const r = await post(`${base}/${action}`);
        const also = r && Array.isArray(r.also_stopped) && r.also_stopped.length ? ` (also stopped: ${r.also_stopped.join(', ')})` : '';
        result.textContent = `${action}: ${r && r.status ? r.status : 'done'}${also}`;
      } catch (e) {
        result.textContent = `${action} refused`;
        if (ctx.alive) setError('action', e.message);
      } finally {
        for (const b of buttons) b.disabled = false;
        refresh();
      }
    }

    function renderStatus(st) {
      const state = String(st.state);
      section.dataset.state = state;
      badge.textContent = state;
      badge.setAttribute('class', `badge ${stateClass(state)}`);
      const rows = [
        ['State', state],
        ['Since', typeof st.since_ms === 'number' ? timeEl(st.since_ms / 1000) : timeEl(st.since)],
        ['Pid', st.pid ?? 'no process'],
        ['Restarts', `${st.restarts ?? 0} (crashes in the quarantine window: ${st.crashes_in_window ?? 0})`],
        ['Last exit', st.last_exit ? `${st.last_exit.reason ?? ''} ${st.last_exit.at ? '(' + relative(st.last_exit.at) + ')' : ''}`.trim() : 'none'],
        ['Waiting', st.waiting ?? null],
        ['Readiness', st.readiness ?? '–'],
        ['Restart policy', st.restart ?? '–'],
        ['Depends on', list(st.depends_on)],
        ['Dependents', list(st.dependents)],
        ['Socket', st.socket ?? 'none'],
        ['Log file', st.log_file ?? '–'],
        ['Program', st.exec ?? null],
        ['Arguments', Array.isArray(st.args) ? list(st.args) : null],
        ['Applied', st.applied ? kv(st.applied) : 'not started yet'],
      ];
      const dl = el('dl', { class: 'kv' });
      for (const [k, v] of rows) {
        if (v === null || v === undefined) continue;
        dl.append(el('dt', { text: k }), el('dd', {}, v instanceof Node ? v : String(v)));
      }
      status.textContent = '';
      status.append(dl);
    }

    function renderCaps(caps) {
      routed.textContent = '';
      if (!caps) {
        routed.append(el('li', { class: 'muted', text: 'Not available (the supervisor did not answer svc.caps).' }));
        return;
      }
      const entries = Array.isArray(caps.capabilities) ? caps.capabilities : [];
      if (!entries.length) routed.append(el('li', { class: 'muted', text: 'No capabilities routed to the current run.' }));
      for (const c of entries) {
        const cons = c.constraints || {};
        routed.append(el('li', { 'data-cap-id': c.cap_id ?? '' },
          el('strong', { text: c.name ?? '' }), ` → ${c.service ?? '?'}: ${list(c.rights)}`,
          cons.path_prefix ? [' under ', el('code', { text: cons.path_prefix })] : null,
          cons.rate_limit ? ` at ${cons.rate_limit}` : null,
          el('span', { class: 'muted' }, ' · cap_id ', el('code', { text: c.cap_id ?? '' }),
            ' · expires ', timeEl(c.expires), ` · rotations ${c.rotations ?? 0}`)));
      }
    }

    const refresh = ctx.poll(1000, 'service', async () => {
      const data = await api(base);
      if (!ctx.alive) return;
      renderStatus(data.status || {});
      renderCaps(data.caps);
      ctx.ready();
    });

    let kept = 0;
    ctx.stream(`${base}/logs`, (obj) => {
      const text = typeof obj.line === 'string' ? obj.line : typeof obj.text === 'string' ? obj.text : JSON.stringify(obj);
      const stream = ['stdout', 'stderr', 'supervisor'].includes(obj.stream) ? obj.stream : 'other';
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      log.append(el('span', { class: `line stream-${stream}` }, text.endsWith('\n') ? text : text + '\n'));
      if (++kept > LOG_LINES_KEPT) { log.firstChild.remove(); kept--; }
      if (atBottom) log.scrollTop = log.scrollHeight;
    }, (s) => { logState.textContent = s === 'live' ? '(following)' : `(${s})`; });
  }

  // ---- Capabilities: the delegation tree ----------------------------------------------

  function capsPage(main, ctx) {
    const summary = el('p', { class: 'summary', 'aria-live': 'polite' });
    const outcome = el('p', { id: 'caps-status', class: 'muted', 'aria-live': 'polite' });
    const tree = el('ul', { id: 'cap-tree', class: 'cap-tree', 'aria-label': 'Capabilities by delegation' });
    main.append(el('h1', { text: 'Capabilities' }),
      el('p', { class: 'muted', text: 'Capabilities this node issued that have not expired, each under the one it was delegated from. Revoking one revokes its descendants.' }),
      summary, outcome, tree);
    let confirming = null, confirmTimer = null, lastKey = null;

    function item(c, children, top, seen) {
      const revoked = c.revoked === true;
      const parents = Array.isArray(c.parents) ? c.parents : [];
      const li = el('li', { class: revoked ? 'cap revoked' : 'cap', 'data-cap-id': c.cap_id, 'data-revoked': String(revoked) });
      const head = el('div', { class: 'cap-head' },
        el('span', { class: 'cap-service', text: c.service ?? 'service not recorded' }),
        el('span', { class: 'cap-rights', text: Array.isArray(c.rights) ? c.rights.join(' ') : 'rights not recorded' }),
        c.path_prefix ? el('code', { class: 'cap-prefix', text: c.path_prefix }) : el('span', { class: 'muted', text: 'no prefix' }),
        c.rate_limit ? el('span', { class: 'cap-rate', text: c.rate_limit }) : null,
        el('span', { class: 'cap-expiry' }, 'expires ', timeEl(c.expires)),
        revoked ? el('span', { class: 'badge revoked-badge', text: 'revoked' }) : null);
      if (!revoked && CAP_ID.test(c.cap_id)) {
        const b = el('button', { type: 'button', class: 'revoke', 'data-cap-id': c.cap_id, text: 'Revoke', 'aria-label': `Revoke ${c.cap_id} and its descendants` });
        b.addEventListener('click', () => onRevoke(b, c.cap_id));
        if (confirming === c.cap_id) setConfirm(b, true);
        head.append(b);
      }
      li.append(head, el('div', { class: 'cap-meta muted' },
        'cap_id ', el('code', { text: c.cap_id }),
        c.subject ? ` · subject ${c.subject}` : null,
        typeof c.issued_at === 'number' ? [' · issued ', timeEl(c.issued_at)] : null));
      if (top && parents.length) {
        li.append(el('p', { class: 'note', text: `Delegated from ${shortId(parents[parents.length - 1])}…, which is not listed (expired or pruned).` }));
      }
      const kids = (children.get(c.cap_id) || []).filter((k) => !seen.has(k.cap_id));
      if (kids.length) {
        for (const k of kids) seen.add(k.cap_id);
        li.append(el('ul', { class: 'cap-children' }, kids.map((k) => item(k, children, false, seen))));
      }
      return li;
    }

    function render(data) {
      const caps = (Array.isArray(data.caps) ? data.caps : []).filter((c) => c && typeof c.cap_id === 'string');
      const byId = new Map(caps.map((c) => [c.cap_id, c]));
      const children = new Map();
      const roots = [];
      for (const c of caps) {
        const parents = Array.isArray(c.parents) ? c.parents : [];
        const parent = parents[parents.length - 1];
        if (parent && parent !== c.cap_id && byId.has(parent)) {
          if (!children.has(parent)) children.set(parent, []);
          children.get(parent).push(c);
        } else roots.push(c);
      }
      const seen = new Set(roots.map((c) => c.cap_id));
      tree.textContent = '';
      for (const c of roots) tree.append(item(c, children, true, seen));
      if (!caps.length) tree.append(el('li', { class: 'muted', text: 'No live capabilities issued by this node.' }));
      const revoked = caps.filter((c) => c.revoked === true).length;
      summary.textContent = `${caps.length} capabilities, ${revoked} revoked` +
        (data.truncated ? ' (only the first 10,000 are shown)' : '') + '.';
    }

    function setConfirm(b, on) {
      if (on) {
        b.dataset.confirm = 'true';
        b.textContent = 'Confirm revoke';
        b.classList.add('confirm');
      } else {
        delete b.dataset.confirm;
        b.textContent = 'Revoke';
        b.classList.remove('confirm');
      }
    }
    function cancelConfirm() {
      clearTimeout(confirmTimer);
      confirming = null;
      for (const b of tree.querySelectorAll('button.revoke[data-confirm]')) setConfirm(b, false);
    }
    async function onRevoke(b, id) {
      if (b.dataset.confirm !== 'true') {
        cancelConfirm();
        confirming = id;
        setConfirm(b, true);
        confirmTimer = setTimeout(cancelConfirm, 10000);
        return;
      }
      cancelConfirm();
      b.disabled = true;
      b.textContent = 'Revoking…';
      setError('revoke', null);
      try {
        const r = await post(`/api/caps/${id}/revoke`);
        outcome.textContent = r && r.unconfirmed
          ? `Revoked ${shortId(id)}…; ${r.unconfirmed} verifier(s) had not confirmed within 2 s (repeat to check).`
          : `Revoked ${shortId(id)}… (${r && typeof r.confirmed === 'number' ? r.confirmed : 0} verifier(s) confirmed).`;
      } catch (e) {
        outcome.textContent = `Revoking ${shortId(id)}… was refused.`;
        if (ctx.alive) setError('revoke', e.message);
      }
      lastKey = null;
      refresh();
    }
    const onKey = (ev) => { if (ev.key === 'Escape') cancelConfirm(); };
    document.addEventListener('keydown', onKey);
    ctx.cleanups.push(() => { document.removeEventListener('keydown', onKey); clearTimeout(confirmTimer); });

    const refresh = ctx.poll(2000, 'caps', async () => {
      const data = await api('/api/caps');
      if (!ctx.alive) return;
      // Redrawn only when something changed: a button being clicked stays the same node.
      const key = JSON.stringify(data);
      if (key !== lastKey) { lastKey = key; render(data); }
      ctx.ready();
    });
  }

  // ---- Audit: the live stream ---------------------------------------------------------

  function auditPage(main, ctx) {
    const fields = [['service', 'Service', 'fs'], ['event', 'Event', 'auth.denied'], ['cap_id', 'cap_id', '32 hex digits']];
    const inputs = fields.map(([name, , hint]) => el('input', {
      name, id: `filter-${name}`, type: 'text', maxlength: 128, autocomplete: 'off', spellcheck: 'false', placeholder: hint,
    }));
    const form = el('form', { class: 'filters', role: 'search', 'aria-label': 'Filter audit events' },
      fields.map(([name, label], i) => el('label', { for: `filter-${name}` }, label, inputs[i])),
      el('button', { type: 'submit', text: 'Apply' }));
    const state = el('span', { class: 'muted stream-state', 'aria-live': 'polite', text: 'connecting…' });
    const stream = el('ol', { id: 'audit-stream', class: 'audit-stream', 'aria-label': 'Audit events, newest first' });
    main.append(el('h1', {}, 'Audit ', state),
      el('p', { class: 'muted', text: `Events from the node's audit log, newest first (the last ${AUDIT_LINES_KEPT} kept). Filters match exactly; denials are highlighted.` }),
      form, stream);
    let es = null, kept = 0;

    function eventItem(obj) {
      const event = typeof obj.event === 'string' ? obj.event : '(no event)';
      const li = el('li', { class: event === 'auth.denied' ? 'event denied' : 'event', 'data-event': event });
      const source = obj.source ?? obj.service ?? '';
      li.append(el('span', { class: 'ts', text: obj.ts ?? obj.time ?? '' }),
        el('span', { class: 'source', text: String(source) }),
        el('span', { class: 'name', text: event }));
      const rest = el('span', { class: 'fields' });
      for (const [k, v] of Object.entries(obj)) {
        if (v === null || ['ts', 'time', 'event', 'source', 'node_id'].includes(k)) continue;
        rest.append(el('span', { class: 'field' }, el('span', { class: 'k', text: `${k}=` }), typeof v === 'string' ? v : JSON.stringify(v)));
      }
      li.append(rest);
      return li;
    }

    let url = null;
    function connect() {
      const q = new URLSearchParams();
      for (const input of inputs) if (input.value.trim()) q.set(input.name, input.value.trim());
      const next = '/api/audit' + (q.toString() ? `?${q}` : '');
      // Enter both changes the field and submits the form: one reconnection is enough.
      if (es && next === url && es.readyState !== EventSource.CLOSED) return;
      if (es) es.close();
      url = next;
      stream.textContent = '';
      kept = 0;
      state.textContent = 'connecting…';
      es = ctx.stream(url, (obj) => {
        stream.insertBefore(eventItem(obj), stream.firstChild);
        if (++kept > AUDIT_LINES_KEPT) { stream.lastChild.remove(); kept--; }
      }, (s) => {
        state.textContent = s === 'live' ? '(live)' : `(${s})`;
        if (s === 'live') { setError('audit', null); ctx.ready(); } else if (s !== 'reconnecting') setError('audit', s);
      });
    }
    for (const input of inputs) input.addEventListener('change', connect);
    form.addEventListener('submit', (ev) => { ev.preventDefault(); connect(); });
    connect();
  }

  // ---- Cluster ------------------------------------------------------------------------

  function clusterPage(main, ctx) {
    const section = el('section', { id: 'cluster', 'aria-labelledby': 'cluster-title' });
    main.append(el('h1', { id: 'cluster-title', text: 'Cluster' }), section);
    let lastKey = null;
    ctx.poll(5000, 'cluster', async () => {
      const data = await api('/api/cluster');
      if (!ctx.alive) return;
      const key = JSON.stringify(data);
      if (key !== lastKey) {
        lastKey = key;
        const configured = data.configured === true;
        section.dataset.configured = String(configured);
        section.textContent = '';
        if (!configured) {
          section.append(el('p', { text: 'This node is not in cluster mode (its supervisor has no etcd endpoints).' }));
        } else {
          const id = data.identity || {};
          const warnings = [];
          if (id.etcd_connected === false) warnings.push('identity cannot reach etcd');
          if (id.loaded === false) warnings.push("identity has not loaded the cluster's state");
          if (id.removed === true) warnings.push('this node was removed from the cluster');
          if (warnings.length) section.append(el('p', { class: 'warning', role: 'status', text: `Attention: ${warnings.join('; ')}.` }));
          // Staleness, from the registry's sys.metrics (null when it refused: admin only).
          const age = data.contact_age_s;
          if (typeof age === 'number' && isFinite(age)) {
            const stale = age > 30;
            section.append(el('p', { id: 'cluster-contact', class: stale ? 'warning' : null, 'data-stale': String(stale),
              text: `Last heard from etcd ${Math.round(age)} s ago` + (data.lease_held === false ? ' (node lease not held)' : '') + '.' }));
          } else {
            section.append(el('p', { id: 'cluster-contact', class: 'muted', text: "The registry's etcd contact is not known (its metrics are admin-only)." }));
          }
          section.append(el('h2', { text: 'Nodes' }));
          if (typeof data.nodes_error === 'string') {
            section.append(el('p', { class: 'warning', role: 'status', text: `Cannot read the nodes from etcd: ${data.nodes_error}` }));
          } else if (Array.isArray(data.nodes)) {
            section.append(el('table', { id: 'cluster-nodes' },
              el('thead', {}, el('tr', {}, ['Node', 'Status', 'Since', 'Services', 'Keys', 'Lease'].map((h) => el('th', { scope: 'col', text: h })))),
              el('tbody', {}, data.nodes.map((n) => el('tr', { 'data-node': String(n.node), 'data-status': String(n.status) },
                el('td', { text: String(n.node) }),
                el('td', { text: String(n.status) }),
                el('td', {}, timeEl(n.removed_at ?? n.since)),
                el('td', { text: list(n.services) }),
                el('td', { text: String(n.keys ?? 0) }),
                el('td', { text: typeof n.lease === 'number' ? n.lease.toString(16) : '–' }))))));
          } else {
            section.append(el('p', { class: 'muted', text: 'Start the console with --etcd to list the nodes.' }));
          }
          section.append(el('h2', { text: 'identity' }), kv(data.identity),
            el('h2', { text: 'registry' }), data.registry ? kv(data.registry) : el('p', { class: 'muted', text: 'The registry reports no cluster state.' }));
        }
      }
      ctx.ready();
    });
  }

  // ---- Start --------------------------------------------------------------------------

  function start() {
    session().then((s) => {
      document.getElementById('node-id').textContent = `node ${s.node_id ?? '?'} · uid ${s.uid ?? '?'}`;
    }, (e) => setError('session', e.message));
    window.addEventListener('hashchange', () => route(true));
    route(false);
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
