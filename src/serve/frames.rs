//! What the live lab sends a page: binary frames of quantised maps, and the numbers of one cell.
//!
//! A frame is `ATHF`, a little-endian u32 length, a JSON header of that length, then one byte
//! per cell for each view in the header's order (row-major, `height * width` bytes each): 0 to
//! 254 across the view's `[low, high]`, 255 for NaN. The page colours them with the colour
//! tables of the `hello` message.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::Serialize;

use crate::error::Result;
use crate::observables::{self, View};
use crate::readback::floats;
use crate::render::{quantize, Colormap};

/// The first bytes of every binary frame.
pub const FRAME_MAGIC: &[u8; 4] = b"ATHF";

/// The scalar numbers of one frame, for the page's chart.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FrameMetrics {
    /// `sum` over cells of `sum_c |delta_c|^2` of the last step; `None` (null) when no step
    /// led to the state shown (a reset, a rewind, a loaded state).
    pub total_energy: Option<f64>,
    /// The mean of the entropy map.
    pub mean_entropy: f64,
    /// Cells whose channel densities are farther than the sparse engine's threshold from the
    /// vacuum's.
    pub matter_cells: usize,
}

/// One view's map in a frame.
#[derive(Debug, Clone, Serialize)]
pub struct ViewHeader {
    /// The view's name.
    pub name: String,
    /// The value of byte 0.
    pub low: f32,
    /// The value of byte 254.
    pub high: f32,
    /// `viridis` or `phase`.
    pub colormap: &'static str,
}

/// The JSON header of a frame.
#[derive(Debug, Clone, Serialize)]
pub struct FrameHeader {
    /// The protocol's version.
    pub version: u32,
    /// Steps taken.
    pub step: u64,
    /// \[height, width\] of the maps.
    pub grid: [usize; 2],
    /// The universe shown.
    pub universe: usize,
    /// The maps, in the order their bytes follow.
    pub views: Vec<ViewHeader>,
    /// The chart's numbers.
    pub metrics: FrameMetrics,
    /// Steps per second of the simulation, measured.
    pub steps_per_s: f64,
    /// Sparse runs: the window's top-left cell and the stored tiles' coordinates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse: Option<SparseFrame>,
}

/// What a frame of a sparse run adds.
#[derive(Debug, Clone, Serialize)]
pub struct SparseFrame {
    /// The window's top-left cell (column, row).
    pub origin: [i64; 2],
    /// The tile side.
    pub tile: usize,
    /// The stored tiles (column, row in tiles).
    pub tiles: Vec<[i64; 2]>,
}

/// The name a page knows a colormap by.
pub fn colormap_name(colormap: Colormap) -> &'static str {
    match colormap {
        Colormap::Viridis => "viridis",
        Colormap::Phase => "phase",
    }
}

/// The bytes of a frame of universe `universe` of `psi` \[B, 2d, H, W\], with the last step's
/// input and update where there was one.
#[allow(clippy::too_many_arguments)]
pub fn encode_frame<B: Backend>(
    views: &[View],
    psi: &Tensor<B, 4>,
    input: Option<&Tensor<B, 4>>,
    delta: Option<&Tensor<B, 4>>,
    universe: usize,
    step: u64,
    steps_per_s: f64,
    sparse: Option<SparseFrame>,
) -> Result<Vec<u8>> {
    let [_, channels, height, width] = psi.dims();
    let d_state = channels / 2;
    let one = |tensor: &Tensor<B, 4>| tensor.clone().narrow(0, universe, 1);
    let (psi, input, delta) = (one(psi), input.map(one), delta.map(one));
    let mut headers = Vec::with_capacity(views.len());
    let mut maps = Vec::with_capacity(views.len() * height * width);
    let mut shown: Vec<(View, Vec<f32>)> = Vec::with_capacity(views.len());
    for view in views {
        let map = floats(view.map(psi.clone(), input.clone(), delta.clone())?)?;
        let (bytes, low, high) = quantize(&map, view.range(d_state));
        maps.extend_from_slice(&bytes);
        headers.push(ViewHeader { name: view.name(), low, high, colormap: colormap_name(view.colormap()) });
        shown.push((*view, map));
    }
    let metrics = frame_metrics(&psi, delta.as_ref(), &shown)?;
    let header = FrameHeader {
        version: super::protocol::PROTOCOL_VERSION,
        step,
        grid: [height, width],
        universe,
        views: headers,
        metrics,
        steps_per_s,
        sparse,
    };
    let json = serde_json::to_vec(&header).unwrap_or_default();
    let mut frame = Vec::with_capacity(8 + json.len() + maps.len());
    frame.extend_from_slice(FRAME_MAGIC);
    frame.extend_from_slice(&(json.len() as u32).to_le_bytes());
    frame.extend_from_slice(&json);
    frame.extend_from_slice(&maps);
    Ok(frame)
}

/// The chart's numbers of one universe \[1, 2d, H, W\], from the maps already read back where
/// the frame shows them (each read-back waits for the device).
fn frame_metrics<B: Backend>(
    psi: &Tensor<B, 4>,
    delta: Option<&Tensor<B, 4>>,
    shown: &[(View, Vec<f32>)],
) -> Result<FrameMetrics> {
    let map_of = |wanted: View| shown.iter().find(|(view, _)| *view == wanted).map(|(_, map)| map);
    let total_energy = match (map_of(View::Energy), delta) {
        (Some(map), Some(_)) => Some(map.iter().map(|&value| value as f64).sum()),
        (None, Some(delta)) => Some(floats(observables::update_energy(delta.clone()).sum())?[0] as f64),
        (_, None) => None,
    };
    let mean_entropy = match map_of(View::Entropy) {
        Some(map) => map.iter().map(|&value| value as f64).sum::<f64>() / map.len().max(1) as f64,
        None => floats(observables::entropy(psi.clone()).mean())?[0] as f64,
    };
    let threshold = crate::sparse::DEFAULT_MATTER_THRESHOLD;
    let matter_cells = match map_of(View::Matter) {
        Some(map) => map.iter().filter(|&&value| f64::from(value) > threshold).count(),
        None => {
            let matter = observables::matter_distance(psi.clone()).greater_elem(threshold);
            crate::readback::values::<i64, B, 1, burn::tensor::Int>(matter.int().sum())?[0] as usize
        }
    };
    Ok(FrameMetrics { total_energy, mean_entropy, matter_cells })
}

/// The channel densities `|psi_c|^2` and phases of cell (x, y) of universe `universe`.
pub fn probe<B: Backend>(
    psi: &Tensor<B, 4>,
    universe: usize,
    x: usize,
    y: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let cell = floats(psi.clone().narrow(0, universe, 1).narrow(2, y, 1).narrow(3, x, 1))?;
    let d = cell.len() / 2;
    let (re, im) = cell.split_at(d);
    let densities = re.iter().zip(im).map(|(r, i)| r * r + i * i).collect();
    let phases = re.iter().zip(im).map(|(r, i)| i.atan2(*r)).collect();
    Ok((densities, phases))
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;

    #[test]
    fn a_frame_is_magic_a_header_and_one_byte_per_cell_per_view() {
        let host = crate::state::generate(&crate::state::InitialState::Random, 2, 4, 6, 3, 1).unwrap();
        let psi = crate::state::Universe::<NdArray>::from_host(&host, &Default::default()).psi;
        let views = [View::Phase, View::Density];
        let frame = encode_frame(&views, &psi, None, None, 1, 9, 2.5, None).unwrap();
        assert_eq!(&frame[..4], FRAME_MAGIC);
        let length = u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&frame[8..8 + length]).unwrap();
        assert_eq!(header["step"], 9);
        assert_eq!(header["grid"], serde_json::json!([4, 6]));
        assert_eq!(header["views"][1]["name"], "density");
        assert_eq!(frame.len(), 8 + length + 2 * 4 * 6);
        // Every cell of a normalised state has density 1: the top of the fixed [0, 1] range.
        assert!(frame[8 + length + 24..].iter().all(|&byte| byte == 254));
        let (densities, phases) = probe(&psi, 1, 5, 3).unwrap();
        assert!((densities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(phases.len(), 3);
    }
}
