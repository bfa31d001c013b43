//! Damaged files: a flipped or cut byte in a weights file, a state or a model record is
//! caught (by a checksum or the format), or reads back what the bytes say, never silently
//! something else.

use atheria::io::model_dir::{load_model, RECORD_FILE};
use atheria::io::state_file::{parse_state, save_state};
use atheria::io::weights::WeightFile;
use atheria::io::HostTensor;
use atheria::models::detect::ConfigHints;
use atheria::models::Architecture;
use atheria::Error;
use burn::backend::NdArray;

use crate::import::import_into;
use crate::support::{fixtures, scratch, trajectory};

type B = NdArray;

#[test]
fn bytes_and_files_read_the_same() {
    for name in ["pytorch/mlp_checkpoint.pth", "pytorch/mlp_legacy.pth", "mlp.safetensors"] {
        let path = fixtures().join(name);
        let from_file = WeightFile::read(&path).unwrap();
        let from_bytes = WeightFile::from_bytes(&path, &std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(from_bytes.tensors, from_file.tensors, "{name}");
        assert_eq!(from_bytes.origin, from_file.origin, "{name}");
        assert_eq!(from_bytes.path, path);
    }
}

/// Positions spread over a file, denser at the start where the headers are.
fn positions(length: usize) -> Vec<usize> {
    let mut at: Vec<usize> = (0..64.min(length)).collect();
    at.extend((0..200).map(|i| i * length / 200));
    at.extend(length.saturating_sub(64)..length);
    at.sort_unstable();
    at.dedup();
    at
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut copy = bytes.to_vec();
    copy[at] ^= 0x5A;
    copy
}

#[test]
fn corrupt_pytorch_files_fail_or_read_exactly_never_silently_changed() {
    for name in ["pytorch/mlp.pth", "pytorch/mlp_checkpoint.pth"] {
        let path = fixtures().join(name);
        let bytes = std::fs::read(&path).unwrap();
        let original = WeightFile::read(&path).unwrap().tensors;
        let mut failures = 0;
        for at in positions(bytes.len()) {
            match WeightFile::from_bytes(&path, &flipped(&bytes, at)) {
                // Only bytes no checksum covers (zip timestamps, padding) may change.
                Ok(weights) => {
                    assert_eq!(weights.tensors, original, "{name}: flip at {at} changed the tensors")
                }
                Err(Error::Format { path: reported, .. } | Error::DType { path: reported, .. }) => {
                    assert_eq!(reported, path);
                    failures += 1;
                }
                Err(other) => panic!("{name}: flip at {at}: unexpected {other}"),
            }
        }
        assert!(failures > 100, "{name}: only {failures} flips detected");
        for cut in positions(bytes.len()) {
            assert!(WeightFile::from_bytes(&path, &bytes[..cut]).is_err(), "{name} cut at {cut}");
        }
    }
}

/// A safetensors weights file has no checksum: a flipped byte either fails to parse or reads
/// what the bytes now say, which is at most one value changed (a flipped data byte) or one
/// tensor renamed (a flipped name character), nothing else.
#[test]
fn corrupt_safetensors_weights_fail_or_change_only_the_flipped_bytes() {
    let weights = fixtures().join("mlp.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    let original = WeightFile::read(&weights).unwrap().tensors;
    let mut failures = 0;
    for at in positions(bytes.len()) {
        match WeightFile::from_bytes(&weights, &flipped(&bytes, at)) {
            Ok(read) if read.tensors.keys().eq(original.keys()) => {
                let changed: usize = read
                    .tensors
                    .iter()
                    .map(|(name, tensor)| {
                        let before = &original[name];
                        assert_eq!(tensor.shape, before.shape, "flip at {at} reshaped '{name}'");
                        tensor
                            .data
                            .iter()
                            .zip(&before.data)
                            .filter(|(a, b)| a.to_bits() != b.to_bits())
                            .count()
                    })
                    .sum();
                assert!(changed <= 1, "flip at {at} changed {changed} values");
            }
            Ok(read) => {
                let renamed: Vec<&String> =
                    read.tensors.keys().filter(|name| !original.contains_key(*name)).collect();
                assert_eq!(renamed.len(), 1, "flip at {at} changed the names {renamed:?}");
                let mut kept: Vec<&HostTensor> = read.tensors.values().collect();
                let mut want: Vec<&HostTensor> = original.values().collect();
                let key = |t: &&HostTensor| {
                    (t.shape.clone(), t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
                };
                kept.sort_by_key(key);
                want.sort_by_key(key);
                assert_eq!(kept, want, "flip at {at} renamed a tensor and changed values");
            }
            Err(Error::Format { path, .. } | Error::NonFinite { path, .. } | Error::DType { path, .. }) => {
                assert_eq!(path, weights);
                failures += 1;
            }
            Err(other) => panic!("flip at {at}: unexpected {other}"),
        }
        assert!(WeightFile::from_bytes(&weights, &bytes[..at]).is_err(), "cut at {at}");
    }
    assert!(failures > 10, "only {failures} flips detected");
}

/// State files and model records carry checksums: a flipped byte fails, or (a byte no
/// checksum needs) reads back exactly the original.
#[test]
fn corrupt_states_and_records_fail_or_read_exactly() {
    let dir = scratch("import-corrupt");
    let state_path = dir.join("state.safetensors");
    let fixture = trajectory(Architecture::Mlp);
    let original = &fixture.states[&1];
    save_state(&state_path, original).unwrap();
    let state = std::fs::read(&state_path).unwrap();
    let mut failures = 0;
    for at in positions(state.len()) {
        match parse_state(&state_path, &flipped(&state, at)) {
            Ok(read) => assert_eq!(
                (&read.re, &read.im, read.step),
                (&original.re, &original.im, original.step),
                "flip at {at}"
            ),
            Err(_) => failures += 1,
        }
        assert!(parse_state(&state_path, &state[..at]).is_err(), "cut at {at}");
    }
    assert!(failures > 100, "only {failures} flips of the state detected");

    let out = dir.join("model");
    import_into(&fixtures().join("pytorch/unet-convlstm.pth"), &out, ConfigHints::default()).unwrap();
    let record = std::fs::read(out.join(RECORD_FILE)).unwrap();
    let device = Default::default();
    for at in positions(record.len()) {
        std::fs::write(out.join(RECORD_FILE), flipped(&record, at)).unwrap();
        match load_model::<B>(&out, &device) {
            Err(Error::ChecksumMismatch { path, .. }) => assert_eq!(path, out.join(RECORD_FILE)),
            other => panic!("record flip at {at}: expected a checksum mismatch, got {:?}", other.map(|_| ())),
        }
    }
}
