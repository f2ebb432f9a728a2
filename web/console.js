// Hilot dispatch console: the base map, stores on the map, search, alerts, a booking's detail
// panel with its actions, and trip replay. Works beside app.js (the live map), which hands over
// its Leaflet map as window.hilotMap and tells this file what happens through DOM events:
// hilot:login {token}, hilot:logout, hilot:frame {frame} (socket frames it does not handle
// itself) and hilot:open-booking {id} (a booking clicked on the map or in the list).
// Plain ES2020, no build step: Hilot serves this file as it is at /assets/console.js.
'use strict';

(() => {
  const map = window.hilotMap;
  if (!map) return;

  const CONFIG = {
    storesEveryMs: 10000,
    alertsEveryMs: 15000,
    searchDelayMs: 300,
    // While one of the open booking's offers is open, the panel reads the booking again this often.
    offerRefreshMs: 2000,
    flyToZoom: 16,
    // A replay lasts about this long on screen, whatever the trip's real duration.
    replayScreenMs: 8000,
  };
  const $ = (id) => document.getElementById(id);
  let token = null;

  // --- HTTP -----------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(path, { method = 'GET', body } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError(0, { detail: 'cannot reach the server' });
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function currentBbox() {
    const b = map.getBounds();
    const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
    const round = (v) => Math.round(v * 1e6) / 1e6;
    return [
      round(clamp(b.getWest(), -180, 180)),
      round(clamp(b.getSouth(), -90, 90)),
      round(clamp(b.getEast(), -180, 180)),
      round(clamp(b.getNorth(), -90, 90)),
    ];
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  const human = (status) => (status || 'unknown').replace(/_/g, ' ');
  const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '–');

  // --- the base map ---------------------------------------------------------------------------
  // Tiles from the server's settings: a local PMTiles archive Hilot serves (read with range
  // requests by the pmtiles library; vector archives drawn by protomaps-leaflet), a tile URL
  // template, or nothing, in which case app.js's grid stays and the panel says how to add streets.
  async function setUpBaseMap() {
    const container = map.getContainer();
    let base;
    try {
      base = await api('/v1/map');
    } catch {
      container.dataset.basemap = 'none';
      return;
    }
    container.dataset.basemap = base.source;
    if (base.source === 'none') {
      const note = $('basemap-note');
      note.textContent = base.help;
      note.hidden = false;
      return;
    }
    let layer;
    const attribution = base.attribution || '';
    if (base.format === 'vector') {
      layer = protomapsL.leafletLayer({
        url: base.url,
        flavor: 'light',
        lang: 'en',
        attribution,
        maxDataZoom: base.pmtiles ? base.pmtiles.max_zoom : 15,
      });
    } else if (base.source === 'pmtiles') {
      layer = pmtiles.leafletRasterLayer(new pmtiles.PMTiles(base.url), {
        attribution,
        minNativeZoom: base.pmtiles.min_zoom,
        maxNativeZoom: base.pmtiles.max_zoom,
        maxZoom: 19,
      });
    } else {
      layer = L.tileLayer(base.url, { attribution, maxZoom: 19 });
    }
    layer.addTo(map);
    // The grid is for a blank map only.
    map.getPane('graticule').style.display = 'none';
    container.classList.add('has-basemap');
  }

  // --- stores -----------------------------------------------------------------------------------
  const storeIcon = L.divIcon({
    className: 'store-marker',
    iconSize: [24, 24],
    iconAnchor: [12, 12],
    html: '<span class="glyph" aria-hidden="true">S</span><span class="label"></span>',
  });
  /** store_id -> marker */
  const stores = new Map();
  let storesTimer = null;

  async function refreshStores() {
    clearTimeout(storesTimer);
    if (!token) return;
    try {
      const list = await api(`/v1/dispatch/stores?bbox=${currentBbox().join(',')}`);
      const seen = new Set();
      for (const s of list) {
        seen.add(s.store_id);
        let marker = stores.get(s.store_id);
        if (!marker) {
          marker = L.marker([s.lat, s.lng], { icon: storeIcon, keyboard: false, zIndexOffset: 500 }).addTo(map);
          marker.getElement().dataset.storeId = s.store_id;
          stores.set(s.store_id, marker);
        }
        const node = marker.getElement();
        node.dataset.full = String(s.rooms_in_use >= s.number_of_rooms);
        node.querySelector('.label').textContent = `${s.store_name} · ${s.rooms_in_use}/${s.number_of_rooms}`;
        node.title = `${s.store_name}: ${s.rooms_in_use} of ${s.number_of_rooms} rooms in use` +
          (s.verification_status === 'verified' ? '' : ` (${s.verification_status})`);
      }
      for (const [id, marker] of stores) {
        if (!seen.has(id)) {
          marker.remove();
          stores.delete(id);
        }
      }
    } catch (error) {
      if (error.status === 401) return;
    }
    storesTimer = setTimeout(refreshStores, CONFIG.storesEveryMs);
  }

  function clearStores() {
    clearTimeout(storesTimer);
    stores.forEach((marker) => marker.remove());
    stores.clear();
  }

  // --- search -----------------------------------------------------------------------------------
  let searchTimer = null;
  let searchGeneration = 0;

  async function runSearch() {
    const q = $('search-input').value.trim();
    const results = $('search-results');
    if (q.length < 2) {
      results.replaceChildren();
      return;
    }
    const generation = ++searchGeneration;
    let found;
    try {
      found = await api(`/v1/admin/search?q=${encodeURIComponent(q)}`);
    } catch (error) {
      results.replaceChildren(el('li', 'muted', error.message));
      return;
    }
    if (generation !== searchGeneration) return;
    const items = [
      ...found.therapists.map((t) => hit('therapist', t.provider_id, t.name, `${human(t.status)} · ${t.phone}`, t.lat, t.lng)),
      ...found.bookings.map((b) => hit('booking', b.booking_id, b.booking_number,
        `${human(b.status)} · ${b.customer_name}${b.provider_name ? ` · ${b.provider_name}` : ''}`, b.lat, b.lng)),
      ...found.stores.map((s) => hit('store', s.store_id, s.store_name, 'store', s.lat, s.lng)),
    ];
    results.replaceChildren(...(items.length ? items : [el('li', 'muted', 'Nothing found.')]));
  }

  function hit(kind, id, title, detail, lat, lng) {
    const li = el('li', `hit hit-${kind}`);
    li.dataset.kind = kind;
    li.dataset.id = id;
    li.tabIndex = 0;
    li.append(el('span', 'title', title), el('span', 'detail', detail));
    const go = () => {
      if (lat != null && lng != null) map.flyTo([lat, lng], Math.max(map.getZoom(), CONFIG.flyToZoom));
      if (kind === 'booking') openBooking(id);
      if (kind === 'therapist') highlight(`.therapist-marker[data-provider-id="${id}"]`);
      if (kind === 'store') highlight(`.store-marker[data-store-id="${id}"]`);
    };
    li.addEventListener('click', go);
    li.addEventListener('keydown', (event) => { if (event.key === 'Enter') go(); });
    return li;
  }

  /** Rings a marker for a few seconds once the map has flown to it. */
  function highlight(selector) {
    map.once('moveend', () => {
      const node = document.querySelector(selector);
      if (!node) return;
      node.classList.add('highlight');
      setTimeout(() => node.classList.remove('highlight'), 4000);
    });
  }

  // --- alerts -------------------------------------------------------------------------------------
  /** alert id -> alert */
  const alerts = new Map();
  let alertsTimer = null;

  async function refreshAlerts() {
    clearTimeout(alertsTimer);
    if (!token) return;
    try {
      const list = await api('/v1/admin/alerts');
      alerts.clear();
      list.alerts.forEach((a) => alerts.set(a.id, a));
      renderAlerts();
    } catch (error) {
      if (error.status === 401) return;
    }
    alertsTimer = setTimeout(refreshAlerts, CONFIG.alertsEveryMs);
  }

  function onAlertFrame(frame) {
    if (frame.state === 'cleared') alerts.delete(frame.id);
    else alerts.set(frame.id, frame);
    renderAlerts();
  }

  function renderAlerts() {
    const list = [...alerts.values()].sort((a, b) => (a.severity === b.severity
      ? new Date(a.since) - new Date(b.since)
      : a.severity === 'critical' ? -1 : 1));
    $('alerts').replaceChildren(...list.map((a) => {
      const li = el('li', `alert severity-${a.severity}`);
      li.dataset.alertId = a.id;
      li.dataset.kind = a.kind;
      li.dataset.bookingId = a.booking_id;
      li.tabIndex = 0;
      li.append(el('span', 'kind', human(a.kind)), el('span', 'detail', a.detail));
      const go = () => {
        if (a.lat != null && a.lng != null) map.flyTo([a.lat, a.lng], Math.max(map.getZoom(), CONFIG.flyToZoom));
        openBooking(a.booking_id);
      };
      li.addEventListener('click', go);
      li.addEventListener('keydown', (event) => { if (event.key === 'Enter') go(); });
      return li;
    }));
    $('no-alerts').hidden = list.length > 0;
    $('alert-count').textContent = list.length ? String(list.length) : '';
  }

  // --- the booking detail panel -------------------------------------------------------------------
  let openId = null;

  async function openBooking(id) {
    openId = id;
    const panel = $('detail');
    panel.hidden = false;
    panel.dataset.bookingId = id;
    panel.dataset.state = 'loading';
    $('detail-message').hidden = true;
    try {
      const detail = await api(`/v1/admin/bookings/${id}`);
      if (openId !== id) return;
      renderDetail(detail);
      panel.dataset.state = 'ready';
    } catch (error) {
      showDetailMessage(error.message, true);
      panel.dataset.state = 'error';
    }
  }

  function closeDetail() {
    openId = null;
    openDetail = null;
    clearTimeout(offerRefresh);
    $('detail').hidden = true;
    $('action-result').hidden = true;
    stopReplay();
  }

  function showDetailMessage(text, problem) {
    const note = $('detail-message');
    note.textContent = text;
    note.classList.toggle('error', Boolean(problem));
    note.hidden = false;
  }

  function renderDetail(d) {
    openDetail = d;
    const b = d.booking;
    $('detail-number').textContent = b.booking_number;
    const status = $('detail-status');
    status.textContent = human(b.status);
    status.dataset.status = b.status;
    const facts = [
      ['Service', `${b.service.name} · ${b.type === 'in_store' ? 'in store' : 'home service'}`],
      ['Customer', `${d.customer.name} · ${d.customer.phone}`],
      ['Provider', d.provider ? `${d.provider.name} (${d.provider.kind}) · ${d.provider.phone}` : 'nobody yet'],
      ['Where', b.location ? b.location.address : '–'],
      ['Total', `${b.pricing.total_amount} ${b.pricing.currency}`],
    ];
    if (d.visit) facts.push(['Visit', `${time(d.visit.starts_at)}–${time(d.visit.ends_at)}` +
      (d.visit.checked_in_at ? `, checked in ${time(d.visit.checked_in_at)}` : '')]);
    if (b.cancellation_reason) facts.push(['Reason', `${b.cancellation_reason} (fee ${b.cancellation_fee})`]);
    const pay = d.payment;
    if (pay) {
      const extra = [];
      if (Number(pay.refunded_amount) > 0) extra.push(`refunded ${pay.refunded_amount}`);
      if (Number(pay.tip_amount) > 0) extra.push(`tip ${pay.tip_amount}`);
      facts.push(['Payment', `${human(pay.method)} · ${human(pay.status)} · paid ${pay.paid_amount} of ${pay.amount} ${pay.currency}` +
        (extra.length ? ` (${extra.join(', ')})` : '')]);
    }
    $('detail-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', null, k), el('dd', null, v)]));

    $('detail-timeline').replaceChildren(...b.timeline.map((t) => {
      const li = el('li', null);
      li.dataset.status = t.status;
      li.append(el('span', 'when', time(t.at)), el('span', 'what', t.description || human(t.status)));
      return li;
    }));

    const offers = d.offers || [];
    $('detail-offers-section').hidden = !d.offers;
    $('detail-offers').replaceChildren(...offers.map((o) => {
      const li = el('li', null);
      li.dataset.outcome = o.outcome;
      li.append(el('span', 'when', time(o.sent_at)),
        el('span', 'what', `${o.provider.first_name}: ${human(o.outcome)}` +
          (o.closed_at ? ` at ${time(o.closed_at)}` : '') + ` · ${Math.round(o.distance_m)} m`));
      return li;
    }));

    const messages = d.messages || [];
    $('detail-messages-section').hidden = !d.messages;
    $('detail-messages').replaceChildren(...messages.map((m) => {
      const li = el('li', null);
      li.dataset.from = m.from;
      const who = m.from === 'customer' ? d.customer.name
        : m.from === 'dispatcher' ? `Dispatch to the ${m.to}`
          : (d.provider ? d.provider.name : m.from);
      li.append(el('span', 'when', time(m.at)), el('span', 'what', `${who}: ${m.body}` + (m.read_at ? ' ✓' : '')));
      return li;
    }));
    if (d.messages && messages.length === 0) $('detail-messages').append(el('li', 'muted', 'No messages.'));

    const trip = d.trip;
    $('detail-trip').textContent = trip
      ? `${trip.points} position${trip.points === 1 ? '' : 's'} stored` +
        (trip.last_fix_at ? `, last at ${time(trip.last_fix_at)}` : '')
      : (b.type === 'in_store' ? 'In store: no trip.' : 'No trip yet.');
    $('replay-trip').disabled = !trip || trip.points < 1;

    $('detail-audit').replaceChildren(...d.audit.map((a) => {
      const li = el('li', null);
      li.append(el('span', 'when', time(a.at)), el('span', 'what', `${a.action} by ${a.actor_name || 'system'}` +
        (a.ip_address ? ` from ${a.ip_address}` : '')));
      return li;
    }));
    $('detail-audit-section').hidden = d.audit.length === 0;

    renderActions();
    // An offer is out: the outcome shows without a click (the dashboard socket only tells about
    // bookings in view).
    clearTimeout(offerRefresh);
    if (offers.some((o) => o.outcome === 'open')) {
      const id = openId;
      offerRefresh = setTimeout(() => { if (openId === id) openBooking(id); }, CONFIG.offerRefreshMs);
    }
  }

  // --- dispatcher actions ---------------------------------------------------------------------------
  let openDetail = null;
  let offerRefresh = null;
  let therapistTimer = null;

  /** Enables what the open booking's status allows. */
  function renderActions() {
    const d = openDetail;
    if (!d) return;
    const b = d.booking;
    const chosen = Boolean($('action-therapist').value);
    const home = b.type !== 'in_store';
    $('action-offer').disabled = !(chosen && home && b.status === 'pending');
    $('action-reassign').disabled = !(chosen && home && ['accepted', 'en_route'].includes(b.status));
    $('action-offline').disabled = !chosen;
    $('action-cancel').disabled = ['completed', 'cancelled', 'no_show', 'in_progress'].includes(b.status);
    $('action-send').disabled = false;
  }

  function showActionResult(text, problem) {
    const note = $('action-result');
    note.textContent = text;
    note.classList.toggle('error', Boolean(problem));
    note.dataset.state = problem ? 'error' : 'done';
    note.hidden = false;
  }

  async function findTherapists() {
    const q = $('action-therapist-query').value.trim();
    if (q.length < 2) return;
    let found;
    try {
      found = await api(`/v1/admin/search?q=${encodeURIComponent(q)}`);
    } catch (error) {
      showActionResult(error.message, true);
      return;
    }
    const select = $('action-therapist');
    const options = found.therapists.map((t) => {
      const option = el('option', null, `${t.name} · ${human(t.status)}`);
      option.value = t.provider_id;
      return option;
    });
    select.replaceChildren(el('option', null, options.length ? 'Choose a therapist' : 'No therapist found'), ...options);
    select.firstChild.value = '';
    if (options.length === 1) select.value = options[0].value;
    renderActions();
  }

  /** Runs one action on the open booking; the panel shows the outcome and reloads. */
  async function act(label, path, body, method = 'POST') {
    const id = openId;
    if (!id) return;
    $('action-result').dataset.state = 'busy';
    try {
      await api(path, { method, body });
      showActionResult(label, false);
    } catch (error) {
      showActionResult(`${label}: refused. ${error.message}`, true);
      return;
    }
    if (openId === id) openBooking(id);
  }

  function reason() {
    return $('action-reason').value.trim();
  }


  // --- trip replay ----------------------------------------------------------------------------------
  let replay = null;

  function stopReplay() {
    if (!replay) return;
    cancelAnimationFrame(replay.frame);
    replay.layers.forEach((layer) => layer.remove());
    replay = null;
    const status = $('replay-status');
    status.hidden = true;
    delete status.dataset.state;
  }

  async function replayTrip() {
    const id = openId;
    if (!id) return;
    stopReplay();
    const status = $('replay-status');
    status.hidden = false;
    status.dataset.state = 'loading';
    status.textContent = 'Loading the trip…';
    let trip;
    try {
      trip = await api(`/v1/bookings/${id}/trip`);
    } catch (error) {
      status.dataset.state = 'error';
      status.textContent = error.message;
      return;
    }
    const line = trip.features[0];
    const coords = (line.geometry && line.geometry.coordinates) || [];
    const times = (line.properties.times || []).map((t) => new Date(t).getTime());
    if (coords.length < 2) {
      status.dataset.state = 'done';
      status.textContent = 'Too few positions to replay.';
      return;
    }
    const latlngs = coords.map(([lng, lat]) => [lat, lng]);
    const path = L.polyline(latlngs, { className: 'trip-line', weight: 4, opacity: 0.85, interactive: false }).addTo(map);
    const mover = L.circleMarker(latlngs[0], { className: 'replay-marker', radius: 7, weight: 2, fillOpacity: 1 }).addTo(map);
    const layers = [path, mover];
    const destination = trip.features.find((f) => f.properties.kind === 'destination');
    if (destination) {
      const [lng, lat] = destination.geometry.coordinates;
      layers.push(L.circleMarker([lat, lng], { className: 'replay-destination', radius: 5, interactive: false }).addTo(map));
    }
    map.fitBounds(path.getBounds().pad(0.3), { maxZoom: 17 });

    const start = times[0];
    const span = Math.max(1, times[times.length - 1] - start);
    const speed = Math.max(1, span / CONFIG.replayScreenMs);
    const began = performance.now();
    replay = { layers, frame: 0 };
    status.dataset.state = 'playing';
    const step = (now) => {
      if (!replay) return;
      const at = start + (now - began) * speed;
      let i = times.findIndex((t) => t > at);
      if (i === -1) {
        mover.setLatLng(latlngs[latlngs.length - 1]);
        mover.getElement()?.setAttribute('data-at', new Date(times[times.length - 1]).toISOString());
        status.dataset.state = 'done';
        status.textContent = `Replayed ${latlngs.length} positions, ${Math.round(line.properties.distance_m)} m, ` +
          `${time(line.properties.from)} to ${line.properties.to ? time(line.properties.to) : 'now'}.`;
        return;
      }
      i = Math.max(1, i);
      const f = (at - times[i - 1]) / Math.max(1, times[i] - times[i - 1]);
      const [a, b] = [latlngs[i - 1], latlngs[i]];
      mover.setLatLng([a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f]);
      status.textContent = `Replaying ${new Date(at).toLocaleTimeString()} (×${Math.round(speed)})`;
      replay.frame = requestAnimationFrame(step);
    };
    replay.frame = requestAnimationFrame(step);
  }

  // --- wiring ---------------------------------------------------------------------------------------
  $('detail-close').addEventListener('click', closeDetail);
  $('action-therapist-query').addEventListener('input', () => {
    clearTimeout(therapistTimer);
    therapistTimer = setTimeout(findTherapists, CONFIG.searchDelayMs);
  });
  $('action-therapist').addEventListener('change', renderActions);
  $('action-offer').addEventListener('click', () => act('Offered',
    `/v1/admin/bookings/${openId}/offers`,
    { therapist_id: $('action-therapist').value, ...(reason() ? { reason: reason() } : {}) }));
  $('action-reassign').addEventListener('click', () => act('Reassigned',
    `/v1/admin/bookings/${openId}/reassign`, { therapist_id: $('action-therapist').value, reason: reason() }));
  $('action-offline').addEventListener('click', () => act('Marked offline',
    `/v1/admin/therapists/${$('action-therapist').value}/offline`, { reason: reason() }));
  $('action-cancel').addEventListener('click', () => act('Cancelled',
    `/v1/admin/bookings/${openId}/cancel`, { reason: reason(), charge_fee: $('action-charge-fee').checked }));
  $('message-form').addEventListener('submit', (event) => {
    event.preventDefault();
    act('Sent', `/v1/admin/bookings/${openId}/messages`,
      { body: $('action-message').value, to: $('action-message-to').value })
      .then(() => { if ($('action-result').dataset.state === 'done') $('action-message').value = ''; });
  });
  $('replay-trip').addEventListener('click', replayTrip);
  $('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    clearTimeout(searchTimer);
    runSearch();
  });
  $('search-input').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, CONFIG.searchDelayMs);
  });
  map.on('moveend', () => { if (token) refreshStores(); });

  document.addEventListener('hilot:login', (event) => {
    token = event.detail.token;
    refreshStores();
    refreshAlerts();
  });
  document.addEventListener('hilot:logout', () => {
    token = null;
    clearTimeout(alertsTimer);
    alerts.clear();
    renderAlerts();
    clearStores();
    closeDetail();
    $('search-results').replaceChildren();
  });
  document.addEventListener('hilot:frame', (event) => {
    const frame = event.detail.frame;
    if (frame.type === 'alert') onAlertFrame(frame);
    if (frame.type === 'booking.status' && frame.booking_id === openId) openBooking(openId);
  });
  document.addEventListener('hilot:open-booking', (event) => openBooking(event.detail.id));

  window.hilotConsole = { api, openBooking, refreshAlerts, refreshStores, replayTrip };
  setUpBaseMap();
  // app.js may have logged in from the saved session before this file ran.
  const saved = window.hilotSession && window.hilotSession.token();
  if (saved) document.dispatchEvent(new CustomEvent('hilot:login', { detail: { token: saved } }));
})();
