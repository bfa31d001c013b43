//! Pictures: scalar maps to colour images (viridis for magnitudes, a cyclic OKLCh wheel for
//! phases), written as PNG.

use std::io::Cursor;
use std::path::Path;

use image::{ImageFormat, RgbImage};

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
        let encoded = if channel <= 0.003_130_8 {
            12.92 * channel
        } else {
            1.055 * channel.powf(1.0 / 2.4) - 0.055
        };
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

/// Draws a [height, width] row-major map.
pub fn colorize(map: &[f32], height: usize, width: usize, colormap: Colormap, range: Range) -> RgbImage {
    let (low, high) = match range {
        Range::Fixed(low, high) => (low, high),
        Range::Auto => {
            let finite = map.iter().copied().filter(|value| value.is_finite());
            let low = finite.clone().fold(f32::INFINITY, f32::min);
            let high = finite.fold(f32::NEG_INFINITY, f32::max);
            if low.is_finite() { (low, high) } else { (0.0, 1.0) }
        }
    };
    let span = if high > low { high - low } else { 1.0 };
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let value = map[y as usize * width + x as usize];
        image::Rgb(colormap.color((value - low) / span))
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
    fn phase_colormap_is_cyclic() {
        assert_eq!(Colormap::Phase.color(0.0), Colormap::Phase.color(1.0));
        assert_ne!(Colormap::Phase.color(0.0), Colormap::Phase.color(0.5));
    }
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
    let image = colorize(map, height, width, colormap, range);
    save_png(path, &upscale(&image, upscale_factor(height, width, 256)))
}
