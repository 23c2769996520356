/** The host, guest and software versions the report states. */
import { readFileSync } from "node:fs";
import { sh } from "../tests/kit/process.ts";
import { BIN } from "./plan.ts";

export type Machine = Record<"hostCpu" | "hostKernel" | "hostCpus" | "hostLoad" | "qemu" | "guestCpu" | "guestCpus" | "guestMemMiB" | "guestKernel" | "containerd" | "runc" | "dmsetup" | "mkfsExt4" | "thinsnap" | "bun" | "date", string>;

export function machineInfo(): Machine {
  const cpu = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "?";
  const mem = /MemTotal:\s*(\d+) kB/.exec(readFileSync("/proc/meminfo", "utf8"))?.[1] ?? "0";
  const safe = ([file, ...args]: [string, ...string[]]): string => {
    try {
      return sh(file, args).trim().split("\n")[0] ?? "";
    } catch {
      return "?";
    }
  };
  return {
    hostCpu: process.env.BENCH_HOST_CPU ?? "?",
    hostKernel: process.env.BENCH_HOST_KERNEL ?? "?",
    hostCpus: process.env.BENCH_HOST_CPUS ?? "?",
    hostLoad: process.env.BENCH_HOST_LOAD ?? "?",
    qemu: process.env.BENCH_QEMU ?? "?",
    guestCpu: cpu,
    guestCpus: String(navigator.hardwareConcurrency),
    guestMemMiB: String(Math.round(Number(mem) / 1024)),
    guestKernel: safe(["uname", "-r"]),
    containerd: safe(["containerd", "--version"]),
    runc: safe(["runc", "--version"]),
    dmsetup: safe(["dmsetup", "--version"]),
    mkfsExt4: safe(["mkfs.ext4", "-V"]) || "?",
    thinsnap: safe([BIN, "--version"]),
    bun: Bun.version,
    date: new Date().toISOString(),
  };
}
