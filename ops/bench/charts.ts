/**
 * PNG charts for the benchmark report.
 *
 * Pipeline: a Vega-Lite spec (declarative, so this file only says *what* to plot) is compiled to a
 * Vega spec, a headless Vega `View` (renderer "none": no DOM, no canvas) turns it into SVG, and resvg
 * (a Rust SVG rasteriser shipped as a prebuilt N-API binary) turns the SVG into a PNG. None of these
 * needs a browser, node-canvas or Cairo, so the bench runs on a bare CI image.
 *
 * Size: the PNG is exactly `width_px` x `height_px` (scale factor 1). Vega-Lite's `autosize: fit`
 * makes the whole chart, title, axes and legend included, fit that box, so the caller decides the
 * pixel size of the image it embeds in the report and nothing else changes it.
 *
 * Fonts: the SVG names "DejaVu Sans"; resvg loads the system fonts and also falls back to DejaVu Sans
 * for generic families. Without a font it would silently draw no text at all. Vega, having no canvas
 * under Node, *estimates* text widths (about 0.8 em per character); DejaVu Sans is narrower than that
 * on average, so labels get a little more room than they need rather than overlapping.
 */
import { renderAsync } from "@resvg/resvg-js";
import { parse, View } from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

export interface Series {
  name: string;
  points: { x: number; y: number }[];
}

export interface LineChart {
  title: string;
  x_label: string;
  y_label: string;
  series: Series[];
  /** log scale on x (concurrency 1,4,16,64...) */
  x_log?: boolean;
  width_px?: number; // default 720
  height_px?: number; // default 400
}

export interface BarChart {
  title: string;
  y_label: string;
  /** Grouped bars: one cluster per `group` (x axis), one colored bar per `name` inside it. */
  bars: { group: string; name: string; value: number }[];
  width_px?: number; // default 720
  height_px?: number; // default 400
}

const FONT = "DejaVu Sans";
const DEFAULT_WIDTH_PX = 720;
const DEFAULT_HEIGHT_PX = 400;
// Bounds keep a typo (say 72000) from allocating a multi-gigabyte pixel buffer.
const SIZE_MIN_PX = 100;
const SIZE_MAX_PX = 4000;
// Up to this many distinct x values on a log axis, ticks sit exactly on the measured points
// (1, 4, 16, 64 reads better than the 1, 10, 100 a log scale picks by itself).
const DATA_TICKS_MAX = 16;

/** Shared look: white background, readable type, same font that resvg is given below. */
const CONFIG = {
  background: "white",
  font: FONT,
  title: { fontSize: 16, anchor: "start", offset: 12 },
  axis: { titleFontSize: 13, labelFontSize: 11, titlePadding: 8 },
  legend: { labelFontSize: 12, symbolSize: 120, labelLimit: 220 },
  range: { category: { scheme: "tableau10" } },
} as const;

/** Line chart: one colored line (with point markers) per series, legend on the right. */
export async function renderLineChartPng(chart: LineChart): Promise<Buffer> {
  const { width, height } = size(chart.width_px, chart.height_px);
  text(chart.title, "title");
  text(chart.x_label, "x_label");
  text(chart.y_label, "y_label");
  if (!Array.isArray(chart.series) || chart.series.length === 0) {
    throw new Error("line chart: at least one series is required");
  }
  const names = uniqueNames(
    chart.series.map((s, i) => text(s.name, `series[${i}].name`)),
    "series name",
  );
  const rows: { series: string; x: number; y: number }[] = [];
  for (const [i, s] of chart.series.entries()) {
    if (!Array.isArray(s.points) || s.points.length === 0) {
      throw new Error(`line chart: series "${s.name}" has no points (at least one is required)`);
    }
    for (const [j, p] of s.points.entries()) {
      const where = `series[${i}] "${s.name}" point ${j}`;
      const x = finite(p.x, `${where} x`);
      const y = finite(p.y, `${where} y`);
      if (chart.x_log === true && x <= 0) {
        throw new Error(`line chart: ${where} has x = ${x}, but a log x scale needs x > 0`);
      }
      rows.push({ series: s.name, x, y });
    }
  }

  const xs = [...new Set(rows.map((r) => r.x))].sort((a, b) => a - b);
  const spec: TopLevelSpec = {
    title: chart.title,
    width,
    height,
    autosize: { type: "fit", contains: "padding" },
    padding: 12,
    config: CONFIG,
    data: { values: rows },
    mark: { type: "line", strokeWidth: 2, point: { filled: true, size: 50 } },
    encoding: {
      x: {
        field: "x",
        type: "quantitative",
        title: chart.x_label,
        ...(chart.x_log === true
          ? {
              scale: { type: "log", base: 2 },
              axis: xs.length <= DATA_TICKS_MAX ? { values: xs, format: ",~g" } : { format: ",~g" },
            }
          : {}),
      },
      y: { field: "y", type: "quantitative", title: chart.y_label },
      // Explicit domain: legend and colors follow the caller's series order, not alphabetical order.
      color: { field: "series", type: "nominal", title: null, scale: { domain: names } },
    },
  };
  return specToPng(spec);
}

/** Grouped bar chart: x = group (in first-seen order), color = name, y = value. */
export async function renderBarChartPng(chart: BarChart): Promise<Buffer> {
  const { width, height } = size(chart.width_px, chart.height_px);
  text(chart.title, "title");
  text(chart.y_label, "y_label");
  if (!Array.isArray(chart.bars) || chart.bars.length === 0) {
    throw new Error("bar chart: at least one bar is required");
  }
  const seen = new Set<string>();
  const groups: string[] = [];
  const names: string[] = [];
  const rows = chart.bars.map((b, i) => {
    const group = text(b.group, `bars[${i}].group`);
    const name = text(b.name, `bars[${i}].name`);
    const value = finite(b.value, `bars[${i}] ("${group}" / "${name}") value`);
    // Two bars in the same slot would be drawn on top of each other and one would vanish.
    const key = JSON.stringify([group, name]);
    if (seen.has(key)) throw new Error(`bar chart: duplicate bar "${name}" in group "${group}"`);
    seen.add(key);
    if (!groups.includes(group)) groups.push(group);
    if (!names.includes(name)) names.push(name);
    return { group, name, value };
  });

  const spec: TopLevelSpec = {
    title: chart.title,
    width,
    height,
    autosize: { type: "fit", contains: "padding" },
    padding: 12,
    config: CONFIG,
    data: { values: rows },
    mark: { type: "bar" },
    encoding: {
      x: { field: "group", type: "nominal", title: null, sort: groups, axis: { labelAngle: 0 } },
      xOffset: { field: "name", type: "nominal", sort: names },
      y: { field: "value", type: "quantitative", title: chart.y_label },
      color: { field: "name", type: "nominal", title: null, scale: { domain: names } },
    },
  };
  return specToPng(spec);
}

async function specToPng(spec: TopLevelSpec): Promise<Buffer> {
  const view = new View(parse(compile(spec).spec), { renderer: "none" });
  let svg: string;
  try {
    svg = await view.toSVG();
  } finally {
    view.finalize(); // drops the dataflow's timers and listeners
  }
  // renderAsync rasterises on libuv's thread pool, off the event loop.
  const image = await renderAsync(svg, {
    fitTo: { mode: "original" },
    background: "white",
    font: { loadSystemFonts: true, defaultFontFamily: FONT, sansSerifFamily: FONT },
  });
  return image.asPng();
}

function size(
  width_px: number | undefined,
  height_px: number | undefined,
): { width: number; height: number } {
  return {
    width: dimension(width_px ?? DEFAULT_WIDTH_PX, "width_px"),
    height: dimension(height_px ?? DEFAULT_HEIGHT_PX, "height_px"),
  };
}

function dimension(v: number, what: string): number {
  if (!Number.isInteger(v) || v < SIZE_MIN_PX || v > SIZE_MAX_PX) {
    throw new Error(
      `chart: ${what} must be an integer from ${SIZE_MIN_PX} to ${SIZE_MAX_PX}, got ${String(v)}`,
    );
  }
  return v;
}

function finite(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new Error(`chart: ${what} must be a finite number, got ${String(v)}`);
  }
  return v;
}

function text(v: unknown, what: string): string {
  if (typeof v !== "string" || v.trim() === "") {
    throw new Error(`chart: ${what} must be a non-empty string, got ${JSON.stringify(v)}`);
  }
  return v;
}

function uniqueNames(names: string[], what: string): string[] {
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  // Same-named series would share one color and be joined into a single zigzag line.
  if (dup !== undefined) throw new Error(`chart: duplicate ${what} "${dup}"`);
  return names;
}
