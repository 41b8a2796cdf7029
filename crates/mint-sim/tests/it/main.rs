//! The integration tests of mint-sim, one binary, written against the HTTP surface and checked
//! against the admin API's ground truth.

mod helpers;

mod admin;
mod api;
mod behaviours;
mod faults;
mod lifecycle;
mod limiter;
mod limits;
mod result_file;
mod retention;
mod roles;
mod scale;
mod token;
mod truth;
mod webhook;
