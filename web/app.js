// Hilot live dispatch map: an admin logs in, the page follows therapists and bookings over the
// dashboard WebSocket and polls two HTTP endpoints for the hexagon layer and the side panel.
// Plain ES2020, no build step: Hilot serves this file as it is at /assets/app.js.
'use strict';

(() => {
  const CONFIG = {
    center: [14.5547, 121.0244], // Makati, Metro Manila
    zoom: 13,
    statsEveryMs: 2000,
    hexesEveryMs: 5000,
    reconnectFirstMs: 1000,
    reconnectMaxMs: 30000,
    // An ended booking stays on the map this long, so the change is seen before it goes.
    endedBookingLingerMs: 5000,
  };
  const TOKEN_KEY = 'hilot.dashboard.token';
  const ENDED = new Set(['completed', 'cancelled', 'no_show']);

  const $ = (id) => document.getElementById(id);
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  // --- session --------------------------------------------------------------------------------
  // The token lives in sessionStorage: it survives a reload but not the closing of the tab.
  let token = sessionStorage.getItem(TOKEN_KEY);

  // --- the map ----------------------------------------------------------------------------------
  const map = L.map('map', { center: CONFIG.center, zoom: CONFIG.zoom });
  // console.js (base map, stores, search, alerts, booking detail) works on the same map.
  window.hilotMap = map;
  window.hilotSession = { token: () => token };
  const tell = (name, detail) => document.dispatchEvent(new CustomEvent(`hilot:${name}`, { detail }));
  // No tiles: panes stack the grid under the hexagons, the hexagons under lines and markers.
  map.createPane('graticule').style.zIndex = 200;
  map.createPane('hexes').style.zIndex = 350;

  const graticule = L.layerGroup().addTo(map);
  const hexLayer = L.geoJSON(null, {
    pane: 'hexes',
    style: hexStyle,
    onEachFeature: (feature, layer) => {
      const { supply = 0, demand = 0 } = feature.properties || {};
      layer.bindTooltip(`supply ${supply} · open demand ${demand}`, { sticky: true });
    },
  }).addTo(map);

  /** provider_id → { marker, data } */
  const providers = new Map();
  /** booking_id → { marker, data, link, removeTimer } */
  const bookings = new Map();

  // One icon per marker kind; each marker gets its own element from it, which we then label.
  const therapistIcon = L.divIcon({
    className: 'therapist-marker',
    iconSize: [26, 26],
    iconAnchor: [13, 13],
    // Drawn pointing north; turned by the heading. A dot replaces it when there is no heading.
    html:
      '<svg viewBox="-13 -13 26 26" aria-hidden="true">' +
      '<path class="arrow" d="M0,-11 L8,9 L0,4 L-8,9 Z"/>' +
      '<circle class="dot" r="7"/>' +
      '</svg>',
  });
  const bookingIcon = L.divIcon({
    className: 'booking-marker',
    iconSize: [20, 20],
    iconAnchor: [10, 10],
    html: '<span class="pin"></span><span class="label"></span>',
  });

  // A faint lat/lng grid so the plain background still shows movement and scale.
  function drawGraticule() {
    graticule.clearLayers();
    const view = map.getBounds();
    const step = niceStep((view.getEast() - view.getWest()) / 16);
    const bounds = view.pad(0.5); // drawn past the edges so panning shows no gaps
    const style = { pane: 'graticule', color: '#cfd3d9', weight: 1, interactive: false };
    for (let lng = Math.floor(bounds.getWest() / step) * step; lng <= bounds.getEast(); lng += step) {
      graticule.addLayer(L.polyline([[bounds.getSouth(), lng], [bounds.getNorth(), lng]], style));
    }
    for (let lat = Math.floor(bounds.getSouth() / step) * step; lat <= bounds.getNorth(); lat += step) {
      graticule.addLayer(L.polyline([[lat, bounds.getWest()], [lat, bounds.getEast()]], style));
    }
  }

  function niceStep(rough) {
    const steps = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20];
    return steps.find((s) => s >= rough) || 30;
  }

  /** The view as [west, south, east, north], clamped to valid coordinates. */
  function currentBbox() {
    const b = map.getBounds();
    const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
    const round = (v) => Math.round(v * 1e6) / 1e6;
    // Longitudes go as the map has them: the server wraps them, takes a box wider than the
    // world as the whole world, and one crossing the antimeridian as it is.
    return [
      round(b.getWest()),
      round(clamp(b.getSouth(), -90, 90)),
      round(b.getEast()),
      round(clamp(b.getNorth(), -90, 90)),
    ];
  }

  // --- therapists ---------------------------------------------------------------------------------
  function upsertProvider(p) {
    let entry = providers.get(p.provider_id);
    if (!entry) {
      const marker = L.marker([p.lat, p.lng], { icon: therapistIcon, keyboard: false }).addTo(map);
      marker.getElement().dataset.providerId = p.provider_id;
      entry = { marker, data: {} };
      providers.set(p.provider_id, entry);
    } else if (p.lat != null && p.lng != null) {
      entry.marker.setLatLng([p.lat, p.lng]);
    }
    mergeDefined(entry.data, p);
    paintProvider(p.provider_id, entry);
    linksOf(p.provider_id).forEach(updateLink);
  }

  function paintProvider(id, { marker, data }) {
    const el = marker.getElement();
    if (!el) return;
    el.dataset.status = data.status || 'offline';
    const hasHeading = typeof data.heading === 'number';
    el.classList.toggle('no-heading', !hasHeading);
    el.querySelector('svg').style.transform = `rotate(${hasHeading ? data.heading : 0}deg)`;
    const fix = data.at ? `, fix at ${new Date(data.at).toLocaleTimeString()}` : '';
    el.title = `Therapist ${id}: ${data.status || 'unknown'}${fix}`;
  }

  function setProviderStatus(id, status) {
    const entry = providers.get(id);
    if (!entry) return; // not in view: its next move brings it in with its status
    entry.data.status = status;
    paintProvider(id, entry);
  }

  function removeProvider(id) {
    const entry = providers.get(id);
    if (!entry) return;
    entry.marker.remove();
    providers.delete(id);
    linksOf(id).forEach(updateLink);
  }

  // --- bookings -------------------------------------------------------------------------------------
  function upsertBooking(b) {
    let entry = bookings.get(b.booking_id);
    if (!entry) {
      if (b.lat == null || b.lng == null) return; // nowhere to draw it
      const marker = L.marker([b.lat, b.lng], {
        icon: bookingIcon,
        keyboard: false,
        zIndexOffset: 1000, // above therapists: a booking is what people look for
      }).addTo(map);
      marker.getElement().dataset.bookingId = b.booking_id;
      marker.on('click', () => tell('open-booking', { id: b.booking_id }));
      entry = { marker, data: {}, link: null, removeTimer: null };
      bookings.set(b.booking_id, entry);
    } else if (b.lat != null && b.lng != null) {
      entry.marker.setLatLng([b.lat, b.lng]);
    }
    mergeDefined(entry.data, b);

    const { data } = entry;
    const el = entry.marker.getElement();
    el.dataset.status = data.status;
    el.querySelector('.label').textContent = data.booking_number || '';
    el.title = `Booking ${data.booking_number || data.booking_id}: ${humanStatus(data.status)}` +
      (data.reason ? ` (${data.reason})` : '');

    clearTimeout(entry.removeTimer);
    entry.removeTimer = ENDED.has(data.status)
      ? setTimeout(() => removeBooking(b.booking_id), CONFIG.endedBookingLingerMs)
      : null;
    updateLink(entry);
  }

  function removeBooking(id) {
    const entry = bookings.get(id);
    if (!entry) return;
    clearTimeout(entry.removeTimer);
    entry.marker.remove();
    if (entry.link) entry.link.remove();
    bookings.delete(id);
  }

  function linksOf(providerId) {
    return [...bookings.values()].filter((entry) => entry.data.provider_id === providerId);
  }

  /** Draws (or moves, or removes) the line from a booking to its assigned therapist. */
  function updateLink(entry) {
    const therapist = entry.data.provider_id && providers.get(entry.data.provider_id);
    if (!therapist || ENDED.has(entry.data.status)) {
      if (entry.link) entry.link.remove();
      entry.link = null;
      return;
    }
    const ends = [entry.marker.getLatLng(), therapist.marker.getLatLng()];
    if (entry.link) {
      entry.link.setLatLngs(ends);
    } else {
      entry.link = L.polyline(ends, {
        className: 'booking-link',
        weight: 2,
        dashArray: '6 4',
        interactive: false,
      }).addTo(map);
    }
  }

  /** Replaces every marker with the server's picture, keeping the ones that are still there. */
  function applySnapshot(frame) {
    const providerIds = new Set((frame.providers || []).map((p) => p.provider_id));
    [...providers.keys()].filter((id) => !providerIds.has(id)).forEach(removeProvider);
    (frame.providers || []).forEach(upsertProvider);

    const bookingIds = new Set((frame.bookings || []).map((b) => b.booking_id));
    [...bookings.keys()].filter((id) => !bookingIds.has(id)).forEach(removeBooking);
    (frame.bookings || []).forEach(upsertBooking);
  }

  function clearMap() {
    [...providers.keys()].forEach(removeProvider);
    [...bookings.keys()].forEach(removeBooking);
    hexLayer.clearLayers();
  }

  // --- hexagons -----------------------------------------------------------------------------------
  let hexGeneration = 0;

  async function refreshHexes() {
    // A slow answer for an old view must not overwrite the answer for the current one.
    const generation = ++hexGeneration;
    const collection = await api(`/v1/dispatch/hexes?bbox=${currentBbox().join(',')}`);
    if (generation !== hexGeneration || !token) return;
    hexLayer.clearLayers();
    hexLayer.addData(collection);
  }

  function hexStyle(feature) {
    const { supply = 0, demand = 0 } = feature.properties || {};
    const gap = supply - demand;
    const colour = gap < 0 ? cssVar('--short') : cssVar('--ok');
    return {
      color: colour,
      weight: 1,
      opacity: 0.5,
      fillColor: colour,
      // The bigger the gap either way, the stronger the tint, kept light so markers stay readable.
      fillOpacity: Math.min(0.1 + 0.06 * Math.abs(gap), 0.4),
    };
  }

  // --- side panel -------------------------------------------------------------------------------------
  async function refreshStats() {
    const stats = await api('/v1/dispatch/stats');
    if (!token) return;
    const counts = {
      'count-online': stats.online,
      'count-available': stats.available,
      'count-offered': stats.offered,
      'count-busy': stats.busy,
      'count-pending': stats.pending_bookings,
      'count-matched': stats.matched_last_hour,
      'count-cancelled': stats.cancelled_last_hour,
    };
    for (const [id, value] of Object.entries(counts)) $(id).textContent = value ?? '–';

    const active = stats.active_bookings || [];
    $('active-bookings').replaceChildren(...active.map(activeBookingItem));
    $('no-active-bookings').hidden = active.length > 0;
  }

  function activeBookingItem(b) {
    const li = document.createElement('li');
    li.dataset.bookingId = b.booking_id;
    li.dataset.status = b.status;
    const number = span('number', b.booking_number);
    const status = span('status', humanStatus(b.status));
    const requested = b.requested_at ? new Date(b.requested_at).toLocaleTimeString() : '';
    const who = b.provider_first_name || 'no therapist yet';
    const detail = span('detail', [b.service, who, requested && `requested ${requested}`]
      .filter(Boolean).join(' · '));
    const payment = span('payment', `${b.payment_method || 'cash'} · ${humanStatus(b.payment_status || 'pending')}`);
    payment.dataset.paymentStatus = b.payment_status || 'pending';
    payment.title = 'Payment method and state';
    li.append(number, status, detail, payment);
    li.addEventListener('click', () => tell('open-booking', { id: b.booking_id }));
    return li;
  }

  function clearPanel() {
    document.querySelectorAll('#counts dd').forEach((dd) => { dd.textContent = '–'; });
    $('active-bookings').replaceChildren();
    $('no-active-bookings').hidden = false;
  }

  // --- status line ----------------------------------------------------------------------------------
  let socketState = '';
  /** Current problems by source ('socket', 'stats', 'hexes'); a success clears its own. */
  const problems = new Map();

  function renderStatus() {
    const line = $('status');
    if (!token) {
      line.textContent = 'Not logged in.';
      line.classList.remove('problem');
      return;
    }
    const seen = `${providers.size} therapist${providers.size === 1 ? '' : 's'}, ` +
      `${bookings.size} booking${bookings.size === 1 ? '' : 's'} in view`;
    line.textContent = [socketState, seen, ...problems.values()].filter(Boolean).join(' · ');
    line.classList.toggle('problem', problems.size > 0);
  }

  function setProblem(source, message) {
    if (message) problems.set(source, message);
    else problems.delete(source);
    renderStatus();
  }

  // --- the dashboard socket -------------------------------------------------------------------------
  let socket = null;
  let reconnectTimer = null;
  let resubscribeTimer = null;
  let backoffMs = CONFIG.reconnectFirstMs;

  // Close codes the server uses on purpose: credentials ended (log out), or a newer dashboard
  // of the same admin took this one's place (do not fight it by reconnecting).
  const CLOSE_CREDENTIALS_ENDED = 4001;
  const CLOSE_REPLACED = 4000;

  async function connectSocket() {
    clearTimeout(reconnectTimer);
    socketState = 'connecting…';
    renderStatus();
    // A browser cannot put the token in a WebSocket's headers, and a URL is no place for it:
    // trade it for a one-use ticket valid 30 s.
    let ticket;
    try {
      ticket = (await api('/v1/ws/tickets', { method: 'POST' })).ticket;
    } catch (error) {
      if (error.status === 401) return logOut('Your session has ended; log in again.');
      if (token) scheduleReconnect();
      return;
    }
    if (!token || socket) return; // logged out, or another connect won, meanwhile
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(
      `${scheme}://${location.host}/v1/ws/dashboard?ticket=${encodeURIComponent(ticket)}`);
    socket = ws;

    ws.onopen = () => {
      socketState = 'live';
      subscribe();
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not ours to fix; the next frame will do
      }
      handleFrame(frame);
      renderStatus();
    };
    // Every failure ends in `close` (after `error`), so reconnecting is decided here only.
    ws.onclose = (event) => {
      if (socket !== ws) return; // replaced or closed on purpose
      socket = null;
      if (event.code === CLOSE_CREDENTIALS_ENDED) {
        return logOut(`Your session has ended (${humanStatus(event.reason)}); log in again.`);
      }
      if (event.code === CLOSE_REPLACED) {
        socketState = 'replaced by a newer dashboard of this account; reload to take over';
        renderStatus();
        return;
      }
      if (token) scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    // Jitter, so dashboards do not all come back at the same instant after a restart.
    const delay = backoffMs * (0.75 + Math.random() * 0.5);
    backoffMs = Math.min(backoffMs * 2, CONFIG.reconnectMaxMs);
    socketState = `disconnected; reconnecting in ${Math.max(1, Math.round(delay / 1000))} s`;
    renderStatus();
    reconnectTimer = setTimeout(connectSocket, delay);
  }

  function closeSocket() {
    clearTimeout(reconnectTimer);
    const ws = socket;
    socket = null; // before close(), so onclose does not reconnect
    if (ws) ws.close(1000, 'logged out');
    backoffMs = CONFIG.reconnectFirstMs;
  }

  /** Tells the server what we look at; it answers with a fresh snapshot. */
  function subscribe() {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: 'subscribe', bbox: currentBbox() }));
    }
  }

  function handleFrame(frame) {
    switch (frame.type) {
      case 'snapshot':
        // The server took our subscription: the next outage starts its backoff afresh.
        backoffMs = CONFIG.reconnectFirstMs;
        setProblem('socket', null);
        applySnapshot(frame);
        break;
      case 'provider.moved':
        upsertProvider(frame);
        break;
      case 'provider.status':
        setProviderStatus(frame.provider_id, frame.status);
        break;
      case 'provider.left':
        removeProvider(frame.provider_id);
        break;
      case 'booking.status':
        upsertBooking(frame);
        tell('frame', { frame });
        break;
      case 'error':
        setProblem('socket', `${frame.code}: ${frame.detail}`);
        // Viewport changes faster than the server takes them: ask again for the latest view.
        if (frame.code === 'rate_limited') {
          clearTimeout(resubscribeTimer);
          resubscribeTimer = setTimeout(subscribe, 1000);
        }
        break;
      default:
        // console.js takes `alert` frames; newer servers may send more, ignored here.
        tell('frame', { frame });
        break;
    }
  }

  // --- polling ------------------------------------------------------------------------------------------
  /** Runs `task` now and every `everyMs` after it finishes (never two chains); `now()` runs it early. */
  function poller(name, task, everyMs) {
    let timer = null;
    let stopped = false;
    const run = async () => {
      clearTimeout(timer);
      try {
        await task();
        setProblem(name, null);
      } catch (error) {
        if (error.status === 401) return logOut('Your session has ended; log in again.');
        setProblem(name, `${name}: ${error.message}`);
      }
      if (stopped) return;
      clearTimeout(timer);
      timer = setTimeout(run, everyMs);
    };
    run();
    return { now: run, stop: () => { stopped = true; clearTimeout(timer); } };
  }

  let statsPoller = null;
  let hexPoller = null;

  // --- HTTP -----------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, problem, retryAfter) {
      let message = (problem && (problem.detail || problem.title)) || `HTTP ${status}`;
      if (status === 429 && retryAfter) message += ` (try again in ${retryAfter} s)`;
      super(message);
      this.status = status;
      this.problem = problem;
    }
  }

  /** fetch() with JSON in and out and the bearer token; a non-2xx answer throws an ApiError. */
  async function api(path, { method = 'GET', body, bearer = token } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      // fetch() rejects only when no answer came at all (server down, network gone).
      throw new ApiError(0, { detail: 'cannot reach the server' });
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data, response.headers.get('Retry-After'));
    return data;
  }

  // --- log-in and log-out ------------------------------------------------------------------------------
  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const phone = $('login-phone').value.trim();
    const password = $('login-password').value;
    const error = $('login-error');
    error.hidden = true;
    if (!phone || !password) {
      showLoginError('Enter the phone number and the password.');
      return;
    }
    $('login-submit').disabled = true;
    try {
      const session = await api('/v1/auth/login', {
        method: 'POST',
        body: { phone, password },
        bearer: null,
      });
      if (!(session.user?.roles || []).includes('admin')) {
        // Do not leave a live token behind for an account that cannot use this page.
        api('/v1/auth/logout', { method: 'POST', bearer: session.token }).catch(() => {});
        showLoginError('This account is not an admin.');
        return;
      }
      $('login-password').value = '';
      logIn(session.token);
    } catch (err) {
      // The server's 401 is deliberately vague ("authentication required"); say what it means here.
      showLoginError(err.status === 401 ? 'Wrong phone number or password.' : err.message);
    } finally {
      $('login-submit').disabled = false;
    }
  });

  $('logout').addEventListener('click', () => {
    const old = token;
    logOut();
    api('/v1/auth/logout', { method: 'POST', bearer: old }).catch(() => {});
  });

  function showLoginError(message) {
    const error = $('login-error');
    error.textContent = message;
    error.hidden = false;
  }

  function logIn(newToken) {
    token = newToken;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('login-form').hidden = true;
    $('dashboard').hidden = false;
    $('logout').hidden = false;
    connectSocket();
    statsPoller = poller('stats', refreshStats, CONFIG.statsEveryMs);
    hexPoller = poller('hexes', refreshHexes, CONFIG.hexesEveryMs);
    tell('login', { token });
  }

  function logOut(message) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    [statsPoller, hexPoller].forEach((p) => p && p.stop());
    statsPoller = null;
    hexPoller = null;
    closeSocket();
    problems.clear();
    clearMap();
    clearPanel();
    $('dashboard').hidden = true;
    $('logout').hidden = true;
    $('login-form').hidden = false;
    if (message) showLoginError(message);
    renderStatus();
    tell('logout', {});
  }

  // --- wiring ------------------------------------------------------------------------------------------------
  map.on('moveend', () => {
    drawGraticule();
    if (!token) return;
    subscribe(); // the server answers with a snapshot of the new view
    if (hexPoller) hexPoller.now();
  });

  // --- helpers -----------------------------------------------------------------------------------------------
  function mergeDefined(target, source) {
    for (const [key, value] of Object.entries(source)) {
      if (key !== 'type' && value !== undefined) target[key] = value;
    }
  }

  function humanStatus(status) {
    return (status || 'unknown').replace(/_/g, ' ');
  }

  function span(className, text) {
    const el = document.createElement('span');
    el.className = className;
    el.textContent = text ?? '';
    return el;
  }

  drawGraticule();
  if (token) logIn(token);
  else renderStatus();
})();
