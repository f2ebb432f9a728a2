// Writes a small raster PMTiles v3 archive over central Makati for the browser test's base map:
// zooms 11 to 16, each tile a 256 px PNG of one land colour crossed by two "streets", so the
// test can tell our tiles from anything else on screen. Tile ids come from the pmtiles library;
// the archive is read back with it before the script says it is done.
//
// Usage: node tests/browser/make-pmtiles.mjs OUT.pmtiles

import fs from 'node:fs';
import zlib from 'node:zlib';

import { PMTiles, zxyToTileId } from 'pmtiles';

/** The tiles' land colour (the test looks for it on screen). */
export const LAND = [255, 216, 168];
const STREET = [255, 255, 255];
const BOUNDS = { west: 120.99, south: 14.52, east: 121.06, north: 14.59 };
const CENTER = { lng: 121.0244, lat: 14.5547, zoom: 14 };
const MIN_ZOOM = 11;
const MAX_ZOOM = 16;

// --- PNG ------------------------------------------------------------------------------------
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** A 256×256 RGB PNG: land with one street across and one down, 8 px wide, off centre. */
function tilePng() {
  const size = 256;
  const raw = Buffer.alloc(size * (1 + size * 3));
  for (let y = 0; y < size; y++) {
    const row = y * (1 + size * 3);
    raw[row] = 0; // filter: none
    for (let x = 0; x < size; x++) {
      const street = (x >= 40 && x < 48) || (y >= 200 && y < 208);
      const [r, g, b] = street ? STREET : LAND;
      raw.set([r, g, b], row + 1 + x * 3);
    }
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // colour type: RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// --- PMTiles v3 ---------------------------------------------------------------------------------
function varint(value, out) {
  let v = BigInt(value);
  while (v >= 0x80n) {
    out.push(Number((v & 0x7fn) | 0x80n));
    v >>= 7n;
  }
  out.push(Number(v));
}

/** A directory (uncompressed): count, delta ids, run lengths, lengths, offsets (0 = contiguous). */
function directory(entries) {
  const out = [];
  varint(entries.length, out);
  let last = 0;
  for (const e of entries) {
    varint(e.tileId - last, out);
    last = e.tileId;
  }
  for (const e of entries) varint(e.runLength, out);
  for (const e of entries) varint(e.length, out);
  entries.forEach((e, i) => {
    const previous = entries[i - 1];
    if (i > 0 && e.offset === previous.offset + previous.length) varint(0, out);
    else varint(e.offset + 1, out);
  });
  return Buffer.from(out);
}

function lngToX(lng, z) {
  return Math.floor(((lng + 180) / 360) * 2 ** z);
}

function latToY(lat, z) {
  const rad = (lat * Math.PI) / 180;
  return Math.floor(((1 - Math.log(Math.tan(rad) + 1 / Math.cos(rad)) / Math.PI) / 2) * 2 ** z);
}

export function buildArchive() {
  const png = tilePng();
  const entries = [];
  for (let z = MIN_ZOOM; z <= MAX_ZOOM; z++) {
    for (let x = lngToX(BOUNDS.west, z); x <= lngToX(BOUNDS.east, z); x++) {
      for (let y = latToY(BOUNDS.north, z); y <= latToY(BOUNDS.south, z); y++) {
        // Every tile is the same picture, stored once: all entries point at it.
        entries.push({ tileId: zxyToTileId(z, x, y), offset: 0, length: png.length, runLength: 1 });
      }
    }
  }
  entries.sort((a, b) => a.tileId - b.tileId);
  const root = directory(entries);
  const metadata = Buffer.from(JSON.stringify({ name: 'hilot-browser-test', format: 'png' }));
  const header = Buffer.alloc(127);
  const rootOffset = 127;
  const metadataOffset = rootOffset + root.length;
  const dataOffset = metadataOffset + metadata.length;
  header.write('PMTiles', 0, 'ascii');
  header[7] = 3;
  const u64 = (value, at) => header.writeBigUInt64LE(BigInt(value), at);
  u64(rootOffset, 8);
  u64(root.length, 16);
  u64(metadataOffset, 24);
  u64(metadata.length, 32);
  u64(dataOffset, 40); // no leaf directories
  u64(0, 48);
  u64(dataOffset, 56);
  u64(png.length, 64);
  u64(entries.length, 72); // addressed tiles
  u64(entries.length, 80); // tile entries
  u64(1, 88); // tile contents
  header[96] = 0; // not clustered: entries share their one tile
  header[97] = 1; // internal compression: none
  header[98] = 1; // tile compression: none
  header[99] = 2; // tile type: PNG
  header[100] = MIN_ZOOM;
  header[101] = MAX_ZOOM;
  const e7 = (deg) => Math.round(deg * 1e7);
  header.writeInt32LE(e7(BOUNDS.west), 102);
  header.writeInt32LE(e7(BOUNDS.south), 106);
  header.writeInt32LE(e7(BOUNDS.east), 110);
  header.writeInt32LE(e7(BOUNDS.north), 114);
  header[118] = CENTER.zoom;
  header.writeInt32LE(e7(CENTER.lng), 119);
  header.writeInt32LE(e7(CENTER.lat), 123);
  return { bytes: Buffer.concat([header, root, metadata, png]), tiles: entries.length };
}

/** Node file access for the pmtiles reader (it reads byte ranges). */
class NodeFile {
  constructor(path) {
    this.path = path;
  }

  getKey() {
    return this.path;
  }

  async getBytes(offset, length) {
    const handle = await fs.promises.open(this.path, 'r');
    try {
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buffer, 0, length, offset);
      const data = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + bytesRead);
      return { data };
    } finally {
      await handle.close();
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const out = process.argv[2];
  if (!out) {
    console.error('usage: node make-pmtiles.mjs OUT.pmtiles');
    process.exit(2);
  }
  const { bytes, tiles } = buildArchive();
  fs.writeFileSync(out, bytes);
  // Read it back as the browser will, through the library.
  const archive = new PMTiles(new NodeFile(out));
  const header = await archive.getHeader();
  const z = 15;
  const tile = await archive.getZxy(z, lngToX(CENTER.lng, z), latToY(CENTER.lat, z));
  if (header.tileType !== 2 || !tile || tile.data.byteLength !== bytes.length - Number(header.tileDataOffset)) {
    console.error('the archive does not read back', header, tile);
    process.exit(1);
  }
  console.log(`wrote ${out}: ${tiles} tiles, zooms ${MIN_ZOOM}-${MAX_ZOOM}, ${bytes.length} bytes`);
}
