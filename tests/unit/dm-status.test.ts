import { describe, expect, test } from "bun:test";
import {
  parseThinPoolParams,
  parseThinPoolStatus,
  parseThinParams,
  parseThinStatus,
  StatusParseError,
  thinPoolParams,
} from "../../src/dm/status.ts";
import { poolTable } from "../../src/dm/thin-pool.ts";

describe("thin-pool status", () => {
  test("parses a 6.1 kernel line", () => {
    const s = parseThinPoolStatus("5 12/16384 30/16384 - rw no_discard_passdown queue_if_no_space - 1024");
    expect(s.transactionId).toBe(5n);
    expect(s.usedMetadataBlocks).toBe(12n);
    expect(s.totalMetadataBlocks).toBe(16384n);
    expect(s.usedDataBlocks).toBe(30n);
    expect(s.totalDataBlocks).toBe(16384n);
    expect(s.heldMetadataRoot).toBe("-");
    expect(s.mode).toBe("rw");
    expect(s.discardPassdown).toBe(false);
    expect(s.errorIfNoSpace).toBe(false);
    expect(s.needsCheck).toBe(false);
    expect(s.metadataLowWatermark).toBe(1024n);
  });

  test("parses flags: out of space, held root, needs_check, no watermark (old kernels)", () => {
    const s = parseThinPoolStatus("0 1/2 3/4 17 out_of_data_space discard_passdown error_if_no_space needs_check");
    expect(s.mode).toBe("out_of_data_space");
    expect(s.heldMetadataRoot).toBe("17");
    expect(s.discardPassdown).toBe(true);
    expect(s.errorIfNoSpace).toBe(true);
    expect(s.needsCheck).toBe(true);
    expect(s.metadataLowWatermark).toBeNull();
  });

  test("rejects a failed pool and garbage", () => {
    expect(() => parseThinPoolStatus("Fail")).toThrow(StatusParseError);
    expect(() => parseThinPoolStatus("1 2 3")).toThrow(StatusParseError);
    expect(() => parseThinPoolStatus("x 1/2 3/4 - rw a b c")).toThrow(StatusParseError);
    expect(() => parseThinPoolStatus("1 1/2 3/4 - weird a b c")).toThrow(StatusParseError);
  });
});

describe("thin status", () => {
  test("mapped and unmapped", () => {
    expect(parseThinStatus("2048 4095")).toEqual({ mappedSectors: 2048n, highestMappedSector: 4095n });
    expect(parseThinStatus("0 -")).toEqual({ mappedSectors: 0n, highestMappedSector: null });
  });
  test("failed and malformed", () => {
    expect(() => parseThinStatus("Fail")).toThrow(StatusParseError);
    expect(() => parseThinStatus("12")).toThrow(StatusParseError);
  });
});

describe("tables", () => {
  test("thin-pool params round-trip", () => {
    const t = poolTable({ metadataDev: "7:0", dataDev: "7:1", blockSectors: 128 });
    const s = thinPoolParams(t);
    expect(s).toBe("7:0 7:1 128 32768 2 skip_block_zeroing error_if_no_space");
    expect(parseThinPoolParams(s)).toEqual(t);
  });
  test("block size validation", () => {
    expect(() => poolTable({ metadataDev: "a", dataDev: "b", blockSectors: 100 })).toThrow(RangeError);
    expect(() => poolTable({ metadataDev: "a", dataDev: "b", blockSectors: 64 })).toThrow(RangeError);
    expect(() => poolTable({ metadataDev: "a", dataDev: "b", blockSectors: 4194304 })).toThrow(RangeError);
  });
  test("thin params", () => {
    expect(parseThinParams("254:0 42")).toEqual({ poolDev: "254:0", thinId: 42 });
    expect(() => parseThinParams("254:0 x")).toThrow(StatusParseError);
  });
});
