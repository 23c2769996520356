/** Which device-mapper devices are thin devices of a pool (by their tables). */
import type { DeviceMapper } from "../dm/device-mapper.ts";
import { parseThinParams } from "../dm/status.ts";

/** Active thin devices whose table points at the pool. */
export function thinDevicesOfPool(dm: DeviceMapper, name: string): string[] {
  const info = dm.info(name);
  if (!info) return [];
  const mm = `${info.major}:${info.minor}`;
  return dm.list().filter((n) => {
    const t = dm.table(n)[0];
    if (t?.type !== "thin") return false;
    const dev = parseThinParams(t.params).poolDev;
    return dev === mm || dev === `/dev/mapper/${name}`;
  });
}
