/**
 * Summarises V8 CPU profiles (`node --cpu-prof --cpu-prof-dir=DIR`) so a benchmark report can say
 * what dominates each service's CPU: the top functions by self time, self time by origin (node
 * internals, each npm package, each service or package of this repo) and the inclusive cost of
 * our own code paths.
 *
 * CLI: node ops/bench/profile.ts <file.cpuprofile | directory> [--top N]
 * prints a Markdown section per profile, newest first for a directory.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { basename, isAbsolute, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  file: string;
  /** profile wall duration */
  total_ms: number;
  /** total minus (idle) */
  busy_ms: number;
  gc_ms: number;
  /** top functions by self time, merged by functionName+url+line */
  top_functions: { name: string; location: string; self_ms: number; self_pct_of_busy: number }[];
  /** all self time grouped by where the code lives ("node:internal", npm package, repo area, GC, program) */
  by_origin: { origin: string; self_ms: number; self_pct_of_busy: number }[];
  /** inclusive time (self + descendants) of the top functions in this repo, outside node_modules */
  top_inclusive_project: { name: string; location: string; total_ms: number; pct_of_busy: number }[];
}

interface FunctionInfo {
  key: string;
  name: string;
  location: string;
  origin: string;
  in_project: boolean;
}

const DEFAULT_REPO_ROOT = resolve(import.meta.dirname, "..", "..");
const IDLE = "(idle)";
const GC = "(garbage collector)";
const PROGRAM = "(program)";

function describeFrame(frame: CallFrame, repoRoot: string): FunctionInfo {
  const name = frame.functionName || "(anonymous)";
  const key = `${name}\0${frame.url}\0${frame.lineNumber}`;
  // ES modules report file:// URLs, CommonJS plain absolute paths; both become repo-relative.
  const absolute = frame.url.startsWith("file://") ? fileURLToPath(frame.url) : frame.url;
  const fromRoot = isAbsolute(absolute) ? relative(repoRoot, absolute) : "..";
  const inRepo = !fromRoot.startsWith("..") && !isAbsolute(fromRoot);
  const path = inRepo ? fromRoot.split(sep).join("/") : absolute.split(sep).join("/");
  const line = frame.lineNumber >= 0 ? `:${frame.lineNumber + 1}` : "";
  const location = path ? `${path}${line}` : name.startsWith("(") ? "" : "(native)";

  let origin: string;
  const modulesAt = path.lastIndexOf("node_modules/");
  if (frame.url === "" && (name === GC || name === PROGRAM || name === IDLE)) origin = name;
  else if (frame.url === "" || frame.url.startsWith("node:")) origin = "node:internal";
  // wasm urls carry a module hash (node's own type stripper is one), so group them together.
  else if (frame.url.startsWith("wasm://")) origin = "wasm";
  else if (modulesAt >= 0) {
    // The LAST node_modules segment names the package that owns the code, even when nested.
    const parts = path.slice(modulesAt + "node_modules/".length).split("/");
    origin = parts[0]?.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] ?? path);
  } else if (inRepo) {
    const parts = path.split("/");
    const twoLevels = (parts[0] === "services" || parts[0] === "packages") && parts.length > 2;
    origin = twoLevels ? parts.slice(0, 2).join("/") : (parts[0] ?? path);
  } else origin = path; // outside the repo, e.g. "[eval]" or a file in /tmp
  return { key, name, location, origin, in_project: inRepo && modulesAt < 0 };
}

function addTo<K>(map: Map<K, number>, key: K, amount: number): void {
  map.set(key, (map.get(key) ?? 0) + amount);
}

export function summariseProfile(
  path: string,
  options: { top?: number; repo_root?: string } = {},
): ProfileSummary {
  const top = options.top ?? 20;
  const repoRoot = resolve(options.repo_root ?? DEFAULT_REPO_ROOT);
  const profile = JSON.parse(readFileSync(path, "utf8")) as CpuProfile;
  const nodesById = new Map(profile.nodes.map((node) => [node.id, node]));
  const infoById = new Map(profile.nodes.map((node) => [node.id, describeFrame(node.callFrame, repoRoot)]));

  // Each sample owns the time elapsed since the previous one; hitCount x interval drifts because
  // V8's sampling interval is irregular (idle stretches, sampler catching up).
  const selfUsById = new Map<number, number>();
  for (const [i, id] of profile.samples.entries()) addTo(selfUsById, id, profile.timeDeltas[i] ?? 0);

  const selfUsByKey = new Map<string, number>();
  const selfUsByOrigin = new Map<string, number>();
  const infoByKey = new Map<string, FunctionInfo>();
  let gcUs = 0;
  for (const [id, selfUs] of selfUsById) {
    const info = infoById.get(id);
    if (!info) continue;
    if (info.origin === IDLE) continue;
    if (info.origin === GC) gcUs += selfUs;
    infoByKey.set(info.key, info);
    addTo(selfUsByKey, info.key, selfUs);
    addTo(selfUsByOrigin, info.origin, selfUs);
  }

  // Inclusive time per function: a recursive function would otherwise be counted once per frame
  // on the stack, so only frames whose function is not already on the ancestor path count.
  // Recursion depth here is bounded by V8's sampled stack depth (255 frames), so no explicit stack.
  const inclusiveUsByKey = new Map<string, number>();
  const framesOnPath = new Map<string, number>();
  const inclusiveUs = (id: number): number => {
    const node = nodesById.get(id);
    const info = infoById.get(id);
    if (!node || !info) return 0;
    const outermost = !framesOnPath.get(info.key);
    addTo(framesOnPath, info.key, 1);
    let totalUs = selfUsById.get(id) ?? 0;
    for (const child of node.children ?? []) totalUs += inclusiveUs(child);
    addTo(framesOnPath, info.key, -1);
    if (outermost && info.in_project) {
      infoByKey.set(info.key, info);
      addTo(inclusiveUsByKey, info.key, totalUs);
    }
    return totalUs;
  };
  const childIds = new Set(profile.nodes.flatMap((node) => node.children ?? []));
  for (const node of profile.nodes) if (!childIds.has(node.id)) inclusiveUs(node.id);

  const totalUs = profile.endTime - profile.startTime;
  // Busy is what the samples attribute to code, so the origins add up to it exactly: the stretch
  // after the last sample (up to endTime) belongs to no frame, and on a loaded machine it is
  // several milliseconds.
  const busyUs = [...selfUsByOrigin.values()].reduce((sum, us) => sum + us, 0);
  const ms = (us: number) => Math.round(us) / 1000;
  const pctOfBusy = (us: number) => (busyUs > 0 ? Math.round((10000 * us) / busyUs) / 100 : 0);
  const descending = (map: Map<string, number>) => [...map].sort((a, b) => b[1] - a[1]);
  const infoOf = (key: string) => infoByKey.get(key) as FunctionInfo;

  return {
    file: path,
    total_ms: ms(totalUs),
    busy_ms: ms(busyUs),
    gc_ms: ms(gcUs),
    top_functions: descending(selfUsByKey)
      .slice(0, top)
      .map(([key, us]) => ({
        name: infoOf(key).name,
        location: infoOf(key).location,
        self_ms: ms(us),
        self_pct_of_busy: pctOfBusy(us),
      })),
    by_origin: descending(selfUsByOrigin).map(([origin, us]) => ({
      origin,
      self_ms: ms(us),
      self_pct_of_busy: pctOfBusy(us),
    })),
    top_inclusive_project: descending(inclusiveUsByKey)
      .slice(0, top)
      .map(([key, us]) => ({
        name: infoOf(key).name,
        location: infoOf(key).location,
        total_ms: ms(us),
        pct_of_busy: pctOfBusy(us),
      })),
  };
}

/** Markdown table whose last two columns (ms, %) are right-aligned. */
function markdownTable(head: string[], rows: string[][]): string {
  const align = head.map((_, i) => (i >= head.length - 2 ? "---:" : "---"));
  const line = (cells: string[]) => `| ${cells.map((c) => c.replaceAll("|", "\\|")).join(" | ")} |`;
  return [line(head), `| ${align.join(" | ")} |`, ...rows.map(line)].join("\n");
}

export function summaryMarkdown(title: string, summary: ProfileSummary, top = 10): string {
  const ms = (value: number) => value.toFixed(1);
  const pct = (value: number) => `${value.toFixed(1)}%`;
  const busyPctOfWall = summary.total_ms > 0 ? (100 * summary.busy_ms) / summary.total_ms : 0;
  const sections = [
    `### ${title}`,
    `\`${summary.file}\`: wall ${ms(summary.total_ms)} ms, busy ${ms(summary.busy_ms)} ms (${pct(busyPctOfWall)} of wall), GC ${ms(summary.gc_ms)} ms`,
    markdownTable(
      ["function", "location", "self ms", "% of busy"],
      summary.top_functions
        .slice(0, top)
        .map((f) => [`\`${f.name}\``, f.location, ms(f.self_ms), pct(f.self_pct_of_busy)]),
    ),
    markdownTable(
      ["origin", "self ms", "% of busy"],
      summary.by_origin.slice(0, top).map((o) => [o.origin, ms(o.self_ms), pct(o.self_pct_of_busy)]),
    ),
  ];
  if (summary.top_inclusive_project.length > 0) {
    sections.push(
      markdownTable(
        ["project function", "location", "inclusive ms", "% of busy"],
        summary.top_inclusive_project
          .slice(0, top)
          .map((f) => [`\`${f.name}\``, f.location, ms(f.total_ms), pct(f.pct_of_busy)]),
      ),
    );
  }
  return sections.join("\n\n");
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: "string" } } });
  const top = Number(values.top ?? 10);
  const target = positionals[0];
  if (!target || !Number.isInteger(top) || top <= 0) {
    console.error("usage: node ops/bench/profile.ts <file.cpuprofile | directory> [--top N]");
    process.exit(2);
  }
  const files = statSync(target).isDirectory()
    ? readdirSync(target)
        .filter((name) => name.endsWith(".cpuprofile"))
        .map((name) => join(target, name))
        .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)
    : [target];
  if (files.length === 0) {
    console.error(`no .cpuprofile files in ${target}`);
    process.exit(1);
  }
  console.log(
    files.map((file) => summaryMarkdown(basename(file), summariseProfile(file, { top }), top)).join("\n\n"),
  );
}
