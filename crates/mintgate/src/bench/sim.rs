//! Simulator serving-rate benchmark (result files and small requests).
