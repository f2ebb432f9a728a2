// Headless-browser test of the live dispatch map at `/`.
//
// Arranges the city through the public API only (three therapists streaming locations around
// Makati over their sockets, one customer booking, a store), then drives Chromium through the
// page: log in as the admin, see the base map's tiles drawn from the server's PMTiles archive,
// see the therapists, see one move, see the booking go accepted → en_route, open its detail,
// replay its trip, find it by search, see a store and an alert, offer the waiting booking to a
// chosen therapist from its detail and see it accepted, see the counts. Leaves a
// screenshot per step in tests/artifacts/ (dashboard.png at the end).
//
// Run by scripts/browser-test, which starts the server; by hand:
//   HILOT_URL=http://127.0.0.1:8080 ADMIN_PHONE=+639170000001 ADMIN_PASSWORD=... \
//     node --test tests/browser/dashboard.mjs
// Optional: CHROMIUM (default /usr/bin/chromium), ARTIFACTS_DIR (default tests/artifacts).

import assert from 'node:assert/strict';
import { randomInt, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';
import WebSocket from 'ws';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BASE = requiredEnv('HILOT_URL').replace(/\/+$/, '');
const ADMIN_PHONE = requiredEnv('ADMIN_PHONE');
const ADMIN_PASSWORD = requiredEnv('ADMIN_PASSWORD');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.ARTIFACTS_DIR || path.resolve(HERE, '..', 'artifacts');
const SCREENSHOT = path.join(ARTIFACTS, 'dashboard.png');
/** The land colour of the test's PMTiles tiles (tests/browser/make-pmtiles.mjs). */
const TILE_LAND = [255, 216, 168];

const PASSWORD = 'a sound passphrase';
const MAKATI = { lat: 14.5547, lng: 121.0244 };
const METRES_PER_DEGREE_LAT = 111_320;
const STEP_M = 10; // each therapist moves ~10 m per ping, one ping a second (limit: 5/s)
// Start points (metres north/east of the booking) and headings (degrees clockwise from north).
// The nearest, 400 m north, gets the offer; all stay well inside the view at zoom 15.
const THERAPISTS = [
  { north: 400, east: 0, heading: 90 },
  { north: -300, east: 700, heading: 0 },
  { north: -600, east: -500, heading: 225 },
];
const WAIT_MS = 15_000; // the longest any single step may take

/** Everything the run creates, so `after` can always put it away. */
const run = { therapists: [], browser: null, page: null, userDataDir: null, failed: false };

/**
 * A test that is one step of the story: each needs the ones before it, so after a failure the
 * rest are skipped at once instead of each waiting out its timeouts.
 */
function step(name, timeoutMs, fn) {
  test(name, { timeout: timeoutMs + 5_000 }, async (t) => {
    if (run.failed) return t.skip('an earlier step failed');
    try {
      await fn();
    } catch (error) {
      run.failed = true;
      throw error;
    }
  });
}

// --- arrange ------------------------------------------------------------------------------------
before(async () => {
  run.adminToken = (await api('POST', '/v1/auth/login', { body: { phone: ADMIN_PHONE, password: ADMIN_PASSWORD } })).token;
  const services = await api('GET', '/v1/services');
  const swedish = services.find((s) => s.slug === 'swedish-massage');
  assert.ok(swedish, `GET /v1/services has no swedish-massage: ${JSON.stringify(services)}`);
  run.serviceId = swedish.id;

  // One after another: registration hashes a password, and two cores are all we may have.
  for (const [i, plan] of THERAPISTS.entries()) {
    run.therapists.push(await onlineTherapist(i, plan));
  }
  // Each therapist's first fix is in the live index before anything looks for it.
  await Promise.all(run.therapists.map((t) => t.firstAck));

  run.userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hilot-chromium-'));
  run.browser = await chromium.launchPersistentContext(run.userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 800 },
  });
  run.page = run.browser.pages()[0] || (await run.browser.newPage());
  run.page.setDefaultTimeout(WAIT_MS);
  // The page's own errors are the first thing to read when a step below times out.
  run.pageErrors = [];
  run.page.on('pageerror', (error) => run.pageErrors.push(String(error)));
  // The page must open its socket with a one-use ticket, never with the token in the URL.
  run.socketUrls = [];
  run.page.on('websocket', (ws) => run.socketUrls.push(ws.url()));
  // Every read of the base map archive, with its Range header and answer.
  run.archiveReads = [];
  run.page.on('response', (response) => {
    if (!response.url().includes('/v1/map/basemap.pmtiles')) return;
    run.archiveReads.push({ range: response.request().headers().range, status: response.status() });
  });
}, { timeout: 30_000 });

after(async () => {
  for (const t of run.therapists) clearInterval(t.pinger);
  if (run.page) {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await run.page.screenshot({ path: SCREENSHOT }).catch((e) => console.error(`no screenshot: ${e}`));
  }
  if (run.browser) await run.browser.close().catch(() => {});
  if (run.userDataDir) fs.rmSync(run.userDataDir, { recursive: true, force: true });
  await Promise.all(run.therapists.map((t) => closeSocket(t.socket)));
  if (run.pageErrors?.length) console.error(`errors on the page:\n${run.pageErrors.join('\n')}`);
});

// --- the page ---------------------------------------------------------------------------------------
step('a wrong password is refused on the page', WAIT_MS, async () => {
  const { page } = run;
  await page.goto(`${BASE}/`);
  await page.fill('#login-phone', ADMIN_PHONE);
  await page.fill('#login-password', `${ADMIN_PASSWORD}-wrong`);
  await page.click('#login-submit');
  const error = page.locator('#login-error');
  await expectVisible(error, 'no log-in error shown for a wrong password');
  assert.notEqual((await error.textContent()).trim(), '', 'the log-in error is empty');
  assert.equal(await page.locator('#dashboard').isVisible(), false, 'the dashboard opened anyway');
});

step('the admin logs in and sees the three therapists', 2 * WAIT_MS, async () => {
  const { page } = run;
  await page.fill('#login-password', ADMIN_PASSWORD);
  await page.click('#login-submit');
  await expectVisible(page.locator('#dashboard'), 'the dashboard did not open after log-in');
  await waitForMarkers(3, 'after log-in');
  assert.ok(run.socketUrls.length > 0, 'the page opened no WebSocket');
  for (const url of run.socketUrls) {
    assert.match(url, /[?&]ticket=hwt_/, `the page's socket URL has no ticket: ${url}`);
    assert.doesNotMatch(url, /token=/, `the page put its token in a socket URL: ${url}`);
  }
  for (const t of run.therapists) {
    const marker = therapistMarker(t.providerId);
    assert.equal(await marker.getAttribute('data-status'), 'available', `therapist ${t.index} is not shown available`);
  }
});

step('the base map draws tiles from the server\'s PMTiles archive', 2 * WAIT_MS, async () => {
  const { page } = run;
  await waitForAttribute(page.locator('#map'), 'data-basemap', 'pmtiles', 'the page did not take the PMTiles base map');
  const tiles = page.locator('.leaflet-tile-pane img.leaflet-tile-loaded');
  await page.waitForFunction(() => document.querySelectorAll('.leaflet-tile-pane img.leaflet-tile-loaded').length >= 4,
    null, { timeout: WAIT_MS })
    .catch(async () => assert.fail(`only ${await tiles.count()} tiles drawn; archive reads: ${JSON.stringify(run.archiveReads)}`));
  // The archive was read in pieces (range requests), not downloaded whole.
  const ranged = run.archiveReads.filter((r) => r.range && r.status === 206);
  assert.ok(ranged.length >= 2, `expected ranged reads of the archive: ${JSON.stringify(run.archiveReads)}`);
  // What is drawn is our tiles: the land colour of the generated archive, at a tile's centre.
  const pixel = await tiles.first().evaluate((img) => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    return [...context.getImageData(128, 128, 1, 1).data.slice(0, 3)];
  });
  assert.deepEqual(pixel, TILE_LAND, 'a drawn tile is not the archive\'s land colour');
  const attribution = await page.locator('.leaflet-control-attribution').textContent();
  assert.match(attribution, /Hilot browser test tiles/, 'the base map attribution is missing');
  assert.equal(await page.locator('.leaflet-graticule-pane').isVisible(), false, 'the grid still covers the map');
  await snap('basemap');
});

step('a therapist marker moves and turns with its pings', 2 * WAIT_MS, async () => {
  const { page } = run;
  // At zoom 13 ten metres is half a pixel; zoom in (which also re-subscribes the socket).
  for (let i = 0; i < 2; i++) {
    await page.click('.leaflet-control-zoom-in');
    await page.waitForFunction(() => !document.querySelector('#map.leaflet-zoom-anim'), null, { timeout: 5_000 });
    await page.waitForTimeout(300);
  }
  await waitForMarkers(3, 'after zooming in');
  const walker = run.therapists[0];
  const marker = therapistMarker(walker.providerId);
  const before = await marker.boundingBox();
  assert.ok(before, 'the marker has no position on screen');
  await page.waitForTimeout(3_000); // three pings, ~30 m, ~6 px at zoom 15
  const moved = await marker.boundingBox();
  const dx = moved.x - before.x;
  const dy = moved.y - before.y;
  assert.ok(Math.hypot(dx, dy) >= 2, `the marker did not move in 3 s: ${JSON.stringify({ before, moved })}`);
  assert.ok(dx > 0, `heading 90° is east, yet the marker moved by (${dx}, ${dy}) px`);
  const turn = await marker.locator('svg').evaluate((svg) => svg.style.transform);
  assert.match(turn, /rotate\(90deg\)/, `the arrow is not turned to the heading: ${turn}`);
});

step('a booking shows up and follows accepted, then en_route', 5 * WAIT_MS, async () => {
  const { page } = run;
  const customer = await register('customer', 'Ana', 'Reyes');
  const booking = await api('POST', '/v1/bookings', {
    token: customer.token,
    headers: { 'Idempotency-Key': randomUUID() },
    body: {
      service_id: run.serviceId,
      booking_type: 'now',
      location: { lat: MAKATI.lat, lng: MAKATI.lng, address: 'Ayala Ave' },
    },
  });
  // The server tells dashboards about status changes, so the booking shows up on the map by
  // the time it is accepted at the latest.
  const { therapist, frame: offer } = await nextFrame(
    run.therapists, (f) => f.type === 'offer' && f.booking_id === booking.id, `an offer of booking ${booking.id}`);
  therapist.socket.send(JSON.stringify({ type: 'offer.accept', booking_id: booking.id }));
  await nextFrame([therapist], (f) => f.type === 'booking.status' && f.booking_id === booking.id && f.status === 'accepted',
    `booking ${booking.id} accepted (offer was ${JSON.stringify(offer)})`);
  const marker = page.locator(`.booking-marker[data-booking-id="${booking.id}"]`);
  await expectVisible(marker, `booking ${booking.booking_number} (${booking.id}) never appeared on the map`);
  await waitForAttribute(marker, 'data-status', 'accepted', 'the booking marker never showed accepted');

  await api('POST', `/v1/bookings/${booking.id}/status`, { token: therapist.token, body: { status: 'en_route' } });
  await waitForAttribute(marker, 'data-status', 'en_route', 'the booking marker never showed en_route');
  await waitForAttribute(therapistMarker(therapist.providerId), 'data-status', 'busy',
    'the assigned therapist is not shown busy');
  await expectVisible(page.locator(`#active-bookings li[data-booking-id="${booking.id}"]`),
    'the booking is not in the active bookings list');
  assert.ok(await page.locator('path.booking-link').count() >= 1, 'no line from the booking to its therapist');
  run.booking = booking;
  run.assigned = therapist;
  run.customer = customer;
});

step('a click on the booking opens its detail with the timeline', WAIT_MS, async () => {
  const { page, booking } = run;
  await api('POST', `/v1/bookings/${booking.id}/messages`, {
    token: run.customer.token, body: { body: 'The gate is the blue one' },
  });
  await page.locator(`.booking-marker[data-booking-id="${booking.id}"]`).click();
  const detail = page.locator(`#detail[data-booking-id="${booking.id}"][data-state="ready"]`);
  await expectVisible(detail, 'the detail panel did not open');
  assert.equal((await page.textContent('#detail-number')).trim(), booking.booking_number);
  await page.waitForFunction(() => document.querySelector('#detail-timeline li[data-status="en_route"]'), null, { timeout: WAIT_MS })
    .catch(async () => assert.fail(`the timeline lacks en_route: ${await page.textContent('#detail-timeline')}`));
  const statuses = await page.locator('#detail-timeline li').evaluateAll((items) => items.map((li) => li.dataset.status));
  assert.deepEqual(statuses.slice(0, 3), ['pending', 'accepted', 'en_route']);
  assert.match(await page.textContent('#detail-facts'), /Ana Reyes/, 'the customer is not named');
  // The payment (cash, due once accepted) and the parties' messages.
  assert.match(await page.textContent('#detail-facts'), /cash · due in cash · paid 0\.00 of \d+\.\d\d PHP/,
    'the payment state is not shown');
  await expectVisible(page.locator('#detail-messages li[data-from="customer"]'), 'the customer\'s message is not shown');
  assert.match(await page.textContent('#detail-messages'), /Ana Reyes: The gate is the blue one/);
  await snap('detail');
});

step('the trip so far replays on the map', 2 * WAIT_MS, async () => {
  const { page, booking } = run;
  // The assigned therapist pings every second; every fix on a booking is stored.
  await waitFor(async () => {
    const trip = await api('GET', `/v1/bookings/${booking.id}/trip`, { token: run.adminToken });
    return trip.features[0].properties.points >= 3;
  }, 'three stored fixes on the trip');
  await page.click('#detail-close');
  await page.locator(`.booking-marker[data-booking-id="${booking.id}"]`).click();
  await expectVisible(page.locator('#detail[data-state="ready"]'), 'the detail panel did not reopen');
  await page.click('#replay-trip');
  // A short trip is a thin line (a zero-height box for a straight one): attached is the test.
  await page.locator('path.trip-line').waitFor({ state: 'attached', timeout: WAIT_MS })
    .catch(() => assert.fail('no trip line drawn'));
  await waitForAttribute(page.locator('#replay-status'), 'data-state', 'done', 'the replay never finished');
  assert.match(await page.textContent('#replay-status'), /Replayed \d+ positions/);
  assert.ok(await page.locator('path.replay-marker').count() === 1, 'no replay marker');
  await snap('replay');
});

step('search finds the booking by its number and the therapist by name', 2 * WAIT_MS, async () => {
  const { page, booking } = run;
  await page.click('#detail-close');
  await page.fill('#search-input', booking.booking_number);
  const hit = page.locator(`#search-results li[data-kind="booking"][data-id="${booking.id}"]`);
  await expectVisible(hit, 'the booking was not found by its number');
  await hit.click();
  await expectVisible(page.locator(`#detail[data-booking-id="${booking.id}"][data-state="ready"]`), 'the found booking did not open');
  await page.click('#detail-close');
  await page.fill('#search-input', 'Therapist No1');
  const therapistHit = page.locator(`#search-results li[data-kind="therapist"][data-id="${run.therapists[0].providerId}"]`);
  await expectVisible(therapistHit, 'the therapist was not found by name');
  await snap('search');
  await therapistHit.click();
  await page.waitForFunction(() => !document.querySelector('#map.leaflet-zoom-anim'), null, { timeout: 5_000 });
});

step('a store shows on the map with its rooms', 2 * WAIT_MS, async () => {
  const { page } = run;
  const owner = await register('store_owner', 'Luz', 'Santos');
  const hours = Object.fromEntries(['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday']
    .map((day) => [day, [{ open: '00:00', close: '24:00' }]]));
  const near = offset(MAKATI, -200, -300);
  const store = await api('PUT', '/v1/store/profile', {
    token: owner.token,
    body: {
      store_name: 'Lotus Spa', address_line1: '1 Paseo de Roxas', city: 'Makati', lat: near.lat, lng: near.lng,
      timezone: 'Asia/Manila', opening_hours: hours, number_of_rooms: 3, amenities: ['Sauna'],
    },
  });
  await api('POST', `/v1/admin/providers/${store.store_id}/verify`, { token: run.adminToken, body: { status: 'verified' } });
  // Found by name, the map flies there and draws it.
  await page.fill('#search-input', 'Lotus');
  const hit = page.locator(`#search-results li[data-kind="store"][data-id="${store.store_id}"]`);
  await expectVisible(hit, 'the store was not found by name');
  await hit.click();
  const marker = page.locator(`.store-marker[data-store-id="${store.store_id}"]`);
  await expectVisible(marker, 'the store never appeared on the map');
  assert.match(await marker.textContent(), /Lotus Spa · 0\/3/);
  await snap('stores');
});

step('an alert shows for a booking nobody takes', 2 * WAIT_MS, async () => {
  const { page } = run;
  const customer = await register('customer', 'Jun', 'Cruz');
  // Far north of every therapist: nobody is offered it, so it waits (alert after 3 s here).
  const lonely = await api('POST', '/v1/bookings', {
    token: customer.token,
    headers: { 'Idempotency-Key': randomUUID() },
    body: { service_id: run.serviceId, booking_type: 'now', location: { lat: 18.2, lng: 120.6, address: 'Laoag' } },
  });
  const alert = page.locator(`#alerts li[data-kind="booking_waiting"][data-booking-id="${lonely.id}"]`);
  await expectVisible(alert, 'no alert for the waiting booking');
  assert.match(await alert.textContent(), new RegExp(lonely.booking_number));
  await alert.click();
  await expectVisible(page.locator(`#detail[data-booking-id="${lonely.id}"][data-state="ready"]`), 'the alert did not open its booking');
  await snap('alerts');
  await page.click('#detail-close');
  run.lonely = lonely;
});

step('the side panel counts the therapists online', WAIT_MS, async () => {
  const { page } = run;
  await page.waitForFunction(() => Number(document.getElementById('count-online')?.textContent) >= 3, null, { timeout: WAIT_MS })
    .catch(async () => assert.fail(`#count-online shows "${await page.textContent('#count-online')}", expected at least 3`));
  assert.equal(await page.locator('#status.problem').count(), 0,
    `the status line reports a problem: ${await statusLine()}`);
  // The supply layer redraws on its own timer after the counts change: wait for it.
  await page.waitForFunction(() => document.querySelectorAll('.leaflet-hexes-pane path').length >= 1, null, { timeout: WAIT_MS })
    .catch(() => assert.fail('no supply hexagon drawn'));
  const refused = run.therapists.flatMap((t) => t.frames.filter((f) => f.type === 'error'));
  assert.deepEqual(refused, [], 'the server refused some therapist frames');
});

step('a dispatcher offers the waiting booking to a chosen therapist, who accepts it', 3 * WAIT_MS, async () => {
  const { page } = run;
  const { lonely } = run;
  const chosen = run.therapists.find((t) => t !== run.assigned);
  const alert = page.locator(`#alerts li[data-kind="booking_waiting"][data-booking-id="${lonely.id}"]`);
  await expectVisible(alert, 'the waiting booking\'s alert is gone');
  await alert.click();
  await expectVisible(page.locator(`#detail[data-booking-id="${lonely.id}"][data-state="ready"]`), 'the booking did not open');
  // Found by name, chosen, offered with a reason.
  await page.fill('#action-therapist-query', `No${chosen.index + 1}`);
  await page.waitForFunction((id) => [...document.querySelectorAll('#action-therapist option')].some((o) => o.value === id),
    chosen.providerId, { timeout: WAIT_MS })
    .catch(async () => assert.fail(`the therapist was not found: ${await page.textContent('#action-therapist')}`));
  await page.selectOption('#action-therapist', chosen.providerId);
  await page.fill('#action-reason', 'the customer asked for them');
  await page.click('#action-offer');
  await waitForAttribute(page.locator('#action-result'), 'data-state', 'done',
    'the offer was not made');
  await expectVisible(page.locator('#detail-offers li[data-outcome="open"]'), 'the open offer is not listed');
  // The engine sends it: the therapist's socket gets the offer, and they accept it.
  await nextFrame([chosen], (f) => f.type === 'offer' && f.booking_id === lonely.id, `the dispatcher's offer of ${lonely.id}`);
  chosen.socket.send(JSON.stringify({ type: 'offer.accept', booking_id: lonely.id }));
  await nextFrame([chosen], (f) => f.type === 'booking.status' && f.booking_id === lonely.id && f.status === 'accepted',
    `booking ${lonely.id} accepted`);
  // The panel shows the outcome by itself, and the audited action.
  await expectVisible(page.locator('#detail-offers li[data-outcome="accepted"]'), 'the accepted offer is not shown');
  await waitForAttribute(page.locator('#detail-status'), 'data-status', 'accepted', 'the panel does not show accepted');
  assert.match(await page.textContent('#detail-audit'), /booking\.offered by /);
  await snap('offer');
  await page.click('#detail-close');
});

// --- therapists ---------------------------------------------------------------------------------
/** Registers, sets up, verifies and brings online a therapist whose socket then pings once a second. */
async function onlineTherapist(index, plan) {
  const { token } = await register('therapist', 'Therapist', `No${index + 1}`);
  const start = offset(MAKATI, plan.north, plan.east);
  const profile = await api('PUT', '/v1/therapist/profile', {
    token,
    body: { base_lat: start.lat, base_lng: start.lng, service_radius_km: 10 },
  });
  const providerId = profile.provider_id;
  await api('POST', `/v1/admin/providers/${providerId}/verify`, { token: run.adminToken, body: { status: 'verified' } });
  await api('PUT', `/v1/therapist/services/${run.serviceId}`, { token, body: { price: '800.00' } });
  await api('PUT', '/v1/therapist/availability', { token, body: { online: true } });

  const socket = new WebSocket(`${BASE.replace(/^http/, 'ws')}/v1/ws/therapist?token=${encodeURIComponent(token)}`);
  const therapist = { index, token, providerId, socket, frames: [], waiters: new Set(), seq: 0, position: start, pinger: null };
  socket.on('message', (data) => {
    const frame = JSON.parse(data.toString());
    therapist.frames.push(frame);
    for (const waiter of therapist.waiters) waiter(frame);
  });
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', (e) => reject(new Error(`therapist ${index}'s socket did not open: ${e.message}`)));
  });

  const ping = () => {
    if (socket.readyState !== WebSocket.OPEN) return;
    therapist.seq += 1;
    if (therapist.seq > 1) {
      const rad = (plan.heading * Math.PI) / 180;
      therapist.position = offset(therapist.position, STEP_M * Math.cos(rad), STEP_M * Math.sin(rad));
    }
    socket.send(JSON.stringify({
      type: 'location',
      seq: therapist.seq,
      lat: therapist.position.lat,
      lng: therapist.position.lng,
      accuracy_m: 5,
      heading: plan.heading,
    }));
  };
  ping();
  therapist.firstAck = nextFrame([therapist], (f) => f.type === 'ack' && f.seq === 1, `therapist ${index}'s first ack`);
  therapist.pinger = setInterval(ping, 1000);
  return therapist;
}

/** The first frame (already received or still to come) on any of `therapists`' sockets that matches. */
function nextFrame(therapists, matches, what, timeoutMs = WAIT_MS) {
  for (const therapist of therapists) {
    const frame = therapist.frames.find(matches);
    if (frame) return Promise.resolve({ therapist, frame });
  }
  return new Promise((resolve, reject) => {
    const waiters = [];
    const done = () => waiters.forEach(([t, w]) => t.waiters.delete(w));
    const timer = setTimeout(() => {
      done();
      const seen = therapists.map((t) => t.frames.map((f) => f.type).join(',')).join(' | ');
      reject(new Error(`waited ${timeoutMs} ms for ${what}; frames seen: ${seen}`));
    }, timeoutMs);
    for (const therapist of therapists) {
      const waiter = (frame) => {
        if (!matches(frame)) return;
        clearTimeout(timer);
        done();
        resolve({ therapist, frame });
      };
      waiters.push([therapist, waiter]);
      therapist.waiters.add(waiter);
    }
  });
}

function closeSocket(socket) {
  if (socket.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => { socket.terminate(); resolve(); }, 2_000);
    socket.once('close', () => { clearTimeout(timer); resolve(); });
    socket.close(1000, 'test over');
  });
}

/** A point `north` and `east` metres from `from`. */
function offset(from, north, east) {
  return {
    lat: from.lat + north / METRES_PER_DEGREE_LAT,
    lng: from.lng + east / (METRES_PER_DEGREE_LAT * Math.cos((from.lat * Math.PI) / 180)),
  };
}

// --- page helpers -------------------------------------------------------------------------------------
/** A screenshot of the page as it is, in tests/artifacts/NAME.png. */
async function snap(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await run.page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

/** Polls `check` until it answers true, for at most WAIT_MS. */
async function waitFor(check, what) {
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  assert.fail(`waited ${WAIT_MS} ms for ${what}`);
}

function therapistMarker(providerId) {
  return run.page.locator(`.therapist-marker[data-provider-id="${providerId}"]`);
}

/** The page's status line, for failure messages; never waits long. */
async function statusLine() {
  const text = await run.page.locator('#status').textContent({ timeout: 1_000 }).catch(() => null);
  return text === null ? '(no status line: is the page there?)' : `"${text.trim()}"`;
}

async function waitForMarkers(count, when) {
  const ids = run.therapists.map((t) => t.providerId);
  await run.page.waitForFunction(
    (wanted) => wanted.every((id) => document.querySelector(`.therapist-marker[data-provider-id="${id}"]`)),
    ids, { timeout: WAIT_MS },
  ).catch(async () => {
    const shown = await run.page.locator('.therapist-marker').count();
    assert.fail(`${when}: expected our ${count} therapist markers within ${WAIT_MS} ms, found ${shown} ` +
      `markers; status line: ${await statusLine()}`);
  });
  for (const id of ids) {
    assert.equal(await therapistMarker(id).count(), 1, `${when}: therapist ${id} has more than one marker`);
  }
}

async function expectVisible(locator, message) {
  await locator.waitFor({ state: 'visible', timeout: WAIT_MS }).catch(async () => {
    assert.fail(`${message} (within ${WAIT_MS} ms; status line: ${await statusLine()})`);
  });
}

async function waitForAttribute(locator, name, value, message) {
  const deadline = Date.now() + WAIT_MS;
  let last = null;
  while (Date.now() < deadline) {
    last = await locator.getAttribute(name, { timeout: WAIT_MS }).catch(() => null);
    if (last === value) return;
    await run.page.waitForTimeout(100);
  }
  assert.fail(`${message}: ${name} is "${last}" after ${WAIT_MS} ms, expected "${value}"`);
}

// --- HTTP ---------------------------------------------------------------------------------------------
async function register(role, firstName, lastName) {
  // Random numbers, so the test can run again against the same database.
  const phone = `+63917${String(randomInt(1_000_000, 10_000_000)).padStart(7, '0')}`;
  return api('POST', '/v1/auth/register', {
    body: { phone, password: PASSWORD, first_name: firstName, last_name: lastName, role },
  });
}

/** One JSON request; any non-2xx answer fails with the method, path, status and problem body. */
async function api(method, pathname, { token, body, headers = {} } = {}) {
  const response = await fetch(`${BASE}${pathname}`, {
    method,
    headers: {
      Accept: 'application/json',
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${pathname} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (scripts/browser-test sets it)`);
  return value;
}
