/** One line per event on stderr, text or JSON. */
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";
export type LogFields = Record<string, string | number | bigint | boolean | null | undefined>;

const ORDER: Record<LogLevel, number> = { trace: 0, debug: 1, info: 2, warn: 3, error: 4 };

export interface Logger {
  enabled(level: LogLevel): boolean;
  log(level: LogLevel, msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

function quote(v: string): string {
  return /^[\w./:@+-]*$/.test(v) && v !== "" ? v : JSON.stringify(v);
}

export function createLogger(
  level: LogLevel = "info",
  format: "text" | "json" = "text",
  write: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
): Logger {
  const min = ORDER[level];
  const log = (lv: LogLevel, msg: string, fields: LogFields = {}): void => {
    if (ORDER[lv] < min) return;
    const time = new Date().toISOString();
    if (format === "json") {
      const o: Record<string, unknown> = { time, level: lv, msg };
      for (const [k, v] of Object.entries(fields)) if (v !== undefined) o[k] = typeof v === "bigint" ? v.toString() : v;
      write(JSON.stringify(o));
      return;
    }
    let line = `time=${time} level=${lv} msg=${quote(msg)}`;
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${quote(String(v))}`;
    write(line);
  };
  return {
    enabled: (lv) => ORDER[lv] >= min,
    log,
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  };
}

export const silentLogger: Logger = createLogger("error", "text", () => {});
