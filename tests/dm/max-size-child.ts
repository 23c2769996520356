/**
 * Child process of max-size.test.ts: opens the snapshotter on the test's pool
 * and store and makes one grown Prepare, so that THINSNAP_TEST_KILL_AT (read
 * at start) can SIGKILL it inside the grow.
 *   bun tests/dm/max-size-child.ts POOL ROOT FSTYPE BASE_BYTES KEY PARENT MAX_SIZE
 */
import { Store } from "../../src/store/store.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { formatDevice } from "../../src/snapshotter/mkfs.ts";
import { DeviceMapper, ThinPool } from "../../src/dm/index.ts";
import { MAX_SIZE_LABEL } from "../../src/snapshotter/max-size.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";

const [poolName, root, fsType, baseBytes, key, parent, maxSize] = process.argv.slice(2) as [string, string, string, string, string, string, string];
const dm = new DeviceMapper();
const sn = await ThinSnapshotter.open(
  { ...TEST_OPTIONS, poolName, fsType, baseImageSize: BigInt(baseBytes) },
  { store: Store.open(`${root}/metadata.db`), pool: new ThinPool(dm, poolName), format: (d, f, o) => formatDevice(d, f, o, root), rootPath: root, listDevices: () => dm.list() },
);
await sn.prepare(key, parent, { labels: { [MAX_SIZE_LABEL]: maxSize } });
await sn.close();
process.stdout.write("prepared\n");
