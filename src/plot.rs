//! Line charts of training curves (loss and metrics against episode) as PNG, drawn directly
//! with `image` and the built-in bitmap font of [`crate::render`], so that no font files or
//! system libraries are needed.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::Result;
use crate::render::{draw_text, save_png, text_width};

/// One curve: a name and (x, y) points in increasing x.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's label.
    pub name: String,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

const WIDTH: u32 = 760;
const PANEL_HEIGHT: u32 = 150;
const LEFT: u32 = 84;
const RIGHT: u32 = 16;
const TOP: u32 = 22;
const BOTTOM: u32 = 18;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([90, 90, 90]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const TEXT: Rgb<u8> = Rgb([30, 30, 30]);
const RAW: Rgb<u8> = Rgb([166, 196, 230]);
const SMOOTH: Rgb<u8> = Rgb([20, 70, 160]);

/// Draws each series in its own panel, stacked, with the raw values in a light colour and a
/// moving average (over about a fiftieth of the run) on top, and writes the PNG atomically.
pub fn plot_series(path: &Path, series: &[Series]) -> Result<()> {
    let shown: Vec<&Series> = series.iter().filter(|s| s.points.iter().any(|(_, y)| y.is_finite())).collect();
    let height = PANEL_HEIGHT * shown.len().max(1) as u32;
    let mut image = RgbImage::from_pixel(WIDTH, height, BACKGROUND);
    for (index, series) in shown.iter().enumerate() {
        draw_panel(&mut image, index as u32 * PANEL_HEIGHT, series);
    }
    save_png(path, &image)
}

fn draw_panel(image: &mut RgbImage, top: u32, series: &Series) {
    let points: Vec<(f64, f64)> =
        series.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let (x0, x1) = bounds(points.iter().map(|p| p.0));
    let (y0, y1) = bounds(points.iter().map(|p| p.1));
    let plot = Rect { left: LEFT, top: top + TOP, right: WIDTH - RIGHT, bottom: top + PANEL_HEIGHT - BOTTOM };
    for fraction in [0.25, 0.5, 0.75] {
        let y = plot.bottom as f64 - fraction * (plot.bottom - plot.top) as f64;
        horizontal_line(image, plot.left, plot.right, y as u32, GRID);
    }
    horizontal_line(image, plot.left, plot.right, plot.bottom, AXIS);
    vertical_line(image, plot.left, plot.top, plot.bottom, AXIS);

    draw_text(image, LEFT, top + 7, &series.name, 1, TEXT.0);
    draw_text_right(image, LEFT - 6, plot.top, &format_number(y1), TEXT);
    draw_text_right(image, LEFT - 6, plot.bottom - 7, &format_number(y0), TEXT);
    draw_text(image, plot.left, plot.bottom + 5, &format_number(x0), 1, TEXT.0);
    draw_text_right(image, plot.right, plot.bottom + 5, &format_number(x1), TEXT);

    let to_pixel = |(x, y): (f64, f64)| {
        let px = plot.left as f64 + (x - x0) / (x1 - x0) * (plot.right - plot.left) as f64;
        let py = plot.bottom as f64 - (y - y0) / (y1 - y0) * (plot.bottom - plot.top) as f64;
        (px, py)
    };
    let raw: Vec<(f64, f64)> = points.iter().copied().map(to_pixel).collect();
    polyline(image, &raw, RAW);
    let smooth: Vec<(f64, f64)> =
        moving_average(&points, (points.len() / 50).max(1)).into_iter().map(to_pixel).collect();
    polyline(image, &smooth, SMOOTH);
}

struct Rect {
    left: u32,
    top: u32,
    right: u32,
    bottom: u32,
}

/// Min and max of the values, widened when they coincide so that the scale is never empty.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !low.is_finite() {
        return (0.0, 1.0);
    }
    if high - low <= f64::EPSILON * high.abs().max(1.0) {
        let pad = (low.abs() * 0.05).max(1e-9);
        return (low - pad, high + pad);
    }
    (low, high)
}

/// Centered moving average over `window` points (shrunk at the ends).
fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let half = window / 2;
    (0..points.len())
        .map(|i| {
            let (start, end) = (i.saturating_sub(half), (i + half + 1).min(points.len()));
            let mean = points[start..end].iter().map(|p| p.1).sum::<f64>() / (end - start) as f64;
            (points[i].0, mean)
        })
        .collect()
}

fn format_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-2..1e5).contains(&magnitude) {
        format!("{value:.2e}")
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.4}")
    }
}

fn horizontal_line(image: &mut RgbImage, x0: u32, x1: u32, y: u32, color: Rgb<u8>) {
    for x in x0..=x1.min(image.width() - 1) {
        if y < image.height() {
            image.put_pixel(x, y, color);
        }
    }
}

fn vertical_line(image: &mut RgbImage, x: u32, y0: u32, y1: u32, color: Rgb<u8>) {
    for y in y0..=y1.min(image.height() - 1) {
        if x < image.width() {
            image.put_pixel(x, y, color);
        }
    }
}

/// Connects the points with straight segments (sampled at sub-pixel steps).
fn polyline(image: &mut RgbImage, points: &[(f64, f64)], color: Rgb<u8>) {
    let mut plot = |x: f64, y: f64| {
        let (px, py) = (x.round(), y.round());
        if px >= 0.0 && py >= 0.0 && (px as u32) < image.width() && (py as u32) < image.height() {
            image.put_pixel(px as u32, py as u32, color);
        }
    };
    if let [only] = points {
        plot(only.0, only.1);
    }
    for pair in points.windows(2) {
        let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
        let steps = ((bx - ax).abs().max((by - ay).abs()) * 2.0).ceil().max(1.0) as usize;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            plot(ax + t * (bx - ax), ay + t * (by - ay));
        }
    }
}

/// Writes `text` so that it ends at x.
fn draw_text_right(image: &mut RgbImage, x: u32, y: u32, text: &str, color: Rgb<u8>) {
    draw_text(image, x.saturating_sub(text_width(text, 1)), y, text, 1, color.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_of_a_constant_is_the_constant_and_smooths_a_zigzag() {
        let constant: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0)).collect();
        assert!(moving_average(&constant, 4).iter().all(|p| (p.1 - 3.0).abs() < 1e-12));
        let zigzag: Vec<(f64, f64)> =
            (0..9).map(|i| (i as f64, if i % 2 == 0 { 1.0 } else { -1.0 })).collect();
        let smooth = moving_average(&zigzag, 2);
        assert!(smooth[4].1.abs() < 0.34, "{:?}", smooth[4]);
    }

    #[test]
    fn flat_series_get_a_non_empty_scale() {
        let (low, high) = bounds([2.0, 2.0].into_iter());
        assert!(low < 2.0 && high > 2.0);
    }
}
