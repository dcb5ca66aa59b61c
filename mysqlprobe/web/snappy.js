// Raw snappy block decoder: the /collector wire format (one block of UTF-8 JSON per message).
// Format (google/snappy format_description.txt): a varint with the uncompressed length, then
// elements whose tag byte's low two bits say literal (0), or copy with a 1-, 2- or 4-byte
// offset (1, 2, 3). Bad input throws an Error; the output never grows past the declared length.
(function (root) {
  "use strict";
  const MP = (root.MP = root.MP || {});

  function snappyDecode(input, maxSize) {
    const src = input instanceof Uint8Array ? input : new Uint8Array(input);
    const limit = maxSize || 64 * 1024 * 1024;
    let pos = 0;
    let size = 0;
    for (let shift = 0; ; shift += 7) {
      if (pos >= src.length || shift > 28) throw new Error("snappy: bad length preamble");
      const b = src[pos++];
      size += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) break;
    }
    if (size > limit) throw new Error("snappy: block of " + size + " bytes exceeds the limit");
    const out = new Uint8Array(size);
    let o = 0;
    while (pos < src.length) {
      const tag = src[pos++];
      const kind = tag & 3;
      if (kind === 0) {
        let len = tag >>> 2;
        if (len >= 60) {
          const extra = len - 59;
          if (pos + extra > src.length) throw new Error("snappy: truncated literal length");
          len = 0;
          for (let i = 0; i < extra; i++) len += src[pos + i] * 2 ** (8 * i);
          pos += extra;
        }
        len += 1;
        if (pos + len > src.length || o + len > size) throw new Error("snappy: literal overruns");
        out.set(src.subarray(pos, pos + len), o);
        pos += len;
        o += len;
        continue;
      }
      let len;
      let offset;
      if (kind === 1) {
        if (pos + 1 > src.length) throw new Error("snappy: truncated copy");
        len = 4 + ((tag >>> 2) & 7);
        offset = ((tag >>> 5) << 8) | src[pos++];
      } else if (kind === 2) {
        if (pos + 2 > src.length) throw new Error("snappy: truncated copy");
        len = 1 + (tag >>> 2);
        offset = src[pos] | (src[pos + 1] << 8);
        pos += 2;
      } else {
        if (pos + 4 > src.length) throw new Error("snappy: truncated copy");
        len = 1 + (tag >>> 2);
        offset = (src[pos] | (src[pos + 1] << 8) | (src[pos + 2] << 16)) + src[pos + 3] * 2 ** 24;
        pos += 4;
      }
      if (offset === 0 || offset > o || o + len > size) throw new Error("snappy: bad copy");
      for (let i = 0; i < len; i++, o++) out[o] = out[o - offset]; // may overlap: byte by byte
    }
    if (o !== size) throw new Error("snappy: block ends at " + o + " of " + size + " bytes");
    return out;
  }

  // A /collector message: snappy block -> JSON value.
  function decodeMessage(buffer) {
    return JSON.parse(new TextDecoder("utf-8").decode(snappyDecode(buffer)));
  }

  MP.snappyDecode = snappyDecode;
  MP.decodeMessage = decodeMessage;
})(typeof window !== "undefined" ? window : globalThis);
