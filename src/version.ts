/**
 * Build identity. build.ts replaces these globals with --define; running from
 * source they fall back to package.json's version and "dev".
 */
import pkg from "../package.json" with { type: "json" };

declare const THINSNAP_VERSION: string | undefined;
declare const THINSNAP_REVISION: string | undefined;
declare const THINSNAP_BUILD_DATE: string | undefined;

export const VERSION: string = typeof THINSNAP_VERSION === "string" ? THINSNAP_VERSION : pkg.version;
export const REVISION: string = typeof THINSNAP_REVISION === "string" ? THINSNAP_REVISION : "dev";
export const BUILD_DATE: string = typeof THINSNAP_BUILD_DATE === "string" ? THINSNAP_BUILD_DATE : "unknown";
