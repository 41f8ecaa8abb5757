//! The backends this project's tests, conformance runner and benchmarks run on (feature
//! `testing`): burn-ndarray on the CPU and burn-wgpu on a GPU or a software Vulkan adapter.
//!
//! One build serves both: the backend is chosen at run time by the environment variable
//! [`TestBackend::ENV`] (`ndarray`, the default, or `wgpu`), and each test instantiates its
//! generic body for that backend with [`on_test_backend!`](crate::on_test_backend).

use burn::backend::{Autodiff, NdArray, Wgpu};

/// burn-ndarray under autodiff.
pub type NdArrayAutodiff = Autodiff<NdArray>;
/// burn-wgpu under autodiff.
pub type WgpuAutodiff = Autodiff<Wgpu>;

/// A backend the project is tested on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBackend {
    /// burn-ndarray (CPU).
    NdArray,
    /// burn-wgpu (a GPU, or Mesa's software Vulkan driver).
    Wgpu,
}

impl TestBackend {
    /// The environment variable that selects the backend of a test run.
    pub const ENV: &'static str = "BURN_SPARSE_ADAM_BACKEND";

    /// Every backend, in the order reports list them.
    pub const ALL: [TestBackend; 2] = [TestBackend::NdArray, TestBackend::Wgpu];

    /// The backend's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            TestBackend::NdArray => "ndarray",
            TestBackend::Wgpu => "wgpu",
        }
    }

    /// Parses a backend name.
    ///
    /// # Errors
    ///
    /// A message naming the unknown value and the known ones.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| format!("unknown backend {name:?}: expected \"ndarray\" or \"wgpu\""))
    }

    /// The backend selected by [`TestBackend::ENV`], `ndarray` when it is unset.
    ///
    /// # Panics
    ///
    /// On an unknown value, naming it.
    pub fn selected() -> Self {
        match std::env::var(Self::ENV) {
            Ok(name) => Self::parse(&name).unwrap_or_else(|err| panic!("{}: {err}", Self::ENV)),
            Err(_) => TestBackend::NdArray,
        }
    }

    /// Whether the backend can run here; for wgpu, whether an adapter exists.
    ///
    /// # Errors
    ///
    /// Why it cannot, and how to fix it.
    pub fn probe(self) -> Result<(), String> {
        match self {
            TestBackend::NdArray => Ok(()),
            TestBackend::Wgpu => probe_wgpu(),
        }
    }
}

/// Runs one tiny wgpu operation, catching the panic burn-wgpu raises when no adapter exists.
fn probe_wgpu() -> Result<(), String> {
    use burn::tensor::Tensor;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        Tensor::<Wgpu, 1>::ones([2], &Default::default())
            .sum()
            .into_scalar()
    });
    std::panic::set_hook(hook);
    match result {
        Ok(2.0) => Ok(()),
        Ok(sum) => Err(format!("the wgpu adapter computed 1 + 1 = {sum}")),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("burn-wgpu panicked while starting");
            Err(format!(
                "no wgpu adapter ({why}); without a GPU, install Mesa's software Vulkan driver: apt-get install mesa-vulkan-drivers"
            ))
        }
    }
}

/// Runs a generic test body `f::<B>(&device)` on the backend [`TestBackend::selected`].
///
/// `f` must be a function generic over `B: AutodiffBackend` taking `&B::Device`.
#[macro_export]
macro_rules! on_test_backend {
    ($f:ident) => {
        match $crate::testing::TestBackend::selected() {
            $crate::testing::TestBackend::NdArray => {
                $f::<$crate::testing::NdArrayAutodiff>(&Default::default())
            }
            $crate::testing::TestBackend::Wgpu => {
                $f::<$crate::testing::WgpuAutodiff>(&Default::default())
            }
        }
    };
}
