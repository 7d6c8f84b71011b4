// Sunfish-rs web console. Plain JavaScript, no framework and no downloads: the server builds
// this file into its binary. Everything shown is read through the Redfish API with the
// operator's own session token; /ui/api/access says which buttons that session may use.
'use strict';

const ROOT = '/redfish/v1';
const SESSIONS = '/redfish/v1/SessionService/Sessions';
const SOURCES = '/redfish/v1/AggregationService/AggregationSources';
const SUBSCRIPTIONS = '/redfish/v1/EventService/Subscriptions';
const SSE_PATH = '/redfish/v1/EventService/SSE';
const FABRICS = '/redfish/v1/Fabrics';
const ACCESS_PATH = '/ui/api/access';
const EXPAND = '?$expand=.($levels=1)';
const TAIL_KEEP = 200;
const REFRESH_MS = 2000;
const SVG_NS = 'http://www.w3.org/2000/svg';

const state = {
  token: sessionStorage.getItem('sunfish.token'),
  session: sessionStorage.getItem('sunfish.session'),
  who: null,
  gen: 0, // bumped on every navigation: async work of an older view stops drawing
  timer: null,
  tail: [], // newest first
  tailStatus: 'closed',
  lastEventId: null,
  sse: null,
};

const $ = (id) => document.getElementById(id);

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'onclick') e.addEventListener('click', v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
  for (const c of children) if (c) e.append(c);
  return e;
}

function toast(text, bad = false) {
  const t = $('toast');
  t.textContent = text;
  t.className = 'show' + (bad ? ' bad' : '');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ''; }, 4000);
}

// Every request of the console. `credentials: 'omit'`: the console authenticates with its
// X-Auth-Token header only, and a fetch that sends no browser credentials never makes the
// browser pop up its own Basic login box on a 401 (the service's WWW-Authenticate challenge).
function send(url, init = {}) {
  return fetch(url, { credentials: 'omit', cache: 'no-store', ...init });
}

function authHeaders() {
  return state.token ? { 'X-Auth-Token': state.token } : {};
}

// One Redfish request. Answers {status, ok, headers, body} (body parsed when JSON).
async function api(method, path, { body, ifMatch } = {}) {
  const headers = { Accept: 'application/json', ...authHeaders() };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (ifMatch) headers['If-Match'] = ifMatch;
  const r = await send(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = text; }
  }
  if (r.status === 401 && state.who && state.who.AuthEnabled) sessionExpired();
  return { status: r.status, ok: r.ok, headers: r.headers, body: data };
}

// The message of a Redfish error response.
function errorText(res) {
  const e = res.body && res.body.error;
  if (!e) return `HTTP ${res.status}`;
  const info = (e['@Message.ExtendedInfo'] || []).map((m) => m.Message).filter(Boolean);
  return `HTTP ${res.status}: ${info.length ? info.join(' ') : e.message}`;
}

async function accessFor(path) {
  const r = await send(`${ACCESS_PATH}?path=${encodeURIComponent(path)}`, { headers: authHeaders() });
  if (!r.ok) return null;
  return r.json();
}

// ---- session -------------------------------------------------------------------------------

async function boot() {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  window.addEventListener('hashchange', route);
  const who = await accessFor(ROOT);
  if (who) signedIn(who);
  else showLogin();
}

function showLogin(message) {
  stopView();
  stopTail();
  state.who = null;
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('who').textContent = '';
  $('view').replaceChildren();
  $('login-view').hidden = false;
  $('login-error').textContent = message || '';
  $('login-user').focus();
}

async function login(ev) {
  ev.preventDefault();
  $('login-error').textContent = '';
  const r = await send(SESSIONS, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ UserName: $('login-user').value, Password: $('login-password').value }),
  });
  if (!r.ok) {
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    $('login-error').textContent = r.status === 401 || r.status === 400 ? 'Wrong user name or password.' : errorText({ status: r.status, body });
    return;
  }
  const body = await r.json();
  state.token = r.headers.get('X-Auth-Token');
  state.session = r.headers.get('Location') || body['@odata.id'];
  sessionStorage.setItem('sunfish.token', state.token);
  sessionStorage.setItem('sunfish.session', state.session);
  $('login-password').value = '';
  const who = await accessFor(ROOT);
  if (who) signedIn(who);
  else showLogin('The session was refused.');
}

async function logout() {
  if (state.session && state.token) await api('DELETE', new URL(state.session, location.href).pathname);
  forget();
  showLogin('Logged out.');
}

function forget() {
  state.token = null;
  state.session = null;
  sessionStorage.removeItem('sunfish.token');
  sessionStorage.removeItem('sunfish.session');
}

function sessionExpired() {
  forget();
  showLogin('The session ended; log in again.');
}

function signedIn(who) {
  state.who = who;
  $('login-view').hidden = true;
  $('nav').hidden = false;
  $('logout').hidden = !who.AuthEnabled;
  $('who').textContent = who.AuthEnabled ? `${who.UserName} (${who.RoleId})` : 'authentication off';
  $('who').title = who.AuthEnabled ? `Privileges: ${who.Privileges.join(', ')}` : '';
  startTail();
  route();
}

// ---- navigation ----------------------------------------------------------------------------

function stopView() {
  state.gen += 1;
  clearTimeout(state.timer);
  state.timer = null;
}

function route() {
  if (!state.who) return;
  stopView();
  const gen = state.gen;
  const hash = decodeURIComponent(location.hash.slice(1)) || '/tree' + ROOT;
  const view = hash.split('/')[1];
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === view);
  const rest = hash.slice(view.length + 1);
  const run = { tree: () => viewTree(gen, rest || ROOT), agents: () => viewAgents(gen), fabric: () => viewFabric(gen, rest || null), events: () => viewEvents(gen) }[view];
  (run || (() => viewTree(gen, ROOT)))().catch((e) => show(gen, el('p', { class: 'error', text: `The view failed: ${e}` })));
}

function current(gen) {
  return gen === state.gen;
}

function show(gen, ...nodes) {
  if (current(gen)) $('view').replaceChildren(...nodes);
}

// Re-runs `draw` every REFRESH_MS while the view is open.
function every(gen, draw) {
  const tick = async () => {
    if (!current(gen)) return;
    try { await draw(); } catch (e) { console.warn(e); }
    if (current(gen)) state.timer = setTimeout(tick, REFRESH_MS);
  };
  return tick();
}

function treeLink(path, text) {
  return el('a', { href: '#/tree' + encodeURI(path), text: text || path });
}

// ---- tree ----------------------------------------------------------------------------------

// Pretty JSON as HTML, with every resource path a link into the tree.
function jsonHtml(v, indent = '') {
  const next = indent + '  ';
  if (Array.isArray(v)) {
    if (!v.length) return '[]';
    return '[\n' + v.map((x) => next + jsonHtml(x, next)).join(',\n') + '\n' + indent + ']';
  }
  if (v && typeof v === 'object') {
    const keys = Object.keys(v);
    if (!keys.length) return '{}';
    return '{\n' + keys.map((k) => `${next}<span class="j-key">${esc(JSON.stringify(k))}</span>: ${jsonHtml(v[k], next)}`).join(',\n') + '\n' + indent + '}';
  }
  if (typeof v === 'string') {
    const s = esc(JSON.stringify(v));
    if (v.startsWith(ROOT) && !/\s/.test(v)) return `<a class="j-str" href="#/tree${esc(encodeURI(v.split('#')[0]))}">${s}</a>`;
    return `<span class="j-str">${s}</span>`;
  }
  if (typeof v === 'number') return `<span class="j-num">${v}</span>`;
  return `<span class="j-lit">${esc(JSON.stringify(v))}</span>`;
}

function crumbs(path) {
  const parts = path.split('/').filter(Boolean);
  const out = el('div', { class: 'crumbs' });
  let acc = '';
  parts.forEach((p, i) => {
    acc += '/' + p;
    if (i) out.append(' / ');
    out.append(i < 1 ? el('span', { text: p }) : treeLink(acc, p));
  });
  return out;
}

// The editable view of a resource: without OData annotations, which a client never sets.
function editable(v) {
  if (Array.isArray(v)) return v.map(editable);
  if (v && typeof v === 'object') {
    const o = {};
    for (const [k, x] of Object.entries(v)) if (!k.startsWith('@odata.') && !k.includes('@odata.')) o[k] = editable(x);
    return o;
  }
  return v;
}

const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// The JSON merge patch (RFC 7386) that turns `a` into `b`; undefined when they are equal.
function mergeDiff(a, b) {
  if (!isObj(a) || !isObj(b)) return JSON.stringify(a) === JSON.stringify(b) ? undefined : b;
  const out = {};
  let any = false;
  for (const k of Object.keys(b)) {
    const d = k in a ? mergeDiff(a[k], b[k]) : b[k];
    if (d !== undefined) { out[k] = d; any = true; }
  }
  for (const k of Object.keys(a)) if (!(k in b)) { out[k] = null; any = true; }
  return any ? out : undefined;
}

function confirmDialog(text) {
  const d = $('confirm');
  $('confirm-text').textContent = text;
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'yes'), { once: true });
    d.returnValue = '';
    d.showModal();
  });
}

async function viewTree(gen, path) {
  const [res, acc] = await Promise.all([api('GET', path), accessFor(path)]);
  if (!current(gen)) return;
  const head = el('div', {}, crumbs(path));
  if (!res.ok) {
    show(gen, el('section', { class: 'panel' }, head, el('p', { class: 'error', id: 'tree-error', text: errorText(res) })));
    return;
  }
  const etag = res.headers.get('ETag');
  const allow = (res.headers.get('Allow') || 'GET').split(',').map((s) => s.trim().toUpperCase());
  const may = (m) => allow.includes(m) && acc && acc.Allowed && acc.Allowed[m];
  const why = (m) => (!allow.includes(m) ? `The resource does not support ${m}` : `Your role lacks the privilege for ${m}`);
  const meta = el('div', { class: 'meta', id: 'tree-meta', text: `HTTP ${res.status} · ETag ${etag || '(none)'} · Allow ${allow.join(', ')}` });
  const json = el('pre', { class: 'json', id: 'tree-json' });
  json.innerHTML = jsonHtml(res.body);
  const editor = el('div', { id: 'editor', hidden: true });
  const actions = el('div', { class: 'actions' },
    el('button', { id: 'edit-button', type: 'button', disabled: !may('PATCH'), title: may('PATCH') ? 'Edit (PATCH with If-Match)' : why('PATCH'), onclick: () => openEditor(gen, path, res.body, etag, editor, json) }, 'Edit'),
    el('button', { id: 'delete-button', type: 'button', class: 'danger', disabled: !may('DELETE'), title: may('DELETE') ? 'Delete (asks first)' : why('DELETE'), onclick: () => remove(gen, path, etag) }, 'Delete'),
    el('button', { id: 'reload-button', type: 'button', class: 'secondary', onclick: () => viewTree(gen, path) }, 'Reload'));
  show(gen, el('section', { class: 'panel', 'data-path': path }, head, meta, actions, editor, json));
}

function openEditor(gen, path, body, etag, editor, json) {
  const original = editable(body);
  const area = el('textarea', { id: 'edit-body', spellcheck: 'false' });
  area.value = JSON.stringify(original, null, 2);
  const error = el('p', { class: 'error', id: 'edit-error' });
  const save = async () => {
    error.textContent = '';
    let edited;
    try { edited = JSON.parse(area.value); } catch (e) { error.textContent = `Not JSON: ${e.message}`; return; }
    const patch = mergeDiff(original, edited);
    if (patch === undefined) { error.textContent = 'Nothing changed.'; return; }
    const r = await api('PATCH', path, { body: patch, ifMatch: etag });
    if (r.status === 412) { error.textContent = 'The resource changed since it was loaded (ETag mismatch): reload it and edit again.'; return; }
    if (!r.ok && r.status !== 202) { error.textContent = errorText(r); return; }
    toast(r.status === 202 ? `PATCH accepted as a task: ${r.headers.get('Location') || ''}` : `Saved ${path}`);
    if (current(gen)) viewTree(gen, path);
  };
  editor.replaceChildren(
    el('p', { class: 'muted', text: 'Change properties below; the console sends only what changed, as a JSON merge patch with If-Match.' }),
    area,
    el('div', { class: 'actions' },
      el('button', { id: 'edit-save', type: 'button', onclick: save }, 'Save (PATCH)'),
      el('button', { id: 'edit-cancel', type: 'button', class: 'secondary', onclick: () => { editor.hidden = true; json.hidden = false; } }, 'Cancel')),
    error);
  editor.hidden = false;
  json.hidden = true;
  area.focus();
}

async function remove(gen, path, etag) {
  if (!(await confirmDialog(`Delete ${path}? This cannot be undone.`))) return;
  const r = await api('DELETE', path, { ifMatch: etag });
  if (!r.ok) { toast(errorText(r), true); return; }
  toast(`Deleted ${path}`);
  const parent = path.replace(/\/[^/]+\/?$/, '') || ROOT;
  if (current(gen)) location.hash = '#/tree' + encodeURI(parent);
}

// ---- collections ---------------------------------------------------------------------------

// Every member of a collection, expanded (one request when the service expands, else one per member).
async function members(uri) {
  const r = await api('GET', uri + EXPAND);
  if (!r.ok) return [];
  const list = (r.body && r.body.Members) || [];
  return Promise.all(list.map(async (m) => {
    if (Object.keys(m).length > 1) return m;
    const one = await api('GET', m['@odata.id']);
    return one.ok ? one.body : m;
  }));
}

const link = (v) => (v && v['@odata.id']) || null;
const links = (arr) => (Array.isArray(arr) ? arr.map(link).filter(Boolean) : []);
const last = (uri) => (uri || '').split('/').filter(Boolean).pop() || '';

function ago(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

function stateCell(status) {
  const s = (status && status.State) || '—';
  return el('td', { class: `state-${s}`, 'data-col': 'state', text: s });
}

// ---- agents --------------------------------------------------------------------------------

async function viewAgents(gen) {
  const body = el('tbody');
  const updated = el('span', { class: 'muted' });
  show(gen, el('section', { class: 'panel' },
    el('h2', {}, 'Agents ', updated),
    el('p', { class: 'muted', text: 'Every AggregationSource: an agent registered with this service. Refreshes every 2 s.' }),
    el('table', { id: 'agents' },
      el('thead', {}, el('tr', {}, ...['Agent', 'Connection method', 'Host', 'State', 'Health', 'Last seen', 'Resources', 'Sync'].map((h) => el('th', { text: h })))),
      body)));
  await every(gen, async () => {
    const list = await members(SOURCES);
    if (!current(gen)) return;
    updated.textContent = `(${list.length}; ${new Date().toLocaleTimeString()})`;
    body.replaceChildren(...(list.length ? list.map(agentRow) : [el('tr', {}, el('td', { colspan: 8, class: 'muted', text: 'No agent has registered.' }))]));
  });
}

function agentRow(a) {
  const rm = (a.Oem && a.Oem.Sunfish_RM) || {};
  const sync = rm.Sync || {};
  const topmost = links(a.Links && a.Links.ResourcesAccessed).length;
  const syncCell = el('td', { 'data-col': 'sync' });
  if (sync.State) {
    syncCell.append(el('span', { class: `sync-${sync.State}`, text: sync.State }), ' ');
    if (sync.State === 'Running') syncCell.append(el('span', { class: 'bar' }, el('span', { class: 'bar-run' })), ' ');
    syncCell.append(`${sync.ResourcesFetched ?? 0} fetched, ${sync.Errors ?? 0} errors`);
    const end = sync.FinishedAt ? Date.parse(sync.FinishedAt) - Date.parse(sync.StartedAt) : null;
    syncCell.append(el('div', { class: 'muted', text: `started ${sync.StartedAt || '?'}${end !== null && !Number.isNaN(end) ? `, took ${end} ms` : ''}` }));
  } else {
    syncCell.append(el('span', { class: 'muted', text: 'no crawl yet' }));
  }
  const health = (a.Status && a.Status.Health) || '—';
  return el('tr', { 'data-agent': a.Id, 'data-state': (a.Status && a.Status.State) || '' },
    el('td', {}, treeLink(a['@odata.id'], a.Name || a.Id)),
    el('td', { text: last(link(a.Links && a.Links.ConnectionMethod)) }),
    el('td', { text: a.HostName || '' }),
    stateCell(a.Status),
    el('td', { class: `health-${health}`, text: health }),
    el('td', { text: rm.LastSeen ? `${ago(rm.LastSeen)}` : '—', title: rm.LastSeen || '' }),
    el('td', { text: `${sync.ResourcesFetched ?? '—'} (${topmost} topmost)` }),
    syncCell);
}

// ---- fabric --------------------------------------------------------------------------------

async function viewFabric(gen, wanted) {
  const fabrics = await members(FABRICS);
  if (!current(gen)) return;
  if (!fabrics.length) { show(gen, el('section', { class: 'panel' }, el('p', { text: 'No fabrics.' }))); return; }
  const fabric = fabrics.find((f) => f['@odata.id'] === wanted) || fabrics[0];
  const select = el('select', { id: 'fabric-select' }, ...fabrics.map((f) => el('option', { value: f['@odata.id'], selected: f === fabric, text: f.Id || f['@odata.id'] })));
  select.addEventListener('change', () => { location.hash = '#/fabric' + encodeURI(select.value); });
  const status = el('p', { class: 'muted', text: 'Loading switches, ports, endpoints and connections…' });
  show(gen, el('section', { class: 'panel' }, el('h2', {}, 'Fabric ', select), status));
  const [switches, endpoints, connections] = await Promise.all([
    link(fabric.Switches) ? members(link(fabric.Switches)) : [],
    link(fabric.Endpoints) ? members(link(fabric.Endpoints)) : [],
    link(fabric.Connections) ? members(link(fabric.Connections)) : [],
  ]);
  const ports = await Promise.all(switches.map((s) => (link(s.Ports) ? members(link(s.Ports)) : [])));
  if (!current(gen)) return;
  const graph = fabricGraph(switches, ports, endpoints, connections);
  const count = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  status.textContent = `${count(switches.length, 'switch', 'switches')}, ${count(ports.flat().length, 'port', 'ports')}, `
    + `${count(endpoints.length, 'endpoint', 'endpoints')}, ${count(connections.length, 'connection', 'connections')}. `
    + 'Click a shape to open the resource.';
  const list = el('ul', { id: 'fabric-links' }, ...graph.isls.map((e) =>
    el('li', { class: 'isl-link', 'data-switches': `${e.a.sw.Id} ${e.b.sw.Id}` }, `${e.a.sw.Id} ${e.a.port.Id} ⟷ ${e.b.sw.Id} ${e.b.port.Id}`)));
  const legend = el('p', { class: 'legend' }, el('span', { class: 'k-isl', text: '━ inter-switch link' }), el('span', { class: 'k-att', text: '─ endpoint attachment' }), el('span', { class: 'k-conn', text: '╌ connection' }));
  show(gen, el('section', { class: 'panel', 'data-fabric': fabric['@odata.id'] }, el('h2', {}, 'Fabric ', select), status, graph.svg, legend, el('h2', { text: 'Inter-switch links' }), list));
}

// Lays the fabric out: initiators on top, switches in a row, targets below; ports on the switch
// edges facing what they connect to. Returns the SVG and the inter-switch links found.
function fabricGraph(switches, portLists, endpoints, connections) {
  const port = new Map(); // port URI -> {port, sw, index}
  switches.forEach((sw, i) => (portLists[i] || []).forEach((p) => port.set(p['@odata.id'], { port: p, sw, i })));
  const epByUri = new Map(endpoints.map((e) => [e['@odata.id'], e]));
  const role = (e) => ((e.ConnectedEntities || [])[0] || {}).EntityRole || (/target/i.test(e.Id || '') ? 'Target' : 'Initiator');
  // Endpoint attachments, from either side.
  const attach = new Map(); // endpoint URI -> Set(port URI)
  const add = (e, p) => { if (epByUri.has(e) && port.has(p)) { if (!attach.has(e)) attach.set(e, new Set()); attach.get(e).add(p); } };
  for (const e of endpoints) for (const p of links(e.Links && e.Links.ConnectedPorts)) add(e['@odata.id'], p);
  for (const [uri, { port: p }] of port) for (const e of links(p.Links && p.Links.AssociatedEndpoints)) add(e, uri);
  // Inter-switch links: a port naming a peer port (or only a peer switch).
  const isls = [];
  const seen = new Set();
  for (const [uri, a] of port) {
    const peers = links(a.port.Links && a.port.Links.ConnectedSwitchPorts).filter((u) => port.has(u));
    for (const peer of peers) {
      const key = [uri, peer].sort().join(' ');
      if (seen.has(key)) continue;
      seen.add(key);
      isls.push({ a, b: port.get(peer) });
    }
  }
  // Which edge each port sits on.
  const side = new Map();
  for (const [uri, a] of port) {
    const isl = isls.find((e) => e.a === a || e.b === a);
    if (isl) { const other = isl.a === a ? isl.b : isl.a; side.set(uri, other.i > a.i ? 'right' : 'left'); continue; }
    const eps = [...attach].filter(([, ps]) => ps.has(uri)).map(([e]) => epByUri.get(e));
    side.set(uri, eps.some((e) => role(e) === 'Target') ? 'bottom' : eps.length ? 'top' : 'bottom');
  }
  const perRow = ['Initiator', 'Target'].map((r) => endpoints.filter((e) => (role(e) === 'Target' ? 'Target' : 'Initiator') === r).length);
  const W = Math.max(960, switches.length * 460, Math.max(...perRow) * 120 + 60);
  const SY = 260;
  const pos = new Map(); // port URI -> {x, y}
  const swBox = [];
  switches.forEach((sw, i) => {
    const mine = [...port].filter(([, a]) => a.i === i).map(([u]) => u).sort();
    const by = (s) => mine.filter((u) => side.get(u) === s);
    const [top, bottom, left, right] = ['top', 'bottom', 'left', 'right'].map(by);
    const w = Math.max(220, Math.max(top.length, bottom.length) * 34 + 40);
    const h = Math.max(90, Math.max(left.length, right.length) * 30 + 40);
    const cx = (W * (i + 0.5)) / switches.length;
    const x = cx - w / 2;
    const y = SY - h / 2;
    swBox.push({ sw, x, y, w, h });
    top.forEach((u, k) => pos.set(u, { x: x + ((k + 1) * w) / (top.length + 1), y }));
    bottom.forEach((u, k) => pos.set(u, { x: x + ((k + 1) * w) / (bottom.length + 1), y: y + h }));
    left.forEach((u, k) => pos.set(u, { x, y: y + ((k + 1) * h) / (left.length + 1) }));
    right.forEach((u, k) => pos.set(u, { x: x + w, y: y + ((k + 1) * h) / (right.length + 1) }));
  });
  const maxH = Math.max(90, ...swBox.map((b) => b.h));
  const rows = { Initiator: 50, Target: SY + maxH / 2 + 150 };
  const epPos = new Map();
  for (const r of ['Initiator', 'Target']) {
    const row = endpoints.filter((e) => (role(e) === 'Target' ? 'Target' : 'Initiator') === r);
    const want = row.map((e) => {
      const ps = [...(attach.get(e['@odata.id']) || [])].map((u) => pos.get(u)).filter(Boolean);
      return { e, x: ps.length ? ps.reduce((s, p) => s + p.x, 0) / ps.length : W / 2 };
    }).sort((a, b) => a.x - b.x);
    // Spread to at least 120 px apart, keeping the order.
    want.forEach((w, k) => { if (k && w.x < want[k - 1].x + 120) w.x = want[k - 1].x + 120; });
    const over = want.length ? want[want.length - 1].x + 60 - W : 0;
    if (over > 0) want.forEach((w) => { w.x -= over; });
    want.forEach((w) => epPos.set(w.e['@odata.id'], { x: Math.max(60, w.x), y: rows[r] }));
  }
  const H = rows.Target + 70;
  const root = svg('svg', { class: 'fabric', id: 'fabric-graph', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Fabric graph' });
  const open = (uri, child) => { const a = svg('a', { href: '#/tree' + encodeURI(uri) }, child); return a; };
  // Connections first (underneath): initiator endpoint to target endpoint.
  for (const c of connections) {
    const ins = links(c.Links && c.Links.InitiatorEndpoints);
    const outs = links(c.Links && c.Links.TargetEndpoints);
    for (const i of ins) for (const t of outs) {
      const a = epPos.get(i); const b = epPos.get(t);
      if (!a || !b) continue;
      const d = `M ${a.x} ${a.y + 16} C ${a.x - 140} ${(a.y + b.y) / 2}, ${b.x - 140} ${(a.y + b.y) / 2}, ${b.x} ${b.y - 16}`;
      root.append(open(c['@odata.id'], svg('path', { class: 'connection', d, 'data-connection': c.Id }, svg('title', {}, `Connection ${c.Id}`))));
    }
  }
  for (const [e, ps] of attach) for (const p of ps) {
    const a = epPos.get(e); const b = pos.get(p);
    if (a && b) root.append(svg('line', { class: 'attach', x1: a.x, y1: a.y + (a.y < b.y ? 16 : -16), x2: b.x, y2: b.y, 'data-endpoint': last(e), 'data-port': last(p) }));
  }
  for (const e of isls) {
    const a = pos.get(e.a.port['@odata.id']); const b = pos.get(e.b.port['@odata.id']);
    if (!a || !b) continue;
    root.append(svg('line', { class: 'isl', x1: a.x, y1: a.y, x2: b.x, y2: b.y, 'data-from-switch': e.a.sw.Id, 'data-to-switch': e.b.sw.Id, 'data-from-port': e.a.port.Id, 'data-to-port': e.b.port.Id },
      svg('title', {}, `${e.a.sw.Id} ${e.a.port.Id} ⟷ ${e.b.sw.Id} ${e.b.port.Id}`)));
  }
  for (const b of swBox) {
    const g = svg('g', { class: 'switch', 'data-switch': b.sw.Id },
      svg('rect', { x: b.x, y: b.y, width: b.w, height: b.h, rx: 8 }),
      svg('text', { class: 'name', x: b.x + b.w / 2, y: b.y + b.h / 2 - 2, 'text-anchor': 'middle' }, b.sw.Id),
      svg('text', { x: b.x + b.w / 2, y: b.y + b.h / 2 + 14, 'text-anchor': 'middle' }, b.sw.SwitchType || b.sw.Name || ''));
    root.append(open(b.sw['@odata.id'], g));
  }
  for (const [uri, a] of port) {
    const p = pos.get(uri);
    if (!p) continue;
    const boundary = ((a.port.Oem || {}).Sunfish_RM || {}).BoundaryComponent === 'BoundaryPort';
    const up = a.port.LinkStatus ? a.port.LinkStatus === 'LinkUp' : true;
    const s = side.get(uri);
    const dx = s === 'left' ? -10 : s === 'right' ? 10 : 0;
    const dy = s === 'top' ? -10 : s === 'bottom' ? 18 : -9;
    const g = svg('g', { class: `port${boundary ? ' boundary' : ''}${up ? '' : ' down'}`, 'data-switch': a.sw.Id, 'data-port': a.port.Id },
      svg('circle', { cx: p.x, cy: p.y, r: 7 }),
      svg('text', { x: p.x + dx, y: p.y + dy, 'text-anchor': s === 'left' ? 'end' : s === 'right' ? 'start' : 'middle' }, a.port.Id),
      svg('title', {}, `${a.sw.Id} port ${a.port.Id}${a.port.LinkStatus ? ` (${a.port.LinkStatus})` : ''}`));
    root.append(open(uri, g));
  }
  for (const e of endpoints) {
    const p = epPos.get(e['@odata.id']);
    if (!p) continue;
    const target = role(e) === 'Target';
    const g = svg('g', { class: `endpoint${target ? ' target' : ''}`, 'data-endpoint': e.Id },
      svg('rect', { x: p.x - 52, y: p.y - 16, width: 104, height: 32, rx: 5 }),
      svg('text', { x: p.x, y: p.y + 4, 'text-anchor': 'middle' }, e.Id),
      svg('title', {}, `${role(e)} endpoint ${e.Id}`));
    root.append(open(e['@odata.id'], g));
  }
  return { svg: root, isls };
}

// ---- events --------------------------------------------------------------------------------

async function viewEvents(gen) {
  const body = el('tbody');
  const tail = el('ul', { class: 'tail', id: 'tail' });
  const tailStatus = el('span', { id: 'tail-status', class: 'muted' });
  // Agents send a heartbeat every few seconds: hidden unless asked for.
  const hideBeats = el('input', { type: 'checkbox', id: 'tail-hide-heartbeats', checked: true });
  const match = el('input', { type: 'search', id: 'tail-filter', placeholder: 'MessageId, origin or text' });
  show(gen,
    el('section', { class: 'panel' },
      el('h2', { text: 'Subscriptions' }),
      el('table', { id: 'subscriptions' },
        el('thead', {}, el('tr', {}, ...['Subscription', 'Destination', 'Protocol', 'State', 'Delivery'].map((h) => el('th', { text: h })))),
        body)),
    el('section', { class: 'panel' },
      el('h2', {}, 'Live events ', tailStatus),
      el('p', { class: 'muted', text: `Server-Sent Events from ${SSE_PATH}, newest first (kept since login, last ${TAIL_KEEP}).` }),
      el('p', { class: 'actions' },
        el('label', {}, hideBeats, ' hide heartbeats'),
        el('label', {}, 'filter ', match)),
      tail));
  const shown = (ev) => {
    if (hideBeats.checked && /^HeartbeatEvent\./.test(ev.MessageId || '')) return false;
    const want = match.value.trim().toLowerCase();
    return !want || `${ev.MessageId || ''} ${link(ev.OriginOfCondition) || ''} ${ev.Message || ''}`.toLowerCase().includes(want);
  };
  state.drawTail = () => {
    tailStatus.textContent = `(${state.tailStatus})`;
    tail.replaceChildren(...state.tail.filter(shown).map(tailItem));
  };
  for (const input of [hideBeats, match]) input.addEventListener('input', () => state.drawTail());
  state.drawTail();
  await every(gen, async () => {
    const list = await members(SUBSCRIPTIONS);
    if (!current(gen)) return;
    body.replaceChildren(...(list.length ? list.map(subscriptionRow) : [el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'No subscriptions.' }))]));
  });
}

function subscriptionRow(s) {
  const delivery = ((s.Oem || {}).Sunfish || {}).Delivery || {};
  return el('tr', { 'data-subscription': s.Id },
    el('td', {}, treeLink(s['@odata.id'], s.Id)),
    el('td', { text: s.Destination || '' }),
    el('td', { text: s.Protocol || '' }),
    stateCell(s.Status),
    el('td', { class: 'counters' }, ...Object.entries(delivery).filter(([k]) => !k.startsWith('@')).map(([k, v]) => el('span', { 'data-counter': k, text: `${k} ${typeof v === 'object' ? JSON.stringify(v) : v}` }))));
}

function tailItem(ev) {
  const origin = link(ev.OriginOfCondition) || '';
  return el('li', { 'data-message-id': ev.MessageId || '', 'data-origin': origin },
    el('span', { class: 'when', text: ev.EventTimestamp || '' }),
    `${ev.MessageId || ''} `, origin ? treeLink(origin) : '', ev.Message ? ` — ${ev.Message}` : '');
}

function setTailStatus(s) {
  state.tailStatus = s;
  if (state.drawTail && location.hash.startsWith('#/events')) state.drawTail();
}

// The live tail runs from login to logout, whatever view is open, so the events view shows
// what happened while the operator was editing elsewhere. fetch streaming, not EventSource:
// EventSource cannot send the X-Auth-Token header.
function startTail() {
  if (state.sse) return;
  const ctl = new AbortController();
  state.sse = ctl;
  const run = async () => {
    while (!ctl.signal.aborted) {
      try {
        setTailStatus('connecting');
        const headers = { Accept: 'text/event-stream', ...authHeaders() };
        if (state.lastEventId) headers['Last-Event-ID'] = state.lastEventId;
        const r = await send(SSE_PATH, { headers, signal: ctl.signal });
        if (!r.ok || !r.body) { setTailStatus(`unavailable: HTTP ${r.status}`); if (r.status === 401 || r.status === 403 || r.status === 405) return; }
        else {
          setTailStatus('live');
          const reader = r.body.getReader();
          const dec = new TextDecoder();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
            let cut;
            while ((cut = buf.indexOf('\n\n')) >= 0) {
              sseMessage(buf.slice(0, cut));
              buf = buf.slice(cut + 2);
            }
          }
          setTailStatus('reconnecting');
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        setTailStatus('reconnecting');
      }
      await new Promise((ok) => setTimeout(ok, 1000));
    }
  };
  run();
}

function stopTail() {
  if (state.sse) state.sse.abort();
  state.sse = null;
  state.tail = [];
  state.lastEventId = null;
  state.tailStatus = 'closed';
}

function sseMessage(raw) {
  const data = [];
  for (const line of raw.split('\n')) {
    if (line.startsWith(':')) continue; // keep-alive comment
    const at = line.indexOf(':');
    const field = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? '' : line.slice(at + 1).replace(/^ /, '');
    if (field === 'data') data.push(value);
    else if (field === 'id') state.lastEventId = value;
  }
  if (!data.length) return;
  let envelope;
  try { envelope = JSON.parse(data.join('\n')); } catch (_) { return; }
  for (const ev of envelope.Events || []) state.tail.unshift(ev);
  state.tail.length = Math.min(state.tail.length, TAIL_KEEP);
  if (state.drawTail && location.hash.startsWith('#/events')) state.drawTail();
}

boot();
