export { DeviceMapper, type DeviceInfo, type Target, type UdevMode } from "./device-mapper.ts";
export { DmError, Errno, errnoName, isErrno } from "./errors.ts";
export { ThinPool, createPool, poolTable, POOL_FEATURES, type CreatePoolOptions } from "./thin-pool.ts";
export * from "./status.ts";
export { attachLoop, detachLoop, blockDeviceSize, discardBlocks, loopsForFile, loopBackingFile } from "./blockdev.ts";
