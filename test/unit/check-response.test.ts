import { create } from "@bufbuild/protobuf";
import { DurationSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { durationOfMs, timestampOfMs } from "../../src/licensing/check-response.js";

const TIMES = [0, 1, 999, 1000, 1001, 1.5, 999.999, -1, -999, -1000, -1500.25, 1_800_000_000_123, Number.MAX_SAFE_INTEGER, -8.64e15];

describe("response time literals", () => {
  it.each(TIMES)("timestampOfMs(%d) equals timestampFromMs", (ms) => {
    expect(timestampOfMs(ms)).toStrictEqual(timestampFromMs(ms));
  });

  it.each(TIMES)("durationOfMs(%d) is create()'s Duration of the whole milliseconds, at least 0", (ms) => {
    const whole = Math.max(0, Math.ceil(ms));
    const expected = create(DurationSchema, { seconds: BigInt(Math.floor(whole / 1000)), nanos: (whole % 1000) * 1_000_000 });
    expect(durationOfMs(ms)).toStrictEqual(expected);
  });
});
