//! The integration suite: one test binary (one link of Burn), one module per topic.

mod conformance;
mod errors;
mod groups;
mod hooks;
mod learner;
mod new_user;
mod randomized;
mod robustness;
mod sparse_path;
mod state;
