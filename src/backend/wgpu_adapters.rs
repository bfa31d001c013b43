//! The wgpu adapters this machine offers (for `atheria devices`).

use crate::guard::catch_silently;

/// What wgpu reports of one adapter.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    /// The adapter's name.
    pub name: String,
    /// The graphics API it runs through (Vulkan, Metal, ...).
    pub api: String,
    /// Whether it is a software rasteriser (lavapipe, llvmpipe) rather than a GPU.
    pub software: bool,
}

impl AdapterSummary {
    pub(crate) fn describe(&self) -> String {
        let kind = if self.software { ", software" } else { "" };
        format!("{}, {}{kind}", self.name, self.api)
    }
}

/// The adapters wgpu can see, best first. Never panics: a failing enumeration yields none.
pub fn list_wgpu_adapters() -> Vec<AdapterSummary> {
    let listing = catch_silently(|| {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
        let mut found: Vec<(u8, AdapterSummary)> = adapters
            .iter()
            .map(|adapter| {
                let info = adapter.get_info();
                let rank = match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => 0,
                    wgpu::DeviceType::IntegratedGpu => 1,
                    wgpu::DeviceType::VirtualGpu => 2,
                    wgpu::DeviceType::Other => 3,
                    wgpu::DeviceType::Cpu => 4,
                };
                let summary = AdapterSummary {
                    name: info.name.clone(),
                    api: format!("{:?}", info.backend),
                    software: info.device_type == wgpu::DeviceType::Cpu,
                };
                (rank, summary)
            })
            .collect();
        found.sort_by_key(|(rank, _)| *rank);
        found.into_iter().map(|(_, summary)| summary).collect::<Vec<_>>()
    });
    listing.unwrap_or_default()
}
