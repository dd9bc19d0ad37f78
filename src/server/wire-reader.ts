/**
 * The protobuf wire format's reading core, shared by the specialized codecs of the hottest
 * methods (src/licensing/check-codec.ts, src/envoy/ext-authz-codec.ts). Each adds what its
 * messages need (tags, strings, int64) on top. Malformed input throws an Error, which the
 * transport answers with INVALID_ARGUMENT.
 */
export class WireReader {
  pos = 0;
  readonly end: number;

  constructor(readonly buf: Buffer) {
    this.end = buf.length;
  }

  /** A varint as a number; exact up to 2^53 (larger values only occur in int64 fields). */
  varint(): number {
    const buf = this.buf;
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new Error("premature end of varint");
      const byte = buf[this.pos++] as number;
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) return result;
      scale *= 128;
    }
    throw new Error("varint longer than 10 bytes");
  }

  /** The end offset of a length-delimited field whose length comes next. */
  lengthEnd(): number {
    const length = this.varint();
    const end = this.pos + length;
    if (end > this.end) throw new Error("length-delimited field runs past the end of the message");
    return end;
  }

  /**
   * Skips one field's value by its wire type. Groups (3, 4) and the undefined types (6, 7)
   * throw: proto3 has no groups, and nothing here sends them.
   */
  skipValue(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2:
        this.pos = this.lengthEnd();
        return;
      case 5:
        this.pos += 4;
        break;
      default:
        throw new Error(`unsupported wire type ${wireType}`);
    }
    if (this.pos > this.end) throw new Error("fixed-size field runs past the end of the message");
  }
}

/**
 * Stores a decoded map<string, string> entry as protobuf-es does: an own property, even for
 * `__proto__` (plain assignment would set the object's prototype and lose the entry).
 */
export function setMapEntry(map: Record<string, string>, key: string, value: string): void {
  if (key === "__proto__") Object.defineProperty(map, key, { value, writable: true, enumerable: true, configurable: true });
  else map[key] = value;
}
