//! Where tensors live and compute: burn's CPU backend (flex) or, built with `--features wgpu`,
//! a GPU through wgpu (Vulkan, Metal or DX12). The own inference path (`src/infer/`) always
//! runs on the CPU.

use burn::tensor::Device;

/// The devices onionnet can train and run burn's modules on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceKind {
    /// burn's pure-Rust CPU backend (flex), SIMD and threads.
    #[default]
    Cpu,
    /// A GPU through wgpu: Vulkan, Metal or DX12 (needs a build with `--features wgpu`).
    Wgpu,
}

/// A GPU device could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "--device wgpu: this onionnet was built without the GPU backend; build it with \
         `cargo build --release --features wgpu` (README, \"On a GPU\")"
    )]
    NotBuilt,
    #[error(
        "--device wgpu: no usable GPU adapter ({0}). wgpu needs a Vulkan, Metal or DX12 \
         driver: on Linux the Vulkan loader (Debian: libvulkan1) and the GPU vendor's Vulkan \
         driver (or VK_DRIVER_FILES pointing at its ICD file); `--device cpu` runs everything \
         on the CPU"
    )]
    NoAdapter(String),
}

impl DeviceKind {
    /// The device, initialised now so that a missing GPU is a clear error here rather than a
    /// panic at the first tensor.
    pub fn init(self) -> Result<Device, DeviceError> {
        match self {
            DeviceKind::Cpu => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            DeviceKind::Wgpu => Device::wgpu_options()
                .init()
                .map_err(|e| DeviceError::NoAdapter(e.to_string())),
            #[cfg(not(feature = "wgpu"))]
            DeviceKind::Wgpu => Err(DeviceError::NotBuilt),
        }
    }
}

/// Whether `device` is burn's CPU backend (the comparison ignores autodiff).
pub fn is_cpu(device: &Device) -> bool {
    *device == Device::flex()
}

/// Said once per process when the own inference path is asked to run networks that live on
/// a GPU: it packs their weights and runs on the CPU.
pub fn note_own_engine_on_cpu(device: &Device) {
    static SAID: std::sync::Once = std::sync::Once::new();
    if !is_cpu(device) {
        SAID.call_once(|| {
            eprintln!(
                "note: the own inference engine runs on the CPU whatever --device says \
                 (`--engine burn` runs the networks on {device:?})"
            )
        });
    }
}
