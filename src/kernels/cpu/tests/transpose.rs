//! The tiled transpose against the definition, over shapes that make tall, wide and square tiles,
//! each with a partial last tile.

use super::super::transpose::{transpose, transposed_batches};
use super::*;

/// `a` [batches][rows][cols] transposed by the definition, element by element.
fn by_definition(a: &[f32], [batches, rows, cols]: [usize; 3]) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len());
    for batch in 0..batches {
        for j in 0..cols {
            out.extend((0..rows).map(|i| a[(batch * rows + i) * cols + j]));
        }
    }
    out
}

#[test]
fn every_shape_is_transposed_as_defined() {
    let shapes = [
        [1, 70, 45],   // one tile
        [3, 1200, 5],  // tall: several bands of few columns, the state's case
        [2, 3, 5000],  // wide: several blocks of few rows, a gradient's case
        [2, 300, 200], // several bands and blocks
        [1, 1, 9],
        [1, 9, 1],
        [4, 0, 7],
        [0, 5, 7],
    ];
    for (seed, dims) in shapes.into_iter().enumerate() {
        let a = random(dims.iter().product(), seed as u64);
        let expected = by_definition(&a, dims);
        assert_eq!(transposed_batches(&a, dims), expected, "{dims:?}");
        let [batches, rows, cols] = dims;
        let mut out = vec![f32::NAN; a.len()];
        let matrix = rows * cols;
        for batch in 0..batches {
            let range = batch * matrix..(batch + 1) * matrix;
            transpose(&a[range.clone()], rows, cols, &mut out[range]);
        }
        assert_eq!(out, expected, "{dims:?} one matrix at a time");
    }
}
