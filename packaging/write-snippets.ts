/**
 * Writes packaging/containerd/*.toml and packaging/thinsnap.service from
 * src/install/snippets.ts (their one source): `bun packaging/write-snippets.ts`.
 * tests/unit/install-snippets.test.ts fails when they differ.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { PACKAGED_SNIPPETS, renderPackagedSnippet, systemdUnit } from "../src/install/snippets.ts";

const dir = import.meta.dir;
for (const s of PACKAGED_SNIPPETS) writeFileSync(join(dir, "containerd", s.file), renderPackagedSnippet(s));
writeFileSync(join(dir, "thinsnap.service"), systemdUnit());
console.log(`wrote ${PACKAGED_SNIPPETS.length} snippets and thinsnap.service`);
