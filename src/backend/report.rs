//! What the guarded constructor reports: what was asked, what runs, and why.

use std::fmt;

use serde::Serialize;

use super::{Attempt, BackendKind, DeviceRequest};

/// What was asked, what runs, and why.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// What was asked for.
    #[serde(serialize_with = "serialize_display")]
    pub requested: DeviceRequest,
    /// The backend that runs, if any started.
    pub selected: Option<BackendKind>,
    /// The selected device's name.
    pub selected_device: Option<String>,
    /// Every backend tried, in order, with its failure if it failed.
    pub attempts: Vec<Attempt>,
}

fn serialize_display<S: serde::Serializer, T: fmt::Display>(
    value: &T,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl DeviceReport {
    /// The report of a request that has not been through selection yet.
    pub fn unselected(requested: DeviceRequest) -> Self {
        Self { requested, selected: None, selected_device: None, attempts: Vec::new() }
    }

    /// True when the selected backend is not what was explicitly asked for.
    pub fn fell_back(&self) -> bool {
        let wanted = match self.requested {
            DeviceRequest::Auto => return false,
            DeviceRequest::Cuda { .. } => BackendKind::Cuda,
            DeviceRequest::Wgpu => BackendKind::Wgpu,
            DeviceRequest::Cpu => BackendKind::Cpu,
        };
        self.selected != Some(wanted)
    }

    /// One or two plain lines: the selection, then the failed attempts with their causes.
    pub fn summary(&self) -> String {
        let mut text = match (&self.selected, &self.selected_device) {
            (Some(kind), Some(device)) => {
                format!("device: requested {}, running on {kind} ({device})", self.requested)
            }
            _ => format!("device: requested {}, no backend started", self.requested),
        };
        let failures = self.failures();
        if !failures.is_empty() {
            text.push_str("\n  skipped ");
            text.push_str(&failures.join("; "));
        }
        text
    }
}

impl DeviceReport {
    /// `backend: cause (message)` for every attempt that failed.
    pub fn failures(&self) -> Vec<String> {
        self.attempts
            .iter()
            .filter_map(|attempt| {
                attempt
                    .failure
                    .as_ref()
                    .map(|failure| format!("{}: {} ({})", attempt.backend, failure.cause, failure.summary))
            })
            .collect()
    }
}

impl fmt::Display for DeviceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}
