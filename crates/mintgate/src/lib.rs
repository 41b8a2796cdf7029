//! mintgate: a durable, budget-aware onboarding pipeline for the Signicat Mint API.

pub mod bench;
