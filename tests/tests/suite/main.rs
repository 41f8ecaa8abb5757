//! The integration suite: one test binary (one link of Burn), one module per topic.

mod conformance;
