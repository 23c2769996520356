/**
 * The README's walk-through as steps a test can run: the ```sh block after
 * the `<!-- operator-path ... -->` marker, line by line. The guest test
 * (operator-path.test.ts) runs them; a unit test checks on any host that
 * every line is a step it knows, so README and test cannot drift apart.
 */
import { join } from "node:path";

export const WALKTHROUGH_DOC = process.env.THINSNAP_WALKTHROUGH_DOC ?? join(import.meta.dir, "../../README.md");

export type Step =
  | { kind: "npm-ci" }
  | { kind: "build"; command: string[] }
  | { kind: "serve"; args: string[] }
  | { kind: "thinsnap"; args: string[] }
  | { kind: "restart-containerd" }
  | { kind: "pull"; ref: string }
  | { kind: "ctr"; args: string[] }
  | { kind: "stop-serve" };

/** The lines of the first ```lang block after the line holding `marker`. */
export function fencedBlock(doc: string, marker: string, lang: string): string[] {
  const lines = doc.split("\n");
  const at = lines.findIndex((l) => l.includes(marker));
  if (at === -1) throw new Error(`no "${marker}" marker in the document`);
  const open = lines.findIndex((l, i) => i > at && l.trim() === `\`\`\`${lang}`);
  const close = lines.findIndex((l, i) => i > open && l.trim() === "```");
  if (open === -1 || close === -1) throw new Error(`no \`\`\`${lang} block after "${marker}"`);
  return lines.slice(open + 1, close);
}

const words = (s: string): string[] => s.trim().split(/\s+/).filter(Boolean);

/** One shell line (comments dropped; `a && b` is two steps) as steps. */
export function stepsOf(line: string): Step[] {
  const t = line.trim();
  if (t === "") return [];
  if (t.startsWith("#")) return /\bstop serve\b/.test(t) ? [{ kind: "stop-serve" }] : [];
  const code = t.replace(/\s+#.*$/, "");
  return code.split("&&").map((part): Step => {
    const w = words(part);
    const cmd = w[0] === "sudo" ? w.slice(1) : w;
    const [c0, c1, ...rest] = cmd;
    if (c0 === "npm" && c1 === "ci") return { kind: "npm-ci" };
    if (c0 === "npm" && c1 === "run" && rest[0] === "build") return { kind: "build", command: cmd };
    if (c0 === "dist/thinsnap" && c1 === "serve") return { kind: "serve", args: rest };
    if (c0 === "dist/thinsnap" && c1 !== undefined) return { kind: "thinsnap", args: [c1, ...rest] };
    if (c0 === "systemctl" && c1 === "restart" && rest[0] === "containerd") return { kind: "restart-containerd" };
    if (c0 === "ctr" && c1 === "images" && rest[0] === "pull") {
      const ref = rest.at(-1);
      if (ref === undefined) throw new Error(`no image in "${t}"`);
      return { kind: "pull", ref };
    }
    if (c0 === "ctr" && c1 !== undefined) return { kind: "ctr", args: [c1, ...rest] };
    throw new Error(`the walk-through has a step the test does not know: "${t}"`);
  });
}

export function walkthroughSteps(doc: string): Step[] {
  return fencedBlock(doc, "<!-- operator-path", "sh").flatMap(stepsOf);
}

/** The containerd snippet the README shows (TOML, comments kept). */
export function containerdSnippetOf(doc: string): string {
  return fencedBlock(doc, "<!-- containerd-snippet", "toml").join("\n");
}

/** Files of the repository the install block copies (`install ... SRC DEST`, `cp SRC DEST`). */
export function installSources(doc: string): string[] {
  const out: string[] = [];
  for (const line of fencedBlock(doc, "<!-- install", "sh")) {
    const w = words(line.replace(/\s+#.*$/, "")).filter((x) => x !== "sudo");
    if ((w[0] === "install" && !w.includes("-d")) || w[0] === "cp") {
      const args = w.slice(1).filter((x, i, a) => !x.startsWith("-") && !(a[i - 1] ?? "").match(/^-[mog]$/));
      const src = args[0];
      if (src !== undefined) out.push(src);
    }
  }
  return out;
}
