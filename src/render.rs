//! Pictures: scalar maps to colour images (viridis for magnitudes, a cyclic OKLCh wheel for
//! phases), labelled side-by-side panels, written as PNG frames or an animated GIF.

use std::io::Cursor;
use std::path::Path;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, ImageFormat, Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::io::write_atomic;

/// How values become colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colormap {
    /// Perceptually uniform, dark to bright: magnitudes, densities, entropies.
    Viridis,
    /// Cyclic, constant lightness: phases in [-pi, pi].
    Phase,
}

/// Viridis sampled at nine evenly spaced points (matplotlib's values), interpolated linearly.
const VIRIDIS: [[f32; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [71.0, 44.0, 122.0],
    [59.0, 81.0, 139.0],
    [44.0, 113.0, 142.0],
    [33.0, 144.0, 141.0],
    [39.0, 173.0, 129.0],
    [92.0, 200.0, 99.0],
    [170.0, 220.0, 50.0],
    [253.0, 231.0, 37.0],
];

impl Colormap {
    /// Colour of `t` in [0, 1] (clamped; NaN maps to black so it stands out).
    pub fn color(self, t: f32) -> [u8; 3] {
        if t.is_nan() {
            return [0, 0, 0];
        }
        let t = t.clamp(0.0, 1.0);
        match self {
            Colormap::Viridis => {
                let position = t * (VIRIDIS.len() - 1) as f32;
                let index = (position.floor() as usize).min(VIRIDIS.len() - 2);
                let fraction = position - index as f32;
                let (a, b) = (VIRIDIS[index], VIRIDIS[index + 1]);
                [0, 1, 2].map(|k| (a[k] + (b[k] - a[k]) * fraction).round() as u8)
            }
            Colormap::Phase => oklch_to_srgb(0.72, 0.13, t * std::f32::consts::TAU),
        }
    }
}

impl Colormap {
    /// The colours of the bytes [`quantize`] makes: 0 to 254 across the map, 255 for NaN.
    pub fn lut(self) -> Vec<[u8; 3]> {
        (0..=255u16)
            .map(|byte| if byte == 255 { self.color(f32::NAN) } else { self.color(byte as f32 / 254.0) })
            .collect()
    }
}

/// OKLCh (lightness, chroma, hue in radians) to 8-bit sRGB.
fn oklch_to_srgb(lightness: f32, chroma: f32, hue: f32) -> [u8; 3] {
    let (a, b) = (chroma * hue.cos(), chroma * hue.sin());
    let l_ = lightness + 0.396_337_78 * a + 0.215_803_76 * b;
    let m_ = lightness - 0.105_561_35 * a - 0.063_854_17 * b;
    let s_ = lightness - 0.089_484_18 * a - 1.291_485_5 * b;
    let (l, m, s) = (l_.powi(3), m_.powi(3), s_.powi(3));
    let linear = [
        4.076_741_7 * l - 3.307_711_6 * m + 0.230_969_94 * s,
        -1.268_438 * l + 2.609_757_4 * m - 0.341_319_38 * s,
        -0.004_196_086_3 * l - 0.703_418_6 * m + 1.707_614_7 * s,
    ];
    linear.map(|channel| {
        let channel = channel.clamp(0.0, 1.0);
        let encoded =
            if channel <= 0.003_130_8 { 12.92 * channel } else { 1.055 * channel.powf(1.0 / 2.4) - 0.055 };
        (encoded * 255.0).round() as u8
    })
}

/// The value range a map is drawn with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// Fixed bounds (e.g. [0, 1] for densities of normalised states, [-pi, pi] for phases).
    Fixed(f32, f32),
    /// The map's own finite minimum and maximum.
    Auto,
}

impl Range {
    /// The bounds a map is drawn between: the fixed ones, or the map's own finite minimum and
    /// maximum ([0, 1] when it has no finite value).
    pub fn bounds(self, map: &[f32]) -> (f32, f32) {
        match self {
            Range::Fixed(low, high) => (low, high),
            Range::Auto => {
                let finite = map.iter().copied().filter(|value| value.is_finite());
                let low = finite.clone().fold(f32::INFINITY, f32::min);
                let high = finite.fold(f32::NEG_INFINITY, f32::max);
                if low.is_finite() {
                    (low, high)
                } else {
                    (0.0, 1.0)
                }
            }
        }
    }
}

/// Where each value lies between `low` and `high`, in [0, 1] (NaN stays NaN).
fn normalizer(low: f32, high: f32) -> impl Fn(f32) -> f32 {
    let span = if high > low { high - low } else { 1.0 };
    move |value| (value - low) / span
}

/// A map as one byte per cell (0 at the range's low end, 254 at its high end, 255 for NaN),
/// with the bounds used: what the live lab sends and its page colours with [`Colormap::lut`].
pub fn quantize(map: &[f32], range: Range) -> (Vec<u8>, f32, f32) {
    let (low, high) = range.bounds(map);
    let position = normalizer(low, high);
    let bytes = map
        .iter()
        .map(|&value| {
            let t = position(value);
            if t.is_nan() {
                255
            } else {
                (t.clamp(0.0, 1.0) * 254.0).round() as u8
            }
        })
        .collect();
    (bytes, low, high)
}

/// Draws a [height, width] row-major map.
pub fn colorize(map: &[f32], height: usize, width: usize, colormap: Colormap, range: Range) -> RgbImage {
    let (low, high) = range.bounds(map);
    let position = normalizer(low, high);
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let value = map[y as usize * width + x as usize];
        image::Rgb(colormap.color(position(value)))
    })
}

/// Scales an image up by an integer factor (nearest neighbour) so small grids stay visible.
pub fn upscale(image: &RgbImage, factor: u32) -> RgbImage {
    if factor <= 1 {
        return image.clone();
    }
    RgbImage::from_fn(image.width() * factor, image.height() * factor, |x, y| {
        *image.get_pixel(x / factor, y / factor)
    })
}

/// Integer factor that brings the longer side of a grid to at least `target` pixels.
pub fn upscale_factor(height: usize, width: usize, target: usize) -> u32 {
    let longest = height.max(width).max(1);
    target.div_ceil(longest).clamp(1, 16) as u32
}

/// Encodes and writes a PNG atomically.
pub fn save_png(path: &Path, image: &RgbImage) -> Result<()> {
    let mut bytes = Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(|error| Error::format(path, format!("cannot encode PNG: {error}")))?;
    write_atomic(path, bytes.get_ref())
}

/// Draws a map and writes it as a PNG, scaled up so that small grids stay visible.
pub fn save_map(
    path: &Path,
    map: &[f32],
    height: usize,
    width: usize,
    colormap: Colormap,
    range: Range,
) -> Result<()> {
    save_png(path, &map_image(map, height, width, colormap, range))
}

/// Draws a map scaled up (nearest neighbour) so that its longer side reaches 256 pixels.
pub fn map_image(map: &[f32], height: usize, width: usize, colormap: Colormap, range: Range) -> RgbImage {
    upscale(&colorize(map, height, width, colormap, range), upscale_factor(height, width, 256))
}

/// A 5x7 bitmap font: one row per byte, bit 4 the leftmost pixel. Upper case, digits and a little
/// punctuation, enough for panel labels; other characters draw as '?'.
fn glyph(character: char) -> [u8; 7] {
    match character.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        ' ' => [0x00; 7],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}

/// Height in pixels of text drawn at `scale`.
pub fn text_height(scale: u32) -> u32 {
    7 * scale
}

/// Width in pixels of `text` drawn at `scale` (6 columns per character: 5 and a gap).
pub fn text_width(text: &str, scale: u32) -> u32 {
    (text.chars().count() as u32 * 6).saturating_sub(1) * scale
}

/// Draws `text` with its top-left corner at (x, y); pixels off the image are skipped.
pub fn draw_text(image: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32, color: [u8; 3]) {
    for (index, character) in text.chars().enumerate() {
        let left = x + index as u32 * 6 * scale;
        for (row, bits) in glyph(character).iter().enumerate() {
            for column in 0..5u32 {
                if bits & (0x10 >> column) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (left + column * scale + dx, y + row as u32 * scale + dy);
                        if px < image.width() && py < image.height() {
                            image.put_pixel(px, py, Rgb(color));
                        }
                    }
                }
            }
        }
    }
}

const PANEL_BACKGROUND: [u8; 3] = [24, 24, 28];
const PANEL_TEXT: [u8; 3] = [235, 235, 235];
const PANEL_GAP: u32 = 6;
const LABEL_SCALE: u32 = 2;

/// Several pictures side by side on a dark background, each with its label above it, and a
/// title line (e.g. the step) over all of them.
pub fn panel(title: &str, tiles: &[(String, RgbImage)]) -> RgbImage {
    let line = text_height(LABEL_SCALE) + PANEL_GAP;
    let tiles_height = tiles.iter().map(|(_, tile)| tile.height()).max().unwrap_or(0);
    let tiles_width: u32 = tiles.iter().map(|(_, tile)| tile.width() + PANEL_GAP).sum::<u32>() + PANEL_GAP;
    let width = tiles_width.max(text_width(title, LABEL_SCALE) + 2 * PANEL_GAP);
    let height = PANEL_GAP + 2 * line + tiles_height + PANEL_GAP;
    let mut image = RgbImage::from_pixel(width, height, Rgb(PANEL_BACKGROUND));
    draw_text(&mut image, PANEL_GAP, PANEL_GAP, title, LABEL_SCALE, PANEL_TEXT);
    let mut left = PANEL_GAP;
    for (label, tile) in tiles {
        draw_text(&mut image, left, PANEL_GAP + line, label, LABEL_SCALE, PANEL_TEXT);
        image::imageops::replace(&mut image, tile, left as i64, (PANEL_GAP + 2 * line) as i64);
        left += tile.width() + PANEL_GAP;
    }
    image
}

/// An animated GIF assembled frame by frame and written at the end (10 frames per second,
/// looping). Frames are kept in memory until [`GifRecorder::save`].
#[derive(Debug, Default)]
pub struct GifRecorder {
    frames: Vec<RgbImage>,
}

impl GifRecorder {
    /// An empty recording.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a frame.
    pub fn push(&mut self, frame: RgbImage) {
        self.frames.push(frame);
    }

    /// Frames recorded.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame was recorded.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Encodes every frame (a 256-colour palette per frame) and writes the file atomically.
    pub fn save(self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        {
            // Speed 10 of 1..30: a good palette at a few milliseconds per frame.
            let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
            let failed =
                |error: image::ImageError| Error::format(path, format!("cannot encode GIF: {error}"));
            encoder.set_repeat(Repeat::Infinite).map_err(failed)?;
            for frame in self.frames {
                let rgba = image::DynamicImage::ImageRgb8(frame).into_rgba8();
                let frame = Frame::from_parts(rgba, 0, 0, Delay::from_numer_denom_ms(100, 1));
                encoder.encode_frame(frame).map_err(failed)?;
            }
        }
        write_atomic(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_endpoints_match_matplotlib() {
        assert_eq!(Colormap::Viridis.color(0.0), [68, 1, 84]);
        assert_eq!(Colormap::Viridis.color(1.0), [253, 231, 37]);
        assert_eq!(Colormap::Viridis.color(0.5), [33, 144, 141]);
    }

    #[test]
    fn text_draws_known_glyph_pixels() {
        let mut image = RgbImage::new(12, 7);
        draw_text(&mut image, 0, 0, "l1", 1, [255, 255, 255]);
        // 'L': the left column lit on every row, the bottom row lit across.
        for row in 0..7 {
            assert_eq!(image.get_pixel(0, row).0, [255, 255, 255]);
        }
        for column in 0..5 {
            assert_eq!(image.get_pixel(column, 6).0, [255, 255, 255]);
        }
        assert_eq!(image.get_pixel(4, 0).0, [0, 0, 0]);
        // '1' starts 6 columns later: its stem is the middle column.
        assert_eq!(image.get_pixel(8, 3).0, [255, 255, 255]);
        assert_eq!(text_width("l1", 1), 11);
    }

    #[test]
    fn panel_places_tiles_side_by_side() {
        let red = RgbImage::from_pixel(10, 8, Rgb([255, 0, 0]));
        let blue = RgbImage::from_pixel(12, 8, Rgb([0, 0, 255]));
        let image = panel("t", &[("a".into(), red), ("b".into(), blue)]);
        assert_eq!(image.width(), PANEL_GAP * 3 + 22);
        let top = PANEL_GAP + 2 * (text_height(LABEL_SCALE) + PANEL_GAP);
        assert_eq!(image.height(), top + 8 + PANEL_GAP);
        assert_eq!(image.get_pixel(PANEL_GAP, top).0, [255, 0, 0]);
        assert_eq!(image.get_pixel(PANEL_GAP * 2 + 10, top + 7).0, [0, 0, 255]);
        assert_eq!(image.get_pixel(PANEL_GAP + 10, top).0, PANEL_BACKGROUND);
    }

    #[test]
    fn phase_colormap_is_cyclic() {
        assert_eq!(Colormap::Phase.color(0.0), Colormap::Phase.color(1.0));
        assert_ne!(Colormap::Phase.color(0.0), Colormap::Phase.color(0.5));
    }
}
