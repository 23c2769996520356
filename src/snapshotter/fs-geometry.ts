/**
 * A filesystem's own size, read from its superblock (pure parsing; grow.ts
 * reads the bytes). After a grow, the filesystem may be a little smaller than
 * its device: ext4 and xfs drop a last block group / allocation group too
 * small to hold its metadata.
 */

export interface FsGeometry {
  blockSize: bigint;
  blocks: bigint;
  /** blocks × blockSize */
  bytes: bigint;
  /** xfs: the inode space limit in percent (a grow must pass it back unchanged); ext4: 0 */
  imaxPct: number;
  /**
   * ext: consistent on disk — valid, no errors, no journal to replay, no
   * orphans — as after an unmount or a freeze (a Commit while mounted), so
   * an offline resize is safe (a journal replayed after it would undo it).
   * xfs: false.
   */
  clean: boolean;
}

/** Bytes from the device's start that hold the superblock of every supported filesystem. */
export const SUPERBLOCK_SPAN = 4096;

// ext2/3/4: struct ext4_super_block at byte 1024, little-endian.
const EXT_SB = 1024;
const EXT_MAGIC = 0xef53;
const EXT_INCOMPAT_64BIT = 0x80;
const EXT_INCOMPAT_RECOVER = 0x4;
const EXT_RO_COMPAT_ORPHAN_PRESENT = 0x10000;
const EXT_VALID_FS = 1;
const EXT_ERROR_FS = 2;

// xfs: struct xfs_dsb at byte 0, big-endian.
const XFS_MAGIC = 0x58465342; // "XFSB"
const XFS_IMAX_PCT = 127;

export class SuperblockError extends Error {
  constructor(fsType: string, why: string) {
    super(`no ${fsType} superblock: ${why}`);
    this.name = "SuperblockError";
  }
}

export function fsGeometry(buf: Uint8Array, fsType: string): FsGeometry {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.byteLength < SUPERBLOCK_SPAN) throw new SuperblockError(fsType, `only ${buf.byteLength} bytes read`);
  switch (fsType) {
    case "ext2":
    case "ext4": {
      const magic = v.getUint16(EXT_SB + 56, true);
      if (magic !== EXT_MAGIC) throw new SuperblockError(fsType, `magic 0x${magic.toString(16)}`);
      const blockSize = 1024n << BigInt(v.getUint32(EXT_SB + 24, true));
      let blocks = BigInt(v.getUint32(EXT_SB + 4, true));
      const incompat = v.getUint32(EXT_SB + 96, true);
      if (incompat & EXT_INCOMPAT_64BIT) blocks |= BigInt(v.getUint32(EXT_SB + 0x150, true)) << 32n;
      const state = v.getUint16(EXT_SB + 58, true);
      const clean =
        (state & EXT_VALID_FS) !== 0 &&
        (state & EXT_ERROR_FS) === 0 &&
        (incompat & EXT_INCOMPAT_RECOVER) === 0 &&
        (v.getUint32(EXT_SB + 100, true) & EXT_RO_COMPAT_ORPHAN_PRESENT) === 0 &&
        v.getUint32(EXT_SB + 232, true) === 0;
      return { blockSize, blocks, bytes: blocks * blockSize, imaxPct: 0, clean };
    }
    case "xfs": {
      const magic = v.getUint32(0, false);
      if (magic !== XFS_MAGIC) throw new SuperblockError(fsType, `magic 0x${magic.toString(16)}`);
      const blockSize = BigInt(v.getUint32(4, false));
      const blocks = v.getBigUint64(8, false);
      return { blockSize, blocks, bytes: blocks * blockSize, imaxPct: v.getUint8(XFS_IMAX_PCT), clean: false };
    }
    default:
      throw new SuperblockError(fsType, "unsupported filesystem type");
  }
}
