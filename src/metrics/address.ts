/**
 * metrics_address: host:port or a unix socket path, parsed once at start
 * (the config table checks it with the same function).
 */
import { SnapshotterError } from "../errors.ts";

export type MetricsAddress = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

/** A configuration error (the CLI prints its message alone, like a ConfigError). */
export class MetricsAddressError extends SnapshotterError {
  constructor(
    address: string,
    readonly why: string,
  ) {
    super(
      "invalid_argument",
      `metrics_address "${address}": ${why} ` +
        `(give host:port such as 127.0.0.1:9323 or [::1]:9323, ":9323" for every interface, ` +
        `an absolute unix socket path, or "" for no metrics endpoint)`,
    );
    this.name = "MetricsAddressError";
  }
}

/** Parses metrics_address / --metrics-address; null = off (""). */
export function parseMetricsAddress(address: string): MetricsAddress | null {
  const a = address.trim();
  if (a === "") return null;
  if (a.startsWith("/")) {
    if (a.endsWith("/")) throw new MetricsAddressError(address, "a socket path must name a file, not a directory");
    // sun_path holds 107 bytes and a NUL.
    if (Buffer.byteLength(a) > 107) throw new MetricsAddressError(address, "a unix socket path is at most 107 bytes");
    return { kind: "unix", path: a };
  }
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:/[\]]*)):(\d{1,5})$/.exec(a);
  if (!m) {
    throw new MetricsAddressError(
      address,
      a.includes(":") && !a.startsWith("[") && a.split(":").length > 2
        ? "an IPv6 host goes in brackets"
        : "neither host:port nor an absolute path",
    );
  }
  const port = Number(m[3]);
  if (port > 65535) throw new MetricsAddressError(address, `port ${port} is above 65535`);
  // Empty host: every interface, as Prometheus exporters spell ":9100".
  const host = m[1] ?? (m[2] === "" ? "::" : m[2]!);
  return { kind: "tcp", host, port };
}

export function formatMetricsAddress(a: MetricsAddress): string {
  if (a.kind === "unix") return a.path;
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
