import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { renderBarChartPng, renderLineChartPng } from "../charts.ts";

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Checks a PNG's signature and reads the pixel size from its IHDR chunk, which must come first. */
function pngSize(png: Buffer): { width: number; height: number } {
  assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE, "PNG signature");
  // After the signature: chunk length (4 bytes), chunk type (4), then IHDR's width and height (4 each).
  assert.equal(png.toString("latin1", 12, 16), "IHDR", "first chunk is IHDR");
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

describe("bench charts", () => {
  it("renders a log-x line chart with two series as a PNG of exactly the requested size", async () => {
    const concurrency = [1, 4, 16, 64];
    const png = await renderLineChartPng({
      title: "Throughput vs. concurrency",
      x_label: "Concurrent clients",
      y_label: "Transfers per second",
      x_log: true,
      width_px: 640,
      height_px: 360,
      series: [
        { name: "saga", points: concurrency.map((x) => ({ x, y: 50 * Math.sqrt(x) })) },
        { name: "direct", points: concurrency.map((x) => ({ x, y: 80 * Math.log2(x + 1) })) },
      ],
    });
    assert.ok(png.length > 2048, `PNG is only ${png.length} bytes`);
    assert.deepEqual(pngSize(png), { width: 640, height: 360 });
  });

  it("renders a grouped bar chart at the default 720 x 400", async () => {
    const png = await renderBarChartPng({
      title: "Latency percentiles",
      y_label: "Latency (ms)",
      bars: [
        { group: "p50", name: "saga", value: 12 },
        { group: "p50", name: "direct", value: 7 },
        { group: "p99", name: "saga", value: 95 },
        { group: "p99", name: "direct", value: 40 },
      ],
    });
    assert.ok(png.length > 2048, `PNG is only ${png.length} bytes`);
    assert.deepEqual(pngSize(png), { width: 720, height: 400 });
  });

  it("refuses charts it cannot draw faithfully", async () => {
    const base = { title: "t", x_label: "x", y_label: "y" };
    await assert.rejects(renderLineChartPng({ ...base, series: [] }), /at least one series/);
    await assert.rejects(renderLineChartPng({ ...base, series: [{ name: "a", points: [] }] }), /no points/);
    await assert.rejects(
      renderLineChartPng({ ...base, series: [{ name: "a", points: [{ x: 1, y: Number.NaN }] }] }),
      /finite number/,
    );
    await assert.rejects(
      renderLineChartPng({ ...base, x_log: true, series: [{ name: "a", points: [{ x: 0, y: 1 }] }] }),
      /log x scale needs x > 0/,
    );
    await assert.rejects(renderBarChartPng({ title: "t", y_label: "y", bars: [] }), /at least one bar/);
    await assert.rejects(
      renderBarChartPng({ title: "t", y_label: "y", bars: [{ group: "g", name: "n", value: Infinity }] }),
      /finite number/,
    );
  });
});
