/**
 * Refusals for space (ResourceExhausted) in the log: one warning with the
 * numbers when an episode starts, a summary of how many were refused at
 * most once per summary interval while it lasts, and one line when it is
 * over (no refusal for the quiet period). A host starting thousands of
 * containers on a full pool gets a few lines, not one per request.
 *
 * spaceLogStep is the decision (no clock, no I/O); SpaceLog runs it with a
 * clock, a timer and a Logger.
 */
import type { Logger, LogFields, LogLevel } from "../log.ts";
import type { SpaceResource } from "../snapshotter/space.ts";

export interface SpaceLogTiming {
  /** An episode ends after this long without a refusal. */
  quietMs: number;
  /** At most one "still refusing" summary per this long. */
  summaryMs: number;
}

export const DEFAULT_SPACE_LOG_TIMING: SpaceLogTiming = { quietMs: 60_000, summaryMs: 60_000 };

interface Episode {
  startedAt: number;
  lastAt: number;
  lastSummaryAt: number;
  total: number;
  /** Refusals since the last line about this episode. */
  unreported: number;
  lastMessage: string;
}

/** Open episodes, one per resource. */
export type SpaceLogState = Map<SpaceResource, Episode>;

export type SpaceLogEvent = { type: "refused"; resource: SpaceResource; message: string } | { type: "tick" };

export interface LogLine {
  level: LogLevel;
  msg: string;
  fields: LogFields;
}

const seconds = (ms: number): number => Math.round(ms / 1000);

/** Applies one event at time `now` (ms) to `state` (updated in place); returns the lines to log. */
export function spaceLogStep(state: SpaceLogState, ev: SpaceLogEvent, now: number, t: SpaceLogTiming): LogLine[] {
  const lines: LogLine[] = [];
  if (ev.type === "refused") {
    const e = state.get(ev.resource);
    if (!e) {
      state.set(ev.resource, { startedAt: now, lastAt: now, lastSummaryAt: now, total: 1, unreported: 0, lastMessage: ev.message });
      lines.push({
        level: "warn",
        msg: "refusing new snapshots for lack of space (ResourceExhausted); further refusals are summarized",
        fields: { resource: ev.resource, reason: ev.message },
      });
      return lines;
    }
    e.lastAt = now;
    e.total++;
    e.unreported++;
    e.lastMessage = ev.message;
  }
  for (const [resource, e] of state) {
    if (now - e.lastAt >= t.quietMs) {
      state.delete(resource);
      lines.push({
        level: "info",
        msg: "no more space refusals",
        fields: { resource, refused: e.total, seconds: seconds(e.lastAt - e.startedAt), quiet_seconds: seconds(t.quietMs) },
      });
    } else if (e.unreported > 0 && now - e.lastSummaryAt >= t.summaryMs) {
      lines.push({
        level: "warn",
        msg: "still refusing new snapshots for lack of space",
        fields: {
          resource,
          refused: e.unreported,
          in_seconds: seconds(now - e.lastSummaryAt),
          total: e.total,
          since_seconds: seconds(now - e.startedAt),
          reason: e.lastMessage,
        },
      });
      e.unreported = 0;
      e.lastSummaryAt = now;
    }
  }
  return lines;
}

/** The daemon's space-refusal log: call refused() for every refusal (SnapshotterDeps.onSpaceRefusal). */
export class SpaceLog {
  private readonly state: SpaceLogState = new Map();
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly log: Logger,
    private readonly timing: SpaceLogTiming = DEFAULT_SPACE_LOG_TIMING,
    private readonly now: () => number = Date.now,
  ) {}

  refused(resource: SpaceResource, message: string): void {
    this.emit(spaceLogStep(this.state, { type: "refused", resource, message }, this.now(), this.timing));
    // Ticks only while an episode is open, so that its summary and its end are logged without a new refusal.
    if (this.timer === null && this.state.size > 0) {
      this.timer = setInterval(() => this.tick(), Math.min(this.timing.quietMs, this.timing.summaryMs) / 4);
      this.timer.unref();
    }
  }

  tick(): void {
    this.emit(spaceLogStep(this.state, { type: "tick" }, this.now(), this.timing));
    if (this.state.size === 0) this.stop();
  }

  /** Open episodes (for tests and shutdown). */
  get open(): number {
    return this.state.size;
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private emit(lines: LogLine[]): void {
    for (const l of lines) this.log.log(l.level, l.msg, l.fields);
  }
}
